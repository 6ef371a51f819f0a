package deploy

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"celadon.io/celadon/reports"
)

// backgroundScanOverlay is the cert-manager overlay with the background
// scan component, as its kustomization.yaml tells users to add it.
func backgroundScanOverlay(t *testing.T) string {
	return tempOverlay(t, "resources:\n- {{deploy}}/overlays/cert-manager\ncomponents:\n- {{deploy}}/components/background-scan\n")
}

// TestBackgroundScanComponent checks the background scan component on top
// of an install: the server runs with --background-scan and leader
// election, the OpenReports CRDs come with it, and its ServiceAccount may
// write the reports; the install is otherwise unchanged.
func TestBackgroundScanComponent(t *testing.T) {
	b := newBuilt(t, backgroundScanOverlay(t))
	checkInstall(b)

	var d appsv1.Deployment
	b.get("Deployment", "celadon", &d)
	env := map[string]string{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["CELADON_BACKGROUND_SCAN"] == "" || env["CELADON_LEADER_ELECT"] != "true" {
		t.Errorf("the server's environment %v: want CELADON_BACKGROUND_SCAN and CELADON_LEADER_ELECT=true", env)
	}
	for _, crd := range []string{"reports." + reports.GroupVersion.Group, "clusterreports." + reports.GroupVersion.Group} {
		if !b.has("CustomResourceDefinition", crd) {
			t.Errorf("no CustomResourceDefinition %s", crd)
		}
	}
	var cr rbacv1.ClusterRole
	b.get("ClusterRole", BackgroundScanRoleName, &cr)
	if !slices.ContainsFunc(cr.Rules, func(r rbacv1.PolicyRule) bool {
		return slices.Equal(r.APIGroups, []string{reports.GroupVersion.Group}) && slices.Contains(r.Resources, "reports") && slices.Contains(r.Verbs, "update")
	}) {
		t.Errorf("ClusterRole %s: %+v, want update on reports", BackgroundScanRoleName, cr.Rules)
	}
	var crb rbacv1.ClusterRoleBinding
	b.get("ClusterRoleBinding", BackgroundScanRoleName, &crb)
	b.checkBinding(crb.RoleRef, crb.Subjects, "ClusterRole", BackgroundScanRoleName)
}
