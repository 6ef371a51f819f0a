package cluster

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"celadon.io/celadon/engine"
)

// The Cache itself runs against a real API server in test/e2e
// (TestClusterCache, TestClusterCacheForbidden); these tests need none.

// TestCacheBeforeStart: every read before Start is ServiceUnavailable, so
// that a policy's failurePolicy decides, never a pass or a NotFound.
func TestCacheBeforeStart(t *testing.T) {
	c := New(true)
	ctx := context.Background()
	services := schema.GroupVersionResource{Version: "v1", Resource: "services"}
	if _, err := c.GetNamespace(ctx, "x"); !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), "namespace cache is not started") {
		t.Errorf("GetNamespace: %v", err)
	}
	if _, err := c.Get(ctx, services, "x", "y"); !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), "cluster cache is not started") {
		t.Errorf("Get: %v", err)
	}
	if _, err := c.GetLive(ctx, services, "x", "y"); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("GetLive: %v", err)
	}
	if started := c.Ensure(nil); started != nil {
		t.Errorf("Ensure before Start started %v", started)
	}
}

func TestDropManagedFields(t *testing.T) {
	obj, _ := dropManagedFields(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}})
	if obj.(*corev1.Namespace).ManagedFields != nil {
		t.Error("managed fields kept")
	}
}

func TestNamespaceReader(t *testing.T) {
	nr := NamespaceReader{Reader: fake.NewClientBuilder().WithObjects(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"team": "a"}}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}},
	).Build()}
	ns, err := nr.GetNamespace(context.Background(), "team-a")
	if err != nil || ns.Name != "team-a" || ns.Labels["team"] != "a" || ns.Status.Phase != corev1.NamespaceActive {
		t.Fatalf("GetNamespace(team-a) = %+v, %v", ns, err)
	}
	if _, err := nr.GetNamespace(context.Background(), "ghost"); !apierrors.IsNotFound(err) {
		t.Errorf("GetNamespace(ghost) error = %v, want NotFound", err)
	}
}

// TestCacheUnsyncedIsNotNotFound: started but not synced (here: the API
// server is unreachable), a namespace lookup is ServiceUnavailable, never
// the NotFound an empty lister would answer for a namespace that exists.
func TestCacheUnsyncedIsNotNotFound(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := New(true)
	defer func() { cancel(); c.Wait() }()
	ready, err := c.Start(ctx, &rest.Config{Host: "https://127.0.0.1:1"}, nil) // never answers
	if err != nil {
		t.Fatal(err)
	}
	if err := ready(); err == nil || !strings.Contains(err.Error(), "namespaces not synced") {
		t.Errorf("ready: %v, want namespaces not synced", err)
	}
	_, err = c.GetNamespace(ctx, "default")
	if !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), "not synced") {
		t.Errorf("GetNamespace before sync: %v, want ServiceUnavailable: not synced", err)
	}
}

// TestCacheBoundsLiveReads: the server's direct reads together stop at the
// burst, at once (no waiting), with engine.ErrLiveReadLimited; the API
// server sees no more than the burst.
func TestCacheBoundsLiveReads(t *testing.T) {
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"apiVersion":"v1","kind":"Status","status":"Failure","reason":"NotFound","code":404}`))
	}))
	defer api.Close()
	ctx, cancel := context.WithCancel(context.Background())
	c := New(false)
	defer func() { cancel(); c.Wait() }()
	if _, err := c.Start(ctx, &rest.Config{Host: api.URL}, nil); err != nil {
		t.Fatal(err)
	}
	services := schema.GroupVersionResource{Version: "v1", Resource: "services"}
	limited := 0
	for range 3 * LiveReadBurst {
		_, err := c.GetLive(ctx, services, "shop", "missing")
		switch {
		case errors.Is(err, engine.ErrLiveReadLimited):
			limited++
		case !apierrors.IsNotFound(err):
			t.Fatalf("GetLive: %v", err)
		}
	}
	if n := int(calls.Load()); n > LiveReadBurst+LiveReadsPerSecond || limited == 0 {
		t.Errorf("%d reads reached the API server and %d were refused, of %d: want at most about %d through", n, limited, 3*LiveReadBurst, LiveReadBurst)
	}
}

// TestCacheListBeforeStart: List and ListLive before Start are
// ServiceUnavailable, never an empty list a builtin would read as "none".
func TestCacheListBeforeStart(t *testing.T) {
	c := New(false)
	deployments := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	if _, _, err := c.List(context.Background(), deployments, "shop", labels.Everything(), 5); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("List: %v, want ServiceUnavailable", err)
	}
	if _, _, err := c.ListLive(context.Background(), deployments, "shop", labels.Everything(), 5); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("ListLive: %v, want ServiceUnavailable", err)
	}
}

// TestCacheListLive: one LIST, filtered and bounded by the API server (the
// selector and limit are in the query; a limit of 0 is never sent, as it
// would mean "all"), and a continue token without a count is total -1.
func TestCacheListLive(t *testing.T) {
	var query atomic.Pointer[string]
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Path + "?" + r.URL.RawQuery
		query.Store(&q)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"apiVersion":"apps/v1","kind":"DeploymentList","metadata":{"continue":"more"},"items":[
			{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"shop"}},
			{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"api","namespace":"shop"}}]}`))
	}))
	defer api.Close()
	ctx, cancel := context.WithCancel(context.Background())
	c := New(false)
	defer func() { cancel(); c.Wait() }()
	if _, err := c.Start(ctx, &rest.Config{Host: api.URL}, nil); err != nil {
		t.Fatal(err)
	}
	deployments := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	sel := labels.SelectorFromSet(labels.Set{"celadon.io/protected": "true"})
	items, total, err := c.ListLive(ctx, deployments, "shop", sel, 0)
	if err != nil {
		t.Fatal(err)
	}
	if q := *query.Load(); !strings.HasPrefix(q, "/apis/apps/v1/namespaces/shop/deployments?") ||
		!strings.Contains(q, "labelSelector=celadon.io%2Fprotected%3Dtrue") || !strings.Contains(q, "limit=1") {
		t.Errorf("LIST sent as %s", q)
	}
	if len(items) != 2 || items[0].GetName() != "api" || items[1].GetName() != "web" {
		t.Errorf("items not in name order: %v", items)
	}
	if total != -1 {
		t.Errorf("total = %d, want -1 (more, count unknown)", total)
	}
}
