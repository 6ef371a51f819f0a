package controllers_test

import (
	"context"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"celadon.io/celadon/controllers"
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
