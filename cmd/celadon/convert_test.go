package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

var updateConvert = flag.Bool("update-convert", false, "rewrite testdata/convert/*/expected.* from the output")

// runConvert runs `celadon convert` on a case directory's input.yaml, with
// its params.yaml when there is one.
func runConvert(t *testing.T, dir string) (code int, stdout, stderr string) {
	t.Helper()
	rootCmd.RemoveCommand(findCmd("convert"))
	rootCmd.AddCommand(newConvertCmd()) // fresh flags
	args := []string{"convert", filepath.Join(dir, "input.yaml")}
	if _, err := os.Stat(filepath.Join(dir, "params.yaml")); err == nil {
		args = append(args, "--params", filepath.Join(dir, "params.yaml"))
	}
	return runCLI(t, args...)
}

func findCmd(name string) *cobra.Command {
	for _, c := range rootCmd.Commands() {
		if c.Name() == name {
			return c
		}
	}
	return nil
}

// TestConvertGolden converts each testdata/convert case: expected.yaml is
// stdout (exit 0; absent: exit 2), expected.stderr the notes and errors.
// Every converted set must compile as `celadon validate` compiles it.
func TestConvertGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/convert/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			code, stdout, stderr := runConvert(t, dir)
			stderr = strings.ReplaceAll(stderr, dir+string(filepath.Separator), "")
			wantOut := filepath.Join(dir, "expected.yaml")
			wantErr := filepath.Join(dir, "expected.stderr")
			wantCode := 0
			if strings.HasPrefix(filepath.Base(dir), "error-") {
				wantCode = 2
			}
			if *updateConvert {
				if wantCode == 0 {
					writeGolden(t, wantOut, stdout)
				}
				writeGolden(t, wantErr, stderr)
			}
			if code != wantCode {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, wantCode, stderr)
			}
			if wantCode == 0 {
				if want := readGolden(t, wantOut); stdout != want {
					t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
				}
				compileConverted(t, stdout)
			} else if stdout != "" {
				t.Errorf("stdout on error: %s", stdout)
			}
			if want := readGolden(t, wantErr); stderr != want {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, want)
			}
		})
	}
}

func writeGolden(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readGolden(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func compileConverted(t *testing.T, yaml string) *engine.Snapshot {
	t.Helper()
	snap, err := engine.Compile([]engine.File{{Name: "converted.yaml", Data: []byte(yaml)}}, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatalf("converted policies do not compile: %v\n%s", err, yaml)
	}
	return snap
}

// convertRequest builds an admission request for obj.
func convertRequest(t *testing.T, op admissionv1.Operation, gvr metav1.GroupVersionResource, ns string, obj any) *admissionv1.AdmissionRequest {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	_ = json.Unmarshal(raw, &meta)
	return &admissionv1.AdmissionRequest{
		UID: "u", Operation: op, Resource: gvr, Namespace: ns, Name: meta.Metadata.Name,
		Object: runtime.RawExtension{Raw: raw},
	}
}

type fakeNamespaces map[string]map[string]string

func (f fakeNamespaces) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: f[name]}}, nil
}

// TestConvertDecisions evaluates converted policies on requests and checks
// the decision a VAP and its binding would give.
func TestConvertDecisions(t *testing.T) {
	deployments := metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	pods := metav1.GroupVersionResource{Version: "v1", Resource: "pods"}
	deployment := func(name string, replicas int) map[string]any {
		return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": name}, "spec": map[string]any{"replicas": replicas}}
	}
	pod := func(name, image string) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": name},
			"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": image}}}}
	}
	nss := fakeNamespaces{"prod": {"env": "prod"}, "staging": {"env": "staging"}, "dev": {"env": "dev"}, "platform": {"team": "platform"}}
	cases := []struct {
		dir       string
		req       *admissionv1.AdmissionRequest
		allowed   bool
		message   string // part of the denial
		warning   string // part of a warning
		annotated string // an audit annotation key
		patch     string // part of the patch's JSON; "" for none
	}{
		// maxReplicas is 3 in the parameter ConfigMap.
		{dir: "vap-params", req: convertRequest(t, "CREATE", deployments, "a", deployment("web", 3)), allowed: true},
		{dir: "vap-params", req: convertRequest(t, "CREATE", deployments, "a", deployment("web", 4)), message: "replicas must be at most 3"},
		// exempt by the matchCondition reading params.
		{dir: "vap-params", req: convertRequest(t, "UPDATE", deployments, "a", deployment("legacy", 40)), allowed: true},
		// DELETE is not in the rule's operations.
		{dir: "vap-params", req: convertRequest(t, "DELETE", deployments, "a", deployment("web", 4)), allowed: true},
		// prod binding: pods on CREATE only; named debug pods excluded.
		{dir: "warn-audit", req: convertRequest(t, "CREATE", pods, "prod", pod("p", "nginx:latest")), message: "no :latest images"},
		{dir: "warn-audit", req: convertRequest(t, "UPDATE", pods, "prod", pod("p", "nginx:latest")), allowed: true},
		{dir: "warn-audit", req: convertRequest(t, "CREATE", pods, "prod", pod("debug", "nginx:latest")), allowed: true},
		// staging binding: [Warn, Audit] warns.
		{dir: "warn-audit", req: convertRequest(t, "CREATE", pods, "staging", pod("p", "nginx:latest")), allowed: true, warning: "no :latest images"},
		{dir: "warn-audit", req: convertRequest(t, "CREATE", pods, "dev", pod("p", "nginx:latest")), allowed: true},
		// The selector's two parameter objects each require a label; Audit
		// enforcement admits and records the violation.
		{dir: "params-selector", req: convertRequest(t, "CREATE", metav1.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "a",
			map[string]any{"metadata": map[string]any{"name": "c", "labels": map[string]any{"owner": "me"}}}), allowed: true, annotated: "required-labels.cost"},
		// The MAP's binding selects namespaces of team platform; its rules
		// pods on CREATE, deployments on CREATE and UPDATE.
		{dir: "map-binding", req: convertRequest(t, "CREATE", pods, "platform", pod("p", "nginx")), allowed: true, patch: `"team":"platform"`},
		{dir: "map-binding", req: convertRequest(t, "CREATE", pods, "dev", pod("p", "nginx")), allowed: true},
		{dir: "map-binding", req: convertRequest(t, "UPDATE", pods, "platform", pod("p", "nginx")), allowed: true},
		{dir: "map-binding", req: convertRequest(t, "UPDATE", deployments, "platform", deployment("web", 1)), allowed: true, patch: `"team":"platform"`},
	}
	for _, c := range cases {
		t.Run(c.dir+"/"+string(c.req.Operation)+"/"+c.req.Name, func(t *testing.T) {
			code, stdout, stderr := runConvert(t, filepath.Join("testdata/convert", c.dir))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			snap := compileConverted(t, stdout)
			d, err := snap.Evaluate(context.Background(), c.req, engine.EvalOptions{Namespaces: nss})
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != c.allowed || !strings.Contains(d.Message, c.message) {
				t.Errorf("allowed %v %q, want %v %q; results %+v", d.Allowed, d.Message, c.allowed, c.message, d.Results)
			}
			if c.warning != "" && !strings.Contains(strings.Join(d.Warnings, "\n"), c.warning) {
				t.Errorf("warnings %q, want %q", d.Warnings, c.warning)
			}
			patch, err := d.PatchJSON()
			if err != nil {
				t.Fatal(err)
			}
			if c.patch == "" && string(patch) != "[]" || !strings.Contains(string(patch), c.patch) {
				t.Errorf("patch %s, want %q", patch, c.patch)
			}
			if c.annotated != "" {
				if _, ok := d.AuditAnnotations[c.annotated]; !ok {
					t.Errorf("audit annotations %v, want %s", d.AuditAnnotations, c.annotated)
				}
				if _, ok := d.AuditAnnotations["required-labels.owner"]; ok {
					t.Errorf("owner label present, yet annotated: %v", d.AuditAnnotations)
				}
			}
		})
	}
}

func TestRewriteParams(t *testing.T) {
	for in, want := range map[string]string{
		"params.x": "variables.params.x",
		"has(params.x) && 'params' == 'é' + params.y": "has(variables.params.x) && 'params' == 'é' + variables.params.y",
		"object.params + paramsX":                     "object.params + paramsX",
		"params.?a.orValue(1)":                        "variables.params.?a.orValue(1)",
	} {
		got, err := rewriteParams(in)
		if err != nil || got != want {
			t.Errorf("rewriteParams(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := rewriteParams("[1].all(params, params > 0)"); err == nil {
		t.Error("a macro variable named params: no error")
	}
}

func TestConvertStdinAndOutDir(t *testing.T) {
	input, err := os.ReadFile("testdata/convert/warn-audit/input.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// A policy without a binding applies to nothing: a note, no policy.
	input = append(input, []byte("---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: unbound\nspec:\n  validations: [{expression: 'true'}]\n")...)
	rootCmd.RemoveCommand(findCmd("convert"))
	rootCmd.AddCommand(newConvertCmd())
	rootCmd.SetIn(bytes.NewReader(input))
	defer rootCmd.SetIn(nil)
	dir := t.TempDir()
	code, stdout, stderr := runCLI(t, "convert", "-", "--out-dir", dir)
	if code != 0 || stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, `<stdin>#4: ValidatingAdmissionPolicy/unbound has no binding`) {
		t.Errorf("stderr %q: no note of the unbound policy", stderr)
	}
	want := readGolden(t, "testdata/convert/warn-audit/expected.yaml")
	var got []string
	for _, name := range []string{"no-latest.staging.yaml", "no-latest.prod.yaml"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(data))
	}
	if s := strings.Join(got, "---\n"); s != want {
		t.Errorf("files:\n%s\nwant:\n%s", s, want)
	}
}

func TestConvertDuplicatePolicy(t *testing.T) {
	doc := "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: twice\n"
	docs, err := splitDocs("in.yaml", []byte(doc+"---\n"+doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := convert(docs, nil); err == nil || !strings.Contains(err.Error(), "in.yaml#2: ValidatingAdmissionPolicy \"twice\" is defined twice, first at in.yaml#1") {
		t.Errorf("err = %v", err)
	}
}

func TestCelLiteral(t *testing.T) {
	got, err := celLiteral(map[string]any{"a": []any{nil, 1.0}, "b": []any{"x", "y"}, "c": 2.5e20})
	want := `{"a": dyn([dyn(null), dyn(1)]), "b": dyn(["x", "y"]), "c": dyn(2.5e+20)}`
	if err != nil || got != want {
		t.Errorf("celLiteral = %s, %v; want %s", got, err, want)
	}
}

// kubectl get -o yaml writes a List.
func TestConvertList(t *testing.T) {
	list := `apiVersion: v1
kind: List
items:
- apiVersion: admissionregistration.k8s.io/v1
  kind: ValidatingAdmissionPolicy
  metadata: {name: p, managedFields: [{manager: kubectl}]}
  spec:
    matchConstraints: {resourceRules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]}
    validations: [{expression: "false", message: listed}]
- apiVersion: admissionregistration.k8s.io/v1
  kind: ValidatingAdmissionPolicyBinding
  metadata: {name: p}
  spec: {policyName: p, validationActions: [Deny]}
`
	docs, err := splitDocs("list.yaml", []byte(list))
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := convert(docs, nil)
	if err != nil || len(out) != 1 || out[0].policy.Metadata.Name != "p" || !strings.Contains(string(out[0].policy.Spec.With), "listed") {
		t.Fatalf("convert = %+v, %v", out, err)
	}
}

// TestConvertNoAutogen: a VAP on pods runs on pods only, so its converted
// policy must not be autogen'd onto the pod templates of Deployments and
// the other controllers, which Celadon does by default for a validating
// pod policy: a Deployment whose template the VAP would reject is admitted
// by the API server, and must be by Celadon.
func TestConvertNoAutogen(t *testing.T) {
	input := `apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: no-latest
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE]
      resources: [pods]
  validations:
  - expression: "object.spec.containers.all(c, !c.image.endsWith(':latest'))"
    message: no latest
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: no-latest
spec:
  policyName: no-latest
  validationActions: [Deny]
`
	pod, deployment := createPodAndDeployment(t, convertInput(t, input), "nginx:latest")
	if pod.Allowed {
		t.Errorf("pod: allowed, want denied")
	}
	if !deployment.Allowed {
		t.Errorf("deployment: denied (%s), want allowed", deployment.Message)
	}
}

// convertInput converts input and compiles the result.
func convertInput(t *testing.T, input string) *engine.Snapshot {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "input.yaml"), []byte(input), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runConvert(t, dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	return compileConverted(t, stdout)
}

// createPodAndDeployment evaluates, through snap, the CREATE of a pod with
// one container of image and of a Deployment whose template is that pod.
func createPodAndDeployment(t *testing.T, snap *engine.Snapshot, image string) (pod, deployment *engine.Decision) {
	t.Helper()
	containers := []any{map[string]any{"name": "c", "image": image}}
	evaluate := func(gvr metav1.GroupVersionResource, obj map[string]any) *engine.Decision {
		d, err := snap.Evaluate(context.Background(), convertRequest(t, "CREATE", gvr, "a", obj), engine.EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	pod = evaluate(metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "p"}, "spec": map[string]any{"containers": containers}})
	deployment = evaluate(metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"},
		map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "web"},
			"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"containers": containers}}}})
	return pod, deployment
}

// TestConvertMAPNoAutogen: likewise, a MAP on pods leaves a Deployment's
// pod template alone, as the API server does.
func TestConvertMAPNoAutogen(t *testing.T) {
	input := `apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicy
metadata:
  name: label
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE]
      resources: [pods]
  reinvocationPolicy: IfNeeded
  mutations:
  - patchType: JSONPatch
    jsonPatch:
      expression: "[JSONPatch{op: 'add', path: '/metadata/labels', value: {'team': 'a'}}]"
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicyBinding
metadata:
  name: label
spec:
  policyName: label
`
	pod, deployment := createPodAndDeployment(t, convertInput(t, input), "nginx")
	if len(pod.Patch) == 0 {
		t.Errorf("pod: not patched, want the label")
	}
	if len(deployment.Patch) > 0 {
		t.Errorf("deployment: patched %v, want nothing", deployment.Patch)
	}
}
