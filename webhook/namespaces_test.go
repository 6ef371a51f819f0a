package webhook

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// These tests run the namespace getters on stand-ins: NamespaceLister on a
// client-go indexer filled by hand, as the informer fills it, and
// NamespaceReader on controller-runtime's fake client. The real Namespace
// informer, its sync and readiness are covered by the e2e suite against a
// real API server.

func TestNamespaceLister(t *testing.T) {
	indexer := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{})
	_ = indexer.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"team": "a"}}})
	nl := NamespaceLister{Lister: corev1listers.NewNamespaceLister(indexer)}
	ns, err := nl.GetNamespace(context.Background(), "team-a")
	if err != nil || ns.Labels["team"] != "a" {
		t.Fatalf("GetNamespace(team-a) = %+v, %v", ns, err)
	}
	if _, err := nl.GetNamespace(context.Background(), "ghost"); !apierrors.IsNotFound(err) {
		t.Errorf("GetNamespace(ghost) error = %v, want NotFound", err)
	}
	// The informer's transform drops managed fields.
	obj, _ := stripManagedFields(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}})
	if obj.(*corev1.Namespace).ManagedFields != nil {
		t.Error("managed fields kept")
	}
}

func fakeNamespaces() NamespaceReader {
	return NamespaceReader{Reader: fake.NewClientBuilder().WithObjects(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"team": "a"}}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b", Labels: map[string]string{"team": "b"}}},
	).Build()}
}

func TestNamespaceReader(t *testing.T) {
	nr := fakeNamespaces()
	ns, err := nr.GetNamespace(context.Background(), "team-a")
	if err != nil || ns.Name != "team-a" || ns.Labels["team"] != "a" || ns.Status.Phase != corev1.NamespaceActive {
		t.Fatalf("GetNamespace(team-a) = %+v, %v", ns, err)
	}
	if _, err := nr.GetNamespace(context.Background(), "ghost"); !apierrors.IsNotFound(err) {
		t.Errorf("GetNamespace(ghost) error = %v, want NotFound", err)
	}
}

func TestNamespaceSelection(t *testing.T) {
	s, _ := newTestServer(t, map[string]string{
		"a.yaml": policy("team-a-only", `  match:
    resources: [pods]
    namespaceSelector: {matchLabels: {team: a}}
  action: violate
  with: {message: team a pods are frozen}
  failurePolicy: Fail
`),
		"b.yaml": probePolicy["probe.yaml"],
	}, func(o *Options) { o.Namespaces = fakeNamespaces() })
	in := func(ns string) func(*admissionv1.AdmissionRequest) {
		return func(r *admissionv1.AdmissionRequest) { r.Namespace = ns }
	}
	if got := denialOf(t, s, in("team-a")); got != "team a pods are frozen" {
		t.Errorf("team-a: %q", got)
	}
	if got := denialOf(t, s, in("team-b")); got != "" {
		t.Errorf("team-b: %q", got)
	}
	// A namespace missing from the cache is an error under failurePolicy.
	if got := denialOf(t, s, in("ghost")); !strings.Contains(got, `policy "team-a-only" failed: namespaceSelector: namespace "ghost": namespaces "ghost" not found`) {
		t.Errorf("ghost: %q", got)
	}
	// namespaceObject reaches builtins too.
	if got := probeWarnings(t, s, "", in("team-b"))["namespace"]; got != "team-b team=b" {
		t.Errorf("probe saw namespace %q", got)
	}
}

func TestNamespacesBeforeStart(t *testing.T) {
	l := &lateNamespaces{}
	if _, err := l.GetNamespace(context.Background(), "x"); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("before Start: %v", err)
	}
	l.set(fakeNamespaces())
	if ns, err := l.GetNamespace(context.Background(), "team-a"); err != nil || ns.Name != "team-a" {
		t.Errorf("after Start: %v, %v", ns, err)
	}
}
