package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/synthetic"
)

// podCreate returns the benchmark's Pod CREATE request. The object is
// compacted, as the API server sends it: the file is indented for people,
// and its whitespace would be a fifth of what the decoder reads.
func podCreate(b testing.TB) *admissionv1.AdmissionRequest {
	indented, err := os.ReadFile("testdata/pod.json")
	if err != nil {
		b.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, indented); err != nil {
		b.Fatal(err)
	}
	raw := compact.Bytes()
	return &admissionv1.AdmissionRequest{
		UID:       "bench",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Name:      "web-2",
		Namespace: "shop",
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: "system:serviceaccount:kube-system:statefulset-controller"},
		Object:    runtime.RawExtension{Raw: raw},
	}
}

// shopNamespace serves the benchmark pod's namespace, as the server's
// informer cache would.
type shopNamespace struct{}

var shop = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"kubernetes.io/metadata.name": "shop", "team": "shop"}}}

func (shopNamespace) GetNamespace(context.Context, string) (*corev1.Namespace, error) {
	return shop, nil
}

// syntheticPolicies returns n policies of which five match pods (see
// synthetic.Policies).
func syntheticPolicies(n int) []engine.File {
	return []engine.File{{Name: "synthetic.yaml", Data: synthetic.Policies(n)}}
}

func benchEvaluate(b *testing.B, files []engine.File) {
	snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		b.Fatal(err)
	}
	req := podCreate(b)
	ctx := context.Background()
	opts := engine.EvalOptions{Namespaces: shopNamespace{}}
	d, err := snap.Evaluate(ctx, req, opts)
	if err != nil || !d.Allowed || len(d.Patch) == 0 {
		b.Fatalf("the benchmark request should be mutated and allowed: %+v, %v", d, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := snap.Evaluate(ctx, req, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEvaluatePodCreate measures one Pod CREATE (a 4 KB StatefulSet
// pod) through the shipped policy library and through synthetic sets of
// 10, 100 and 1,000 policies of which five match pods. The per-request cost
// should depend on the matching policies, not on the set's size.
func BenchmarkEvaluatePodCreate(b *testing.B) {
	b.Run("shipped", func(b *testing.B) {
		files, err := engine.ReadFiles("../policies")
		if err != nil {
			b.Fatal(err)
		}
		benchEvaluate(b, files)
	})
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) { benchEvaluate(b, syntheticPolicies(n)) })
	}
}

// BenchmarkCompile measures loading a set of 1,000 policies.
func BenchmarkCompile(b *testing.B) {
	files := syntheticPolicies(1000)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompileLibrary measures loading the shipped policies and the
// policy library, whose expressions are all type-checked against Pod (or
// the kinds they match).
func BenchmarkCompileLibrary(b *testing.B) {
	var files []engine.File
	for _, dir := range []string{"../policies", "../policies/library"} {
		f, err := engine.ReadFiles(dir)
		if err != nil {
			b.Fatal(err)
		}
		files = append(files, f...)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()}); err != nil {
			b.Fatal(err)
		}
	}
}

// restrictedPodCreate returns podCreate's request with the pod changed to
// pass the Pod Security Standards' restricted profile: every container
// drops ALL capabilities and disallows privilege escalation (the pod sets
// runAsNonRoot and the RuntimeDefault seccomp profile already).
func restrictedPodCreate(b testing.TB) *admissionv1.AdmissionRequest {
	req := podCreate(b)
	var pod map[string]any
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		b.Fatal(err)
	}
	spec := pod["spec"].(map[string]any)
	for _, field := range []string{"initContainers", "containers"} {
		cs, _ := spec[field].([]any)
		for _, c := range cs {
			c.(map[string]any)["securityContext"] = map[string]any{
				"allowPrivilegeEscalation": false,
				"capabilities":             map[string]any{"drop": []any{"ALL"}},
			}
		}
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		b.Fatal(err)
	}
	req.Object.Raw = raw
	return req
}

// BenchmarkPodCreatePolicySets measures one Pod CREATE through the shipped
// set (policies/*.yaml), through the library's Pod Security Standards
// restricted set (pss-baseline and pss-restricted, as they are enabled
// together), and through both. The pod is restricted-compliant
// (pod=restricted: every validation runs and passes, as for most pods of a
// restricted namespace) or as testdata/pod.json has it (pod=denied: two
// containers fail two restricted controls, allowPrivilegeEscalation and
// capabilities, and the denial is built).
// Compare the sets within one run: BENCHMARKS.md, "Pod CREATE: PSS
// restricted against the shipped set".
func BenchmarkPodCreatePolicySets(b *testing.B) {
	read := func(b *testing.B, paths ...string) []engine.File {
		var files []engine.File
		for _, p := range paths {
			fs, err := engine.ReadFiles(p)
			if err != nil {
				b.Fatal(err)
			}
			files = append(files, fs...)
		}
		return files
	}
	sets := []struct {
		name  string
		paths []string
	}{
		{"shipped", []string{"../policies"}},
		{"pss-restricted", []string{"../policies/library/pss-baseline.yaml", "../policies/library/pss-restricted.yaml"}},
		{"shipped+pss-restricted", []string{"../policies", "../policies/library/pss-baseline.yaml", "../policies/library/pss-restricted.yaml"}},
	}
	pods := []struct {
		name    string
		req     func(testing.TB) *admissionv1.AdmissionRequest
		allowed map[string]bool // by set
	}{
		{"restricted", restrictedPodCreate, map[string]bool{"shipped": true, "pss-restricted": true, "shipped+pss-restricted": true}},
		{"denied", podCreate, map[string]bool{"shipped": true, "pss-restricted": false, "shipped+pss-restricted": false}},
	}
	for _, pod := range pods {
		for _, set := range sets {
			b.Run("pod="+pod.name+"/set="+set.name, func(b *testing.B) {
				snap, err := engine.Compile(read(b, set.paths...), engine.Options{Registry: builtins.Registry()})
				if err != nil {
					b.Fatal(err)
				}
				req := pod.req(b)
				ctx := context.Background()
				opts := engine.EvalOptions{Namespaces: shopNamespace{}}
				d, err := snap.Evaluate(ctx, req, opts)
				if err != nil {
					b.Fatal(err)
				}
				if d.Allowed != pod.allowed[set.name] {
					b.Fatalf("allowed %v, want %v: %s", d.Allowed, pod.allowed[set.name], d.Message)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := snap.Evaluate(ctx, req, opts); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
