package main

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// writeFiles writes name → content into a fresh directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const denyLatestPolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: no-latest
spec:
  match:
    resources: [pods]
    conditions:
    - expression: object.spec.containers.exists(c, c.image.endsWith(':latest'))
  action: deny
  with:
    message: no latest images
`

const labelPodsPolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: sts-index
spec:
  match:
    resources: [pods]
    operations: [CREATE]
  action: injectEnvIndex
`

const podYAML = `apiVersion: v1
kind: Pod
metadata:
  name: web-0
  ownerReferences:
  - {apiVersion: apps/v1, kind: StatefulSet, name: web, uid: u1, controller: true}
spec:
  containers:
  - name: app
    image: nginx:1.27
`

const latestPodYAML = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: app
    image: nginx:latest
`

func reviewJSON(apiVersion string, req string) string {
	return `{"apiVersion": "` + apiVersion + `", "kind": "AdmissionReview", "request": ` + req + `}`
}

const podRequest = `{
  "uid": "abc-123",
  "kind": {"group": "", "version": "v1", "kind": "Pod"},
  "resource": {"group": "", "version": "v1", "resource": "pods"},
  "name": "web", "namespace": "default", "operation": "CREATE",
  "userInfo": {"username": "alice"},
  "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": [{"name": "app", "image": "nginx:latest"}]}}
}`

// TestEvalErrors checks that bad input gives exit 2 and a clear message
// naming what is wrong, never a panic.
func TestEvalErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"ok.yaml": denyLatestPolicy,
		"bad-cel.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: bad-cel
spec:
  match:
    resources: [pods]
    conditions:
    - expression: object.spec.containers.exists(c, c.image ==)
  action: deny
  with:
    message: x
`,
		"unknown-builtin.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: mystery
spec:
  match:
    resources: [pods]
  action: frobnicate
`,
		"bad-with.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: typo
spec:
  match:
    resources: [pods]
  action: deny
  with:
    mesage: oops
`,
		"bad-with-value.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: bad-name
spec:
  match:
    resources: [pods]
    operations: [CREATE]
  action: injectEnvIndex
  with:
    name: "1-INDEX"
`,
		"pod.yaml":           latestPodYAML,
		"two-pods.yaml":      latestPodYAML + "---\n" + latestPodYAML,
		"empty.yaml":         "# nothing\n---\n",
		"bad-yaml.yaml":      latestPodYAML + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n",
		"no-kind.yaml":       "apiVersion: v1\nmetadata:\n  name: x\n",
		"scalar.yaml":        "just a string\n",
		"garbage.json":       `{"apiVersion": "admission.k8s.io/v1", "kind": `,
		"no-request.json":    `{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}`,
		"null-request.json":  `{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": null}`,
		"wrong-version.json": reviewJSON("admission.k8s.io/v2", podRequest),
		"wrong-kind.json":    `{"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {}}`,
		"no-operation.json":  reviewJSON("admission.k8s.io/v1", `{"uid": "x", "resource": {"resource": "pods"}}`),
		"bad-object.json":    reviewJSON("admission.k8s.io/v1", `{"uid": "x", "resource": {"resource": "pods"}, "operation": "CREATE", "object": [1, 2]}`),
		"good.json":          reviewJSON("admission.k8s.io/v1", podRequest),
		"emptydir/.keep":     "",
	})
	p := func(name string) string { return filepath.Join(dir, name) }
	tests := []struct {
		name string
		args []string
		want []string // substrings of stderr
	}{
		{"bad CEL", []string{"-p", p("bad-cel.yaml"), "-f", p("pod.yaml")},
			[]string{p("bad-cel.yaml") + `:9:62: policy "bad-cel": match.conditions[0].expression: CEL: `, "1 error in policies"}},
		{"unknown builtin", []string{"-p", p("unknown-builtin.yaml"), "-f", p("pod.yaml")},
			[]string{p("unknown-builtin.yaml") + `:8:3: policy "mystery": unknown builtin "frobnicate"; builtins: `, "deny", "injectEnvIndex"}},
		{"bad with: unknown field", []string{"-p", p("bad-with.yaml"), "-f", p("pod.yaml")},
			[]string{p("bad-with.yaml") + `:10:5: policy "typo": with.mesage: unknown field`}},
		{"bad with: bad value", []string{"-p", p("bad-with-value.yaml"), "-f", p("pod.yaml")},
			[]string{p("bad-with-value.yaml") + `:11:5: policy "bad-name": with.name: "1-INDEX" is not a valid environment variable name`}},
		{"missing policies", []string{"-p", p("nope.yaml"), "-f", p("pod.yaml")},
			[]string{"nope.yaml: no such file or directory"}},
		{"no policy files", []string{"-p", p("emptydir"), "-f", p("pod.yaml")},
			[]string{"emptydir: no policy files"}},
		{"no -p", []string{"-f", p("pod.yaml")},
			[]string{"-p/--policies is required"}},
		{"missing object file", []string{"-p", p("ok.yaml"), "-f", p("missing.yaml")},
			[]string{"missing.yaml: no such file or directory"}},
		{"no input", []string{"-p", p("ok.yaml")},
			[]string{"give objects with -f (and --old), or an AdmissionReview with --request"}},
		{"empty object file", []string{"-p", p("ok.yaml"), "-f", p("empty.yaml")},
			[]string{"empty.yaml: no objects found"}},
		{"invalid YAML names file, line and document", []string{"-p", p("ok.yaml"), "-f", p("bad-yaml.yaml")},
			[]string{p("bad-yaml.yaml") + ":13: document 2: invalid YAML: "}},
		{"object without kind", []string{"-p", p("ok.yaml"), "-f", p("no-kind.yaml")},
			[]string{p("no-kind.yaml") + ":1: document 1: apiVersion and kind are required"}},
		{"not an object", []string{"-p", p("ok.yaml"), "-f", p("scalar.yaml")},
			[]string{"document 1: want a Kubernetes object (a mapping with apiVersion and kind), got a string"}},
		{"malformed review JSON", []string{"-p", p("ok.yaml"), "--request", p("garbage.json")},
			[]string{p("garbage.json") + ":1: invalid JSON: "}},
		{"review without request", []string{"-p", p("ok.yaml"), "--request", p("no-request.json")},
			[]string{"no-request.json: the AdmissionReview has no request"}},
		{"review with null request", []string{"-p", p("ok.yaml"), "--request", p("null-request.json")},
			[]string{"null-request.json: the AdmissionReview has no request"}},
		{"review of an unknown version", []string{"-p", p("ok.yaml"), "--request", p("wrong-version.json")},
			[]string{`apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1, not "admission.k8s.io/v2"`}},
		{"not a review", []string{"-p", p("ok.yaml"), "--request", p("wrong-kind.json")},
			[]string{`kind must be AdmissionReview, not "Pod"`}},
		{"review without operation", []string{"-p", p("ok.yaml"), "--request", p("no-operation.json")},
			[]string{`request.operation must be CREATE, UPDATE, DELETE or CONNECT, not ""`}},
		{"review with a non-object object", []string{"-p", p("ok.yaml"), "--request", p("bad-object.json")},
			[]string{"request.object is not a JSON object"}},
		{"missing review", []string{"-p", p("ok.yaml"), "--request", p("missing.json")},
			[]string{"missing.json: no such file or directory"}},
		{"review and objects", []string{"-p", p("ok.yaml"), "--request", p("good.json"), "-f", p("pod.yaml")},
			[]string{"--request cannot be combined with -f or --old"}},
		{"review and --operation", []string{"-p", p("ok.yaml"), "--request", p("good.json"), "--operation", "DELETE"},
			[]string{"--operation applies to -f and --old"}},
		{"unknown output", []string{"-p", p("ok.yaml"), "-f", p("pod.yaml"), "-o", "xml"},
			[]string{`unknown output format "xml": want one of text, yaml, json, patch, review, results`}},
		{"unknown operation", []string{"-p", p("ok.yaml"), "-f", p("pod.yaml"), "--operation", "PATCH"},
			[]string{`--operation must be CREATE, UPDATE, DELETE or CONNECT, not "PATCH"`}},
		{"UPDATE without old", []string{"-p", p("ok.yaml"), "-f", p("pod.yaml"), "--operation", "UPDATE"},
			[]string{"UPDATE needs the new objects (-f) and the old ones (--old)"}},
		{"UPDATE count mismatch", []string{"-p", p("ok.yaml"), "-f", p("two-pods.yaml"), "--old", p("pod.yaml")},
			[]string{"has 2 and", "has 1"}},
		{"CREATE with old", []string{"-p", p("ok.yaml"), "-f", p("pod.yaml"), "--old", p("pod.yaml"), "--operation", "CREATE"},
			[]string{"--old makes no sense for CREATE"}},
		{"bad namespace labels", []string{"-p", p("ok.yaml"), "-f", p("pod.yaml"), "--namespace-labels", "env"},
			[]string{`--namespace-labels: "env" is not key=value`}},
		{"bad namespace label value", []string{"-p", p("ok.yaml"), "-f", p("pod.yaml"), "--namespace-labels", "env=a b"},
			[]string{`--namespace-labels: invalid value "a b" for label "env"`}},
		{"positional argument", []string{"-p", p("ok.yaml"), p("pod.yaml")},
			[]string{"unknown command"}},
		{"unknown flag", []string{"-p", p("ok.yaml"), "-f", p("pod.yaml"), "--bogus"},
			[]string{"unknown flag: --bogus"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"eval"}, tt.args...)...)
			if code != 2 {
				t.Errorf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine") {
				t.Errorf("panic:\n%s", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout should be empty on error:\n%s", stdout)
			}
		})
	}
}

// TestEvalPolicyErrorLines checks that every policy error is printed as
// file:line:col: policy "name": message, followed by the source line and
// a caret under the column.
func TestEvalPolicyErrorLines(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: one
spec:
  match:
    resources: [pods]
  action: nope
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: two
spec:
  match:
    resources: [pods]
    conditions:
    - expression: "1 +"
  action: deny
  with: {message: x}
`,
		"pod.yaml": latestPodYAML,
	})
	code, _, stderr := runCLI(t, "eval", "-p", filepath.Join(dir, "a.yaml"), "-f", filepath.Join(dir, "pod.yaml"))
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("want 2 errors of 3 lines and a summary, got:\n%s", stderr)
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(filepath.Join(dir, "a.yaml")) + `:\d+:\d+: policy "(one|two)": \S`)
	for _, l := range []string{lines[0], lines[3]} {
		if !re.MatchString(l) {
			t.Errorf("error line %q is not file:line:col: policy \"name\": message", l)
		}
	}
	if !strings.HasPrefix(lines[0], filepath.Join(dir, "a.yaml")+`:8:3: policy "one"`) || !strings.HasPrefix(lines[3], filepath.Join(dir, "a.yaml")+`:18:23: policy "two"`) {
		t.Errorf("errors not in file order:\n%s", stderr)
	}
	for i, want := range map[int]string{1: ` |   action: nope`, 2: ` | ..^`, 4: ` |     - expression: "1 +"`, 5: ` | ......................^`} {
		if lines[i] != want {
			t.Errorf("line %d: got %q, want %q", i+1, lines[i], want)
		}
	}
	if lines[6] != "celadon: "+filepath.Join(dir, "a.yaml")+": 2 errors in policies" {
		t.Errorf("summary line %q", lines[6])
	}
}

// TestEvalOutputs checks each output format and the exit codes.
func TestEvalOutputs(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"policies/1-label.yaml": labelPodsPolicy,
		"policies/2-deny.yaml":  denyLatestPolicy,
		"pod.yaml":              podYAML,
		"latest.yaml":           latestPodYAML,
		"both.yaml":             podYAML + "---\n" + latestPodYAML,
		"good.json":             reviewJSON("admission.k8s.io/v1", podRequest),
	})
	p := func(name string) string { return filepath.Join(dir, name) }
	pol := p("policies")

	t.Run("patch", func(t *testing.T) {
		code, out, _ := runCLI(t, "eval", "-p", pol, "-f", p("both.yaml"), "-o", "patch")
		if code != 1 {
			t.Errorf("exit %d, want 1 (the second pod is denied)", code)
		}
		want := `[{"op":"add","path":"/spec/containers/0/env","value":[{"name":"INDEX","value":"0"}]}]` + "\n[]\n"
		if out != want {
			t.Errorf("got %q, want %q", out, want)
		}
	})
	t.Run("yaml", func(t *testing.T) {
		code, out, stderr := runCLI(t, "eval", "-p", pol, "-f", p("both.yaml"), "-o", "yaml")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if strings.Count(out, "---\n") != 1 || !strings.Contains(out, "name: INDEX") {
			t.Errorf("want two documents, the first patched:\n%s", out)
		}
		if !strings.Contains(stderr, p("both.yaml")+": document 2: denied: no latest images") {
			t.Errorf("stderr should name the denied object:\n%s", stderr)
		}
	})
	t.Run("json", func(t *testing.T) {
		code, out, _ := runCLI(t, "eval", "-p", pol, "-f", p("pod.yaml"), "-o", "json")
		if code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(out), &obj); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		env := obj["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["env"]
		if env == nil {
			t.Errorf("not patched:\n%s", out)
		}
	})
	t.Run("review of objects", func(t *testing.T) {
		code, out, _ := runCLI(t, "eval", "-p", pol, "-f", p("both.yaml"), "-o", "review")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		rvs := decodeReviews(t, out)
		if len(rvs) != 2 {
			t.Fatalf("want 2 reviews:\n%s", out)
		}
		r0, r1 := rvs[0].Response, rvs[1].Response
		if rvs[0].APIVersion != "admission.k8s.io/v1" || rvs[0].Kind != "AdmissionReview" {
			t.Errorf("type %s %s", rvs[0].APIVersion, rvs[0].Kind)
		}
		if !r0.Allowed || r0.PatchType == nil || *r0.PatchType != admissionv1.PatchTypeJSONPatch || len(r0.Patch) == 0 || r0.Result.Code != 200 {
			t.Errorf("first response: %+v", r0)
		}
		if r0.UID != requestUID(1) || r1.UID != requestUID(2) {
			t.Errorf("uids %q %q", r0.UID, r1.UID)
		}
		if r1.Allowed || r1.Result.Message != "no latest images" || r1.Result.Code != 403 || r1.Result.Reason != metav1.StatusReasonForbidden || r1.Patch != nil {
			t.Errorf("second response: %+v", r1)
		}
	})
	t.Run("review of a review echoes the uid", func(t *testing.T) {
		code, out, _ := runCLI(t, "eval", "-p", pol, "--request", p("good.json"), "-o", "review")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		rvs := decodeReviews(t, out)
		if len(rvs) != 1 || rvs[0].Response.UID != "abc-123" || rvs[0].Response.Allowed {
			t.Errorf("got:\n%s", out)
		}
	})
	t.Run("text", func(t *testing.T) {
		code, out, _ := runCLI(t, "eval", "-p", pol, "-f", p("latest.yaml"))
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		for _, w := range []string{
			"request: CREATE pods default/web (v1 Pod), user kubernetes-admin\n",
			"  sts-index  injectEnvIndex  skip  the pod is not owned by a StatefulSet\n",
			"  no-latest  deny            fail  no latest images\n",
			"DENIED: no latest images\n",
		} {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	})
	t.Run("no policy matches", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"})
		code, out, _ := runCLI(t, "eval", "-p", pol, "-f", filepath.Join(dir, "cm.yaml"))
		if code != 0 || !strings.Contains(out, "policies: none match\napi server calls: no webhook\nALLOWED\n") {
			t.Errorf("exit %d:\n%s", code, out)
		}
		code, out, _ = runCLI(t, "eval", "-p", pol, "-f", filepath.Join(dir, "cm.yaml"), "-o", "yaml")
		if code != 0 || out != "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n" {
			t.Errorf("exit %d: -o yaml should print the object unchanged:\n%s", code, out)
		}
	})
}

// TestEvalResults checks -o results: one JSON object per request with
// every key, against testdata/eval-results.golden.json (UPDATE_GOLDEN=1
// rewrites it), while -o json still prints the object alone.
func TestEvalResults(t *testing.T) {
	golden, err := filepath.Abs("testdata/eval-results.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(writeFiles(t, map[string]string{
		"policies/1-label.yaml": labelPodsPolicy,
		"policies/2-deny.yaml":  denyLatestPolicy,
		"both.yaml":             podYAML + "---\n" + latestPodYAML,
	}))
	code, stdout, stderr := runCLI(t, "eval", "-p", "policies", "-f", "both.yaml", "-o", "results")
	if code != 1 || stderr != "" {
		t.Errorf("exit %d, want 1 (the second pod is denied), and nothing on stderr:\n%s", code, stderr)
	}
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if stdout != string(want) {
		t.Errorf("-o results differs from %s (UPDATE_GOLDEN=1 regenerates it):\n%s", golden, unifiedDiff("golden", "got", string(want), stdout))
	}

	// What the golden file must keep saying.
	type result struct {
		Policy, Action, State, Enforcement, Reason string
		PatchOperations                            int
	}
	type doc struct {
		Source  string
		Request struct{ Operation, Namespace, Name, User string }
		Allowed bool
		Message string
		Results []result
		Patch   []map[string]any
		Object  map[string]any
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	var docs []doc
	keys := "allowed apiServerCalls auditAnnotations message object patch request results source warnings"
	for dec.More() {
		var raw map[string]json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			t.Fatalf("%v\n%s", err, stdout)
		}
		if got := strings.Join(slices.Sorted(maps.Keys(raw)), " "); got != keys {
			t.Errorf("keys %s, want %s", got, keys)
		}
		var d doc
		b, _ := json.Marshal(raw)
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d)
	}
	if len(docs) != 2 {
		t.Fatalf("%d documents, want one per request:\n%s", len(docs), stdout)
	}
	d0, d1 := docs[0], docs[1]
	if d0.Source != "both.yaml: document 1" || d0.Request.Operation != "CREATE" || d0.Request.Name != "web-0" || d0.Request.User != "kubernetes-admin" {
		t.Errorf("first request: %+v %+v", d0.Source, d0.Request)
	}
	if !d0.Allowed || d0.Message != "" || len(d0.Patch) != 1 ||
		!slices.Equal(d0.Results, []result{
			{"sts-index", "injectEnvIndex", "pass", "", "INDEX=0 set in containers app", 1},
			{"no-latest", "deny", "skip", "Deny", "condition conditions[0] is false", 0},
		}) {
		t.Errorf("first decision: allowed %v, message %q, patch %v, results %+v", d0.Allowed, d0.Message, d0.Patch, d0.Results)
	}
	if env := d0.Object["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["env"]; env == nil {
		t.Errorf("first object not patched: %v", d0.Object)
	}
	if d1.Allowed || d1.Message != "no latest images" || len(d1.Patch) != 0 || len(d1.Results) != 2 ||
		d1.Results[1] != (result{"no-latest", "deny", "fail", "Deny", "no latest images", 0}) {
		t.Errorf("second decision: allowed %v, message %q, patch %v, results %+v", d1.Allowed, d1.Message, d1.Patch, d1.Results)
	}

	// DELETE: no object.
	code, stdout, _ = runCLI(t, "eval", "-p", "policies/1-label.yaml", "--old", "both.yaml", "-o", "results")
	if code != 0 || strings.Count(stdout, `"object": null`) != 2 {
		t.Errorf("DELETE: exit %d, want 0 and two null objects:\n%s", code, stdout)
	}
	// -o json is unchanged: the objects alone.
	code, stdout, _ = runCLI(t, "eval", "-p", "policies", "-f", "both.yaml", "-o", "json")
	if code != 1 || strings.Contains(stdout, `"results"`) || !strings.HasPrefix(stdout, "{\n  \"apiVersion\": \"v1\",") {
		t.Errorf("-o json: exit %d:\n%s", code, stdout)
	}
}

// TestFlagsDoNotLeak checks that a run does not inherit the previous run's
// flags: cobra keeps flag values on a command between Execute calls.
func TestFlagsDoNotLeak(t *testing.T) {
	dir := writeFiles(t, map[string]string{"p.yaml": labelPodsPolicy, "pod.yaml": podYAML})
	code, out, _ := runCLI(t, "eval", "-p", filepath.Join(dir, "p.yaml"), "-f", filepath.Join(dir, "pod.yaml"), "-o", "patch", "--user", "bob")
	if code != 0 || !strings.HasPrefix(out, "[{") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, out, _ = runCLI(t, "eval", "-p", filepath.Join(dir, "p.yaml"), "-f", filepath.Join(dir, "pod.yaml"))
	if code != 0 || !strings.Contains(out, "\n=== ") || !strings.Contains(out, "user kubernetes-admin") {
		t.Errorf("second run inherited flags from the first:\n%s", out)
	}
}

func TestBuildRequest(t *testing.T) {
	obj := func(y string) *inputObject {
		t.Helper()
		docs, err := splitDocuments("t.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := docs[0].objects()
		if err != nil {
			t.Fatal(err)
		}
		return &objs[0]
	}
	tests := []struct {
		name                               string
		obj                                string
		op                                 admissionv1.Operation
		wantGroup, wantResource, wantNS    string
		wantKindVersion, wantName, wantOpt string
	}{
		{"pod defaults to namespace default", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}", admissionv1.Create, "", "pods", "default", "v1", "p", "CreateOptions"},
		{"ingress", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i, namespace: web}", admissionv1.Update, "networking.k8s.io", "ingresses", "web", "v1", "i", "UpdateOptions"},
		{"network policy", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}", admissionv1.Create, "networking.k8s.io", "networkpolicies", "default", "v1", "np", "CreateOptions"},
		{"endpoints", "apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}", admissionv1.Create, "", "endpoints", "default", "v1", "e", "CreateOptions"},
		{"deployment", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: x}", admissionv1.Delete, "apps", "deployments", "x", "v1", "d", "DeleteOptions"},
		{"cluster role is cluster-scoped", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: admin, namespace: ignored}", admissionv1.Create, "rbac.authorization.k8s.io", "clusterroles", "", "v1", "admin", "CreateOptions"},
		{"node", "apiVersion: v1\nkind: Node\nmetadata: {name: n1}", admissionv1.Create, "", "nodes", "", "v1", "n1", "CreateOptions"},
		{"webhook configuration", "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {name: w}", admissionv1.Create, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "v1", "w", "CreateOptions"},
		{"CRD", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: foos.example.com}", admissionv1.Create, "apiextensions.k8s.io", "customresourcedefinitions", "", "v1", "foos.example.com", "CreateOptions"},
		{"namespace names itself", "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}", admissionv1.Create, "", "namespaces", "team-a", "v1", "team-a", "CreateOptions"},
		{"custom resource is namespaced", "apiVersion: example.com/v1beta2\nkind: Widget\nmetadata: {name: w}", admissionv1.Connect, "example.com", "widgets", "default", "v1beta2", "w", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := obj(tt.obj)
			var newObj, oldObj *inputObject
			switch tt.op {
			case admissionv1.Delete:
				oldObj = o
			case admissionv1.Update:
				newObj, oldObj = o, o
			default:
				newObj = o
			}
			req, err := buildRequest(3, newObj, oldObj, requestOptions{Operation: tt.op, User: "u"})
			if err != nil {
				t.Fatal(err)
			}
			if req.Resource.Group != tt.wantGroup || req.Resource.Resource != tt.wantResource || req.Resource.Version != tt.wantKindVersion {
				t.Errorf("resource %+v", req.Resource)
			}
			if req.Kind.Group != tt.wantGroup || req.Kind.Version != tt.wantKindVersion || req.RequestKind == nil || *req.RequestKind != req.Kind {
				t.Errorf("kind %+v / %+v", req.Kind, req.RequestKind)
			}
			if req.Namespace != tt.wantNS || req.Name != tt.wantName {
				t.Errorf("namespace/name %q/%q, want %q/%q", req.Namespace, req.Name, tt.wantNS, tt.wantName)
			}
			if req.UID != "00000000-0000-4000-8000-000000000003" || req.Operation != tt.op || req.DryRun == nil || *req.DryRun {
				t.Errorf("uid %q op %q dryRun %v", req.UID, req.Operation, req.DryRun)
			}
			if req.UserInfo.Username != "u" || strings.Join(req.UserInfo.Groups, ",") != "system:masters,system:authenticated" {
				t.Errorf("userInfo %+v", req.UserInfo)
			}
			if (tt.op == admissionv1.Delete) != (req.Object.Raw == nil) {
				t.Errorf("object %s for %s", req.Object.Raw, tt.op)
			}
			if (tt.op == admissionv1.Update || tt.op == admissionv1.Delete) != (req.OldObject.Raw != nil) {
				t.Errorf("oldObject %s for %s", req.OldObject.Raw, tt.op)
			}
			var opts metav1.TypeMeta
			if len(req.Options.Raw) > 0 {
				if err := json.Unmarshal(req.Options.Raw, &opts); err != nil {
					t.Fatal(err)
				}
			}
			if opts.Kind != tt.wantOpt {
				t.Errorf("options %s, want %s", req.Options.Raw, tt.wantOpt)
			}
		})
	}
}

func TestParseLabels(t *testing.T) {
	got, err := parseLabels(" env=prod, team=a ,empty=")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["env"] != "prod" || got["team"] != "a" || got["empty"] != "" {
		t.Errorf("got %v", got)
	}
	for _, bad := range []string{"x", "=v", "bad key=v", "k=v,", "k=" + strings.Repeat("v", 64)} {
		if _, err := parseLabels(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	ns, _ := flagNamespaces{labels: got}.GetNamespace(t.Context(), "shop")
	if ns.Name != "shop" || ns.Labels["kubernetes.io/metadata.name"] != "shop" || ns.Labels["env"] != "prod" {
		t.Errorf("namespace %+v", ns)
	}
}

func TestLoadObjects(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"stream.json": `{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}
{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"n": "1"}}`,
		"list.yaml": `# leading comment
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}
- {apiVersion: v1, kind: Secret, metadata: {name: b}}
--- # a comment after the separator
apiVersion: v1
kind: ConfigMap
metadata:
  name: c
...
`,
		"bad-item.yaml": "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap}\n- 3\n",
		"dup.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n",
		"bad.json":      `{"apiVersion": "v1", "kind": "ConfigMap"}` + "\n{\n  \"x\": ]\n}",
	})
	names := func(objs []inputObject) string {
		var s []string
		for _, o := range objs {
			s = append(s, o.Source[strings.LastIndex(o.Source, "/")+1:]+"="+o.metadataString("name"))
		}
		return strings.Join(s, "; ")
	}
	objs, err := loadObjects(filepath.Join(dir, "stream.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(objs); got != "stream.json: document 1=a; stream.json: document 2=b" {
		t.Errorf("stream.json: %s", got)
	}
	objs, err = loadObjects(filepath.Join(dir, "list.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(objs); got != "list.yaml: document 2, item 1=a; list.yaml: document 2, item 2=b; list.yaml: document 3=c" {
		t.Errorf("list.yaml: %s", got)
	}
	for file, want := range map[string]string{
		"bad-item.yaml": "bad-item.yaml: document 1, item 2: want a Kubernetes object, got a scalar",
		"dup.yaml":      `dup.yaml:5: document 1: invalid YAML: key "name" already set in map`,
		"bad.json":      "bad.json:3: document 2: invalid JSON: ",
	} {
		_, err := loadObjects(filepath.Join(dir, file))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", file, err, want)
		}
	}
}

func TestUnifiedDiff(t *testing.T) {
	a := "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\n"
	b := "a\nB\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\n"
	want := `--- x
+++ y
@@ -1,5 +1,5 @@
 a
-b
+B
 c
 d
 e
@@ -11,3 +11,4 @@
 k
 l
 m
+n
`
	if got := unifiedDiff("x", "y", a, b); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if got := unifiedDiff("x", "y", a, a); got != "" {
		t.Errorf("equal texts: %q", got)
	}
	// Nearby changes share a hunk; an insertion into an empty text.
	if got := unifiedDiff("x", "y", "1\n2\n3\n4\n", "1\n3\n4\n5\n"); got != "--- x\n+++ y\n@@ -1,4 +1,4 @@\n 1\n-2\n 3\n 4\n+5\n" {
		t.Errorf("got:\n%s", got)
	}
	if got := unifiedDiff("x", "y", "", "new\n"); got != "--- x\n+++ y\n@@ -0,0 +1 @@\n+new\n" {
		t.Errorf("got:\n%s", got)
	}
}
