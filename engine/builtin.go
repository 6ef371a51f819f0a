package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	celtypes "github.com/google/cel-go/common/types"
	"net/http"
	"strings"

	"github.com/google/cel-go/cel"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"celadon.io/celadon/source"
)

// ActionType says in which admission phase a builtin runs.
type ActionType int

// ActionType values.
const (
	// Mutating builtins run at /mutate and return JSON-patch operations.
	Mutating ActionType = iota + 1
	// Validating builtins run at /validate and return violations.
	Validating
)

func (t ActionType) String() string {
	switch t {
	case Mutating:
		return "mutating"
	case Validating:
		return "validating"
	}
	return "unknown"
}

// Builtin is a named Go action that policies dispatch to. Each builtin lives
// in a file of its own in package builtins and registers itself by name.
type Builtin interface {
	// Name is the value of a policy's spec.action.
	Name() string
	// Type says whether the builtin mutates or validates.
	Type() ActionType
	// Compile checks the policy's spec.with and prepares the action. It runs
	// once when policies load; its errors are load errors.
	Compile(c *CompileContext) (Action, error)
}

// Action is a compiled builtin, bound to one policy's arguments. It must be
// safe for concurrent use: one Action serves every request.
type Action interface {
	Run(ac *ActionContext) (Outcome, error)
}

// ActionFunc adapts a function to the Action interface.
type ActionFunc func(ac *ActionContext) (Outcome, error)

// Run calls f(ac).
func (f ActionFunc) Run(ac *ActionContext) (Outcome, error) { return f(ac) }

// Outcome is what an action reports for one request.
type Outcome struct {
	// Patch holds targeted JSON-patch operations on the current object, for
	// mutating builtins. They must be idempotent by construction: run again on
	// the patched object, the action returns no operations.
	Patch []jsonpatch.JsonPatchOperation
	// Violation is non-empty when a validating builtin finds the request
	// violates the policy. Enforcement turns it into a denial, a warning, or
	// an audit annotation and a warning marked "(audit)".
	Violation string
	// StatusReason is the status reason of a denial for Violation, one of
	// DenialReasons, which sets the response's code as in a
	// ValidatingAdmissionPolicy. Empty is Forbidden (403), as for every
	// builtin but validate.
	StatusReason metav1.StatusReason
	// Warnings are returned to the client whatever the outcome.
	Warnings []string
	// AuditAnnotations are recorded in the API server's audit log as
	// "<policy>.<key>" unless the policy errors or skips: the API server
	// keeps a webhook's key only when it is one qualified-name part, so a
	// key must be one too, and the two together at most 63 characters.
	AuditAnnotations map[string]string
	// Reason is a short human account of what happened, shown by eval.
	Reason string
	// Skipped says the action did not apply to this object; Reason says why.
	Skipped bool
	// Effects are side effects planned for the caller to carry out, when
	// ActionContext.PlanEffects asks for them; see Effect.
	Effects []any
}

// DenialReasons are the status reasons a denial may carry
// (Outcome.StatusReason), in the order a ValidatingAdmissionPolicy
// documents them, with the code the API server answers a failing
// validation with (plugin/policy/validating's reasonToCode). It passes a
// webhook's code and reason on to the client
// (admission/plugin/webhook/errors.ToStatusErr), raising only a code
// under 400 to 400.
var DenialReasons = []struct {
	Reason metav1.StatusReason
	Code   int32
}{
	{metav1.StatusReasonUnauthorized, http.StatusUnauthorized},
	{metav1.StatusReasonForbidden, http.StatusForbidden},
	{metav1.StatusReasonInvalid, http.StatusUnprocessableEntity},
	{metav1.StatusReasonRequestEntityTooLarge, http.StatusRequestEntityTooLarge},
}

// DenialCode returns the code of a status reason of DenialReasons; false
// for any other.
func DenialCode(reason metav1.StatusReason) (int32, bool) {
	for _, r := range DenialReasons {
		if r.Reason == reason {
			return r.Code, true
		}
	}
	return 0, false
}

// NamespaceGetter looks up namespaces, usually from an informer cache.
type NamespaceGetter interface {
	// GetNamespace returns the namespace, or an error satisfying
	// apierrors.IsNotFound when it does not exist.
	GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error)
}

// ObjectGetter looks up other objects in the cluster for builtins that need
// them. Implementations read from caches; see LiveGetter for fresh reads.
type ObjectGetter interface {
	// Get returns the object, or an error satisfying apierrors.IsNotFound.
	Get(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error)
}

// ObjectLister is implemented by ObjectGetters that can also list the
// objects of one namespace, for builtins that must know what a namespace
// holds (e.g. before it is deleted). It is optional: a builtin that needs it
// errors when the cluster cannot list, and its failurePolicy decides.
type ObjectLister interface {
	// List returns, in name order, at most limit objects of the resource in
	// namespace whose labels match selector, and how many match in all, so
	// that a caller can say "and N more" without holding them. The objects
	// may be a cache's own: read them only.
	List(ctx context.Context, gvr schema.GroupVersionResource, namespace string, selector labels.Selector, limit int) (items []*unstructured.Unstructured, total int, err error)
}

// LiveLister is implemented by ObjectListers that can bypass their cache,
// for builtins that must not trust a cache's "none" before they allow.
// One call is one LIST of at most limit objects; total is -1 when more
// match but the API server does not say how many.
type LiveLister interface {
	ListLive(ctx context.Context, gvr schema.GroupVersionResource, namespace string, selector labels.Selector, limit int) (items []*unstructured.Unstructured, total int, err error)
}

// ErrLiveReadLimited is what a LiveGetter answers when the direct reads of
// the whole server are over their rate: a builtin then judges from the
// cache alone, and says so, rather than wait and hold an evaluation slot.
var ErrLiveReadLimited = errors.New("too many direct reads of the API server right now")

// LiveGetter is implemented by ObjectGetters that can bypass their cache,
// for builtins that must re-check before denying on a cache miss.
type LiveGetter interface {
	GetLive(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error)
}

// ObjectPatcher is implemented by ObjectGetters that can also write, for
// builtins whose admission step must be recorded in the cluster so that
// every replica, and every later request, sees it (e.g. when a pod's
// pre-deletion cleanup started). Builtins that use it declare
// SideEffectsNoneOnDryRun and never patch when ActionContext.DryRun. An
// ObjectGetter that cannot write (celadon eval's offline cluster) does not
// implement it; builtins then say what they would have written.
type ObjectPatcher interface {
	// Patch applies a patch of type pt (e.g. types.MergePatchType) to the
	// object and returns it as stored, or the API server's error (a
	// Conflict when a resourceVersion in the patch is stale).
	Patch(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, pt types.PatchType, data []byte) (*unstructured.Unstructured, error)
}

// ActionContext is what an action sees of one request.
type ActionContext struct {
	context.Context
	// Request is the admission request. Use Object and OldObject rather than
	// its raw Object fields: they carry earlier policies' mutations.
	Request *admissionv1.AdmissionRequest
	// Namespace is the request's namespace, or nil for cluster-scoped
	// requests or when it is unknown.
	Namespace *corev1.Namespace
	// Cluster reads other objects; nil when no cluster state is available.
	Cluster ObjectGetter
	// DryRun is true when the request must have no side effects.
	DryRun bool
	// Policy is the name of the policy being run.
	Policy string
	// PlanEffects is true when the caller carries out the effects the
	// action plans (Outcome.Effects), e.g. a controller asking what a
	// policy wants; an effect that cannot be planned is then an error.
	PlanEffects bool

	object, oldObject *workingObject
	eval              *evaluation
	act               *activation
	env               *policyEnv // the policy's, for its variables
	// template is the pod template's path when the action runs on a
	// controller's pod template (autogen.go).
	template string
}

// Template returns the path of the controller's pod template (e.g.
// spec.template) when the policy runs on one, through autogen: Object is
// then the pod the template describes, and the action's operations on it
// are moved to the template. "" on a request's own object. A template,
// unlike a pod's spec, may change on UPDATE.
func (ac *ActionContext) Template() string { return ac.template }

// Object returns the object as the earlier mutating policies left it,
// their patches applied; absent for DELETE and CONNECT. It is read in
// place: an action reads the fields it needs through Get, Str, Elements
// and Range, and Decodes a copy only when it needs much of the object.
// (Only a patch waiting to be applied makes the engine decode it first.)
// Actions never modify it: they return patch operations.
func (ac *ActionContext) Object() Value { return ac.object.Value() }

// OldObject returns the object before an UPDATE or DELETE; absent otherwise.
func (ac *ActionContext) OldObject() Value { return ac.oldObject.Value() }

// Eval evaluates a compiled expression against this request, charging its
// cost to the request's budget. The result is a plain Go value: string,
// int64, float64, bool, nil, []any or map[string]any.
func (ac *ActionContext) Eval(e *Expression) (any, error) {
	return ac.eval.evalNative(ac.Context, ac.act, e)
}

// Holds evaluates a bool expression as a shortcut: true when it is true,
// its cost charged; otherwise (false, an error) its own cost is given back,
// as if it had not run, for the caller to take the long way. The variables
// it evaluated stay charged, once, as they are not evaluated again.
func (ac *ActionContext) Holds(e *Expression) bool {
	v, cost, err := ac.eval.evalCosting(ac.Context, ac.act, e, &ac.eval.budget)
	if err == nil && v == celtypes.True {
		return true
	}
	ac.eval.budget += cost
	return false
}

// EvalString evaluates an expression that must yield a string.
func (ac *ActionContext) EvalString(e *Expression) (string, error) {
	v, err := ac.Eval(e)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: expected string, got %T", e.field, v)
	}
	return s, nil
}

// CompileContext is what a builtin sees of its policy while compiling.
type CompileContext struct {
	// Policy is the policy's name.
	Policy        string
	with          json.RawMessage
	failurePolicy FailurePolicy
	cel           *policyEnv
	// firstField is the first field error this context made: it locates a
	// builtin's error that wraps one with %v, out of errors.As's sight.
	firstField *source.FieldError
}

// FailurePolicy returns the policy's failurePolicy, defaults applied.
func (c *CompileContext) FailurePolicy() FailurePolicy { return c.failurePolicy }

// SpecError returns an error about a field of the policy's spec outside
// with (e.g. "failurePolicy"), for builtins that constrain it.
func (c *CompileContext) SpecError(field string, format string, args ...any) error {
	return c.noted(&source.FieldError{Path: field, Msg: fmt.Sprintf(format, args...)})
}

// With returns the raw JSON of spec.with; nil when absent.
func (c *CompileContext) With() json.RawMessage { return c.with }

// DecodeWith strictly decodes spec.with into v: unknown fields, duplicate
// fields and type mismatches are errors naming the field. The error is a
// source.FieldErrors, each of which the loader reports at its line.
func (c *CompileContext) DecodeWith(v any) error { return c.DecodeField("", c.with, v) }

// DecodeField strictly decodes raw, the part of spec.with at field (e.g.
// "containers[1]"), as DecodeWith decodes the whole.
func (c *CompileContext) DecodeField(field string, raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	errs := source.Decode(raw, v).Within(withField(field))
	if len(errs) == 0 {
		return nil
	}
	c.noted(errs[0])
	return errs
}

// FieldError returns an error about a field of spec.with (a dotted path such
// as "containers[1].name"), so the loader can point at its line.
func (c *CompileContext) FieldError(field string, format string, args ...any) error {
	return c.noted(&source.FieldError{Path: withField(field), Msg: fmt.Sprintf(format, args...)})
}

func (c *CompileContext) noted(e *source.FieldError) *source.FieldError {
	if c.firstField == nil {
		c.firstField = e
	}
	return e
}

// withField is the path in spec of a field of spec.with.
func withField(field string) string {
	if field == "" || strings.HasPrefix(field, "[") {
		return "with" + field
	}
	return "with." + field
}

// CompileConjunction compiles "all of parts hold": one program for bool
// expressions this context compiled, each already type-checked, so the
// conjunction is not checked again.
func (c *CompileContext) CompileConjunction(field string, parts []*Expression) (*Expression, error) {
	terms := make([]string, len(parts))
	for i, p := range parts {
		terms[i] = "(" + p.source + ")"
	}
	return c.cel.compileDyn("spec.with."+field, strings.Join(terms, " && "), cel.BoolType)
}

// CompileExpression compiles a CEL expression found at field of spec.with,
// in the policy's environment (object, oldObject, request, namespaceObject,
// variables). want restricts the output type; nil accepts any.
func (c *CompileContext) CompileExpression(field, expr string, want *cel.Type) (*Expression, error) {
	// The error is an *exprError naming the absolute field, so the loader can
	// point at the line within the expression.
	return c.cel.compile("spec.with."+field, expr, want)
}
