package engine_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/engine"
)

// mutatingPodPolicies label pods with a team (JSONPatch, creating the
// labels map when there is none) and give their containers a default
// securityContext (ApplyConfiguration), on pods only.
const mutatingPodPolicies = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: team-label}
spec:
  match: {resources: [pods], operations: [CREATE, UPDATE]}
  action: mutate
  with:
    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: >
          has(object.metadata.labels) && "example.com/team" in object.metadata.labels ? [] :
          [JSONPatch{op: "add", path: "/metadata/labels", value: {}}].filter(p, !has(object.metadata.labels)) +
          [JSONPatch{op: "add", path: "/metadata/labels/" + jsonpatch.escapeKey("example.com/team"), value: "unassigned"}]
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: no-privilege-escalation}
spec:
  match: {resources: [pods], operations: [CREATE, UPDATE]}
  action: mutate
  with:
    mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: >
          Object{spec: Object.spec{containers: object.spec.containers.map(c, Object.spec.containers{
            name: c.name, securityContext: Object.spec.containers.securityContext{allowPrivilegeEscalation: false}})}}
`

// checkTemplatePatch checks the promises of a mutation of a controller:
// the patch applies to the request's object with a standard JSON-patch
// library, giving the engine's object; every operation is inside the
// template at prefix; and evaluating the result again patches nothing. It
// returns the patched object.
func checkTemplatePatch(t *testing.T, snap *engine.Snapshot, req *admissionv1.AdmissionRequest, prefix string) map[string]any {
	t.Helper()
	d := evalAutogen(t, snap, req)
	if !d.Allowed || len(d.Patch) == 0 {
		t.Fatalf("allowed=%v %q, patch %v: want a patch (%v)", d.Allowed, d.Message, d.Patch, d.Results)
	}
	for _, op := range d.Patch {
		if !strings.HasPrefix(op.Path, prefix+"/") {
			t.Errorf("operation %s %s is not inside the template at %s", op.Operation, op.Path, prefix)
		}
	}
	raw, err := d.PatchJSON()
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		t.Fatalf("patch %s does not decode: %v", raw, err)
	}
	patched, err := patch.Apply(req.Object.Raw)
	if err != nil {
		t.Fatalf("patch %s does not apply to %s: %v", raw, req.Object.Raw, err)
	}
	var got map[string]any
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	seen, err := d.Object()
	if err != nil {
		t.Fatal(err)
	}
	seenJSON, _ := json.Marshal(seen)
	var engineObj map[string]any
	if err := json.Unmarshal(seenJSON, &engineObj); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, engineObj) {
		t.Errorf("the library's result\n%s\ndiffers from the engine's\n%s", patched, seenJSON)
	}
	again := *req
	again.Object = runtime.RawExtension{Raw: patched}
	if d2 := evalAutogen(t, snap, &again); len(d2.Patch) != 0 {
		raw2, _ := d2.PatchJSON()
		t.Errorf("not idempotent: patched again with %s", raw2)
	}
	return got
}

// get returns the value at a dotted path; list indices are numbers.
func get(t *testing.T, obj map[string]any, path string) any {
	t.Helper()
	var v any = obj
	for _, f := range strings.Split(path, ".") {
		switch c := v.(type) {
		case map[string]any:
			v = c[f]
		case []any:
			i := int(f[0] - '0')
			if i >= len(c) {
				return nil
			}
			v = c[i]
		default:
			return nil
		}
	}
	return v
}

func TestAutogenMutatesADeploymentTemplate(t *testing.T) {
	snap := compileAutogen(t, mutatingPodPolicies)
	for _, name := range []string{"team-label", "no-privilege-escalation"} {
		if ag := snap.Policy(name).Autogen(); len(ag) != 6 {
			t.Errorf("%s: autogen %v, want the six controllers", name, ag)
		}
	}
	spec := map[string]any{"replicas": 2, "selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
		"template": template(map[string]any{"app": "web"}, "nginx:1.27", "redis:7")}
	req := controllerRequest(t, admissionv1.Create, "apps", "deployments", "Deployment", spec, nil)
	got := checkTemplatePatch(t, snap, req, "/spec/template")
	labels, _ := get(t, got, "spec.template.metadata.labels").(map[string]any)
	if labels["example.com/team"] != "unassigned" || labels["app"] != "web" {
		t.Errorf("template labels %v, want app=web and example.com/team=unassigned", labels)
	}
	for _, i := range []string{"0", "1"} {
		if v := get(t, got, "spec.template.spec.containers."+i+".securityContext.allowPrivilegeEscalation"); v != false {
			t.Errorf("container %s: allowPrivilegeEscalation %v, want false", i, v)
		}
	}
	// The controller's own metadata and spec are untouched, and the pod
	// view's name and namespace are not written into the template.
	if get(t, got, "metadata.labels") != nil || get(t, got, "spec.replicas") != float64(2) {
		t.Errorf("the Deployment itself changed: %v", got)
	}
	if m, _ := get(t, got, "spec.template.metadata").(map[string]any); m["name"] != nil || m["namespace"] != nil {
		t.Errorf("template metadata %v: the pod view's name or namespace leaked in", m)
	}
	d := evalAutogen(t, snap, req)
	for _, r := range d.Results {
		if r.State != engine.StatePass || !strings.HasPrefix(r.Reason, "pod template (spec.template): ") {
			t.Errorf("result %+v: want pass, its reason naming the template", r)
		}
	}
}

func TestAutogenMutatesACronJobTemplate(t *testing.T) {
	snap := compileAutogen(t, mutatingPodPolicies)
	cron := map[string]any{"schedule": "* * * * *", "jobTemplate": map[string]any{"spec": map[string]any{"template": template(map[string]any{"app": "cron"}, "busybox:1.36")}}}
	req := controllerRequest(t, admissionv1.Create, "batch", "cronjobs", "CronJob", cron, nil)
	got := checkTemplatePatch(t, snap, req, "/spec/jobTemplate/spec/template")
	if v := get(t, got, "spec.jobTemplate.spec.template.metadata.labels"); !reflect.DeepEqual(v, map[string]any{"app": "cron", "example.com/team": "unassigned"}) {
		t.Errorf("cronjob template labels %v", v)
	}
	if v := get(t, got, "spec.jobTemplate.spec.template.spec.containers.0.securityContext.allowPrivilegeEscalation"); v != false {
		t.Errorf("cronjob container: allowPrivilegeEscalation %v, want false", v)
	}
}

// A template without metadata gets one: the pod view has metadata (its
// namespace), so the policy adds below it.
func TestAutogenMutatesATemplateWithoutMetadata(t *testing.T) {
	snap := compileAutogen(t, mutatingPodPolicies)
	for _, meta := range []string{"absent", "null"} {
		tmpl := map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "nginx:1.27"}}}}
		if meta == "null" {
			tmpl["metadata"] = nil
		}
		req := controllerRequest(t, admissionv1.Create, "batch", "jobs", "Job", map[string]any{"template": tmpl}, nil)
		d := evalAutogen(t, snap, req)
		if len(d.Patch) == 0 || d.Patch[0].Path != "/spec/template/metadata" {
			t.Errorf("metadata %s: patch %v, want it to add /spec/template/metadata first", meta, d.Patch)
		}
		got := checkTemplatePatch(t, snap, req, "/spec/template")
		if v := get(t, got, "spec.template.metadata"); !reflect.DeepEqual(v, map[string]any{"labels": map[string]any{"example.com/team": "unassigned"}}) {
			t.Errorf("metadata %s: template metadata %v", meta, v)
		}
	}
}

// What a template does not carry to its pods (the pod's name, its owner
// references) is left out, with a warning; the rest is made.
func TestAutogenLeavesOutPodOnlyFields(t *testing.T) {
	snap := compileAutogen(t, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: pod-fields}
spec:
  match: {resources: [pods], operations: [CREATE]}
  action: mutate
  with:
    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: >
          has(object.metadata.annotations) ? [] : [
            JSONPatch{op: "add", path: "/metadata/generateName", value: "x-"},
            JSONPatch{op: "add", path: "/metadata/annotations", value: {"example.com/seen": "yes"}}]
`)
	req := controllerRequest(t, admissionv1.Create, "apps", "deployments", "Deployment", map[string]any{"template": template(nil, "nginx:1.27")}, nil)
	d := evalAutogen(t, snap, req)
	raw, _ := d.PatchJSON()
	if want := `[{"op":"add","path":"/spec/template/metadata/annotations","value":{"example.com/seen":"yes"}}]`; string(raw) != want {
		t.Errorf("patch %s, want %s", raw, want)
	}
	want := `Celadon policy 'pod-fields' changes what a pod template does not carry (add /metadata/generateName): left out of Deployment "web" pod template (spec.template), made on its pods`
	if !reflect.DeepEqual(d.Warnings, []string{want}) {
		t.Errorf("warnings %q, want %q", d.Warnings, want)
	}
	checkTemplatePatch(t, snap, req, "/spec/template")
}

// Mutating policies on a controller compose in order, each seeing the
// template as the ones before left it, and one that ran before a later
// change is reinvoked.
func TestAutogenMutationsComposeAndReinvoke(t *testing.T) {
	// annotate reads the label that team-label, after it, adds.
	snap := compileAutogen(t, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: annotate-team}
spec:
  match:
    resources: [pods]
    operations: [CREATE]
    conditions:
    - expression: has(object.metadata.labels) && "example.com/team" in object.metadata.labels
  action: mutate
  with:
    mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: >
          Object{metadata: Object.metadata{annotations: {"example.com/owner": object.metadata.labels["example.com/team"]}}}
---
`+mutatingPodPolicies)
	req := controllerRequest(t, admissionv1.Create, "apps", "deployments", "Deployment", map[string]any{"template": template(map[string]any{"app": "web"}, "nginx:1.27")}, nil)
	got := checkTemplatePatch(t, snap, req, "/spec/template")
	if v := get(t, got, "spec.template.metadata.annotations"); !reflect.DeepEqual(v, map[string]any{"example.com/owner": "unassigned"}) {
		t.Errorf("template annotations %v: the reinvoked policy did not see the label added after it", v)
	}
	d := evalAutogen(t, snap, req)
	if r := d.Results[0]; r.Policy != "annotate-team" || r.State != engine.StatePass || !strings.Contains(r.Reason, "reinvoked") {
		t.Errorf("first result %+v, want annotate-team passing on reinvocation", r)
	}
}

func TestAutogenMutationOptOutAndUnchangedTemplate(t *testing.T) {
	optOut := strings.Replace(mutatingPodPolicies, "  action: mutate\n", "  action: mutate\n  autogen: false\n", -1)
	snap := compileAutogen(t, optOut)
	req := controllerRequest(t, admissionv1.Create, "apps", "deployments", "Deployment", map[string]any{"template": template(nil, "nginx:1.27")}, nil)
	if d := evalAutogen(t, snap, req); len(d.Patch) != 0 || len(d.Results) != 0 {
		t.Errorf("opted out: patch %v, results %v", d.Patch, d.Results)
	}

	snap = compileAutogen(t, mutatingPodPolicies)
	old := map[string]any{"replicas": 2, "template": template(nil, "nginx:1.27")}
	scaled := map[string]any{"replicas": 5, "template": template(nil, "nginx:1.27")}
	d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Update, "apps", "deployments", "Deployment", scaled, old))
	if len(d.Patch) != 0 {
		t.Errorf("a scale of an unchanged template was patched: %v", d.Patch)
	}
	for _, r := range d.Results {
		if r.State != engine.StateSkip {
			t.Errorf("unchanged template: %+v, want skip", r)
		}
	}
	changed := map[string]any{"replicas": 2, "template": template(nil, "nginx:1.28")}
	checkTemplatePatch(t, snap, controllerRequest(t, admissionv1.Update, "apps", "deployments", "Deployment", changed, old), "/spec/template")
}

// A pod builtin that adds to pods on CREATE (a pod's spec is immutable)
// adds to a template on UPDATE too: a template may change.
func TestAutogenInjectsASidecarIntoAnUpdatedTemplate(t *testing.T) {
	// Without autogen: true, injectSidecar stays on pods (TemplateOptIn).
	podsOnly := compileAutogen(t, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: sidecar}
spec:
  match: {resources: [pods], operations: [CREATE, UPDATE]}
  action: injectSidecar
  with:
    containers:
    - {name: proxy, image: envoy:1.31}
`)
	if p := podsOnly.Policy("sidecar"); len(p.Autogen()) != 0 {
		t.Errorf("injectSidecar without autogen: true was extended to %v", p.Autogen())
	}

	snap := compileAutogen(t, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: sidecar}
spec:
  match: {resources: [pods], operations: [CREATE, UPDATE]}
  action: injectSidecar
  autogen: true
  with:
    containers:
    - {name: proxy, image: envoy:1.31}
`)
	old := map[string]any{"template": template(nil, "nginx:1.27")}
	changed := map[string]any{"template": template(nil, "nginx:1.28")}
	got := checkTemplatePatch(t, snap, controllerRequest(t, admissionv1.Update, "apps", "daemonsets", "DaemonSet", changed, old), "/spec/template")
	if v := get(t, got, "spec.template.spec.containers.1.name"); v != "proxy" {
		t.Errorf("second container %v, want the sidecar", v)
	}
}
