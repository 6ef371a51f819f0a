package builtins

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/engine"
)

// TestMutatingExamplesOnPodTemplates runs the golden examples of every
// mutating builtin that autogen extends to controllers on a Deployment
// whose template is the example's pod. The patch must keep the promises
// of a pod's (it applies with a standard library, and a second run
// patches nothing), and a pod created from the mutated template must be
// left alone by the same policies: what they add to a template is what
// they would add to its pods.
func TestMutatingExamplesOnPodTemplates(t *testing.T) {
	checked := 0
	for _, name := range Registry().Names() {
		b, _ := Registry().Lookup(name)
		if b.Type() != engine.Mutating {
			continue
		}
		if po, ok := b.(engine.PodOnly); ok && po.PodOnly() {
			continue
		}
		optIn := false
		if o, ok := b.(engine.TemplateOptIn); ok && o.TemplateOptIn() {
			optIn = true
		}
		for _, ex := range examplesOf(t, name) {
			files := ex.files
			if optIn {
				// Its policies reach templates only when they ask.
				files = withAutogen(t, files, name)
			}
			snap, err := engine.Compile(files, engine.Options{Registry: Registry()})
			if err != nil {
				t.Fatalf("example %s: %v", ex.dir, err)
			}
			if len(snap.Candidates("apps", "deployments", "", "CREATE")) == 0 {
				continue
			}
			for _, pod := range examplePods(t, ex.dir) {
				t.Run(filepath.Base(ex.dir), func(t *testing.T) {
					if checkOnTemplate(t, snap, pod) {
						checked++
					} else {
						t.Log("the template was not mutated")
					}
				})
			}
		}
	}
	if checked == 0 {
		t.Fatal("no example mutated a pod template")
	}
	t.Logf("%d examples mutated a pod template", checked)
}

// withAutogen sets spec.autogen: true on the policies of files whose
// action is builtin.
func withAutogen(t *testing.T, files []engine.File, builtin string) []engine.File {
	t.Helper()
	var out []engine.File
	for _, f := range files {
		data := f.Data
		if bytes.Contains(data, []byte("action: "+builtin+"\n")) {
			data = bytes.ReplaceAll(data, []byte("\nspec:\n"), []byte("\nspec:\n  autogen: true\n"))
		}
		out = append(out, engine.File{Name: f.Name, Data: data})
	}
	return out
}

// examplePods returns the pods of an example's object.yaml.
func examplePods(t *testing.T, dir string) []map[string]any {
	raw, err := os.ReadFile(filepath.Join(dir, "object.yaml"))
	if err != nil {
		return nil
	}
	var out []map[string]any
	for _, doc := range bytes.Split(raw, []byte("\n---")) {
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil || obj["kind"] != "Pod" {
			continue
		}
		out = append(out, obj)
	}
	return out
}

// checkOnTemplate evaluates a Deployment CREATE whose template is pod and
// checks the patch, then the pod made from the patched template. It
// reports whether the template was patched.
func checkOnTemplate(t *testing.T, snap *engine.Snapshot, pod map[string]any) bool {
	t.Helper()
	meta, _ := pod["metadata"].(map[string]any)
	ns, _ := meta["namespace"].(string)
	if ns == "" {
		ns = "default"
	}
	tmeta := map[string]any{}
	for _, k := range []string{"labels", "annotations"} {
		if v, ok := meta[k]; ok {
			tmeta[k] = v
		}
	}
	deploy := map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "web", "namespace": ns},
		"spec":     map[string]any{"template": map[string]any{"metadata": tmeta, "spec": pod["spec"]}},
	}
	raw, err := json.Marshal(deploy)
	if err != nil {
		t.Fatal(err)
	}
	req := &admissionv1.AdmissionRequest{
		UID:       "autogen",
		Kind:      metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"},
		Resource:  metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"},
		Namespace: ns, Name: "web",
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: "test"},
		Object:    runtime.RawExtension{Raw: raw},
	}
	checkPatchPromises(t, snap, req)
	d := evaluate(t, snap, req, engine.EvalOptions{})
	if len(d.Patch) == 0 {
		return false
	}
	for _, r := range d.Results {
		if r.State == engine.StateError {
			return false
		}
	}
	var patched map[string]any
	if err := json.Unmarshal(applyDecision(t, raw, d), &patched); err != nil {
		t.Fatal(err)
	}
	// The pod a ReplicaSet makes of the template: its labels, annotations
	// and spec, a generated name.
	tmpl := patched["spec"].(map[string]any)["template"].(map[string]any)
	podMeta := map[string]any{"generateName": "web-", "namespace": ns}
	if m, ok := tmpl["metadata"].(map[string]any); ok {
		for k, v := range m {
			podMeta[k] = v
		}
	}
	podRaw, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": podMeta, "spec": tmpl["spec"]})
	if err != nil {
		t.Fatal(err)
	}
	podReq := *req
	podReq.Kind = metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	podReq.Resource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}
	podReq.Name = ""
	podReq.Object = runtime.RawExtension{Raw: podRaw}
	if d := evaluate(t, snap, &podReq, engine.EvalOptions{}); len(d.Patch) != 0 {
		p, _ := d.PatchJSON()
		t.Errorf("a pod of the mutated template is patched again with %s (%s)\npod: %s", p, statesOf(d), podRaw)
	}
	return true
}
