package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"celadon.io/celadon/server"
)

// TestNamespaceCreatedJustBefore: an object created right after its
// namespace reaches Celadon before the namespace reaches Celadon's cache.
// The cache reads such a namespace from the API server, as the API server's
// own matcher does, so a Fail policy with a namespaceSelector judges it by
// its labels instead of failing on "not found". The server's cache is made
// to lag for certain: its watch responses arrive watchDelay late.
func TestNamespaceCreatedJustBefore(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	const watchDelay = 3 * time.Second
	token := randomToken(t)
	scopeLabel, frozenLabel := "e2e.celadon.io/ns-lag", "e2e.celadon.io/frozen"
	policies := map[string][]byte{"frozen.yaml": fmt.Appendf(nil, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-frozen
spec:
  match:
    resources: [configmaps]
    operations: [CREATE]
    namespaceSelector:
      matchLabels: {%q: "true"}
  action: deny
  with: {message: the namespace is frozen}
  failurePolicy: Fail
`, frozenLabel)}
	lag := &atomic.Bool{}
	scope := &metav1.LabelSelector{MatchLabels: map[string]string{scopeLabel: token}}
	startScopedCeladon(ctx, t, "celadon-e2e-ns-lag", policies, func(_ *celadon, o *server.Options) {
		cfg := rest.CopyConfig(o.Config)
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return slowWatches{rt: rt, delay: watchDelay, on: lag} })
		o.Config = cfg
	}, scope, nil)
	lag.Store(true) // synced: from now on the cache lags

	newConfigMap := func(ns string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}, Data: map[string]string{"k": "v"}}
	}
	createNamespace := func(labels map[string]string) string {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-ns-lag-", Labels: labels}}
		if err := suite.c.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = suite.c.Delete(context.Background(), ns) })
		return ns.Name
	}

	open := createNamespace(map[string]string{scopeLabel: token})
	if err := suite.c.Create(ctx, newConfigMap(open)); err != nil {
		t.Errorf("ConfigMap in a namespace created just before, which the policy does not select: %v", err)
	}
	frozen := createNamespace(map[string]string{scopeLabel: token, frozenLabel: "true"})
	err := suite.c.Create(ctx, newConfigMap(frozen))
	if err == nil || !strings.Contains(err.Error(), "the namespace is frozen") {
		t.Errorf("ConfigMap in a frozen namespace created just before: %v, want the policy's denial", err)
	}
}
