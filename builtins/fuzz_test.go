package builtins

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/engine"
)

// FuzzMutatingBuiltins checks, on arbitrary pods, the two promises every
// mutating builtin makes: the patch applies cleanly to the input with a
// standard JSON-patch library, giving the object the engine saw; and running
// the policies again on the result yields no patch (when none errored).
// Each pod is also checked as the pod template of a Deployment.
//
// The policies are derived from the registry: every golden example and
// every library policy of a registered mutating builtin that applies to pod
// CREATEs, each on its own, the library's composed, and the first example
// of each builtin composed in one set, so that their patches also compose.
func FuzzMutatingBuiltins(f *testing.F) {
	sets := podMutationSets(f)
	if pod, err := os.ReadFile("../engine/testdata/pod.json"); err == nil {
		f.Add(pod)
	}
	seeds, _ := filepath.Glob("../examples/*/object.yaml")
	for _, s := range seeds {
		if y, err := os.ReadFile(s); err == nil {
			if j, err := yaml.YAMLToJSON(y); err == nil {
				f.Add(j)
			}
		}
	}
	f.Add([]byte(`{"kind":"Pod","metadata":{"name":"x-1"},"spec":{"containers":[{"name":"a","env":null}]}}`))
	f.Add([]byte(`{"kind":"Pod","metadata":{"name":"x-2","labels":{"apps.kubernetes.io/pod-index":"7"},"ownerReferences":[{"kind":"StatefulSet"}]},"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":1,"memory":"1Gi"}}}]}}`))
	f.Fuzz(func(t *testing.T, obj []byte) {
		var probe map[string]any
		if json.Unmarshal(obj, &probe) != nil || probe == nil {
			return // not an object: the server would refuse it before the engine
		}
		req := &admissionv1.AdmissionRequest{
			UID:       "fuzz",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "default",
			Operation: admissionv1.Create,
			UserInfo:  authenticationv1.UserInfo{Username: "fuzz"},
			Object:    runtime.RawExtension{Raw: obj},
		}
		for _, snap := range sets {
			checkPatchPromises(t, snap, req)
		}
		// The same pod as a Deployment's template (autogen): the
		// operations moved to the template keep the promises too.
		deploy, err := json.Marshal(map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": "web"}, "spec": map[string]any{"template": probe}})
		if err != nil {
			return
		}
		dreq := *req
		dreq.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
		dreq.Resource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
		dreq.Object = runtime.RawExtension{Raw: deploy}
		for _, snap := range sets {
			checkPatchPromises(t, snap, &dreq)
		}
	})
}

// podMutationSets returns the policy sets FuzzMutatingBuiltins runs: one
// per example, and one per policy of the library (policies/library), of a
// registered mutating builtin applying to pod CREATEs; one composing those
// library policies, as they may be enabled together; then one composing the
// first example of each such builtin.
func podMutationSets(tb testing.TB) []*engine.Snapshot {
	tb.Helper()
	var sets []*engine.Snapshot
	var composed, library []engine.File
	for _, name := range Registry().Names() {
		b, _ := Registry().Lookup(name)
		if b.Type() != engine.Mutating {
			continue
		}
		first := true
		for _, ex := range examplesOf(tb, name) {
			snap, err := engine.Compile(ex.files, engine.Options{Registry: Registry()})
			if err != nil {
				tb.Fatalf("example %s: %v", ex.dir, err)
			}
			if !mutatesPodCreates(snap) {
				continue
			}
			sets = append(sets, snap)
			if first {
				first = false
				composed = append(composed, ex.files...)
			}
		}
		for _, lib := range libraryOf(tb, name) {
			snap, err := engine.Compile(lib.files, engine.Options{Registry: Registry()})
			if err != nil {
				tb.Fatalf("library policy %s: %v", lib.dir, err)
			}
			if mutatesPodCreates(snap) {
				sets = append(sets, snap)
				library = append(library, lib.files...)
			}
		}
	}
	if len(library) > 0 {
		snap, err := engine.Compile(library, engine.Options{Registry: Registry()})
		if err != nil {
			tb.Fatalf("the library's pod mutations, composed: %v", err)
		}
		sets = append(sets, snap)
	}
	if len(sets) == 0 {
		tb.Fatal("no example of a mutating builtin applies to pods")
	}
	snap, err := engine.Compile(composed, engine.Options{Registry: Registry()})
	if err != nil {
		tb.Fatalf("the first examples of the pod builtins, composed: %v", err)
	}
	return append(sets, snap)
}

// mutatesPodCreates reports whether every policy of snap mutates and one
// applies to pod CREATEs.
func mutatesPodCreates(snap *engine.Snapshot) bool {
	for _, p := range snap.Policies {
		if p.Type != engine.Mutating {
			return false
		}
	}
	return len(snap.Candidates("", "pods", "", "CREATE")) > 0
}

// checkPatchPromises evaluates req and checks the two promises every
// mutating builtin makes: the patch applies cleanly to the request's object
// with a standard JSON-patch library, giving the object the engine saw; and
// evaluating the result again yields no patch (when no policy errored).
func checkPatchPromises(t *testing.T, snap *engine.Snapshot, req *admissionv1.AdmissionRequest) {
	t.Helper()
	obj := req.Object.Raw
	d, err := snap.Evaluate(context.Background(), req, engine.EvalOptions{})
	if err != nil || len(d.Patch) == 0 {
		return
	}
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
	engineObj, err := d.Object()
	if err != nil {
		t.Fatalf("the engine's object: %v", err)
	}
	seen, _ := json.Marshal(engineObj)
	if !sameJSON(t, patched, seen) {
		t.Fatalf("the library's result\n%s\ndiffers from the engine's\n%s", patched, seen)
	}
	for _, r := range d.Results {
		if r.State == engine.StateError {
			// An ignored error may not recur on the patched object;
			// idempotence is promised for clean evaluations.
			return
		}
	}
	again := *req
	again.Object = runtime.RawExtension{Raw: patched}
	d2, err := snap.Evaluate(context.Background(), &again, engine.EvalOptions{})
	if err != nil {
		t.Fatalf("the patched object no longer evaluates: %v", err)
	}
	if len(d2.Patch) != 0 {
		p2, _ := d2.PatchJSON()
		t.Fatalf("not idempotent: %s patched again with %s (%s)", obj, p2, statesOf(d2))
	}
}
