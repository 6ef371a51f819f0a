package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// testRegistry holds test-only builtins exercising every engine path.
func testRegistry() *Registry {
	r := NewRegistry()
	r.Register(setLabel{})
	r.Register(violate{})
	r.Register(explode{})
	r.Register(badPatch{})
	return r
}

// setLabel adds metadata.labels[key]=value (or its CEL valueExpression).
type setLabel struct{}

func (setLabel) Name() string     { return "setLabel" }
func (setLabel) Type() ActionType { return Mutating }
func (setLabel) Compile(c *CompileContext) (Action, error) {
	var args struct {
		Key             string `json:"key"`
		Value           string `json:"value"`
		ValueExpression string `json:"valueExpression"`
	}
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	if args.Key == "" {
		return nil, c.FieldError("key", "is required")
	}
	var expr *Expression
	if args.ValueExpression != "" {
		var err error
		if expr, err = c.CompileExpression("valueExpression", args.ValueExpression, cel.StringType); err != nil {
			return nil, err
		}
	}
	return ActionFunc(func(ac *ActionContext) (Outcome, error) {
		value := args.Value
		if expr != nil {
			v, err := ac.EvalString(expr)
			if err != nil {
				return Outcome{}, err
			}
			value = value + v
		}
		// Through Object, as builtins read a few fields: the object is
		// decoded only when a later reader needs the patch applied.
		labels := ac.Object().Get("metadata").Get("labels")
		if s, ok := labels.Get(args.Key).Str(); ok && s == value {
			return Outcome{Reason: "label already set"}, nil
		}
		if !labels.IsObject() {
			return Outcome{Patch: []JSONPatchOp{Op("add", "/metadata/labels", map[string]any{args.Key: value})}, Reason: "labels added"}, nil
		}
		return Outcome{Patch: []JSONPatchOp{Op("add", "/metadata/labels/"+EscapePointer(args.Key), value)}, Reason: "label set"}, nil
	}), nil
}

// violate reports with.message as a violation, and with.annotations as
// audit annotations.
type violate struct{}

func (violate) Name() string     { return "violate" }
func (violate) Type() ActionType { return Validating }
func (violate) Compile(c *CompileContext) (Action, error) {
	var args struct {
		Message     string            `json:"message"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	return ActionFunc(func(*ActionContext) (Outcome, error) {
		return Outcome{Violation: args.Message, AuditAnnotations: args.Annotations}, nil
	}), nil
}

// explode panics or fails as told.
type explode struct{}

func (explode) Name() string     { return "explode" }
func (explode) Type() ActionType { return Mutating }
func (explode) Compile(c *CompileContext) (Action, error) {
	var args struct {
		Panic bool `json:"panic"`
	}
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	return ActionFunc(func(*ActionContext) (Outcome, error) {
		if args.Panic {
			var m map[string]int
			m["boom"]++ // a real nil-map panic
		}
		return Outcome{}, errors.New("exploded")
	}), nil
}

// badPatch returns a patch that cannot apply.
type badPatch struct{}

func (badPatch) Name() string     { return "badPatch" }
func (badPatch) Type() ActionType { return Mutating }
func (badPatch) Compile(*CompileContext) (Action, error) {
	return ActionFunc(func(*ActionContext) (Outcome, error) {
		return Outcome{Patch: []JSONPatchOp{Op("replace", "/no/such/path", 1)}}, nil
	}), nil
}

func policyYAML(name, body string) string {
	return fmt.Sprintf("apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata:\n  name: %s\nspec:\n%s", name, body)
}

func mustCompile(t testing.TB, docs ...string) *Snapshot {
	t.Helper()
	snap, err := Compile([]File{{Name: "policies.yaml", Data: []byte(strings.Join(docs, "\n---\n"))}}, Options{Registry: testRegistry()})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return snap
}

func pod(name string, labels map[string]string) map[string]any {
	md := map[string]any{"name": name, "namespace": "default"}
	if labels != nil {
		l := map[string]any{}
		for k, v := range labels {
			l[k] = v
		}
		md["labels"] = l
	}
	return map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": md,
		"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "nginx"}}}}
}

func raw(t testing.TB, v any) runtime.RawExtension {
	t.Helper()
	if v == nil {
		return runtime.RawExtension{}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return runtime.RawExtension{Raw: b}
}

func podRequest(t testing.TB, op admissionv1.Operation, obj, old map[string]any) *admissionv1.AdmissionRequest {
	return &admissionv1.AdmissionRequest{
		UID:       "uid-1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Name:      "web-0",
		Namespace: "default",
		Operation: op,
		UserInfo:  authnUser("alice"),
		Object:    raw(t, obj),
		OldObject: raw(t, old),
	}
}

type namespaces map[string]map[string]string

func (n namespaces) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	l, ok := n[name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}, nil
}

func evaluate(t testing.TB, snap *Snapshot, req *admissionv1.AdmissionRequest, opts EvalOptions) *Decision {
	t.Helper()
	d, err := snap.Evaluate(context.Background(), req, opts)
	if err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	return d
}

func states(d *Decision) string {
	var s []string
	for _, r := range d.Results {
		s = append(s, r.Policy+"="+string(r.State))
	}
	return strings.Join(s, ",")
}

func authnUser(name string) authenticationv1.UserInfo {
	return authenticationv1.UserInfo{Username: name, Groups: []string{"system:authenticated"}}
}
