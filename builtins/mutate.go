package builtins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/google/cel-go/common"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/parser"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/mutating/patch"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/applyconfigurations"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

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

// Type is Mutating. mutate is not engine.PodOnly: a policy on pods also
// mutates the pod templates of controllers (autogen), its mutations seeing
// the template as a pod.
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
	// Every bad mutation is reported, each located, not the first.
	var errs []error
	for i, m := range args.Mutations {
		field := fmt.Sprintf("mutations[%d]", i)
		switch m.PatchType {
		case admissionregistrationv1.PatchTypeJSONPatch:
			if m.JSONPatch == nil {
				errs = append(errs, c.FieldError(field+".jsonPatch", "is required when patchType is JSONPatch"))
				continue
			}
			if m.ApplyConfiguration != nil {
				errs = append(errs, c.FieldError(field+".applyConfiguration", "must not be set when patchType is JSONPatch"))
			}
			e, err := c.CompileJSONPatch(field+".jsonPatch.expression", m.JSONPatch.Expression)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if path := alwaysAppends(m.JSONPatch.Expression); path != "" {
				errs = append(errs, c.FieldError(field+".jsonPatch.expression",
					"is not idempotent: it always appends (a path ending in %s), so run again on its own result it patches again, "+
						"as the API server's reinvocation would; return [] when the change is already there", path))
				continue
			}
			a.mutations = append(a.mutations, mutation{expr: e})
		case admissionregistrationv1.PatchTypeApplyConfiguration:
			if m.ApplyConfiguration == nil {
				errs = append(errs, c.FieldError(field+".applyConfiguration", "is required when patchType is ApplyConfiguration"))
				continue
			}
			if m.JSONPatch != nil {
				errs = append(errs, c.FieldError(field+".jsonPatch", "must not be set when patchType is ApplyConfiguration"))
			}
			e, err := c.CompileApplyConfiguration(field+".applyConfiguration.expression", m.ApplyConfiguration.Expression)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			a.mutations = append(a.mutations, mutation{expr: e, apply: true})
		case "":
			errs = append(errs, c.FieldError(field+".patchType", "is required: JSONPatch or ApplyConfiguration"))
		default:
			errs = append(errs, c.FieldError(field+".patchType", "must be JSONPatch or ApplyConfiguration, not %q", m.PatchType))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}

// mutateAction is a compiled mutate. It is immutable, hence safe for
// concurrent use.
type mutateAction struct {
	mutations []mutation // in order
}

// mutation is one compiled mutation.
type mutation struct {
	expr  *engine.Expression
	apply bool // ApplyConfiguration; else JSONPatch
}

// builtinTypes converts built-in objects to typed values with their
// schemas, as the API server does, so that applying a configuration merges
// lists by their keys (containers by name). Made on first use: parsing the
// schemas takes time and memory.
var builtinTypes = sync.OnceValue(func() managedfields.TypeConverter {
	return applyconfigurations.NewTypeConverter(clientgoscheme.Scheme)
})

// mutateObjects is what the API server's patcher needs to encode and decode
// an unstructured object: no types of its own.
var mutateObjects = admission.NewObjectInterfacesFromScheme(runtime.NewScheme())

// Run applies the mutations in order with the API server's patchers and
// returns the operations that turn the object into the result.
func (a *mutateAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	obj := ac.Object()
	if !obj.Exists() {
		return skip("the request has no object to mutate"), nil
	}
	var (
		beforeJSON []byte
		cur        *unstructured.Unstructured // nil until a mutation has operations
		attrs      admission.Attributes
		changed    bool // whether cur is no longer the engine's object
	)
	for _, m := range a.mutations {
		e := m.expr
		var val ref.Val
		var err error
		if changed {
			val, err = ac.EvalCELOn(e, cur.Object)
		} else {
			val, err = ac.EvalCEL(e)
		}
		if err != nil {
			return engine.Outcome{}, err
		}
		// No operations leave the object as it is, as in MAP: the common case
		// once the object is mutated, worth no JSON round trip.
		if l, ok := val.(traits.Lister); ok && !m.apply && l.Size() == types.IntZero {
			continue
		}
		if cur == nil {
			var before map[string]any
			if err := obj.Decode(&before); err != nil {
				return engine.Outcome{}, err
			}
			if before == nil {
				return skip("the object is null"), nil
			}
			if beforeJSON, err = json.Marshal(before); err != nil {
				return engine.Outcome{}, err
			}
			cur = &unstructured.Unstructured{Object: before}
			attrs = mutateAttributes(ac.Request, cur)
		}
		va := &admission.VersionedAttributes{Attributes: attrs, VersionedKind: attrs.GetKind()}
		va.VersionedObject.Set(cur)
		req := patch.Request{
			MatchedResource:     attrs.GetResource(),
			VersionedAttributes: va,
			ObjectInterfaces:    mutateObjects,
		}
		patcher := patch.NewJSONPatcher(evaluated{val})
		if m.apply {
			req.TypeConverter = builtinTypes()
			patcher = patch.NewApplyConfigurationPatcher(evaluated{val})
		}
		out, err := patcher.Patch(ac, req, engine.PerCallCostLimit)
		if err != nil {
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
	if err := sortOps(beforeJSON, ops); err != nil {
		return engine.Outcome{}, err
	}
	if len(ops) == 0 {
		return engine.Outcome{Reason: "no change"}, nil
	}
	// The first few operations say what changed; a reason stays one line.
	const shown = 5
	paths := make([]string, 0, min(len(ops), shown+1))
	for _, op := range ops[:min(len(ops), shown)] {
		paths = append(paths, op.Operation+" "+op.Path)
	}
	if len(ops) > shown {
		paths = append(paths, fmt.Sprintf("and %d more", len(ops)-shown))
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

// evaluated hands the API server's patcher a mutation expression's value,
// evaluated by the engine beforehand: in its environment, with the
// policy's variables, charged to the request's cost budget (the patcher's
// own evaluator would charge a budget of its own).
type evaluated struct{ val ref.Val }

// ForInput returns the value; the patcher's arguments describe the same
// request and are not needed.
func (e evaluated) ForInput(context.Context, *admission.VersionedAttributes, *admissionv1.AdmissionRequest, plugincel.OptionalVariableBindings, *corev1.Namespace, int64) (plugincel.EvaluationResult, int64, error) {
	// The patcher discards the budget it is given back.
	return plugincel.EvaluationResult{EvalResult: e.val}, engine.PerCallCostLimit, nil
}

// CompilationErrors is empty: expressions that do not compile fail the load.
func (evaluated) CompilationErrors() []error { return nil }

// alwaysAppends returns the path of an operation that appends to a list
// every time the expression runs, or "": what can be told from its text
// alone, so that a policy that cannot be idempotent is refused when it
// loads. Only a list literal of JSONPatch literals with constant ops,
// none of them a test (which may stop the patch), qualifies: any other
// expression may return [] once the change is there.
func alwaysAppends(expr string) string {
	parsed, errs := parser.Parse(common.NewTextSource(expr))
	if errs != nil && len(errs.GetErrors()) > 0 {
		return ""
	}
	root := parsed.Expr()
	if root.Kind() != celast.ListKind || len(root.AsList().OptionalIndices()) > 0 {
		return ""
	}
	found := ""
	for _, el := range root.AsList().Elements() {
		if el.Kind() != celast.StructKind || el.AsStruct().TypeName() != "JSONPatch" {
			return ""
		}
		var op, path string
		var pathExpr celast.Expr
		for _, f := range el.AsStruct().Fields() {
			sf := f.AsStructField()
			switch sf.Name() {
			case "op":
				op = literalString(sf.Value())
			case "path":
				pathExpr = sf.Value()
			}
		}
		switch op {
		case "":
			return "" // not a constant
		case "test":
			return ""
		case "add", "copy":
			// A path built by concatenation ends in its last operand.
			for pathExpr != nil && pathExpr.Kind() == celast.CallKind && pathExpr.AsCall().FunctionName() == "_+_" {
				args := pathExpr.AsCall().Args()
				pathExpr = args[len(args)-1]
			}
			if pathExpr != nil {
				path = literalString(pathExpr)
			}
			if found == "" && strings.HasSuffix(path, "/-") {
				found = path
			}
		}
	}
	return found
}

// literalString returns the string a literal expression is, or "".
func literalString(e celast.Expr) string {
	if e.Kind() != celast.LiteralKind {
		return ""
	}
	s, _ := e.AsLiteral().(types.String)
	return string(s)
}

// sortOps puts CreatePatch's operations in an order that does not depend
// on map iteration, which CreatePatch's does. Operations whose paths part
// at an object's key touch different members and commute, so they are
// ordered by that key; those that part only at list indices keep
// CreatePatch's order (in a list: removes from the end, adds, then
// changes), which a stable sort on paths with indices made equal keeps.
func sortOps(before []byte, ops []jsonpatch.JsonPatchOperation) error {
	if len(ops) < 2 {
		return nil
	}
	var doc any
	if err := json.Unmarshal(before, &doc); err != nil {
		return err
	}
	keys := make(map[string][]string, len(ops))
	for _, op := range ops {
		keys[op.Path] = memberPath(doc, op.Path)
	}
	sort.SliceStable(ops, func(i, j int) bool {
		return slices.Compare(keys[ops[i].Path], keys[ops[j].Path]) < 0
	})
	return nil
}

// memberPath is a JSON pointer's segments with each list index made ""
// (which sorts first), as doc's lists and objects say; below what doc has,
// the segments are kept.
func memberPath(doc any, pointer string) []string {
	segs := strings.Split(pointer, "/")[1:]
	out := make([]string, len(segs))
	for i, seg := range segs {
		switch c := doc.(type) {
		case []any:
			out[i] = ""
			k, err := strconv.Atoi(seg)
			if err != nil || k < 0 || k >= len(c) {
				doc = nil
				continue
			}
			doc = c[k]
		case map[string]any:
			out[i] = seg
			doc = c[strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")]
		default:
			out[i] = seg
			doc = nil
		}
	}
	return out
}
