package controllers_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
)

func TestApplyConfigurations(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().Build()
	snap := compileSet(t, pol("deny-pods", "deny", "Fail", "CREATE", "pods"), pol("env", "mutate", "Ignore", "", "pods"))
	gen := func(o controllers.ConfigOptions) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
		m, v, err := controllers.Configurations(snap, o)
		if err != nil {
			t.Fatal(err)
		}
		return m, v
	}
	o := controllers.ConfigOptions{Name: "managed", URL: "https://127.0.0.1:9443"}
	m, v := gen(o)
	if written, err := controllers.ApplyConfigurations(ctx, c, nil, m, v); err != nil || !written {
		t.Fatalf("create: written %v, error %v", written, err)
	}
	rv := func() (string, string) {
		var lm admissionregistrationv1.MutatingWebhookConfiguration
		var lv admissionregistrationv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, client.ObjectKey{Name: "managed"}, &lm); err != nil {
			t.Fatal(err)
		}
		if err := c.Get(ctx, client.ObjectKey{Name: "managed"}, &lv); err != nil {
			t.Fatal(err)
		}
		return lm.ResourceVersion, lv.ResourceVersion
	}
	m0, v0 := rv()

	// Unchanged: nothing written.
	m, v = gen(o)
	if written, err := controllers.ApplyConfigurations(ctx, c, nil, m, v); err != nil || written {
		t.Fatalf("unchanged: written %v, error %v", written, err)
	}
	if m1, v1 := rv(); m1 != m0 || v1 != v0 {
		t.Fatalf("unchanged configurations were written: %s→%s, %s→%s", m0, m1, v0, v1)
	}

	// Drift (a label added, a webhook edited by hand): replaced.
	var lv admissionregistrationv1.ValidatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: "managed"}, &lv); err != nil {
		t.Fatal(err)
	}
	if len(lv.Webhooks) == 0 {
		t.Fatal("test policies generate no validating webhook")
	}
	lv.Labels["team"] = "x"
	lv.Webhooks[0].Rules = nil
	if err := c.Update(ctx, &lv); err != nil {
		t.Fatal(err)
	}
	m, v = gen(o)
	if written, err := controllers.ApplyConfigurations(ctx, c, nil, m, v); err != nil || !written {
		t.Fatalf("drift: written %v, error %v", written, err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "managed"}, &lv); err != nil {
		t.Fatal(err)
	}
	if len(lv.Webhooks[0].Rules) == 0 || lv.Labels["team"] != "" || lv.Labels[controllers.LabelManagedBy] != "celadon" {
		t.Errorf("after repair: rules %v, labels %v", lv.Webhooks[0].Rules, lv.Labels)
	}

	// A new CA bundle is written.
	o.CABundle = testCAPEM(t)
	m, v = gen(o)
	if written, err := controllers.ApplyConfigurations(ctx, c, nil, m, v); err != nil || !written {
		t.Fatalf("new caBundle: written %v, error %v", written, err)
	}
}

// TestConfigSyncer runs the syncer of --manage-webhooks against a fake API
// server: nothing is written while the server is not ready, however often
// it looks; once ready, the configurations point at the Service, exclude
// its namespace and the extra ones, and carry the CA file's bundle; a new
// CA in the file reaches them with no other trigger (the CA check alone).
func TestConfigSyncer(t *testing.T) {
	defer controllers.SetReadyPoll(10 * time.Millisecond)()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(pol("keep-services", "deny", "Fail", "DELETE", "services")), 0o644); err != nil {
		t.Fatal(err)
	}
	store := engine.NewStore(dir, engine.Options{Registry: builtins.Registry()})
	if _, err := store.Load(); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	ca1, ca2 := testCAPEM(t), testCAPEM(t)
	if err := os.WriteFile(caFile, ca1, 0o644); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().Build()
	var ready atomic.Bool
	var asked atomic.Int32
	y := controllers.NewConfigSyncer(controllers.SyncOptions{
		Config: controllers.ConfigOptions{
			Service:           &controllers.ServiceRef{Namespace: "policy-system", Name: "celadon"},
			ExcludeNamespaces: []string{"monitoring"},
		},
		CAFile:          caFile,
		Interval:        -1, // no periodic sync: only the CA check can see a new CA
		CACheckInterval: 20 * time.Millisecond,
		Policies:        store,
		Ready: func() error {
			asked.Add(1)
			if !ready.Load() {
				return errors.New("the namespace cache has not synced")
			}
			return nil
		},
		Log: testr.New(t),
	}, c, c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- y.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()

	live := func() (*admissionregistrationv1.ValidatingWebhookConfiguration, bool) {
		var v admissionregistrationv1.ValidatingWebhookConfiguration
		var m admissionregistrationv1.MutatingWebhookConfiguration
		errV := c.Get(ctx, client.ObjectKey{Name: controllers.DefaultConfigName}, &v)
		errM := c.Get(ctx, client.ObjectKey{Name: controllers.DefaultConfigName}, &m)
		if errV == nil || errM == nil {
			return &v, true
		}
		return nil, false
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Not ready: asked again and again, nothing written.
	waitFor("the syncer to ask about readiness 5 times", func() bool { return asked.Load() >= 5 })
	if _, ok := live(); ok {
		t.Fatal("a webhook configuration was written before the server was ready")
	}

	ready.Store(true)
	var v *admissionregistrationv1.ValidatingWebhookConfiguration
	waitFor("the configurations", func() bool { v, _ = live(); return v != nil && len(v.Webhooks) > 0 })
	w := v.Webhooks[0]
	if s := w.ClientConfig.Service; s == nil || s.Namespace != "policy-system" || s.Name != "celadon" {
		t.Errorf("clientConfig %+v: want the Service policy-system/celadon", w.ClientConfig)
	}
	if !bytes.Equal(w.ClientConfig.CABundle, ca1) {
		t.Error("caBundle is not the CA file's")
	}
	var excluded []string
	for _, e := range w.NamespaceSelector.MatchExpressions {
		if e.Key == controllers.NamespaceNameLabel && e.Operator == metav1.LabelSelectorOpNotIn {
			excluded = e.Values
		}
	}
	for _, ns := range []string{"kube-system", "kube-node-lease", "policy-system", "monitoring"} {
		if !slices.Contains(excluded, ns) {
			t.Errorf("namespaceSelector %+v does not exclude %s", w.NamespaceSelector, ns)
		}
	}

	// A rotated CA, as the kubelet swaps a Secret volume.
	tmp := caFile + ".new"
	if err := os.WriteFile(tmp, ca2, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, caFile); err != nil {
		t.Fatal(err)
	}
	waitFor("the new CA in the configurations", func() bool {
		v, _ = live()
		return v != nil && len(v.Webhooks) > 0 && bytes.Equal(v.Webhooks[0].ClientConfig.CABundle, ca2)
	})
}
