package cluster

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
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
