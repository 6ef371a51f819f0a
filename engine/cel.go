package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/interpreter"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/version"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	apiservercel "k8s.io/apiserver/pkg/cel"
	"k8s.io/apiserver/pkg/cel/environment"
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
		envs.withoutVariables, envs.err = baseEnvSet(cel.Variable("object", cel.DynType), cel.Variable("oldObject", cel.DynType), nil)
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

// baseEnvSet declares object and oldObject as given, request and
// namespaceObject; objectType, when not nil, is the type of object.
func baseEnvSet(object, oldObject cel.EnvOption, objectType *apiservercel.DeclType) (*environment.EnvSet, error) {
	requestType := plugincel.BuildRequestType()
	namespaceType := plugincel.BuildNamespaceType()
	declTypes := []*apiservercel.DeclType{namespaceType, requestType}
	if objectType != nil {
		declTypes = append(declTypes, objectType)
	}
	base := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
	return base.Extend(environment.VersionedOptions{
		IntroducedVersion: version.MajorMinor(1, 0),
		EnvOptions: []cel.EnvOption{
			object,
			oldObject,
			cel.Variable("namespaceObject", namespaceType.CelType()),
			cel.Variable("request", requestType.CelType()),
		},
		DeclTypes: declTypes,
	})
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
	// metered says whether programs are planned with a meter (meter.go);
	// MutatingAdmissionPolicy's patch environments are not, as their
	// types are their own.
	metered bool

	// kind is the kind object is typed as in a type-checking
	// environment; empty in the policy's own, where object is dyn.
	kind schema.GroupVersionKind
	// typed are the type-checking environments of the policy, one for
	// each kind it matches whose schema is known: every expression is
	// compiled in them too, only to check it (typeCheck).
	typed []*policyEnv
	// warnings collects the expressions that type-check against some of
	// the typed environments only, shared with withPatchTypes' copies.
	warnings *[]error

	// patch is this environment as MutatingAdmissionPolicy extends it, made
	// on first use; see withPatchTypes.
	patchOnce sync.Once
	patch     *policyEnv
	patchErr  error

	// varsIx is the index of variables, made on first use; see
	// lazyVariables.
	varsOnce sync.Once
	varsIx   *variablesIndex
}

func newPolicyEnv(vars []Variable, kinds []*kindEnv) (*policyEnv, []error) {
	without, shared, err := sharedEnvs()
	if err != nil {
		return nil, []error{fmt.Errorf("CEL environment: %v", err)}
	}
	if len(vars) == 0 {
		if len(kinds) == 0 {
			return &policyEnv{env: shared, metered: meterPrograms}, nil
		}
		pe := &policyEnv{env: shared, warnings: new([]error), metered: meterPrograms}
		for _, k := range kinds {
			pe.typed = append(pe.typed, k.shared)
		}
		return pe, nil
	}
	pe, err := variablesEnv(without)
	if err != nil {
		return nil, []error{fmt.Errorf("CEL environment: %v", err)}
	}
	pe.warnings, pe.metered = new([]error), meterPrograms
	for _, k := range kinds {
		t, err := variablesEnv(k.set)
		if err != nil {
			return nil, []error{fmt.Errorf("CEL environment of %s: %v", k.gvk, err)}
		}
		t.kind = k.gvk
		pe.typed = append(pe.typed, t)
	}
	var errs []error
	for i, v := range vars {
		field := fmt.Sprintf("spec.variables[%d].expression", i)
		// Each variable sees the ones declared before it, as in
		// ValidatingAdmissionPolicy: its type is added after it compiles,
		// in each type-checking environment the type it has there.
		e, err := pe.compileDyn(field, v.Expression, nil)
		var types []*cel.Type
		if err == nil {
			types, err = pe.typeCheck(field, v.Expression, nil)
		}
		for j, t := range pe.typed {
			dt := apiservercel.DynType
			if err == nil && types[j] != nil {
				dt = declTypeOf(types[j])
			}
			t.varsType.Fields[v.Name] = apiservercel.NewDeclField(v.Name, dt, true, nil, nil)
		}
		if err != nil {
			errs = append(errs, err)
			pe.varsType.Fields[v.Name] = apiservercel.NewDeclField(v.Name, apiservercel.DynType, true, nil, nil)
			continue
		}
		e.name = v.Name
		pe.varsType.Fields[v.Name] = apiservercel.NewDeclField(v.Name, declTypeOf(e.outputType), true, nil, nil)
		pe.variables = append(pe.variables, e)
	}
	return pe, errs
}

// variablesEnv is set extended with a variables object of its own, whose
// fields the policy's variables add as they compile.
func variablesEnv(set *environment.EnvSet) (*policyEnv, error) {
	vset, varsType, err := extendWithVariables(set)
	if err != nil {
		return nil, err
	}
	env, err := vset.Env(environment.StoredExpressions)
	if err != nil {
		return nil, err
	}
	return &policyEnv{env: env, varsType: varsType}, nil
}

// Expression is a compiled CEL expression of a policy.
type Expression struct {
	field      string
	name       string
	source     string
	program    cel.Program
	metered    bool
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

// compile compiles an expression of the policy: the program that runs, with
// object as dyn, once it type-checks (typeCheck).
func (p *policyEnv) compile(field, expr string, want *cel.Type) (*Expression, error) {
	e, err := p.compileDyn(field, expr, want)
	if err != nil {
		return nil, err
	}
	if _, err := p.typeCheck(field, expr, want); err != nil {
		return nil, err
	}
	return e, nil
}

// compileDyn compiles an expression with object as dyn.
func (p *policyEnv) compileDyn(field, expr string, want *cel.Type) (*Expression, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, &exprError{field: field, expr: expr, msg: "expression is empty"}
	}
	ast, issues := p.env.Compile(expr)
	if issues != nil && issues.Err() != nil {
		return nil, issuesError(field, expr, issues, "")
	}
	var err error
	if err := checkOutput(field, expr, ast.OutputType(), want, ""); err != nil {
		return nil, err
	}
	// cel-go ≥ 0.31 plans every program of an environment against one
	// function table; before, each program copied it (≈ 14.5 KB each).
	var prog cel.Program
	if p.metered {
		var env *cel.Env
		if env, err = programEnv(); err == nil {
			prog, err = meteredProgram(env, ast)
		}
	} else {
		prog, err = p.env.Program(ast, cel.InterruptCheckFrequency(celconfig.CheckFrequency))
	}
	if err != nil {
		return nil, &exprError{field: field, expr: expr, msg: "CEL program: " + err.Error()}
	}
	return &Expression{field: field, source: expr, program: prog, metered: p.metered, outputType: ast.OutputType(), env: p}, nil
}

// checkOutput checks an expression's type against the one wanted, if any;
// dyn passes.
func checkOutput(field, expr string, got, want *cel.Type, kind string) error {
	if want == nil || got.IsExactType(want) || got.IsExactType(cel.DynType) {
		return nil
	}
	return &exprError{field: field, expr: expr, msg: fmt.Sprintf("CEL: must evaluate to %s, not %s%s", want, got, kind)}
}

// issuesError is the error of CEL's issues, located at the first one CEL
// locates; kind, if not empty, says which kind object was typed as.
func issuesError(field, expr string, issues *cel.Issues, kind string) *exprError {
	e := &exprError{field: field, expr: expr}
	var msgs []string
	located := false
	for _, ce := range issues.Errors() {
		if !located && ce.Location != nil && ce.Location.Line() > 0 {
			e.offset, located = exprOffset(expr, ce.Location.Line(), ce.Location.Column()), true
		}
		if !slices.Contains(msgs, ce.Message) { // a field used thrice is undefined once
			msgs = append(msgs, ce.Message)
		}
	}
	e.msg = "CEL: " + strings.Join(msgs, "; ") + kind
	return e
}

// typeCheck compiles an expression in each type-checking environment of
// the policy, where object has the type of a kind the policy matches, and
// returns its type in each (nil where it does not compile). An expression
// that compiles against none of them is an error: the error against the
// first. One that compiles against some is not, as the policy may guard
// the rest (a field of one kind only); the API server's type checking
// warns of those.
func (p *policyEnv) typeCheck(field, expr string, want *cel.Type) ([]*cel.Type, error) {
	if len(p.typed) == 0 {
		return nil, nil
	}
	types := make([]*cel.Type, len(p.typed))
	var first error
	for i, t := range p.typed {
		kind := fmt.Sprintf(" (object is a %s)", typeNameOf(t.kind))
		ast, issues := t.env.Compile(expr)
		var err error
		if issues != nil && issues.Err() != nil {
			err = issuesError(field, expr, issues, kind)
		} else {
			err = checkOutput(field, expr, ast.OutputType(), want, kind)
		}
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		types[i] = ast.OutputType()
	}
	var ok []string
	for i, t := range types {
		if t != nil {
			ok = append(ok, typeNameOf(p.typed[i].kind))
		}
	}
	if len(ok) == 0 {
		return types, first
	}
	if first != nil && p.warnings != nil {
		var ee *exprError
		if errors.As(first, &ee) {
			w := *ee
			w.msg += "; it type-checks against " + strings.Join(ok, ", ")
			*p.warnings = append(*p.warnings, &w)
		}
	}
	return types, nil
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
	return &lazyVariables{p: p, ix: p.variablesIndex(), ctx: ctx, ev: ev, act: act, vals: make([]ref.Val, len(p.variables))}
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
