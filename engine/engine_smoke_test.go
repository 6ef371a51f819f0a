package engine

import (
	"context"
	"encoding/json"
	"testing"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

type labelBuiltin struct{}

func (labelBuiltin) Name() string     { return "setLabel" }
func (labelBuiltin) Type() ActionType { return Mutating }
func (labelBuiltin) Compile(c *CompileContext) (Action, error) {
	var args struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	return ActionFunc(func(ac *ActionContext) (Outcome, error) {
		if labelsOf(ac.Object)[args.Key] == args.Value {
			return Outcome{Reason: "already set"}, nil
		}
		return Outcome{Patch: []jsonpatch.JsonPatchOperation{Op("add", "/metadata/labels", map[string]any{args.Key: args.Value})}}, nil
	}), nil
}

func TestSmoke(t *testing.T) {
	reg := NewRegistry()
	reg.Register(labelBuiltin{})
	snap, err := Compile([]File{{Name: "p.yaml", Data: []byte(`
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: lbl}
spec:
  match:
    resources: [pods]
    operations: [CREATE]
    conditions:
    - name: named
      expression: object.metadata.name.startsWith("web")
  action: setLabel
  with: {key: a, value: b}
`)}}, Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := json.Marshal(map[string]any{"metadata": map[string]any{"name": "web-0"}})
	req := &admissionv1.AdmissionRequest{Operation: admissionv1.Create, Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Object: runtime.RawExtension{Raw: obj}}
	d, err := snap.Evaluate(context.Background(), req, EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allowed || len(d.Patch) != 1 || d.Results[0].State != StatePass {
		t.Fatalf("decision %+v", d)
	}
}
