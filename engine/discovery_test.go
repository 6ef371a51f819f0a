package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	openapiclient "k8s.io/client-go/openapi"
	clienttesting "k8s.io/client-go/testing"
)

// fakeDiscovery is a discovery serving resources, and no OpenAPI schema.
type fakeDiscovery struct{ *fakediscovery.FakeDiscovery }

func (fakeDiscovery) OpenAPIV3() openapiclient.Client { return gzipFileClient{fstest.MapFS{}} }

func newFakeDiscovery(lists ...*metav1.APIResourceList) fakeDiscovery {
	return fakeDiscovery{&fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{Resources: lists}}}
}

// widgets is a CRD's group: widgets with a status, and gizmos.
func widgets() *metav1.APIResourceList {
	return &metav1.APIResourceList{GroupVersion: "example.com/v1", APIResources: []metav1.APIResource{
		{Name: "widgets", Kind: "Widget", Namespaced: true},
		{Name: "widgets/status", Kind: "Widget", Namespaced: true},
		{Name: "gizmos", Kind: "Gizmo", Namespaced: true},
	}}
}

func discoveredSchemas(t *testing.T, lists ...*metav1.APIResourceList) *Schemas {
	t.Helper()
	s, err := DiscoverySchemas(newFakeDiscovery(lists...))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Discovered() {
		t.Fatal("schemas from a discovery do not check its resources")
	}
	return s
}

// TestCheckResourceAgainstDiscovery checks that, with the schemas of a
// cluster's discovery, the resources of a group it serves that is not
// built in (a CRD's) are checked, with a hint among that group's; that a
// group it does not serve is accepted, as a CRD may come later; and that
// offline every dotted group is accepted, as before.
func TestCheckResourceAgainstDiscovery(t *testing.T) {
	served := discoveredSchemas(t, widgets())
	cases := []struct {
		entry, want string // want "": accepted
	}{
		{"example.com/widgets", ""},
		{"example.com/*", ""},
		{"example.com/widgets/status", ""},
		{"example.com/widgets/*", ""},
		{"example.com/gizmos", ""},
		{"example.com/widget", `unknown resource "example.com/widget": the cluster serves no such resource in example.com: did you mean "example.com/widgets"?`},
		{"example.com/Widget", `unknown resource "example.com/Widget": the cluster serves no such resource in example.com: did you mean "example.com/widgets"?`},
		{"example.com/Gizmo/status", `unknown resource "example.com/Gizmo/status": the cluster serves no such resource in example.com: did you mean "example.com/gizmos/status"?`},
		{"example.com/sprockets", `unknown resource "example.com/sprockets": the cluster serves no such resource in example.com`},
		{"example.com/widgets/stats", `unknown subresource "example.com/widgets/stats": did you mean "example.com/widgets/status"? (example.com/widgets has status)`},
		{"example.com/gizmos/status", `unknown subresource "example.com/gizmos/status": example.com/gizmos has no subresources`},
		{"other.example.org/things", ""}, // not served (yet)
		{"podz", `unknown resource "podz": did you mean "pods"?`},
	}
	for _, tc := range cases {
		r, err := parseResource(tc.entry)
		if err != nil {
			t.Fatalf("%s: %v", tc.entry, err)
		}
		err = checkResource(tc.entry, r, served)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.entry, err)
		case tc.want != "" && (err == nil || err.Error() != tc.want):
			t.Errorf("%s: got %v, want %s", tc.entry, err, tc.want)
		case strings.HasSuffix(tc.entry, "sprockets") && strings.Contains(err.Error(), "did you mean"):
			t.Errorf("%s: a hint for a name near none: %v", tc.entry, err)
		}
		// Offline, and with schemas whose discovery could not be
		// read, a dotted group is never checked.
		if strings.Contains(r.Group, ".") {
			for name, s := range map[string]*Schemas{"offline": nil, "snapshot": BuiltinSchemas(), "without discovery": served.WithServed(nil)} {
				if err := checkResource(tc.entry, r, s); err != nil {
					t.Errorf("%s, %s: %v", tc.entry, name, err)
				}
			}
		}
	}
}

// TestServedFromDiscoveryLeavesFailedGroupsOut: a group of which a
// version could not be discovered is not checked at all.
func TestServedFromDiscoveryLeavesFailedGroupsOut(t *testing.T) {
	v2 := &metav1.APIResourceList{GroupVersion: "example.com/v2", APIResources: []metav1.APIResource{{Name: "gadgets", Kind: "Gadget"}}}
	served := ServedFromDiscovery([]*metav1.APIResourceList{widgets(), v2}, map[schema.GroupVersion]error{{Group: "example.com", Version: "v3"}: errors.New("down")})
	if _, ok := served["example.com"]; ok {
		t.Errorf("a group that failed is served: %v", served["example.com"])
	}
	served = ServedFromDiscovery([]*metav1.APIResourceList{widgets(), v2}, nil)
	if got := fmt.Sprint(served["example.com"]); got != "map[gadgets:[] gizmos:[] widgets:[status]]" {
		t.Errorf("served: %s", got)
	}
}

// TestStoreRediscovers checks the operator flow: content refused only
// because it names a resource the cluster's discovery does not serve (a
// CRD created at the same time, or later) is compiled again, discovery
// read again, at each Load until it loads; content with other errors is
// not.
func TestStoreRediscovers(t *testing.T) {
	dir := t.TempDir()
	policy := func(name, resource string) string {
		return "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata: {name: " + name + "}\nspec:\n  match: {resources: [" + resource + "]}\n  action: violate\n"
	}
	write := func(content string) {
		if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lists := []*metav1.APIResourceList{widgets()}
	reads := 0
	store := NewStore(dir, Options{Registry: testRegistry(), Rediscover: func() *Schemas {
		reads++
		return discoveredSchemas(t, lists...)
	}})
	write(policy("w", "example.com/widgets"))
	if _, err := store.Load(); err != nil {
		t.Fatal(err)
	}
	if reads != 1 {
		t.Fatalf("discovery read %d times for one compilation", reads)
	}

	write(policy("w", "example.com/widgets") + "---\n" + policy("g", "example.com/gadgets"))
	_, err := store.Load()
	if err == nil || !strings.Contains(err.Error(), `unknown resource "example.com/gadgets"`) {
		t.Fatalf("a resource the group does not serve: got %v", err)
	}
	if f := store.Failure(); f == nil || !f.Rediscover {
		t.Fatalf("failure %+v: want one to rediscover", f)
	}
	if _, err := store.Load(); err == nil || reads != 3 {
		t.Fatalf("the same content again, the CRD not there yet: got %v, discovery read %d times, want 3", err, reads)
	}
	// The CRD is created: the same content loads at the next Load.
	lists = append(lists, &metav1.APIResourceList{GroupVersion: "example.com/v1alpha1", APIResources: []metav1.APIResource{{Name: "gadgets", Kind: "Gadget"}}})
	changed, err := store.Load()
	if err != nil || !changed {
		t.Fatalf("after the CRD is served: changed %v, %v", changed, err)
	}
	if store.Failure() != nil || len(store.Current().Policies) != 2 {
		t.Fatalf("served %d policies, failure %v", len(store.Current().Policies), store.Failure())
	}
	if _, err := store.Load(); err != nil || reads != 4 {
		t.Fatalf("unchanged content: %v, discovery read %d times, want 4 (none more)", err, reads)
	}

	// Another error as well: compiled once, not at every Load.
	write(policy("w", "example.com/sprockets") + "---\n" + policy("g", "podz"))
	if _, err := store.Load(); err == nil {
		t.Fatal("no error")
	}
	if f := store.Failure(); f == nil || f.Rediscover {
		t.Fatalf("failure %+v: want one not to rediscover", f)
	}
	if _, err := store.Load(); err == nil || reads != 5 {
		t.Fatalf("content with other errors again: %v, discovery read %d times, want 5", err, reads)
	}
	if got := len(store.Current().Policies); got != 2 {
		t.Fatalf("the last good set is not served: %d policies", got)
	}
}
