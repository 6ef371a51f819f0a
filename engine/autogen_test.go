package engine_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

// autogenPolicies deny a :latest image (deny), and a pod labelled tier=db
// without a memory limit (validate, with a variable), on pods only.
const autogenPolicies = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: no-latest}
spec:
  match:
    resources: [pods]
    operations: [CREATE, UPDATE]
    conditions:
    - expression: object.spec.containers.exists(c, c.image.endsWith(":latest"))
  action: deny
  with:
    messageExpression: '"container " + object.spec.containers.filter(c, c.image.endsWith(":latest"))[0].name + " in " + object.kind + " " + object.metadata.namespace + "/" + object.metadata.name + " uses :latest"'
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: db-limits}
spec:
  match:
    resources: [pods]
    objectSelector: {matchLabels: {tier: db}}
  variables:
  - {name: unlimited, expression: 'object.spec.containers.filter(c, !has(c.resources) || !has(c.resources.limits) || !("memory" in c.resources.limits))'}
  action: validate
  with:
    validations:
    - expression: size(variables.unlimited) == 0
      messageExpression: '"container " + variables.unlimited[0].name + " has no memory limit"'
`

func compileAutogen(t *testing.T, docs string) *engine.Snapshot {
	t.Helper()
	snap, err := engine.Compile([]engine.File{{Name: "p.yaml", Data: []byte(docs)}}, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return snap
}

// template is a pod template with the given labels and images.
func template(labels map[string]any, images ...string) map[string]any {
	var cs []any
	for i, img := range images {
		cs = append(cs, map[string]any{"name": "c" + string(rune('0'+i)), "image": img})
	}
	return map[string]any{"metadata": map[string]any{"labels": labels}, "spec": map[string]any{"containers": cs}}
}

func controllerRequest(t *testing.T, op admissionv1.Operation, group, resource, kind string, spec, oldSpec map[string]any) *admissionv1.AdmissionRequest {
	t.Helper()
	obj := func(spec map[string]any) runtime.RawExtension {
		if spec == nil {
			return runtime.RawExtension{}
		}
		apiVersion := group + "/v1"
		raw, err := json.Marshal(map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": map[string]any{"name": "web", "namespace": "shop"}, "spec": spec})
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: raw}
	}
	return &admissionv1.AdmissionRequest{
		UID:       "1",
		Kind:      metav1.GroupVersionKind{Group: group, Version: "v1", Kind: kind},
		Resource:  metav1.GroupVersionResource{Group: group, Version: "v1", Resource: resource},
		Namespace: "shop", Name: "web", Operation: op,
		Object: obj(spec), OldObject: obj(oldSpec),
	}
}

func evalAutogen(t *testing.T, snap *engine.Snapshot, req *admissionv1.AdmissionRequest) *engine.Decision {
	t.Helper()
	d, err := snap.Evaluate(context.Background(), req, engine.EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestAutogenDeniesADeploymentWhosePodsWouldBeDenied(t *testing.T) {
	snap := compileAutogen(t, autogenPolicies)
	bad := map[string]any{"replicas": 2, "template": template(nil, "nginx:1.27", "redis:latest")}
	d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Create, "apps", "deployments", "Deployment", bad, nil))
	// The message names the controller, its template, and what the pod
	// policy saw: a Pod in the request's namespace, named as the controller.
	want := `Deployment "web" pod template (spec.template): container c1 in Pod shop/web uses :latest`
	if d.Allowed || d.Message != want {
		t.Errorf("allowed=%v message=%q, want denied with %q", d.Allowed, d.Message, want)
	}

	good := map[string]any{"template": template(nil, "nginx:1.27")}
	if d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Create, "apps", "deployments", "Deployment", good, nil)); !d.Allowed {
		t.Errorf("a compliant template: denied with %q", d.Message)
	}
	// An UPDATE that fixes the template passes though the old one violated.
	if d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Update, "apps", "deployments", "Deployment", good, bad)); !d.Allowed {
		t.Errorf("a fixed template: denied with %q", d.Message)
	}
}

func TestAutogenReadsTheTemplatesLabelsAndVariables(t *testing.T) {
	snap := compileAutogen(t, autogenPolicies)
	spec := func(labels map[string]any) map[string]any {
		return map[string]any{"serviceName": "db", "template": template(labels, "postgres:16")}
	}
	d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Create, "apps", "statefulsets", "StatefulSet", spec(map[string]any{"tier": "db"}), nil))
	if d.Allowed || !strings.Contains(d.Message, `StatefulSet "web" pod template (spec.template): container c0 has no memory limit`) {
		t.Errorf("tier=db template: allowed=%v %q, want denied", d.Allowed, d.Message)
	}
	// The objectSelector reads the template's labels, not the controller's.
	if d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Create, "apps", "statefulsets", "StatefulSet", spec(nil), nil)); !d.Allowed {
		t.Errorf("unlabelled template: denied with %q", d.Message)
	}
}

func TestAutogenCronJobNestedTemplate(t *testing.T) {
	snap := compileAutogen(t, autogenPolicies)
	cron := func(image string) map[string]any {
		return map[string]any{"schedule": "* * * * *", "jobTemplate": map[string]any{"spec": map[string]any{"template": template(nil, image)}}}
	}
	d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Create, "batch", "cronjobs", "CronJob", cron("busybox:latest"), nil))
	if d.Allowed || !strings.Contains(d.Message, `CronJob "web" pod template (spec.jobTemplate.spec.template): container c0`) {
		t.Errorf("cronjob: allowed=%v %q, want denied naming the nested template", d.Allowed, d.Message)
	}
	if d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Create, "batch", "cronjobs", "CronJob", cron("busybox:1.36"), nil)); !d.Allowed {
		t.Errorf("compliant cronjob denied: %q", d.Message)
	}
	// A Job's template is at spec.template.
	job := map[string]any{"template": template(nil, "busybox:latest")}
	if d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Create, "batch", "jobs", "Job", job, nil)); d.Allowed {
		t.Error("job with a :latest template admitted")
	}
}

func TestAutogenOptOutAndPodOnly(t *testing.T) {
	optOut := strings.Replace(autogenPolicies, "  action: deny\n", "  action: deny\n  autogen: false\n", 1)
	snap := compileAutogen(t, optOut+`---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: index}
spec:
  match: {resources: [pods], operations: [CREATE]}
  action: injectEnvIndex
  with: {name: INDEX}
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: drain}
spec:
  match: {resources: [pods]}
  action: drainBeforeDelete
  with: {annotate: {key: example.com/drain, doneWhen: 'true'}}
`)
	for _, name := range []string{"no-latest", "index", "drain"} {
		if ag := snap.Policy(name).Autogen(); len(ag) != 0 {
			t.Errorf("%s: autogen %v, want none", name, ag)
		}
	}
	if ag := snap.Policy("db-limits").Autogen(); len(ag) != 6 {
		t.Errorf("db-limits: autogen %v, want the six controllers", ag)
	}
	bad := map[string]any{"template": template(nil, "redis:latest")}
	d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Create, "apps", "deployments", "Deployment", bad, nil))
	if !d.Allowed {
		t.Errorf("opted out: denied with %q", d.Message)
	}
	for _, r := range d.Results {
		if r.Policy != "db-limits" {
			t.Errorf("result of %s on a Deployment: %+v", r.Policy, r)
		}
	}
}

// A policy that names a controller itself sees the controller, not its
// template.
func TestAutogenLeavesExplicitControllerMatches(t *testing.T) {
	snap := compileAutogen(t, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: replicas}
spec:
  match:
    resources: [pods, apps/deployments]
    operations: [CREATE]
    conditions:
    - expression: object.kind == "Deployment" && object.spec.replicas > 3
  action: deny
  with: {message: too many}
`)
	spec := map[string]any{"replicas": 5, "template": template(nil, "nginx:1")}
	d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Create, "apps", "deployments", "Deployment", spec, nil))
	if d.Allowed || d.Message != "too many" {
		t.Errorf("allowed=%v %q, want the Deployment itself denied", d.Allowed, d.Message)
	}
}

// An UPDATE that leaves the template alone is not judged: the controllers
// must still scale a workload created before the policy.
func TestAutogenSkipsAnUnchangedTemplate(t *testing.T) {
	snap := compileAutogen(t, autogenPolicies)
	old := map[string]any{"replicas": 2, "template": template(nil, "redis:latest")}
	scaled := map[string]any{"replicas": 0, "template": template(nil, "redis:latest")}
	d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Update, "apps", "replicasets", "ReplicaSet", scaled, old))
	if !d.Allowed {
		t.Errorf("scaling an old ReplicaSet denied: %q", d.Message)
	}
	changed := map[string]any{"replicas": 2, "template": template(map[string]any{"v": "2"}, "redis:latest")}
	if d := evalAutogen(t, snap, controllerRequest(t, admissionv1.Update, "apps", "replicasets", "ReplicaSet", changed, old)); d.Allowed {
		t.Error("a changed template that still violates was admitted")
	}
}

// autogen: true where it cannot apply is a load error, not silence; on a
// mutating builtin that can run on a template it is what autogen does
// anyway.
func TestAutogenTrueOnAPodOnlyBuiltinIsAnError(t *testing.T) {
	for action, want := range map[string]string{
		"injectEnvIndex\n  with: {name: INDEX}":                                         `"injectEnvIndex" needs a real pod`,
		"scaleRequests\n  with: {cpu: 0.5}":                                             `"scaleRequests" needs a real pod`,
		"drainBeforeDelete\n  with: {annotate: {key: example.com/d, doneWhen: 'true'}}": `"drainBeforeDelete" needs a real pod`,
	} {
		doc := "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  match: {resources: [pods]}\n  autogen: true\n  action: " + action + "\n"
		_, err := engine.Compile([]engine.File{{Name: "p.yaml", Data: []byte(doc)}}, engine.Options{Registry: builtins.Registry()})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "p.yaml:6:") {
			t.Errorf("%s: error %v, want one at spec.autogen (line 6) saying %s", action, err, want)
		}
	}
	doc := "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  match: {resources: [pods]}\n  autogen: true\n  action: mutate\n" +
		"  with: {mutations: [{patchType: JSONPatch, jsonPatch: {expression: '[JSONPatch{op: \"test\", path: \"/kind\", value: \"Pod\"}]'}}]}\n"
	snap, err := engine.Compile([]engine.File{{Name: "p.yaml", Data: []byte(doc)}}, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatalf("autogen: true on mutate: %v", err)
	}
	if ag := snap.Policy("p").Autogen(); len(ag) != 6 {
		t.Errorf("autogen: true on mutate: autogen %v, want the six controllers", ag)
	}
}
