package builtins

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/mutating/patch"
	"k8s.io/apiserver/pkg/authentication/user"

	"celadon.io/celadon/engine"
)

func init() { register(mutate{}) }

// mutate runs a MutatingAdmissionPolicy's mutations, so that a MAP's
// spec.mutations can be pasted into spec.with. The API server's own patcher
// applies them; the builtin returns the difference as targeted operations.
type mutate struct{}

// mutateArgs is mutate's spec.with: MAP's own types, so its fields and
// their meaning are MAP's.
type mutateArgs struct {
	// Mutations are applied in order, each to the object the previous one
	// left.
	Mutations []admissionregistrationv1.Mutation `json:"mutations"`
}

// Name is the policy's spec.action.
func (mutate) Name() string { return "mutate" }

// Type is Mutating.
func (mutate) Type() engine.ActionType { return engine.Mutating }

// Compile checks the mutations as MAP's validation does and compiles their
// expressions in MAP's environment.
func (mutate) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args mutateArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	if len(args.Mutations) == 0 {
		return nil, c.FieldError("mutations", "at least one mutation is required")
	}
	a := &mutateAction{}
	for i, m := range args.Mutations {
		field := fmt.Sprintf("mutations[%d]", i)
		switch m.PatchType {
		case admissionregistrationv1.PatchTypeJSONPatch:
			if m.JSONPatch == nil {
				return nil, c.FieldError(field+".jsonPatch", "is required when patchType is JSONPatch")
			}
			if m.ApplyConfiguration != nil {
				return nil, c.FieldError(field+".applyConfiguration", "must not be set when patchType is JSONPatch")
			}
			e, err := c.CompileJSONPatch(field+".jsonPatch.expression", m.JSONPatch.Expression)
			if err != nil {
				return nil, err
			}
			a.patches = append(a.patches, e)
		case admissionregistrationv1.PatchTypeApplyConfiguration:
			// Applying a configuration merges lists by their keys (containers
			// by name), which needs the types' schemas; without them it would
			// replace whole lists.
			return nil, c.FieldError(field+".patchType", "ApplyConfiguration is not supported yet: use JSONPatch")
		case "":
			return nil, c.FieldError(field+".patchType", "is required: JSONPatch")
		default:
			return nil, c.FieldError(field+".patchType", "must be JSONPatch or ApplyConfiguration, not %q", m.PatchType)
		}
	}
	return a, nil
}

// mutateAction is a compiled mutate. It is immutable, hence safe for
// concurrent use.
type mutateAction struct {
	patches []*engine.Expression // jsonPatch.expression, in order
}

// mutateObjects is what the API server's patcher needs to encode and decode
// an unstructured object: no types of its own.
var mutateObjects = admission.NewObjectInterfacesFromScheme(runtime.NewScheme())

// Run applies the mutations in order with the API server's JSON patcher and
// returns the operations that turn the object into the result.
func (a *mutateAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	obj := ac.Object()
	if !obj.Exists() {
		return skip("the request has no object to mutate"), nil
	}
	var before map[string]any
	if err := obj.Decode(&before); err != nil {
		return engine.Outcome{}, err
	}
	if before == nil {
		return skip("the object is null"), nil
	}
	beforeJSON, err := json.Marshal(before)
	if err != nil {
		return engine.Outcome{}, err
	}
	cur := &unstructured.Unstructured{Object: before}
	attrs := mutateAttributes(ac.Request, cur)
	changed := false // whether cur is no longer the engine's object
	for _, e := range a.patches {
		va := &admission.VersionedAttributes{Attributes: attrs, VersionedKind: attrs.GetKind()}
		va.VersionedObject.Set(cur)
		req := patch.Request{
			MatchedResource:     attrs.GetResource(),
			VersionedAttributes: va,
			ObjectInterfaces:    mutateObjects,
		}
		ev := &mutateEvaluator{ac: ac, expr: e}
		if changed {
			ev.object = cur.Object
		}
		out, err := patch.NewJSONPatcher(ev).Patch(ac, req, engine.PerCallCostLimit)
		switch {
		case ev.err != nil:
			return engine.Outcome{}, ev.err // names the expression
		case err != nil:
			return engine.Outcome{}, fmt.Errorf("%s: %w", e.Field(), err)
		}
		u, ok := out.(*unstructured.Unstructured)
		if !ok {
			return engine.Outcome{}, fmt.Errorf("%s: the patcher returned a %T", e.Field(), out)
		}
		if u != cur {
			cur, changed = u, true
		}
	}
	if !changed {
		return engine.Outcome{Reason: "no change"}, nil
	}
	afterJSON, err := json.Marshal(cur.Object)
	if err != nil {
		return engine.Outcome{}, err
	}
	ops, err := jsonpatch.CreatePatch(beforeJSON, afterJSON)
	if err != nil {
		return engine.Outcome{}, err
	}
	if len(ops) == 0 {
		return engine.Outcome{Reason: "no change"}, nil
	}
	paths := make([]string, len(ops))
	for i, op := range ops {
		paths[i] = op.Operation + " " + op.Path
	}
	return engine.Outcome{Patch: ops, Reason: strings.Join(paths, ", ")}, nil
}

// mutateAttributes is the request as the API server's patcher reads it.
// Only its object counts: the expressions read the request from the engine.
func mutateAttributes(r *admissionv1.AdmissionRequest, obj runtime.Object) admission.Attributes {
	if r == nil {
		r = &admissionv1.AdmissionRequest{}
	}
	kind := schema.GroupVersionKind{Group: r.Kind.Group, Version: r.Kind.Version, Kind: r.Kind.Kind}
	resource := schema.GroupVersionResource{Group: r.Resource.Group, Version: r.Resource.Version, Resource: r.Resource.Resource}
	dryRun := r.DryRun != nil && *r.DryRun
	return admission.NewAttributesRecord(obj, nil, kind, r.Namespace, r.Name, resource, r.SubResource,
		admission.Operation(r.Operation), nil, dryRun, &user.DefaultInfo{Name: r.UserInfo.Username})
}

// mutateEvaluator evaluates a jsonPatch.expression for the API server's
// patcher, through the engine: its environment, the policy's variables, and
// the request's cost budget, which the patcher's own evaluator would not
// charge.
type mutateEvaluator struct {
	ac   *engine.ActionContext
	expr *engine.Expression
	// object is what object is bound to when an earlier mutation of the
	// policy changed it; nil: the engine's object.
	object map[string]any
	err    error // the evaluation's
}

// ForInput evaluates the expression; the patcher's arguments describe the
// same request and are not needed.
func (m *mutateEvaluator) ForInput(context.Context, *admission.VersionedAttributes, *admissionv1.AdmissionRequest, plugincel.OptionalVariableBindings, *corev1.Namespace, int64) (plugincel.EvaluationResult, int64, error) {
	var res plugincel.EvaluationResult
	var err error
	if m.object != nil {
		res.EvalResult, err = m.ac.EvalCELOn(m.expr, m.object)
	} else {
		res.EvalResult, err = m.ac.EvalCEL(m.expr)
	}
	if err != nil {
		m.err = err
		return res, 0, err
	}
	// The patcher discards the budget it is given back: the engine charged it.
	return res, engine.PerCallCostLimit, nil
}

// CompilationErrors is empty: expressions that do not compile fail the load.
func (m *mutateEvaluator) CompilationErrors() []error { return nil }
