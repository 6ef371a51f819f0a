package builtins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	yaml "go.yaml.in/yaml/v3"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"celadon.io/celadon/engine"
)

// Shared helpers of the builtins' tests. Objects and policies are written
// as YAML, as users write them.

// policyFile is the name compile errors are reported against.
const policyFile = "p.yaml"

// compilePolicies compiles policy YAML with this package's registry.
func compilePolicies(t testing.TB, src string) *engine.Snapshot {
	t.Helper()
	snap, err := engine.Compile([]engine.File{{Name: policyFile, Data: []byte(src)}}, engine.Options{Registry: Registry()})
	if err != nil {
		t.Fatalf("compile:\n%v\npolicy:\n%s", err, src)
	}
	return snap
}

// compileErrors compiles policy YAML that must fail and returns its errors.
func compileErrors(t testing.TB, src string) engine.ErrorList {
	t.Helper()
	_, err := engine.Compile([]engine.File{{Name: policyFile, Data: []byte(src)}}, engine.Options{Registry: Registry()})
	var list engine.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("compile returned %v (%T), want an engine.ErrorList", err, err)
	}
	return list
}

// yamlJSON converts one YAML document to JSON; "" gives nil.
func yamlJSON(t testing.TB, src string) []byte {
	t.Helper()
	if strings.TrimSpace(src) == "" {
		return nil
	}
	var v any
	if err := yaml.Unmarshal([]byte(src), &v); err != nil {
		t.Fatalf("YAML: %v\n%s", err, src)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("YAML to JSON: %v", err)
	}
	return b
}

// testResources maps the kinds used in tests and examples to their resources.
var testResources = map[string]metav1.GroupVersionResource{
	"Pod":         {Version: "v1", Resource: "pods"},
	"Service":     {Version: "v1", Resource: "services"},
	"Namespace":   {Version: "v1", Resource: "namespaces"},
	"ConfigMap":   {Version: "v1", Resource: "configmaps"},
	"Deployment":  {Group: "apps", Version: "v1", Resource: "deployments"},
	"StatefulSet": {Group: "apps", Version: "v1", Resource: "statefulsets"},
}

// admissionRequest builds a request for op on obj and old (JSON, either may
// be nil), as the API server would send it, from user alice.
func admissionRequest(t testing.TB, op admissionv1.Operation, obj, old []byte) *admissionv1.AdmissionRequest {
	t.Helper()
	src := obj
	if src == nil {
		src = old
	}
	// Read loosely: tests also send malformed objects.
	var head map[string]any
	if err := json.Unmarshal(src, &head); err != nil {
		t.Fatalf("object: %v", err)
	}
	kind, _ := head["kind"].(string)
	apiVersion, _ := head["apiVersion"].(string)
	md, _ := head["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	namespace, _ := md["namespace"].(string)
	gvr, ok := testResources[kind]
	if !ok {
		t.Fatalf("no resource known for kind %q", kind)
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		UID:       "0d9f3a52-7c1e-4c57-9b1a-0c6d2f5e8a11",
		Kind:      metav1.GroupVersionKind{Group: gv.Group, Version: gv.Version, Kind: kind},
		Resource:  gvr,
		Name:      name,
		Namespace: namespace,
		Operation: op,
		UserInfo:  authenticationv1.UserInfo{Username: "alice", Groups: []string{"system:authenticated"}},
		Object:    runtime.RawExtension{Raw: obj},
		OldObject: runtime.RawExtension{Raw: old},
	}
}

// evaluate runs every phase of snap on req.
func evaluate(t testing.TB, snap *engine.Snapshot, req *admissionv1.AdmissionRequest, opts engine.EvalOptions) *engine.Decision {
	t.Helper()
	d, err := snap.Evaluate(context.Background(), req, opts)
	if err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	return d
}

// statesOf lists each result as policy=state.
func statesOf(d *engine.Decision) string {
	s := make([]string, len(d.Results))
	for i, r := range d.Results {
		s[i] = r.Policy + "=" + string(r.State)
	}
	return strings.Join(s, ",")
}

// applyDecision applies the decision's patch to original with a standard
// JSON-patch library, independent of the engine's own applier.
func applyDecision(t testing.TB, original []byte, d *engine.Decision) []byte {
	t.Helper()
	p, err := d.PatchJSON()
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(p)
	if err != nil {
		t.Fatalf("decode patch %s: %v", p, err)
	}
	out, err := patch.Apply(original)
	if err != nil {
		t.Fatalf("apply patch %s: %v", p, err)
	}
	return out
}

// sameJSON reports whether two JSON documents are semantically equal.
func sameJSON(t testing.TB, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("JSON: %v\n%s", err, a)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("JSON: %v\n%s", err, b)
	}
	return reflect.DeepEqual(va, vb)
}

// indentJSON pretty-prints JSON for failure messages.
func indentJSON(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}

// checkWarnings fails t unless the decision warns exactly want, or does
// not warn when want is "".
func checkWarnings(t testing.TB, d *engine.Decision, want string) {
	t.Helper()
	var warnings []string
	if want != "" {
		warnings = []string{want}
	}
	if fmt.Sprint(d.Warnings) != fmt.Sprint(warnings) {
		t.Errorf("warnings %q, want %q", d.Warnings, warnings)
	}
}

// checkUnchanged fails t if the decision patches.
func checkUnchanged(t testing.TB, d *engine.Decision) {
	t.Helper()
	if len(d.Patch) != 0 {
		p, _ := d.PatchJSON()
		t.Fatalf("patched, want no change: %s", p)
	}
}

// checkMutation is tiers 2 of the mutating tests: the emitted patch, applied
// to the input by a standard library, gives want and the engine's own
// object; and evaluating the patched object again patches nothing.
func checkMutation(t testing.TB, snap *engine.Snapshot, req *admissionv1.AdmissionRequest, d *engine.Decision, want []byte, opts engine.EvalOptions) {
	t.Helper()
	patched := applyDecision(t, req.Object.Raw, d)
	if !sameJSON(t, patched, want) {
		p, _ := d.PatchJSON()
		t.Fatalf("patched object:\n%s\nwant:\n%s\npatch: %s", indentJSON(patched), indentJSON(want), p)
	}
	obj, err := d.Object()
	if err != nil {
		t.Fatal(err)
	}
	if obj != nil {
		engineObj, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(t, engineObj, patched) {
			t.Errorf("the engine's object differs from the library's:\n%s", indentJSON(engineObj))
		}
	}
	again := *req
	again.Object = runtime.RawExtension{Raw: patched}
	d2 := evaluate(t, snap, &again, opts)
	if len(d2.Patch) != 0 {
		p, _ := d2.PatchJSON()
		t.Errorf("not idempotent: the second pass patched %s (%s)", p, statesOf(d2))
	}
}

// namespaceLabels serves namespaces with the given labels; every name exists.
type namespaceLabels map[string]string

// GetNamespace returns a namespace called name carrying the labels.
func (l namespaceLabels) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	if name == "" {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}, nil
}

// checkLoadError checks that errs is one error starting with want, which
// names the file, line and policy.
func checkLoadError(t testing.TB, errs engine.ErrorList, want string) {
	t.Helper()
	if len(errs) == 1 && strings.HasPrefix(errs[0].Error(), want) {
		return
	}
	t.Fatalf("errors:\n%v\nwant one starting with:\n%s", errs, want)
}

// checkLoadErrors checks that errs are as many as want, in order, each
// starting with its want.
func checkLoadErrors(t testing.TB, errs engine.ErrorList, want []string) {
	t.Helper()
	ok := len(errs) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.HasPrefix(errs[i].Error(), want[i])
	}
	if !ok {
		t.Fatalf("errors:\n%v\nwant %d, starting with:\n%s", errs, len(want), strings.Join(want, "\n"))
	}
}

// TestExamples checks this package's golden examples, examples/deny-*/
// (deny-exception-* with their exceptions: -e and --now in eval.args),
// examples/validate-*/,
// examples/inject-env-index-*/ and examples/consul-lifecycle-*/, through
// the engine alone: the denial message or the expected object, the patch applied by a standard library,
// and idempotence. cmd/celadon's TestExamples runs every example through
// `celadon eval` too.
func TestExamples(t *testing.T) {
	var dirs []string
	for _, pattern := range []string{"../examples/deny-*", "../examples/validate-*", "../examples/inject-env-index-*", "../examples/consul-lifecycle-*"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, m...)
	}
	if len(dirs) == 0 {
		t.Fatal("no examples found")
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			read := func(name string) []byte {
				b, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					t.Fatal(err)
				}
				return b
			}
			readme := strings.TrimSpace(string(read("README.md")))
			if n := len(strings.Split(readme, "\n")); readme == "" || n < 2 || n > 6 {
				t.Errorf("README.md has %d lines; want 2 to 6", n)
			}
			if _, err := os.Stat(filepath.Join(dir, "eval.args")); err != nil {
				t.Errorf("eval.args: %v", err)
			}
			obj, old := yamlJSON(t, string(read("object.yaml"))), yamlJSON(t, string(read("old.yaml")))
			op := admissionv1.Create
			switch {
			case obj != nil && old != nil:
				op = admissionv1.Update
			case old != nil:
				op = admissionv1.Delete
			}
			args := strings.Fields(string(read("eval.args")))
			var user, exceptions string
			var opts engine.EvalOptions
			now := time.Now()
			for i := 0; i < len(args); i++ {
				switch {
				case args[i] == "--operation" && i+1 < len(args):
					op = admissionv1.Operation(args[i+1])
					i++
				case args[i] == "--user" && i+1 < len(args):
					user = args[i+1]
					i++
				case args[i] == "-e" && i+1 < len(args):
					exceptions = filepath.Join("..", args[i+1]) // eval.args are relative to the repository
					i++
				case args[i] == "--now" && i+1 < len(args):
					var err error
					if now, err = time.Parse(time.RFC3339, args[i+1]); err != nil {
						t.Fatalf("eval.args: --now: %v", err)
					}
					opts.Now = func() time.Time { return now }
					i++
				default:
					t.Fatalf("eval.args: %q is not understood here", args[i])
				}
			}
			if exceptions != "" {
				files, err := engine.ReadExceptionFiles(exceptions)
				if err != nil {
					t.Fatal(err)
				}
				if opts.Exceptions, err = engine.CompileExceptions(files, engine.ExceptionOptions{Now: now}); err != nil {
					t.Fatal(err)
				}
			}
			snap := compilePolicies(t, string(read("policy.yaml")))
			req := admissionRequest(t, op, obj, old)
			if user != "" {
				req.UserInfo.Username = user
			}
			d := evaluate(t, snap, req, opts)
			if denied := read("expected-denied.txt"); denied != nil {
				if want := strings.TrimRight(string(denied), "\n"); d.Allowed || d.Message != want {
					t.Fatalf("allowed %v, message %q; want denied with %q (%s)", d.Allowed, d.Message, want, statesOf(d))
				}
				return
			}
			if !d.Allowed {
				t.Fatalf("denied: %s", d.Message)
			}
			if obj == nil { // an allowed DELETE: no object to mutate
				if len(d.Patch) > 0 {
					t.Fatalf("a DELETE is patched: %v", d.Patch)
				}
				return
			}
			want := read("expected.yaml")
			if want == nil {
				t.Fatal("neither expected.yaml nor expected-denied.txt")
			}
			checkMutation(t, snap, req, d, yamlJSON(t, string(want)), opts)
		})
	}
}
