package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"celadon.io/celadon/builtins"
)

// TestCreateSecretComponent builds an overlay of deploy/base with the
// component deploy/components/create-secret, as its kustomization.yaml
// tells users to, and checks its RBAC: the rules the createSecret
// reconciler needs, bound to Celadon's ServiceAccount (the base grants
// leader election), and leader election turned on in the Deployment.
// test/e2e's TestCreateSecret runs the reconciler with exactly these rules.
func TestCreateSecretComponent(t *testing.T) {
	b := newBuilt(t, createSecretOverlay(t))
	checkInstall(b)

	var cr rbacv1.ClusterRole
	b.get("ClusterRole", "celadon-create-secret", &cr)
	createSecret, ok := builtins.Registry().Lookup("createSecret")
	if !ok {
		t.Fatal("no createSecret builtin")
	}
	want := ComponentRules(createSecret) // what the builtin declares
	if len(want) == 0 {
		t.Fatal("createSecret declares no access, yet its controller writes Secrets")
	}
	if !equalRules(cr.Rules, want) {
		t.Errorf("ClusterRole celadon-create-secret rules:\n%+v\nwant:\n%+v", cr.Rules, want)
	}
	var crb rbacv1.ClusterRoleBinding
	b.get("ClusterRoleBinding", "celadon-create-secret", &crb)
	b.checkBinding(crb.RoleRef, crb.Subjects, "ClusterRole", "celadon-create-secret")

	// Leader election is always on: a createSecret policy may arrive by a
	// reload.
	var dep appsv1.Deployment
	b.get("Deployment", "celadon", &dep)
	var env []corev1.EnvVar
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == "celadon" {
			env = c.Env
		}
	}
	if !slices.Contains(env, corev1.EnvVar{Name: "CELADON_LEADER_ELECT", Value: "true"}) {
		t.Errorf("container celadon env %+v: want CELADON_LEADER_ELECT=true", env)
	}
	if !slices.ContainsFunc(env, func(e corev1.EnvVar) bool { return e.Name == "POD_NAMESPACE" }) {
		t.Errorf("container celadon env %+v: the base's POD_NAMESPACE is lost", env)
	}
}

// createSecretOverlay is an overlay of the base with the create-secret
// component, as its kustomization.yaml tells users to write.
func createSecretOverlay(t *testing.T) string {
	return tempOverlay(t, "namespace: "+Namespace+"\nresources:\n- {{deploy}}/base\ncomponents:\n- {{deploy}}/components/create-secret\n")
}

// tempOverlay writes a kustomization.yaml of kustomization, where
// {{deploy}} stands for the relative path to deploy/, into a temporary
// directory, and returns that directory relative to the repository root,
// for build.
func tempOverlay(t *testing.T, kustomization string) string {
	t.Helper()
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	overlay := t.TempDir()
	deploy, err := filepath.Rel(overlay, filepath.Join(abs, "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n" + strings.ReplaceAll(kustomization, "{{deploy}}", filepath.ToSlash(deploy))
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(abs, overlay)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}
