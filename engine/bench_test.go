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
