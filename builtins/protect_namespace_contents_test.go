package builtins

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"celadon.io/celadon/engine"
)

// The cluster these tests list is in memory: the builtin sees it only
// through engine.ObjectLister and engine.LiveLister; the informer-backed
// lister is tested against a real API server in test/e2e.

// nsObject is an object of a namespace: resource, namespace, name, labels.
type nsObject struct {
	gvr       schema.GroupVersionResource
	ns, name  string
	protected string // the value of celadon.io/protected; "" for none
}

var deploymentsResource = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}

func deployment(ns, name, protected string) nsObject {
	return nsObject{deploymentsResource, ns, name, protected}
}

func service(ns, name, protected string) nsObject {
	return nsObject{servicesResource, ns, name, protected}
}

// objectList is a namespace lister over a fixed set of objects; lists
// counts its calls.
type objectList struct {
	objects []nsObject
	lists   int
}

func (l *objectList) List(_ context.Context, gvr schema.GroupVersionResource, ns string, sel labels.Selector, limit int) ([]*unstructured.Unstructured, int, error) {
	l.lists++
	var all []*unstructured.Unstructured
	for _, o := range l.objects {
		lbls := map[string]string{}
		if o.protected != "" {
			lbls["celadon.io/protected"] = o.protected
		}
		if o.gvr == gvr && o.ns == ns && sel.Matches(labels.Set(lbls)) {
			u := &unstructured.Unstructured{}
			u.SetName(o.name)
			u.SetNamespace(o.ns)
			u.SetLabels(lbls)
			all = append(all, u)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].GetName() < all[j].GetName() })
	return all[:min(limit, len(all))], len(all), nil
}

// Get implements engine.ObjectGetter; the builtin never gets.
func (l *objectList) Get(_ context.Context, gvr schema.GroupVersionResource, _, name string) (*unstructured.Unstructured, error) {
	return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
}

// laggingCache lists from cache, and from live when asked to bypass it.
// limited makes every live list fail as the server's rate would.
type laggingCache struct {
	cache, live objectList
	limited     bool
	liveLists   []string
}

func (c *laggingCache) Get(ctx context.Context, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	return c.cache.Get(ctx, gvr, ns, name)
}

func (c *laggingCache) List(ctx context.Context, gvr schema.GroupVersionResource, ns string, sel labels.Selector, limit int) ([]*unstructured.Unstructured, int, error) {
	return c.cache.List(ctx, gvr, ns, sel, limit)
}

func (c *laggingCache) ListLive(ctx context.Context, gvr schema.GroupVersionResource, ns string, sel labels.Selector, limit int) ([]*unstructured.Unstructured, int, error) {
	c.liveLists = append(c.liveLists, fmt.Sprintf("%s limit %d", gvr.GroupResource(), limit))
	if c.limited {
		return nil, 0, engine.ErrLiveReadLimited
	}
	items, n, err := c.live.List(ctx, gvr, ns, sel, limit)
	if n > limit {
		n = -1 // the API server does not count past a page with a selector
	}
	return items, n, err
}

// getterOnly reads but cannot list.
type getterOnly struct{}

func (getterOnly) Get(_ context.Context, gvr schema.GroupVersionResource, _, name string) (*unstructured.Unstructured, error) {
	return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
}

// namespaceContentsPolicy protects namespaces' contents with the rest of
// its spec.
func namespaceContentsPolicy(rest string) string {
	return `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: contents
spec:
  match:
    resources: [namespaces]
    operations: [DELETE]
  action: protectNamespaceContents
` + rest
}

// namespaceDelete is the DELETE of namespace shop; extra is added to its
// metadata (YAML flow fields, e.g. "deletionTimestamp: ...").
func namespaceDelete(t testing.TB, extra string) *admissionv1.AdmissionRequest {
	old := "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop" + extra + "}\n"
	return admissionRequest(t, admissionv1.Delete, nil, yamlJSON(t, old))
}

func TestProtectNamespaceContents(t *testing.T) {
	shop := &objectList{objects: []nsObject{
		deployment("shop", "web", "true"), deployment("shop", "api", "true"), deployment("shop", "scratch", ""),
		deployment("shop", "canary", "false"), service("shop", "db", "true"), service("other", "lb", "true"),
	}}
	empty := &objectList{objects: []nsObject{deployment("shop", "scratch", ""), deployment("other", "api", "true")}}
	var many []nsObject
	for i := range 25 {
		many = append(many, deployment("shop", fmt.Sprintf("d%02d", i), "true"))
	}
	cases := []struct {
		name    string
		with    string
		req     *admissionv1.AdmissionRequest
		cluster engine.ObjectGetter
		state   engine.State
		message string // the denial, "" when allowed
		reason  string
	}{
		{
			name: "protected objects of the namespace are named, in resource then name order", cluster: shop, state: engine.StateFail,
			message: "namespace shop holds 3 protected objects (celadon.io/protected=true): deployments.apps/api, deployments.apps/web, services/db; " +
				"deleting it would delete everything else in it and leave it stuck in Terminating. Remove the protection from them first",
		},
		{
			name: "nothing protected in it: allowed", cluster: empty, state: engine.StatePass,
			reason: "namespace shop holds no protected objects (celadon.io/protected=true)",
		},
		{
			name: "a huge namespace: ten named, the rest counted", cluster: &objectList{objects: many}, state: engine.StateFail,
			message: "namespace shop holds 25 protected objects (celadon.io/protected=true): deployments.apps/d00, deployments.apps/d01, deployments.apps/d02, " +
				"deployments.apps/d03, deployments.apps/d04, deployments.apps/d05, deployments.apps/d06, deployments.apps/d07, deployments.apps/d08, deployments.apps/d09 and 15 more; " +
				"deleting it would delete everything else in it and leave it stuck in Terminating. Remove the protection from them first",
		},
		{
			name: "resources and selector from with", cluster: shop, state: engine.StateFail,
			with:    "  with:\n    resources: [v1/services]\n    selector: {matchExpressions: [{key: celadon.io/protected, operator: Exists}]}\n",
			message: "namespace shop holds 1 protected object (celadon.io/protected): services/db; deleting it",
		},
		{
			name: "a resource not in with is not looked at", cluster: shop, state: engine.StatePass,
			with: "  with: {resources: [apps/v1/statefulsets]}\n",
		},
		{
			name: "already terminating: the namespace controller's last DELETE is not blocked", cluster: shop,
			req: namespaceDelete(t, ", deletionTimestamp: '2026-01-02T03:04:05Z'"), state: engine.StateSkip,
			reason: "the namespace is being deleted already",
		},
		{
			name: "a cluster that cannot list: an error, so failurePolicy Fail denies", cluster: getterOnly{}, state: engine.StateError,
			message: `policy "contents" failed: no cluster state to list the namespace's objects in (celadon eval: give it with --cluster)`,
		},
		{
			name: "no cluster at all: an error", state: engine.StateError,
			message: `policy "contents" failed: no cluster state to list the namespace's objects in`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := compilePolicies(t, namespaceContentsPolicy(c.with))
			req := c.req
			if req == nil {
				req = namespaceDelete(t, "")
			}
			d := evaluate(t, snap, req, engine.EvalOptions{Cluster: c.cluster})
			if len(d.Results) != 1 {
				t.Fatalf("results %+v", d.Results)
			}
			r := d.Results[0]
			if r.State != c.state {
				t.Fatalf("state %s (reason %q), want %s", r.State, r.Reason, c.state)
			}
			if d.Allowed != (c.message == "") || !strings.HasPrefix(d.Message, c.message) {
				t.Errorf("allowed %v, message\n%q\nwant one starting with\n%q", d.Allowed, d.Message, c.message)
			}
			if c.reason != "" && r.Reason != c.reason {
				t.Errorf("reason %q, want %q", r.Reason, c.reason)
			}
		})
	}
}

// TestProtectNamespaceContentsRechecks: the cache is not trusted either
// way: each resource is listed once directly, bounded, and that decides;
// when the server's direct reads are over their rate, the cache alone may
// deny but never allow.
func TestProtectNamespaceContentsRechecks(t *testing.T) {
	snap := compilePolicies(t, namespaceContentsPolicy(""))
	var many []nsObject
	for i := range 30 {
		many = append(many, service("shop", fmt.Sprintf("s%02d", i), "true"))
	}
	cases := []struct {
		name      string
		cluster   *laggingCache
		state     engine.State
		message   string
		reason    string
		liveLists string
	}{
		{
			name: "labelled a moment ago: missing from the cache, found live",
			cluster: &laggingCache{
				cache: objectList{objects: []nsObject{deployment("shop", "api", "")}},
				live:  objectList{objects: []nsObject{deployment("shop", "api", "true")}},
			},
			state:     engine.StateFail,
			message:   "namespace shop holds 1 protected object (celadon.io/protected=true): deployments.apps/api; deleting it",
			liveLists: "deployments.apps limit 11, statefulsets.apps limit 11, services limit 11",
		},
		{
			name: "none live either: allowed, saying so",
			cluster: &laggingCache{
				cache: objectList{objects: []nsObject{deployment("shop", "api", "")}},
				live:  objectList{objects: []nsObject{deployment("shop", "api", "")}},
			},
			state:     engine.StatePass,
			reason:    "namespace shop holds no protected objects (celadon.io/protected=true); confirmed by 3 direct lists",
			liveLists: "deployments.apps limit 11, statefulsets.apps limit 11, services limit 11",
		},
		{
			name: "unlabelled a moment ago: still in the cache, gone live: allowed",
			cluster: &laggingCache{
				cache: objectList{objects: []nsObject{deployment("shop", "api", "true")}},
				live:  objectList{objects: []nsObject{deployment("shop", "api", "")}},
			},
			state:     engine.StatePass,
			reason:    "namespace shop holds no protected objects (celadon.io/protected=true); confirmed by 3 direct lists",
			liveLists: "deployments.apps limit 11, statefulsets.apps limit 11, services limit 11",
		},
		{
			name: "direct reads over the server's rate: the cache alone may deny, saying so",
			cluster: &laggingCache{
				limited: true,
				cache:   objectList{objects: []nsObject{deployment("shop", "api", "true")}},
			},
			state:     engine.StateError,
			message:   `policy "contents" failed: could not confirm that namespace shop holds no protected statefulsets.apps`,
			liveLists: "deployments.apps limit 11, statefulsets.apps limit 11",
		},
		{
			name:      "more live than one page: counted as at least, never as all",
			cluster:   &laggingCache{live: objectList{objects: many}},
			state:     engine.StateFail,
			message:   "namespace shop holds at least 11 protected objects (celadon.io/protected=true): services/s00, ",
			liveLists: "deployments.apps limit 11, statefulsets.apps limit 11, services limit 11",
		},
		{
			name:      "direct reads over the server's rate: an error (Fail denies), never an allow on the cache's word",
			cluster:   &laggingCache{limited: true},
			state:     engine.StateError,
			message:   `policy "contents" failed: could not confirm that namespace shop holds no protected deployments.apps: too many direct reads of the API server right now; retry the DELETE`,
			liveLists: "deployments.apps limit 11",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := evaluate(t, snap, namespaceDelete(t, ""), engine.EvalOptions{Cluster: c.cluster})
			r := d.Results[0]
			if r.State != c.state {
				t.Fatalf("state %s (reason %q), want %s", r.State, r.Reason, c.state)
			}
			if d.Allowed != (c.message == "") || !strings.HasPrefix(d.Message, c.message) {
				t.Errorf("allowed %v, message\n%q\nwant one starting with\n%q", d.Allowed, d.Message, c.message)
			}
			if c.reason != "" && r.Reason != c.reason {
				t.Errorf("reason %q, want %q", r.Reason, c.reason)
			}
			if got := strings.Join(c.cluster.liveLists, ", "); got != c.liveLists {
				t.Errorf("direct lists: %s\nwant: %s", got, c.liveLists)
			}
		})
	}
}

func TestProtectNamespaceContentsLoadErrors(t *testing.T) {
	head := namespaceContentsPolicy("") // 9 lines
	var tooMany []string
	for i := range 17 {
		tooMany = append(tooMany, fmt.Sprintf("example.com/v1/r%d", i))
	}
	cases := []struct{ name, with, want string }{
		{"empty resources", "  with: {resources: []}\n", `p.yaml:10:10: policy "contents": with.resources: is empty: the policy would protect nothing`},
		{"too many resources", "  with: {resources: [" + strings.Join(tooMany, ", ") + "]}\n", `p.yaml:10:10: policy "contents": with.resources: has 17 entries, more than 16`},
		{"no version", "  with:\n    resources: [apps/v1/deployments, apps/statefulsets]\n", `p.yaml:11:38: policy "contents": with.resources[1]: "apps/statefulsets": "apps" is not a version such as v1`},
		{"a bare resource", "  with:\n    resources: [services]\n", `p.yaml:11:17: policy "contents": with.resources[0]: "services" is not group/version/resource`},
		{"an empty group", "  with:\n    resources: [/v1/services]\n", `p.yaml:11:17: policy "contents": with.resources[0]: "/v1/services": the group is empty; write v1/services`},
		{"namespaces hold no namespaces", "  with:\n    resources: [v1/namespaces]\n", `p.yaml:11:17: policy "contents": with.resources[0]: namespaces are cluster-scoped`},
		{"listed twice", "  with:\n    resources: [v1/services, v1/services]\n", `p.yaml:11:30: policy "contents": with.resources[1]: "v1/services" is listed twice`},
		{"an empty selector protects everything", "  with:\n    selector: {}\n", `p.yaml:11:5: policy "contents": with.selector: is empty: it would protect every object`},
		{"a bad selector", "  with:\n    selector: {matchExpressions: [{key: a, operator: Maybe}]}\n", `p.yaml:11:5: policy "contents": with.selector: "Maybe" is not a valid label selector operator`},
		{"unknown field", "  with:\n    resource: [v1/services]\n", `p.yaml:11:5: policy "contents": with.resource: unknown field`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkLoadError(t, compileErrors(t, head+c.with), c.want)
		})
	}
}
