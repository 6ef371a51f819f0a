package deploy

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestServerSideDryRun applies every object of every kustomization
// server-side, in dry-run, to a real kube-apiserver with cert-manager's
// CRDs installed: the API server's validation, defaulting and schemas
// (unknown fields are errors in server-side apply) accept the manifests as
// they are. Only the namespaces are created for real, as namespaced objects
// cannot be dry-run into a namespace that does not exist.
func TestServerSideDryRun(t *testing.T) {
	c, _ := sharedControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	for _, k := range kustomizations {
		t.Run(filepath.Base(k.dir), func(t *testing.T) {
			dryRun(ctx, t, c, k.dir, build(t, k.dir))
		})
	}
	// The components, as their kustomization.yaml tells users to add them.
	for name, dir := range map[string]string{"monitoring": monitoringOverlay(t), "create-secret": createSecretOverlay(t), "background-scan": backgroundScanOverlay(t)} {
		t.Run(name, func(t *testing.T) { dryRun(ctx, t, c, name, build(t, dir)) })
	}
	t.Run("rbac", func(t *testing.T) { checkRBACForReal(ctx, t, c) })
}

// dryRun applies objs server-side in dry-run, after creating for real the
// namespaces they go into (namespaced objects cannot be dry-run into a
// namespace that does not exist).
func dryRun(ctx context.Context, t *testing.T, c client.Client, what string, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, u := range objs {
		if ns := u.GetNamespace(); ns != "" {
			if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("creating the namespace %s: %v", ns, err)
			}
		}
	}
	for _, u := range objs {
		err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
			client.DryRunAll, client.FieldOwner("celadon-test"), client.ForceOwnership)
		if err != nil {
			t.Errorf("%s: dry-run apply of %s %s: %v", what, u.GetKind(), u.GetName(), err)
		}
	}
}

// checkRBACForReal creates the RBAC objects of the self-signed overlay
// (which holds the base's, --manage-webhooks' included) and asks the API server what Celadon's
// ServiceAccount may do: what the server needs, and not more.
func checkRBACForReal(ctx context.Context, t *testing.T, c client.Client) {
	for _, u := range build(t, SelfSignedOverlay) {
		switch u.GetKind() {
		case "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("celadon-test"), client.ForceOwnership); err != nil {
				t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
			}
		}
	}
	user := "system:serviceaccount:" + Namespace + ":celadon"
	for _, tc := range []struct {
		verb, group, resource, ns, name string
		allowed                         bool
	}{
		// The base: the namespace informer, and the direct read of a
		// namespace not in it yet.
		{"list", "", "namespaces", "", "", true},
		{"watch", "", "namespaces", "", "", true},
		{"get", "", "namespaces", "", "kube-system", true},
		{"update", "", "namespaces", "", "kube-system", false},
		{"list", "", "pods", "", "", false},
		// The base: secure metrics' reviews.
		{"create", "authentication.k8s.io", "tokenreviews", "", "", true},
		{"create", "authorization.k8s.io", "subjectaccessreviews", "", "", true},
		// The base: checkIngressBackends' Services and IngressClasses.
		{"watch", "", "services", "", "", true},
		{"get", "", "services", "shop", "api", true},
		{"update", "", "services", "shop", "api", false},
		{"list", "networking.k8s.io", "ingressclasses", "", "", true},
		{"get", "networking.k8s.io", "ingressclasses", "", "nginx", true},
		{"list", "networking.k8s.io", "ingresses", "", "", false},
		{"list", "", "secrets", Namespace, "", false},
		// protectNamespaceContents: what a namespace holds, read only.
		{"list", "apps", "deployments", "shop", "", true},
		{"watch", "apps", "statefulsets", "", "", true},
		{"delete", "apps", "deployments", "shop", "api", false},
		{"create", "coordination.k8s.io", "leases", "default", "", false},
		// The base: the Lease and the configurations of
		// --manage-webhooks; the self-signed overlay: its Secret.
		{"create", "coordination.k8s.io", "leases", Namespace, "", true},
		{"get", "coordination.k8s.io", "leases", Namespace, "celadon-webhooks", true},
		{"update", "coordination.k8s.io", "leases", Namespace, "celadon-webhooks", true},
		{"update", "coordination.k8s.io", "leases", Namespace, "other", false},
		{"create", "", "events", Namespace, "", true},
		{"create", "", "events", "default", "", false},
		{"watch", "", "secrets", Namespace, "celadon-tls", false},
		{"list", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "", false},
		{"get", "", "secrets", Namespace, "celadon-tls", true},
		{"update", "", "secrets", Namespace, "celadon-tls", true},
		{"create", "", "secrets", Namespace, "", true},
		{"get", "", "secrets", Namespace, "other", false},
		{"get", "", "secrets", "default", "celadon-tls", false},
		{"create", "", "secrets", "default", "", false},
		{"update", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "celadon", true},
		{"update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "celadon", true},
		{"update", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "other", false},
		{"delete", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "celadon", false},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + Namespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: tc.verb, Group: tc.group, Resource: tc.resource, Namespace: tc.ns, Name: tc.name,
			},
		}}
		if err := c.Create(ctx, sar); err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		if sar.Status.Allowed != tc.allowed {
			t.Errorf("%s %s %s (namespace %q, name %q): allowed %v, want %v (%s)",
				tc.verb, tc.group, tc.resource, tc.ns, tc.name, sar.Status.Allowed, tc.allowed, sar.Status.Reason)
		}
	}
}
