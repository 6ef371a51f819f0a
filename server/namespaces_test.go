package server

import (
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"celadon.io/celadon/cluster"
)

// fakeNamespaces serves team-a and team-b from controller-runtime's fake
// client; the real namespace informer, its sync and readiness are covered
// by the e2e suite against a real API server.
func fakeNamespaces() cluster.NamespaceReader {
	return cluster.NamespaceReader{Reader: fake.NewClientBuilder().WithObjects(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"team": "a"}}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b", Labels: map[string]string{"team": "b"}}},
	).Build()}
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

// TestNamespacesBeforeStart: without Options.Namespaces, a namespace
// lookup before Start is an error under failurePolicy, never a NotFound.
func TestNamespacesBeforeStart(t *testing.T) {
	s, _ := newTestServer(t, map[string]string{
		"a.yaml": policy("team-a-only", "  match:\n    resources: [pods]\n    namespaceSelector: {matchLabels: {team: a}}\n  action: violate\n  with: {message: frozen}\n"),
	}, func(o *Options) { o.Namespaces = nil })
	got := denialOf(t, s, func(r *admissionv1.AdmissionRequest) { r.Namespace = "team-a" })
	if !strings.Contains(got, "the namespace cache is not started") {
		t.Errorf("before Start: %q, want an error naming the unstarted namespace cache", got)
	}
}
