package builtins

import (
	"context"
	"encoding/json"
	"testing"

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
		checkPatchPromises(t, snap, req)
		var ns corev1.Namespace
		if json.Unmarshal(obj, &ns) != nil {
			return // not a Namespace the reconciler could read
		}
		if _, _, err := PlanSecrets(context.Background(), snap, &ns, engine.EvalOptions{}); err != nil {
			t.Fatalf("PlanSecrets on %s: %v", obj, err)
		}
	})
}
