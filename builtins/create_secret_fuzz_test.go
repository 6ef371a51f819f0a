package builtins

import (
	"context"
	"encoding/json"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/engine"
)

// FuzzCreateSecret checks, on arbitrary namespaces, createSecret's
// promises: the patch applies with a standard JSON-patch library and, run
// again on the result, the policies patch nothing; and planning the
// namespace's Secrets, as the reconciler does, never fails the evaluation.
func FuzzCreateSecret(f *testing.F) {
	snap, err := engine.Compile([]engine.File{{Name: "fuzz.yaml", Data: []byte(
		secretPolicy("pull-secret", regcredWith) + "---\n" + secretPolicy("tmpl", `    name: cfg
    stringData: {owner: "${{ object.metadata.annotations['owner'] }}", ns: "${{ object.metadata.name }}"}
`))}}, engine.Options{Registry: Registry()})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"kind":"Namespace","metadata":{"name":"team-a","labels":{"team":"a"}}}`))
	f.Add([]byte(`{"kind":"Namespace","metadata":{"name":"team-a","labels":{"team":"a"},"annotations":{"owner":"x","celadon.io/secrets":"other/x"}}}`))
	f.Add([]byte(`{"kind":"Namespace","metadata":{"generateName":"t-","labels":{"team":""},"annotations":null}}`))
	f.Add([]byte(`{"kind":"Namespace","metadata":{"labels":{"team":"a"},"annotations":{"celadon.io/secrets":""}},"status":{"phase":"Terminating"}}`))
	f.Fuzz(func(t *testing.T, obj []byte) {
		var probe map[string]any
		if json.Unmarshal(obj, &probe) != nil || probe == nil {
			return
		}
		req := &admissionv1.AdmissionRequest{
			UID:       "fuzz",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Namespace"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "namespaces"},
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: obj},
		}
		d, err := snap.Evaluate(context.Background(), req, engine.EvalOptions{})
		if err != nil {
			return
		}
		if len(d.Patch) > 0 {
			p, err := d.PatchJSON()
			if err != nil {
				t.Fatal(err)
			}
			patch, err := jsonpatch.DecodePatch(p)
			if err != nil {
				t.Fatalf("patch %s does not decode: %v", p, err)
			}
			patched, err := patch.Apply(obj)
			if err != nil {
				t.Fatalf("patch %s does not apply to %s: %v", p, obj, err)
			}
			again := *req
			again.Object = runtime.RawExtension{Raw: patched}
			d2, err := snap.Evaluate(context.Background(), &again, engine.EvalOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(d2.Patch) != 0 {
				p2, _ := d2.PatchJSON()
				t.Fatalf("not idempotent: %s patched again with %s (%s)", patched, p2, statesOf(d2))
			}
		}
		var ns corev1.Namespace
		if json.Unmarshal(obj, &ns) != nil {
			return // not a Namespace the reconciler could read
		}
		if _, _, err := PlanSecrets(context.Background(), snap, &ns, engine.EvalOptions{}); err != nil {
			t.Fatalf("PlanSecrets on %s: %v", obj, err)
		}
	})
}
