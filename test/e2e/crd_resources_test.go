package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/server"
)

// createCRD creates a namespaced CRD of group, deleted when the test
// ends, and waits until discovery serves its resource.
func createCRD(ctx context.Context, t *testing.T, group, plural, kind string) {
	t.Helper()
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": plural + "." + group},
		"spec": map[string]any{
			"group": group,
			"scope": "Namespaced",
			"names": map[string]any{"plural": plural, "singular": strings.ToLower(kind), "kind": kind, "listKind": kind + "List"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema":       map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
				"subresources": map[string]any{"status": map[string]any{}},
			}},
		},
	}}
	if err := suite.c.Create(ctx, crd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = suite.c.Delete(context.Background(), crd, client.PropagationPolicy("Background")) })
	dc, err := discovery.NewDiscoveryClientForConfig(suite.cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "discovery to serve "+group+"/"+plural, func(context.Context) (bool, error) {
		l, err := dc.ServerResourcesForGroupVersion(group + "/v1")
		if err != nil {
			return false, nil
		}
		for _, r := range l.APIResources {
			if r.Name == plural {
				return true, nil
			}
		}
		return false, nil
	})
}

func crdPolicy(name, resource string) string {
	return `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: ` + name + `}
spec:
  match:
    resources: [` + resource + `]
  action: deny
  with: {message: denied}
`
}

// TestCRDResourcesCheckedAgainstDiscovery checks, against a real API
// server, that `celadon serve` checks a CRD's resources against what the
// cluster's discovery serves: a policy naming a CRD's resource loads; one
// misspelt is refused with a hint, the last good set kept and the failure
// reported at /status; and one naming a CRD created after the server
// started, in a group it serves, is refused until the CRD is served, then
// loads through the reloader alone, the content unchanged.
func TestCRDResourcesCheckedAgainstDiscovery(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	const group = "crdcheck.example.com"
	createCRD(ctx, t, group, "widgets", "Widget")

	s, err := runCeladon(ctx, "crd-resources", map[string][]byte{
		"p.yaml": []byte(crdPolicy("widgets", group+"/widgets") + "---\n" + crdPolicy("widget-status", group+"/widgets/status")),
	}, func(_ *celadon, o *server.Options) { o.ReloadInterval = time.Second })
	if err != nil {
		t.Fatal(err)
	}
	cleanupCeladon(t, s)
	if n := len(s.srv.Snapshot().Policies); n != 2 {
		t.Fatalf("serving %d policies, want 2", n)
	}
	good := s.srv.Snapshot().Hash

	// A typo: refused, with the hint among the group's resources.
	s.setPolicies(t, map[string][]byte{"p.yaml": []byte(crdPolicy("widgets", group+"/widget"))})
	_, err = s.srv.Reload()
	want := `unknown resource "` + group + `/widget": the cluster serves no such resource in ` + group + `: did you mean "` + group + `/widgets"?`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("a misspelt CRD resource: got %v, want %s", err, want)
	}
	if s.srv.Snapshot().Hash != good {
		t.Fatal("the refused set is served")
	}
	st, err := s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastReloadError == nil || !strings.Contains(st.LastReloadError.Errors[0].Text, want) {
		t.Fatalf("/status reports %+v, want %s", st.LastReloadError, want)
	}

	// A CRD created after start, in the group the cluster serves: its
	// policy is refused while the CRD is not served, and loads once it
	// is, through the reloader's polls alone.
	s.setPolicies(t, map[string][]byte{"p.yaml": []byte(crdPolicy("widgets", group+"/widgets") + "---\n" + crdPolicy("gadgets", group+"/gadgets"))})
	if _, err := s.srv.Reload(); err == nil || !strings.Contains(err.Error(), `unknown resource "`+group+`/gadgets"`) {
		t.Fatalf("a CRD not created yet: got %v", err)
	}
	createCRD(ctx, t, group, "gadgets", "Gadget")
	waitFor(ctx, t, "the policy naming the new CRD to load", func(context.Context) (bool, error) {
		return len(s.srv.Snapshot().Policies) == 2 && s.srv.Snapshot().Policies[1].Name() == "gadgets", nil
	})
	if st, err := s.status(ctx); err != nil || st.LastReloadError != nil {
		t.Fatalf("/status after the load: %v, %+v", err, st)
	}

	// A group the cluster does not serve (yet) is not checked: its CRD
	// may come later.
	s.setPolicies(t, map[string][]byte{"p.yaml": []byte(crdPolicy("later", "later.example.com/things"))})
	if changed, err := s.srv.Reload(); err != nil || !changed {
		t.Fatalf("a group not served: changed %v, %v", changed, err)
	}
}
