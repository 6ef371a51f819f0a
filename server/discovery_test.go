package server

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/openapi"
	"k8s.io/client-go/openapi/openapitest"
	clienttesting "k8s.io/client-go/testing"
)

// fakeCluster is a cluster's discovery that serves lists, or fails with
// err; it serves no OpenAPI schema.
type fakeCluster struct {
	mu    sync.Mutex
	lists []*metav1.APIResourceList
	err   error
	reads int
}

type fakeDiscovery struct{ *fakediscovery.FakeDiscovery }

func (fakeDiscovery) OpenAPIV3() openapi.Client { return openapitest.NewFakeClient() }

func (c *fakeCluster) discover() (discovery.DiscoveryInterface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	if c.err != nil {
		return nil, c.err
	}
	return fakeDiscovery{&fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{Resources: append([]*metav1.APIResourceList(nil), c.lists...)}}}, nil
}

func (c *fakeCluster) set(err error, lists ...*metav1.APIResourceList) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err, c.lists = err, lists
}

func crdList(gv string, resources ...string) *metav1.APIResourceList {
	l := &metav1.APIResourceList{GroupVersion: gv}
	for _, r := range resources {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: r, Kind: strings.ToUpper(r[:1]) + strings.TrimSuffix(r[1:], "s"), Namespaced: true})
	}
	return l
}

func resourcePolicy(name, resource string) string {
	return policy(name, "  match: {resources: ["+resource+"]}\n  action: violate\n  with: {message: no}\n")
}

// TestReloadRediscovers checks the resource check against the cluster's
// discovery through reloads: a CRD's resource misspelt is refused with a
// hint and the last good set kept; a policy naming a CRD created after
// start loads once it is served, the same content compiled again with
// discovery read again; and when discovery is out of reach, resources of
// groups not built in are accepted, as offline, rather than refused.
func TestReloadRediscovers(t *testing.T) {
	cluster := &fakeCluster{lists: []*metav1.APIResourceList{crdList("example.com/v1", "widgets")}}
	cm := newConfigMap(t, map[string]string{"p.yaml": resourcePolicy("w", "example.com/widgets")})
	s, err := NewServer(Options{
		PoliciesDir: cm.dir, Registry: testRegistry(), Namespaces: staticNamespaces{},
		MetricsRegisterer: prometheus.NewRegistry(), Logger: testr.New(t), discover: cluster.discover,
	})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	good := s.Snapshot().Hash

	cm.update(map[string]string{"p.yaml": resourcePolicy("w", "example.com/widget")})
	_, err = s.Reload()
	if err == nil || !strings.Contains(err.Error(), `unknown resource "example.com/widget": the cluster serves no such resource in example.com: did you mean "example.com/widgets"?`) {
		t.Fatalf("a misspelt CRD resource: got %v", err)
	}
	if s.Snapshot().Hash != good || s.Status().LastReloadError == nil {
		t.Fatalf("the refused reload: serving %s (want the last good %s), reported %v", s.Snapshot().Hash, good, s.Status().LastReloadError)
	}

	// A policy naming a CRD not served yet, in a served group: refused,
	// then loaded once the CRD is served, the content unchanged.
	cm.update(map[string]string{"p.yaml": resourcePolicy("w", "example.com/widgets") + "---\n" + resourcePolicy("g", "example.com/gadgets")})
	if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), `unknown resource "example.com/gadgets"`) {
		t.Fatalf("a CRD not served yet: got %v", err)
	}
	cluster.set(nil, crdList("example.com/v1", "widgets", "gadgets"))
	if changed, err := s.Reload(); err != nil || !changed {
		t.Fatalf("once the CRD is served: changed %v, %v", changed, err)
	}
	if n := len(s.Snapshot().Policies); n != 2 || s.Status().LastReloadError != nil {
		t.Fatalf("serving %d policies, reload error %v", n, s.Status().LastReloadError)
	}

	// Discovery out of reach: an unknown resource of a dotted group is
	// accepted, as offline; an undotted one is still refused.
	cluster.set(errors.New("connection refused"))
	cm.update(map[string]string{"p.yaml": resourcePolicy("w", "example.com/sprockets")})
	if changed, err := s.Reload(); err != nil || !changed {
		t.Fatalf("discovery out of reach: changed %v, %v", changed, err)
	}
	cm.update(map[string]string{"p.yaml": resourcePolicy("w", "podz")})
	if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), `did you mean "pods"?`) {
		t.Fatalf("a built-in resource misspelt, discovery out of reach: got %v", err)
	}
}

// TestStartRediscovers: at start, policies naming a CRD being created
// with them are loaded once it is served, not refused for good.
func TestStartRediscovers(t *testing.T) {
	for1, every := startRediscoverFor, startRediscoverEvery
	startRediscoverFor, startRediscoverEvery = 5*time.Second, 10*time.Millisecond
	t.Cleanup(func() { startRediscoverFor, startRediscoverEvery = for1, every })

	cluster := &fakeCluster{lists: []*metav1.APIResourceList{crdList("example.com/v1", "widgets")}}
	dir := writePolicies(t, map[string]string{"p.yaml": resourcePolicy("g", "example.com/gadgets")})
	discover := func() (discovery.DiscoveryInterface, error) {
		dc, err := cluster.discover()
		if cluster.reads == 3 {
			cluster.set(nil, crdList("example.com/v1", "widgets", "gadgets"))
		}
		return dc, err
	}
	s, err := NewServer(Options{
		PoliciesDir: dir, Registry: testRegistry(), Namespaces: staticNamespaces{},
		MetricsRegisterer: prometheus.NewRegistry(), Logger: testr.New(t), discover: discover,
	})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	if n := len(s.Snapshot().Policies); n != 1 {
		t.Fatalf("serving %d policies", n)
	}

	// A resource the group never serves still fails the start.
	startRediscoverFor = 50 * time.Millisecond
	dir = writePolicies(t, map[string]string{"p.yaml": resourcePolicy("s", "example.com/sprockets")})
	_, err = NewServer(Options{
		PoliciesDir: dir, Registry: testRegistry(), Namespaces: staticNamespaces{},
		MetricsRegisterer: prometheus.NewRegistry(), Logger: testr.New(t), discover: cluster.discover,
	})
	if err == nil || !strings.Contains(err.Error(), `unknown resource "example.com/sprockets"`) {
		t.Fatalf("got %v", err)
	}
}
