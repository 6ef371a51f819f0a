package devenv

import (
	"context"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestApplyAndDeleteWebhookConfigurations(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().Build()
	url := func(s string) *string { return &s }
	gen := func(path string, bundle string) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
		cc := admissionregistrationv1.WebhookClientConfig{URL: url("https://127.0.0.1:9443" + path), CABundle: []byte(bundle)}
		return &admissionregistrationv1.MutatingWebhookConfiguration{
				ObjectMeta: metav1.ObjectMeta{Name: "celadon"},
				Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "m.celadon.io", ClientConfig: cc}},
			}, &admissionregistrationv1.ValidatingWebhookConfiguration{
				ObjectMeta: metav1.ObjectMeta{Name: "celadon"},
				Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: "v.celadon.io", ClientConfig: cc}},
			}
	}

	m, v := gen("/mutate", "old")
	if err := ApplyWebhookConfigurations(ctx, c, m, v); err != nil {
		t.Fatal(err)
	}
	if m.ResourceVersion != "" {
		t.Error("ApplyWebhookConfigurations modified its argument")
	}
	// Replace: new CA bundle, and the generated object drops a label the
	// old one had.
	var got admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: "celadon"}, &got); err != nil {
		t.Fatal(err)
	}
	got.Labels = map[string]string{"stale": "yes"}
	if err := c.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	m, v = gen("/mutate", "old+new")
	if err := ApplyWebhookConfigurations(ctx, c, m, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "celadon"}, &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Webhooks[0].ClientConfig.CABundle) != "old+new" || got.Labels["stale"] != "" {
		t.Errorf("mutating configuration not replaced: bundle %q, labels %v", got.Webhooks[0].ClientConfig.CABundle, got.Labels)
	}
	var gotV admissionregistrationv1.ValidatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: "celadon"}, &gotV); err != nil {
		t.Fatal(err)
	}
	if string(gotV.Webhooks[0].ClientConfig.CABundle) != "old" {
		t.Errorf("a nil validating configuration changed the existing one")
	}
	_ = v

	if err := DeleteWebhookConfigurations(ctx, c, "celadon"); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "celadon"}, &got); !apierrors.IsNotFound(err) {
		t.Errorf("mutating configuration still there: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "celadon"}, &gotV); !apierrors.IsNotFound(err) {
		t.Errorf("validating configuration still there: %v", err)
	}
	if err := DeleteWebhookConfigurations(ctx, c, "celadon"); err != nil {
		t.Errorf("deleting again: %v", err)
	}
}
