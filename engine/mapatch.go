package engine

import (
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
	"k8s.io/apiserver/pkg/cel/common"
	"k8s.io/apiserver/pkg/cel/library"
	"k8s.io/apiserver/pkg/cel/mutation"
)

// jsonPatchListType is what a MutatingAdmissionPolicy's jsonPatch.expression
// must evaluate to.
var jsonPatchListType = cel.ListType(cel.ObjectType("JSONPatch"))

// sharedPatchBase is the environment of policies without variables.
// Made on first use: building environments costs milliseconds.
var sharedPatchBase = sync.OnceValues(func() (*policyEnv, error) {
	_, shared, err := sharedEnvs()
	if err != nil {
		return nil, err
	}
	return &policyEnv{env: shared}, nil
})

// withPatchTypes returns p extended as the API server extends
// MutatingAdmissionPolicy's environment: the JSONPatch type, Object
// initializers and jsonpatch.escapeKey. Its type-checking environments are
// extended alike.
func (p *policyEnv) withPatchTypes() (*policyEnv, error) {
	base, err := p.patchEnv()
	if err != nil || len(p.typed) == 0 {
		return base, err
	}
	out := &policyEnv{env: base.env, varsType: base.varsType, variables: base.variables, warnings: p.warnings}
	for _, t := range p.typed {
		tp, err := t.patchEnv()
		if err != nil {
			return nil, err
		}
		out.typed = append(out.typed, tp)
	}
	return out, nil
}

// patchEnv is p extended with the types of withPatchTypes, made once.
func (p *policyEnv) patchEnv() (*policyEnv, error) {
	if p.varsType == nil && p.kind.Empty() {
		// Policies without variables share one, as they share p.env.
		base, err := sharedPatchBase()
		if err != nil {
			return nil, err
		}
		p = base
	}
	p.patchOnce.Do(func() {
		env, err := p.env.Extend(
			common.ResolverEnvOption(&mutation.DynamicTypeResolver{}),
			library.JSONPatch(),
		)
		if err != nil {
			p.patchErr = err
			return
		}
		p.patch = &policyEnv{env: env, varsType: p.varsType, variables: p.variables, kind: p.kind}
	})
	return p.patch, p.patchErr
}

// CompileJSONPatch compiles a MutatingAdmissionPolicy's jsonPatch.expression
// found at field of spec.with, in the policy's environment extended as MAP
// extends its own. As in MAP, it must be typed list(JSONPatch): dyn is an
// error.
func (c *CompileContext) CompileJSONPatch(field, expr string) (*Expression, error) {
	return c.compileMutation(field, expr, jsonPatchListType)
}

// applyConfigurationType is what an applyConfiguration.expression must
// evaluate to: an Object initializer.
var applyConfigurationType = cel.ObjectType("Object")

// CompileApplyConfiguration compiles a MutatingAdmissionPolicy's
// applyConfiguration.expression as CompileJSONPatch compiles a
// jsonPatch.expression; it must be typed Object.
func (c *CompileContext) CompileApplyConfiguration(field, expr string) (*Expression, error) {
	return c.compileMutation(field, expr, applyConfigurationType)
}

func (c *CompileContext) compileMutation(field, expr string, want *cel.Type) (*Expression, error) {
	absField := "spec.with." + field
	pe, err := c.cel.withPatchTypes()
	if err != nil {
		return nil, &exprError{field: absField, expr: expr, msg: "CEL environment: " + err.Error()}
	}
	e, err := pe.compile(absField, expr, want)
	if err != nil {
		return nil, err
	}
	if !e.outputType.IsExactType(want) {
		return nil, &exprError{field: absField, expr: expr, msg: "CEL: must evaluate to " + want.String() + ", not " + e.outputType.String()}
	}
	return e, nil
}

// EvalCEL evaluates a compiled expression against this request, charging
// its cost to the request's budget, and returns the CEL value itself, for
// builtins that hand it to the API server's own code.
func (ac *ActionContext) EvalCEL(e *Expression) (ref.Val, error) {
	return ac.eval.evalVal(ac.Context, ac.act, e)
}

// EvalCELOn is EvalCEL with the variable object bound to obj, a plain JSON
// value (as unstructured objects hold), rather than to the request's
// object: for a mutation that must see the ones before it in its policy.
// The policy's variables are evaluated anew on obj, as the API server
// binds a MutatingAdmissionPolicy's variables for each mutation.
func (ac *ActionContext) EvalCELOn(e *Expression, obj any) (ref.Val, error) {
	a := &objectOverride{activation: ac.act, object: types.DefaultTypeAdapter.NativeToValue(obj)}
	if ac.env != nil {
		a.vars = ac.env.variablesOn(ac.Context, ac.eval, a)
	}
	return ac.eval.evalCharged(ac.Context, a, e, &ac.eval.budget)
}

// objectOverride binds object, and variables when vars is set, to other
// values.
type objectOverride struct {
	*activation
	object ref.Val
	vars   ref.Val
}

func (o *objectOverride) ResolveName(name string) (any, bool) {
	switch name {
	case "object":
		return o.object, true
	case "variables":
		if o.vars != nil {
			return o.vars, true
		}
	}
	return o.activation.ResolveName(name)
}

func (o *objectOverride) Parent() interpreter.Activation { return nil }

// Field is where the expression is in its policy, e.g.
// "with.mutations[0].jsonPatch.expression", for messages.
func (e *Expression) Field() string { return exprName(e) }
