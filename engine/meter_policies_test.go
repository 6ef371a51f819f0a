package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

// TestMeteredPoliciesCostWhatTrackedOnesDo runs the shipped policies, the
// library and testdata/meter on every object of the library's tests, once
// metered and
// once with cel-go's cost tracking: the decisions and the budget left must
// be the same.
func TestMeteredPoliciesCostWhatTrackedOnesDo(t *testing.T) {
	files := meterPolicyFiles(t)
	compile := func(metered bool) *engine.Snapshot {
		defer engine.SetMetering(metered)()
		snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	metered, tracked := compile(true), compile(false)
	requests := libraryRequests(t)
	for _, r := range requests {
		want, wantErr := tracked.Evaluate(context.Background(), r.req, engine.EvalOptions{})
		got, gotErr := metered.Evaluate(context.Background(), r.req, engine.EvalOptions{})
		if (wantErr == nil) != (gotErr == nil) {
			t.Errorf("%s: error %v, want %v", r.where, gotErr, wantErr)
			continue
		}
		if wantErr != nil {
			continue
		}
		if got.Allowed != want.Allowed || got.Message != want.Message || fmt.Sprint(got.Patch) != fmt.Sprint(want.Patch) {
			t.Errorf("%s: metered %v %q %s, tracked %v %q %s", r.where, got.Allowed, got.Message, got.Patch, want.Allowed, want.Message, want.Patch)
		}
		if got.CostRemaining != want.CostRemaining {
			t.Errorf("%s: %d of the budget left, want %d", r.where, got.CostRemaining, want.CostRemaining)
		}
	}
	if len(requests) < 50 {
		t.Fatalf("only %d requests", len(requests))
	}
}

// TestConcurrentEvaluationsAgree evaluates the requests of
// TestMeteredPoliciesCostWhatTrackedOnesDo from several goroutines at once
// on one snapshot, as the server does: each gets the decision it gets
// alone. Under -race it also shows the planned programs are only read.
func TestConcurrentEvaluationsAgree(t *testing.T) {
	snap, err := engine.Compile(meterPolicyFiles(t), engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	requests := libraryRequests(t)
	type outcome struct {
		allowed bool
		message string
		left    int64
	}
	evaluate := func(r libraryRequest) outcome {
		d, err := snap.Evaluate(context.Background(), r.req, engine.EvalOptions{})
		if err != nil {
			return outcome{message: err.Error()}
		}
		return outcome{d.Allowed, d.Message, d.CostRemaining}
	}
	alone := make([]outcome, len(requests))
	for i, r := range requests {
		alone[i] = evaluate(r)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range requests {
				i := (k + g*len(requests)/8) % len(requests)
				if got := evaluate(requests[i]); got != alone[i] {
					t.Errorf("%s, concurrently: %+v, alone %+v", requests[i].where, got, alone[i])
				}
			}
		}()
	}
	wg.Wait()
}

// meterPolicyFiles are the shipped policies, the library and testdata/meter.
func meterPolicyFiles(t *testing.T) []engine.File {
	var files []engine.File
	for _, p := range []string{"../policies", "../policies/library", "testdata/meter"} {
		fs, err := engine.ReadFiles(p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, fs...)
	}
	return files
}

type libraryRequest struct {
	where string
	req   *admissionv1.AdmissionRequest
}

// libraryRequests are a CREATE and an UPDATE of every object of the
// library's tests.
func libraryRequests(t *testing.T) []libraryRequest {
	paths, err := filepath.Glob("../policies/library/tests/resources/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no resources: %v", err)
	}
	var out []libraryRequest
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if err != nil {
				break
			}
			var obj map[string]any
			if err := yaml.Unmarshal(doc, &obj); err != nil || obj == nil {
				continue
			}
			raw, err := yaml.YAMLToJSON(doc)
			if err != nil {
				t.Fatal(err)
			}
			gv, _ := schema.ParseGroupVersion(obj["apiVersion"].(string))
			kind := obj["kind"].(string)
			meta, _ := obj["metadata"].(map[string]any)
			name, _ := meta["name"].(string)
			ns, _ := meta["namespace"].(string)
			for _, op := range []admissionv1.Operation{admissionv1.Create, admissionv1.Update} {
				req := &admissionv1.AdmissionRequest{
					UID: "u", Kind: metav1.GroupVersionKind{Group: gv.Group, Version: gv.Version, Kind: kind},
					Resource: metav1.GroupVersionResource{Group: gv.Group, Version: gv.Version, Resource: resourceOf(kind)},
					Name:     name, Namespace: ns, Operation: op, Object: runtime.RawExtension{Raw: raw},
				}
				if op == admissionv1.Update {
					req.OldObject = runtime.RawExtension{Raw: []byte(`{"metadata":{"name":"` + name + `"},"spec":{}}`)}
				}
				out = append(out, libraryRequest{path + ": " + kind + " " + name + " " + string(op), req})
			}
		}
	}
	return out
}

func resourceOf(kind string) string {
	k := strings.ToLower(kind)
	switch {
	case strings.HasSuffix(k, "ss"):
		return k + "es"
	case strings.HasSuffix(k, "y"):
		return strings.TrimSuffix(k, "y") + "ies"
	}
	return k + "s"
}
