package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/controlplane"
)

// certManagerModule is the cert-manager release whose CRDs the
// cert-manager overlay is checked against. Its module is downloaded from the
// module proxy with `go mod download` and only its deploy/crds/ is read: it
// is no dependency of celadon.io/celadon.
const certManagerModule = "github.com/cert-manager/cert-manager@v1.21.2"

// TestServerSideDryRun applies every object of every kustomization
// server-side, in dry-run, to a real kube-apiserver with cert-manager's
// CRDs installed: the API server's validation, defaulting and schemas
// (unknown fields are errors in server-side apply) accept the manifests as
// they are. Only the Namespace is created for real, as namespaced objects
// cannot be dry-run into a namespace that does not exist.
func TestServerSideDryRun(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real control plane from bin/ (`make controlplane`); skipped in -short mode")
	}
	crds := certManagerCRDs(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var logs bytes.Buffer
	cp, err := controlplane.Start(ctx, controlplane.Options{CRDDirectoryPaths: []string{crds}, Out: &logs})
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	c, err := client.New(cp.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}

	for _, k := range kustomizations {
		t.Run(filepath.Base(k.dir), func(t *testing.T) {
			dryRun(ctx, t, c, k.dir, build(t, k.dir))
		})
	}
	t.Run("rbac", func(t *testing.T) { checkRBACForReal(ctx, t, c) })
	if t.Failed() {
		t.Logf("control plane log (tail):\n%s", tail(logs.String(), 4000))
	}
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
// (which holds the base's) and asks the API server what Celadon's
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
		// The self-signed overlay: its Secret, the Lease and the
		// configurations.
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

// certManagerCRDs returns the directory of cert-manager's CRDs in the module
// cache, downloading the module if needed. The download runs outside this
// module so that it never touches go.mod or go.sum.
func certManagerCRDs(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", certManagerModule)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v\n%s%s", certManagerModule, err, out, stderr.Bytes())
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatalf("go mod download %s: %v\n%s", certManagerModule, err, out)
	}
	if mod.Error != "" || mod.Dir == "" {
		t.Fatalf("go mod download %s: %s", certManagerModule, mod.Error)
	}
	dir := filepath.Join(mod.Dir, "deploy", "crds")
	if _, err := os.Stat(filepath.Join(dir, "cert-manager.io_certificates.yaml")); err != nil {
		t.Fatalf("cert-manager's CRDs: %v", err)
	}
	return dir
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("...%s", s[len(s)-n:])
}
