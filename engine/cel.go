package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/interpreter"
	"k8s.io/apimachinery/pkg/util/version"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	apiservercel "k8s.io/apiserver/pkg/cel"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/apiserver/pkg/cel/lazy"
)

// Cost limits, as in the Kubernetes API server.
const (
	// PerCallCostLimit bounds the cost of one expression evaluation.
	PerCallCostLimit = celconfig.PerCallLimit
	// DefaultCostBudget is the cost budget of one request, shared by every
	// expression the request evaluates.
	DefaultCostBudget = celconfig.RuntimeCELCostBudget
)

// ErrCostBudgetExceeded is returned once a request has spent its budget.
var ErrCostBudgetExceeded = errors.New("CEL cost budget exceeded for this request")

const variablesTypeName = "kubernetes.variables"

// envs holds the CEL environments shared by every snapshot: built once, as
// building one costs milliseconds.
var envs struct {
	once sync.Once
	// withoutVariables declares object, oldObject, request and namespaceObject.
	withoutVariables *environment.EnvSet
	// shared adds an empty variables object, for policies that declare none.
	shared *cel.Env
	err    error
}

func sharedEnvs() (*environment.EnvSet, *cel.Env, error) {
	envs.once.Do(func() {
		requestType := plugincel.BuildRequestType()
		namespaceType := plugincel.BuildNamespaceType()
		base := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
		envs.withoutVariables, envs.err = base.Extend(environment.VersionedOptions{
			IntroducedVersion: version.MajorMinor(1, 0),
			EnvOptions: []cel.EnvOption{
				cel.Variable("object", cel.DynType),
				cel.Variable("oldObject", cel.DynType),
				cel.Variable("namespaceObject", namespaceType.CelType()),
				cel.Variable("request", requestType.CelType()),
			},
			DeclTypes: []*apiservercel.DeclType{namespaceType, requestType},
		})
		if envs.err != nil {
			return
		}
		var set *environment.EnvSet
		set, _, envs.err = extendWithVariables(envs.withoutVariables)
		if envs.err != nil {
			return
		}
		envs.shared, envs.err = set.Env(environment.StoredExpressions)
	})
	return envs.withoutVariables, envs.shared, envs.err
}

func extendWithVariables(set *environment.EnvSet) (*environment.EnvSet, *apiservercel.DeclType, error) {
	varsType := apiservercel.NewObjectType(variablesTypeName, map[string]*apiservercel.DeclField{})
	ext, err := set.Extend(environment.VersionedOptions{
		IntroducedVersion: version.MajorMinor(1, 0),
		EnvOptions:        []cel.EnvOption{cel.Variable("variables", varsType.CelType())},
		DeclTypes:         []*apiservercel.DeclType{varsType},
	})
	return ext, varsType, err
}

// policyEnv is the CEL environment of one policy: the shared one, or one of
// its own when the policy declares variables.
type policyEnv struct {
	env       *cel.Env
	varsType  *apiservercel.DeclType
	variables []*Expression

	// patch is this environment as MutatingAdmissionPolicy extends it, made
	// on first use; see withPatchTypes.
	patchOnce sync.Once
	patch     *policyEnv
	patchErr  error
}

func newPolicyEnv(vars []Variable) (*policyEnv, []error) {
	without, shared, err := sharedEnvs()
	if err != nil {
		return nil, []error{fmt.Errorf("CEL environment: %v", err)}
	}
	if len(vars) == 0 {
		return &policyEnv{env: shared}, nil
	}
	set, varsType, err := extendWithVariables(without)
	if err != nil {
		return nil, []error{fmt.Errorf("CEL environment: %v", err)}
	}
	env, err := set.Env(environment.StoredExpressions)
	if err != nil {
		return nil, []error{fmt.Errorf("CEL environment: %v", err)}
	}
	pe := &policyEnv{env: env, varsType: varsType}
	var errs []error
	for i, v := range vars {
		field := fmt.Sprintf("spec.variables[%d].expression", i)
		// Each variable sees the ones declared before it, as in
		// ValidatingAdmissionPolicy: its type is added after it compiles.
		e, err := pe.compile(field, v.Expression, nil)
		if err != nil {
			errs = append(errs, err)
			varsType.Fields[v.Name] = apiservercel.NewDeclField(v.Name, apiservercel.DynType, true, nil, nil)
			continue
		}
		e.name = v.Name
		varsType.Fields[v.Name] = apiservercel.NewDeclField(v.Name, declTypeOf(e.outputType), true, nil, nil)
		pe.variables = append(pe.variables, e)
	}
	return pe, errs
}

// Expression is a compiled CEL expression of a policy.
type Expression struct {
	field      string
	name       string
	source     string
	program    cel.Program
	outputType *cel.Type
	env        *policyEnv
}

// Source returns the expression's text.
func (e *Expression) Source() string { return e.source }

// OutputType returns the expression's checked type, for builtins that
// accept more than one.
func (e *Expression) OutputType() *cel.Type { return e.outputType }

// exprError is a CEL compile error located within its expression.
type exprError struct {
	field  string
	expr   string
	offset int // of the character CEL points at, from the start of expr; 0 when it does not say
	msg    string
}

func (e *exprError) Error() string { return e.msg }

// exprOffset returns the character offset in expr of a CEL location: a
// 1-based line and a 0-based column, both in characters. A location past
// the last line, as CEL gives for an unexpected end after a block
// scalar's final newline, is the end of expr.
func exprOffset(expr string, line, column int) int {
	lines := strings.SplitAfter(expr, "\n")
	if line > len(lines) {
		return utf8.RuneCountInString(expr)
	}
	offset := column
	for _, l := range lines[:line-1] {
		offset += utf8.RuneCountInString(l)
	}
	return offset
}

func (p *policyEnv) compile(field, expr string, want *cel.Type) (*Expression, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, &exprError{field: field, expr: expr, msg: "expression is empty"}
	}
	ast, issues := p.env.Compile(expr)
	if issues != nil && issues.Err() != nil {
		e := &exprError{field: field, expr: expr}
		var msgs []string
		located := false
		for _, ce := range issues.Errors() {
			if !located && ce.Location != nil && ce.Location.Line() > 0 {
				e.offset, located = exprOffset(expr, ce.Location.Line(), ce.Location.Column()), true
			}
			msgs = append(msgs, ce.Message)
		}
		e.msg = "CEL: " + strings.Join(msgs, "; ")
		return nil, e
	}
	if want != nil && !ast.OutputType().IsExactType(want) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, &exprError{field: field, expr: expr, msg: fmt.Sprintf("CEL: must evaluate to %s, not %s", want, ast.OutputType())}
	}
	// cel-go ≥ 0.31 plans every program of an environment against one
	// function table; before, each program copied it (≈ 14.5 KB each).
	prog, err := p.env.Program(ast, cel.InterruptCheckFrequency(celconfig.CheckFrequency))
	if err != nil {
		return nil, &exprError{field: field, expr: expr, msg: "CEL program: " + err.Error()}
	}
	return &Expression{field: field, source: expr, program: prog, outputType: ast.OutputType(), env: p}, nil
}

// activation resolves CEL variables for one policy of one request.
type activation struct {
	eval *evaluation
	vars ref.Val
}

var emptyVariables = types.NewStringInterfaceMap(types.DefaultTypeAdapter, map[string]any{})

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "object":
		return a.eval.objectVal(), true
	case "oldObject":
		return a.eval.oldObjectVal(), true
	case "request":
		return a.eval.requestVal(), true
	case "namespaceObject":
		return a.eval.namespaceVal(), true
	case "variables":
		if a.vars == nil {
			return emptyVariables, true
		}
		return a.vars, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// variablesFor returns the lazy variables map of a policy for one request:
// each variable is evaluated on first use and at most once.
func (p *policyEnv) variablesFor(ctx context.Context, a *activation) ref.Val {
	return p.variablesOn(ctx, a.eval, a)
}

// variablesOn is variablesFor with the variables evaluated in act, which
// may bind object to another value than the request's (EvalCELOn).
func (p *policyEnv) variablesOn(ctx context.Context, ev *evaluation, act interpreter.Activation) ref.Val {
	if p.varsType == nil {
		return nil
	}
	m := lazy.NewMapValue(p.varsType.CelType())
	for _, v := range p.variables {
		v := v
		m.Append(v.name, func(*lazy.MapValue) ref.Val {
			val, err := ev.evalCharged(ctx, act, v, &ev.budget)
			if err != nil {
				return types.NewErr("variable %q: %v", v.name, err)
			}
			return val
		})
	}
	return m
}

// declTypeOf maps a checked CEL type to the declaration type of a variable,
// as ValidatingAdmissionPolicy does.
func declTypeOf(t *cel.Type) *apiservercel.DeclType {
	if t == nil {
		return apiservercel.DynType
	}
	switch t {
	case cel.BoolType:
		return apiservercel.BoolType
	case cel.BytesType:
		return apiservercel.BytesType
	case cel.DoubleType:
		return apiservercel.DoubleType
	case cel.DurationType:
		return apiservercel.DurationType
	case cel.IntType:
		return apiservercel.IntType
	case cel.NullType:
		return apiservercel.NullType
	case cel.StringType:
		return apiservercel.StringType
	case cel.TimestampType:
		return apiservercel.TimestampType
	case cel.UintType:
		return apiservercel.UintType
	}
	if t.HasTrait(traits.ContainerType) && t.HasTrait(traits.IndexerType) {
		switch params := t.Parameters(); len(params) {
		case 1:
			return apiservercel.NewListType(declTypeOf(params[0]), -1)
		case 2:
			return apiservercel.NewMapType(declTypeOf(params[0]), declTypeOf(params[1]), -1)
		}
	}
	return apiservercel.DynType
}

// toNative converts a CEL value to plain Go JSON-like values.
func toNative(v ref.Val) (any, error) {
	switch v := v.(type) {
	case types.Null:
		return nil, nil
	case types.String:
		return string(v), nil
	case types.Bool:
		return bool(v), nil
	case types.Int:
		return int64(v), nil
	case types.Uint:
		if uint64(v) > math.MaxInt64 {
			return float64(v), nil
		}
		return int64(v), nil
	case types.Double:
		return float64(v), nil
	case traits.Lister:
		n, _ := v.Size().(types.Int)
		out := make([]any, 0, int(n))
		for it := v.Iterator(); it.HasNext() == types.True; {
			e, err := toNative(it.Next())
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	case traits.Mapper:
		out := map[string]any{}
		for it := v.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			ks, ok := k.(types.String)
			if !ok {
				return nil, fmt.Errorf("map key %v is not a string", k)
			}
			e, err := toNative(v.Get(k))
			if err != nil {
				return nil, err
			}
			out[string(ks)] = e
		}
		return out, nil
	case *types.Err:
		return nil, v
	}
	if s, ok := v.Value().(fmt.Stringer); ok {
		return s.String(), nil
	}
	return nil, fmt.Errorf("unsupported CEL result type %s", v.Type())
}
