package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"celadon.io/celadon/controllers"
	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/server"
)

// startScopedCeladon starts a Celadon server of the test's own for
// policies, its options adjusted by configure (may be nil), and installs its generated webhook configurations narrowed to
// the namespaces matching namespaces and the objects matching objects
// (either may be nil): the server's policies can then act on nothing but
// the test's own objects, whatever they match. The API server ignores a
// namespaceSelector for cluster-scoped objects such as Nodes: scope those
// with objects. The server is stopped and its configurations removed when
// the test ends.
func startScopedCeladon(ctx context.Context, t *testing.T, name string, policies map[string][]byte, configure func(*celadon, *server.Options), namespaces, objects *metav1.LabelSelector) *celadon {
	t.Helper()
	s, err := runCeladon(ctx, name, policies, configure)
	if err != nil {
		t.Fatal(err)
	}
	cleanupCeladon(t, s)
	installScoped(ctx, t, s, namespaces, objects)
	return s
}

// installScoped installs the configurations of the policies s serves,
// narrowed further by namespaces and objects, as startScopedCeladon does;
// again after a reload, as --manage-webhooks would.
func installScoped(ctx context.Context, t *testing.T, s *celadon, namespaces, objects *metav1.LabelSelector) {
	t.Helper()
	m, v, err := controllers.Configurations(s.srv.Snapshot(), controllers.ConfigOptions{Name: s.name, URL: s.url(), CABundle: devenv.Bundle(s.ca)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Webhooks {
		m.Webhooks[i].NamespaceSelector = narrowSelector(m.Webhooks[i].NamespaceSelector, namespaces)
		m.Webhooks[i].ObjectSelector = narrowSelector(m.Webhooks[i].ObjectSelector, objects)
	}
	for i := range v.Webhooks {
		v.Webhooks[i].NamespaceSelector = narrowSelector(v.Webhooks[i].NamespaceSelector, namespaces)
		v.Webhooks[i].ObjectSelector = narrowSelector(v.Webhooks[i].ObjectSelector, objects)
	}
	if err := devenv.ApplyWebhookConfigurations(ctx, suite.c, m, v); err != nil {
		t.Fatal(err)
	}
	if err := devenv.SyncWebhookConfigurations(ctx, suite.c, metav1.NamespaceDefault, waitTimeout); err != nil {
		t.Fatal(err)
	}
}

// narrowSelector returns a selector matching what both sel and also match;
// a nil selector matches everything.
func narrowSelector(sel, also *metav1.LabelSelector) *metav1.LabelSelector {
	if also == nil {
		return sel
	}
	out := also.DeepCopy()
	if sel == nil {
		return out
	}
	for k, v := range sel.MatchLabels {
		if out.MatchLabels == nil {
			out.MatchLabels = map[string]string{}
		}
		out.MatchLabels[k] = v
	}
	out.MatchExpressions = append(out.MatchExpressions, sel.MatchExpressions...)
	return out
}

// randomToken returns a short random hex string, to make the names and
// label values of a test's cluster-scoped objects its own.
func randomToken(t *testing.T) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
