package e2e

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
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
