package engine

import (
	"sort"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/scheme"
)

func TestCheckResource(t *testing.T) {
	cases := []struct {
		entry string
		want  string // "" when accepted
	}{
		{"pods", ""},
		{"*", ""},
		{"*/*", ""},
		{"pods/status", ""},
		{"pods/*", ""},
		{"apps/deployments", ""},
		{"apps/deployments/scale", ""},
		{"apps/*", ""},
		{"networking.k8s.io/ingresses/status", ""},
		{"*/pods/status", ""},
		// Groups that are not built in may be CRDs'.
		{"example.com/widgets", ""},
		{"example.com/*", ""},
		{"example.com/widgets/status", ""},

		{"Pod", `unknown resource "Pod": did you mean "pods"?`},
		{"Pods", `unknown resource "Pods": did you mean "pods"?`},
		{"deployments", `unknown resource "deployments": did you mean "apps/deployments"?`},
		{"Deployment", `unknown resource "Deployment": did you mean "apps/deployments"?`},
		{"apps/Deployment", `unknown resource "apps/Deployment": did you mean "apps/deployments"?`},
		{"ingresses", `unknown resource "ingresses": did you mean "networking.k8s.io/ingresses"?`},
		{"extensions/ingresses", `unknown resource "extensions/ingresses": did you mean "networking.k8s.io/ingresses"?`},
		{"Event", `unknown resource "Event": did you mean "events"?`},
		{"podz", `unknown resource "podz": did you mean "pods"?`},
		{"configmap", `unknown resource "configmap": did you mean "configmaps"?`},
		{"podz/status", `unknown resource "podz/status": did you mean "pods/status"?`},
		{"deployments/scale", `unknown resource "deployments/scale": did you mean "apps/deployments/scale"?`},
		{"app/deployments", `unknown resource "app/deployments": did you mean "apps/deployments"?`},
		{"networking.k8s.io/ingress", `unknown resource "networking.k8s.io/ingress": did you mean "networking.k8s.io/ingresses"?`},
		{"zzzzzzzz", `unknown resource "zzzzzzzz"`},
		{"pods/stats", `unknown subresource "pods/stats": did you mean "pods/status"? (pods has attach, binding,`},
		{"configmaps/status", `unknown subresource "configmaps/status": configmaps has no subresources`},
		{"pods/zzzzzzzz", `unknown subresource "pods/zzzzzzzz" (pods has attach,`},
		{"batch/*", ""},
		{"extensions/*", `unknown API group "extensions"`},
		{"apps/v1/deployments", `unknown resource "apps/v1/deployments": did you mean "apps/deployments"?`},
		{"foo/*", `unknown resource "foo/*"`}, // resource foo, every subresource
	}
	for _, tc := range cases {
		r, err := parseResource(tc.entry)
		if err != nil {
			t.Fatalf("%s: %v", tc.entry, err)
		}
		err = checkResource(tc.entry, r, nil)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.entry, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want %s", tc.entry, err, tc.want)
		case tc.want != "" && !strings.Contains(tc.want, "did you mean") && strings.Contains(err.Error(), "did you mean"):
			t.Errorf("%s: got %v, want no suggestion", tc.entry, err)
		}
	}
}

// notServed are the kinds of the client-go scheme that are no resources of
// the API server builtinResources comes from. A kind new to k8s.io/api fails
// TestBuiltinResourcesCoverTheScheme until kuberesources.go is regenerated
// (go generate ./engine, from a kube-apiserver that serves it) or the kind
// is listed here.
var notServed = map[string]string{
	"/APIGroup":                           "discovery",
	"/APIVersions":                        "discovery",
	"/Status":                             "an error",
	"/RangeAllocation":                    "internal to the API server",
	"/SerializedReference":                "an annotation's content",
	"apps/DeploymentRollback":             "removed in 1.16",
	"apps/Scale":                          "a subresource (scale)",
	"autoscaling/Scale":                   "a subresource (scale)",
	"extensions/DaemonSet":                "the extensions group is not served since 1.22",
	"extensions/Deployment":               "the extensions group is not served since 1.22",
	"extensions/DeploymentRollback":       "the extensions group is not served since 1.22",
	"extensions/Ingress":                  "the extensions group is not served since 1.22",
	"extensions/NetworkPolicy":            "the extensions group is not served since 1.22",
	"extensions/ReplicaSet":               "the extensions group is not served since 1.22",
	"extensions/Scale":                    "the extensions group is not served since 1.22",
	"authentication.k8s.io/TokenRequest":  "a subresource (serviceaccounts/token)",
	"policy/Eviction":                     "a subresource (pods/eviction)",
	"lifecycle.k8s.io/Eviction":           "k8s.io/api v0.37, newer than bin/kube-apiserver",
	"lifecycle.k8s.io/EvictionRequest":    "k8s.io/api v0.37, newer than bin/kube-apiserver",
	"scheduling.k8s.io/CompositePodGroup": "k8s.io/api v0.37, newer than bin/kube-apiserver",
}

// TestBuiltinResourcesCoverTheScheme fails when kuberesources.go is stale:
// when the client-go scheme (the k8s.io/api of go.mod) has a kind no
// resource of the snapshot serves.
func TestBuiltinResourcesCoverTheScheme(t *testing.T) {
	kinds := map[string]bool{}
	for _, r := range builtinResources {
		kinds[r.Group+"/"+r.Kind] = true
	}
	var missing []string
	for gvk := range scheme.Scheme.AllKnownTypes() {
		k := gvk.Group + "/" + gvk.Kind
		if strings.HasSuffix(gvk.Kind, "List") || strings.HasSuffix(gvk.Kind, "Options") || gvk.Kind == "WatchEvent" || kinds[k] {
			continue
		}
		if _, ok := notServed[k]; !ok {
			missing = append(missing, gvk.String())
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("kinds of the client-go scheme that no built-in resource serves: regenerate kuberesources.go (go generate ./engine) or list them in notServed:\n%s", strings.Join(missing, "\n"))
	}
}

func TestBuiltinResourcesIndex(t *testing.T) {
	if builtinGroups[""]["pods"] == nil || builtinGroups["apps"]["deployments"] == nil {
		t.Fatal("pods or apps/deployments missing from the index")
	}
	// Every undotted group parseResource reads as a group is one the API
	// server serves, but extensions, gone since 1.22.
	for g := range undottedGroups {
		if builtinGroups[g] == nil && g != "extensions" {
			t.Errorf("undotted group %q is not served", g)
		}
	}
	for g := range builtinGroups {
		if g != "" && !strings.Contains(g, ".") && !undottedGroups[g] {
			t.Errorf("served undotted group %q is not in undottedGroups: %s/x would read as resource/subresource", g, g)
		}
	}
}

func TestGroupTypo(t *testing.T) {
	for _, tc := range []struct {
		rule ResourceRule
		want string
	}{
		{ResourceRule{Group: "networking.k8s.oi", Resource: "ingresses"}, "networking.k8s.io/ingresses"},
		{ResourceRule{Group: "app.k8s.io", Resource: "x", Subresource: "status"}, ""},
		{ResourceRule{Group: "rbac.authorization.k8s.oi", Resource: "roles", Subresource: "*"}, "rbac.authorization.k8s.io/roles/*"},
		{ResourceRule{Group: "example.com", Resource: "widgets"}, ""},
		{ResourceRule{Group: "gateway.networking.k8s.io", Resource: "gateways"}, ""},
		{ResourceRule{Group: "networking.k8s.io", Resource: "ingresses"}, ""},
		{ResourceRule{Group: "", Resource: "pods"}, ""},
		{ResourceRule{Group: "*", Resource: "*"}, ""},
	} {
		if got := GroupTypo(tc.rule); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.rule, got, tc.want)
		}
	}
}
