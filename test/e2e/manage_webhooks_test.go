package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/server"
	"celadon.io/celadon/webhook"
)

// managedSyncTimeout bounds how long the managed configurations may take to
// follow a policy reload.
const managedSyncTimeout = 10 * time.Second

// TestManageWebhooks starts a second server with ManageWebhooks (URL mode,
// pointing at itself, under leader election) and checks, through the API
// server, that it writes its own webhook configurations with the right
// rules and caBundle; that a policy swapped in for a new resource
// (configmaps) adds the rule to the configurations within 10 s, with no
// other step; and that the API server then routes such a ConfigMap to it
// and it is denied with the policy's message. Its policies fail open, and
// its configurations are removed before the test returns.
func TestManageWebhooks(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	const name = "celadon-e2e-managed"
	var bundle []byte
	s, err := runCeladon(ctx, name, map[string][]byte{"secrets.yaml": read("managed-secrets.yaml")}, func(s *celadon, o *server.Options) {
		bundle = devenv.Bundle(s.ca)
		caFile := filepath.Join(s.dir, "ca-bundle.pem")
		if err := os.WriteFile(caFile, bundle, 0o600); err != nil {
			t.Fatal(err)
		}
		o.ManageWebhooks = true
		o.WebhookConfigName = name
		o.WebhookURL = s.url()
		o.CABundleFile = caFile
		o.LeaderElection = true
		o.LeaderElectionNamespace = metav1.NamespaceDefault
		o.LeaderElectionID = name
	})
	if err != nil {
		t.Fatal(err)
	}
	cleanupCeladon(t, s)

	// validating returns the live ValidatingWebhookConfiguration's webhook
	// named hook, or nil.
	validating := func(ctx context.Context, hook string) (*admissionregistrationv1.ValidatingWebhook, error) {
		var v admissionregistrationv1.ValidatingWebhookConfiguration
		if err := suite.c.Get(ctx, client.ObjectKey{Name: name}, &v); err != nil {
			return nil, client.IgnoreNotFound(err)
		}
		for i := range v.Webhooks {
			if v.Webhooks[i].Name == hook {
				return &v.Webhooks[i], nil
			}
		}
		return nil, nil
	}
	hasResource := func(w *admissionregistrationv1.ValidatingWebhook, resource string) bool {
		for _, r := range w.Rules {
			if slices.Contains(r.Resources, resource) && slices.Contains(r.Operations, admissionregistrationv1.Create) {
				return true
			}
		}
		return false
	}
	const hook = "ignore.validate.celadon.io"

	// At start: the configurations appear, with the CA bundle and the rule
	// of the initial policy.
	waitFor(ctx, t, "the managed configurations to be written", func(ctx context.Context) (bool, error) {
		w, err := validating(ctx, hook)
		if err != nil || w == nil {
			return false, err
		}
		var m admissionregistrationv1.MutatingWebhookConfiguration
		if err := suite.c.Get(ctx, client.ObjectKey{Name: name}, &m); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return true, nil
	})
	w, err := validating(ctx, hook)
	if err != nil {
		t.Fatal(err)
	}
	if !hasResource(w, "secrets") || hasResource(w, "configmaps") {
		t.Errorf("initial rules %+v: want secrets CREATE only", w.Rules)
	}
	if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
		t.Errorf("caBundle is not the server's CA bundle file")
	}
	if w.ClientConfig.URL == nil || *w.ClientConfig.URL != s.url()+webhook.WebhookPath(engine.Validating, engine.Ignore) {
		t.Errorf("clientConfig.url = %v, want %s", w.ClientConfig.URL, s.url()+webhook.WebhookPath(engine.Validating, engine.Ignore))
	}
	if names := webhookNames(t, s); names != hook {
		t.Errorf("managed webhooks: %q, want %q", names, hook)
	}

	// A policy for a new resource: the rule follows the reload.
	s.setPolicies(t, map[string][]byte{
		"secrets.yaml":    read("managed-secrets.yaml"),
		"configmaps.yaml": read("managed-configmaps.yaml"),
	})
	swapped := time.Now()
	err = devenv.WaitFor(ctx, managedSyncTimeout, "the configmaps rule in the managed configuration", func(ctx context.Context) (bool, error) {
		w, err := validating(ctx, hook)
		return err == nil && w != nil && hasResource(w, "configmaps") && hasResource(w, "secrets"), err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("configmaps rule written %v after the swap", time.Since(swapped).Round(time.Millisecond))

	// The live objects, defaulted by the API server, compare equal to the
	// generated ones: a sync with nothing new writes nothing.
	m, v, err := controllers.Configurations(s.srv.Snapshot(), controllers.ConfigOptions{Name: name, URL: s.url(), CABundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	if written, err := controllers.ApplyConfigurations(ctx, suite.c, suite.c, m, v); err != nil || written {
		t.Errorf("re-applying the generated configurations: written %v, error %v; want nothing written", written, err)
	}

	// The API server routes the ConfigMap to the server, which denies it.
	if err := devenv.SyncWebhookConfigurations(ctx, suite.c, metav1.NamespaceDefault, waitTimeout); err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(ctx, t, "managed", nil)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, GenerateName: "managed-",
		Labels: map[string]string{"e2e.celadon.io/managed-deny": "true"},
	}}
	err = suite.c.Create(ctx, cm)
	if err == nil || !strings.Contains(err.Error(), "e2e-managed-configmaps: this configmap is denied") {
		t.Fatalf("want the labelled ConfigMap denied by e2e-managed-configmaps, got %v", err)
	}
	// An unlabelled one is admitted.
	if err := suite.c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "managed-"}}); err != nil {
		t.Fatalf("unlabelled ConfigMap: %v", err)
	}
}
