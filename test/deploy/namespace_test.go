package deploy

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestInstallNamespace installs Celadon into another namespace than the
// overlays' (ExampleNamespace): deploy/overlays/example-namespace
// (cert-manager) and overlays that only set `namespace:` on the
// self-signed overlay and on the base with the create-secret component.
// Each must be a whole install in that namespace (checkInstall: the
// bindings' subjects, the Role, the --webhook-service the kubelet expands,
// hence the Service the configurations call and the namespace they
// exclude, the certificate's names) and mention the overlays' namespace
// nowhere, but in names. The example is applied in dry-run to a real API
// server by TestServerSideDryRun.
//
// The same overlay of cert-manager without the replacements must fail the
// scan (the certificate's names): the scan sees what it looks for, and the
// replacements are needed.
func TestInstallNamespace(t *testing.T) {
	for _, tc := range []struct{ name, dir string }{
		{"example-namespace", ExampleNamespaceOverlay},
		{"self-signed", tempOverlay(t, "namespace: "+ExampleNamespace+"\nresources:\n- {{deploy}}/overlays/self-signed\n")},
		{"base+create-secret", tempOverlay(t, "namespace: "+ExampleNamespace+"\nresources:\n- {{deploy}}/base\ncomponents:\n- {{deploy}}/components/create-secret\n")},
		// The component follows the install's namespace by itself.
		{"example-namespace+monitoring", tempOverlay(t, "resources:\n- {{deploy}}/overlays/example-namespace\ncomponents:\n- {{deploy}}/components/monitoring\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuiltIn(t, tc.dir, ExampleNamespace)
			checkInstall(b)
			if b.has("ServiceMonitor", "celadon") {
				checkMonitoring(b)
			}
			for _, m := range namespaceMentions(b.objs, Namespace) {
				t.Errorf("%s: still names the namespace %s: %s", tc.name, Namespace, m)
			}
		})
	}

	t.Run("without replacements", func(t *testing.T) {
		dir := tempOverlay(t, "namespace: "+ExampleNamespace+"\nresources:\n- {{deploy}}/overlays/cert-manager\n")
		got := namespaceMentions(build(t, dir), Namespace)
		want := []string{
			"Certificate celadon-serving spec.dnsNames[0]: celadon.celadon.svc",
			"Certificate celadon-serving spec.dnsNames[1]: celadon.celadon.svc.cluster.local",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("an overlay of cert-manager setting only the namespace: mentions\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("the overlays' own namespace", func(t *testing.T) {
		// Sanity: in the overlays' own namespace the scan finds it
		// everywhere a namespace goes.
		got := namespaceMentions(build(t, CertManagerOverlay), Namespace)
		for _, want := range []string{
			"Deployment celadon metadata.namespace: celadon",
			"ClusterRoleBinding celadon subjects[0].namespace: celadon",
			"Certificate celadon-serving spec.dnsNames[0]: celadon.celadon.svc",
		} {
			if !strings.Contains(strings.Join(got, "\n"), want) {
				t.Errorf("the scan of %s misses %q; found:\n%s", CertManagerOverlay, want, strings.Join(got, "\n"))
			}
		}
	})
}

// namespaceMentions lists, sorted, every place of objs that names the
// namespace ns as a namespace: a field called namespace, a DNS name
// <name>.<ns>.svc, a reference <ns>/<name>, a ServiceAccount's username or
// group, a namespace flag's value, a list of namespaces holding ns. Names
// that happen to equal ns (the Deployment celadon, its labels) are not
// mentions.
func namespaceMentions(objs []*unstructured.Unstructured, ns string) []string {
	q := regexp.QuoteMeta(ns)
	patterns := []*regexp.Regexp{
		regexp.MustCompile(`(^|\.)` + q + `\.svc(\.|$)`),                  // celadon.celadon.svc
		regexp.MustCompile(`(^|[=\s,"'])` + q + `/[a-z0-9]`),              // celadon/celadon, inject-ca-from
		regexp.MustCompile(`system:serviceaccounts?:` + q + `(:|$)`),      // usernames and groups
		regexp.MustCompile(`namespaces?[a-z-]*=([^\s]*,)?` + q + `(,|$)`), // --leader-election-namespace=celadon
	}
	var out []string
	var walk func(what, path, key string, v any, inList bool)
	walk = func(what, path, key string, v any, inList bool) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				walk(what, join(path, k), k, e, false)
			}
		case []any:
			names := strings.Contains(strings.ToLower(key), "namespace") || key == "values"
			for i, e := range v {
				walk(what, fmt.Sprintf("%s[%d]", path, i), key, e, names)
			}
		case string:
			mention := (strings.EqualFold(key, "namespace") || inList) && v == ns
			for _, p := range patterns {
				mention = mention || p.MatchString(v)
			}
			if mention {
				out = append(out, fmt.Sprintf("%s %s: %s", what, path, v))
			}
		}
	}
	for _, u := range objs {
		walk(u.GetKind()+" "+u.GetName(), "", "", u.Object, false)
	}
	sort.Strings(out)
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
