package e2e

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// autogenLabel scopes this file's server to the namespaces carrying it.
const autogenLabel = "e2e.celadon.io/autogen"

// autogenPolicies deny a :latest image, written for pods only.
var autogenPolicies = map[string][]byte{"autogen.yaml": []byte(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-no-latest
spec:
  match:
    resources: [pods]
    operations: [CREATE, UPDATE]
    conditions:
    - expression: object.spec.containers.exists(c, c.image.endsWith(":latest"))
  action: deny
  with:
    messageExpression: '"container " + object.spec.containers.filter(c, c.image.endsWith(":latest"))[0].name + " uses a :latest image"'
`)}

// TestAutogenRejectsADeployment checks, through the API server, that a
// pod policy rejects a Deployment whose pods it would reject, at the
// Deployment's creation, and admits a compliant one.
func TestAutogenRejectsADeployment(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	scope := &metav1.LabelSelector{MatchLabels: map[string]string{autogenLabel: "true"}}
	startScopedCeladon(ctx, t, "celadon-e2e-autogen", autogenPolicies, nil, scope, nil)
	ns := newNamespace(ctx, t, "autogen", map[string]string{autogenLabel: "true"})

	deployment := func(name, image string) *appsv1.Deployment {
		labels := map[string]string{"app": name}
		spec := podSpec()
		spec.Containers[1].Image = image
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To(int32(0)),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
			},
		}
	}
	err := suite.c.Create(ctx, deployment("floating", "registry.invalid/metrics:latest"))
	want := `Deployment "floating" pod template (spec.template): container metrics uses a :latest image`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("creating a Deployment whose template uses :latest: got %v, want the API server's rejection with %q", err, want)
	}
	t.Logf("rejected: %v", err)
	if err := suite.c.Create(ctx, deployment("pinned", "registry.invalid/metrics:1")); err != nil {
		t.Fatalf("creating a compliant Deployment: %v", err)
	}
}

// autogenMutations label pods with a team and forbid privilege escalation
// in their containers, written for pods only.
var autogenMutations = map[string][]byte{"mutate.yaml": []byte(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-team-label
spec:
  match:
    resources: [pods]
    operations: [CREATE, UPDATE]
  action: mutate
  with:
    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: >
          has(object.metadata.labels) && "example.com/team" in object.metadata.labels ? [] :
          [JSONPatch{op: "add", path: "/metadata/labels", value: {}}].filter(p, !has(object.metadata.labels)) +
          [JSONPatch{op: "add", path: "/metadata/labels/" + jsonpatch.escapeKey("example.com/team"), value: "unassigned"}]
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: >
          Object{spec: Object.spec{containers: object.spec.containers.map(c, Object.spec.containers{
            name: c.name, securityContext: Object.spec.containers.securityContext{allowPrivilegeEscalation: false}})}}
`)}

// TestAutogenMutatesADeployment checks, through the API server, that a
// mutating pod policy mutates the pod template of a Deployment and of a
// CronJob when they are created, and the template of a Deployment whose
// template an UPDATE changes.
func TestAutogenMutatesADeployment(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	scope := &metav1.LabelSelector{MatchLabels: map[string]string{autogenLabel: "mutate"}}
	startScopedCeladon(ctx, t, "celadon-e2e-autogen-mutate", autogenMutations, nil, scope, nil)
	ns := newNamespace(ctx, t, "autogen-mutate", map[string]string{autogenLabel: "mutate"})

	checkTemplate := func(what string, tmpl corev1.PodTemplateSpec) {
		t.Helper()
		if got := tmpl.Labels["example.com/team"]; got != "unassigned" {
			t.Errorf("%s: template labels %v, want example.com/team=unassigned", what, tmpl.Labels)
		}
		for _, c := range tmpl.Spec.Containers {
			if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: container %s securityContext %+v, want allowPrivilegeEscalation false", what, c.Name, sc)
			}
		}
	}

	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec()},
		},
	}
	if err := suite.c.Create(ctx, d); err != nil {
		t.Fatalf("creating a Deployment: %v", err)
	}
	checkTemplate("created Deployment", d.Spec.Template)
	if d.Labels["example.com/team"] != "" {
		t.Errorf("the Deployment's own labels were mutated: %v", d.Labels)
	}

	// An UPDATE that changes the template (a container the policy has not
	// seen) gets it mutated too.
	// The deployment controller writes the Deployment too: on a conflict,
	// read it again and retry.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: "extra", Image: "registry.invalid/extra:1"})
		return suite.c.Update(ctx, d)
	}); err != nil {
		t.Fatalf("updating the Deployment's template: %v", err)
	}
	checkTemplate("updated Deployment", d.Spec.Template)

	cron := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nightly"},
		Spec: batchv1.CronJobSpec{
			Schedule: "0 3 * * *",
			Suspend:  ptr.To(true),
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
				Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: podSpec().Containers},
			}}},
		},
	}
	if err := suite.c.Create(ctx, cron); err != nil {
		t.Fatalf("creating a CronJob whose template has no labels: %v", err)
	}
	checkTemplate("created CronJob", cron.Spec.JobTemplate.Spec.Template)
}
