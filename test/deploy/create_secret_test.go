package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"celadon.io/celadon/builtins"
)

// TestCreateSecretComponent builds an overlay of deploy/base with the
// component deploy/components/create-secret, as its kustomization.yaml
// tells users to, and checks its RBAC: the rules the createSecret
// reconciler needs, bound to Celadon's ServiceAccount, the Lease's in
// Celadon's namespace, and leader election turned on in the Deployment.
// test/e2e's TestCreateSecret runs the reconciler with exactly these rules.
func TestCreateSecretComponent(t *testing.T) {
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	overlay := t.TempDir()
	base, err := filepath.Rel(overlay, filepath.Join(abs, "deploy", "base"))
	if err != nil {
		t.Fatal(err)
	}
	kustomization := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: celadon\n" +
		"resources:\n- " + base + "\ncomponents:\n- " + filepath.Join(filepath.Dir(base), "components", "create-secret") + "\n"
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(abs, overlay)
	if err != nil {
		t.Fatal(err)
	}
	b := built{t: t, dir: rel, objs: build(t, rel)}

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
	checkBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", "celadon-create-secret")

	var role rbacv1.Role
	b.get("Role", "celadon-create-secret", &role)
	if role.Namespace != Namespace {
		t.Errorf("Role in namespace %q, want %q", role.Namespace, Namespace)
	}
	wantRole := LeaderElectionRules()
	if !equalRules(role.Rules, wantRole) {
		t.Errorf("Role celadon-create-secret rules:\n%+v\nwant:\n%+v", role.Rules, wantRole)
	}
	var rb rbacv1.RoleBinding
	b.get("RoleBinding", "celadon-create-secret", &rb)
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", "celadon-create-secret")
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
	// The base is there too.
	if !b.has("ClusterRole", "celadon") || !b.has("Deployment", "celadon") {
		t.Errorf("the overlay lost the base: %d objects", len(b.objs))
	}
}
