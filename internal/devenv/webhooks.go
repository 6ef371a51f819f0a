package devenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/controllers"
)

// ApplyWebhookConfigurations creates each of the generated configurations
// given (nil ones are skipped), or replaces the one of the same name: the
// generated object is the whole desired state, so fields it does not set
// are cleared, as `kubectl replace` would; an object already up to date is
// not written. It is controllers.ApplyConfigurations, the code `celadon serve
// --manage-webhooks` syncs with. The API server starts using them
// asynchronously: see SyncWebhookConfigurations.
func ApplyWebhookConfigurations(ctx context.Context, c client.Client, m *admissionregistrationv1.MutatingWebhookConfiguration, v *admissionregistrationv1.ValidatingWebhookConfiguration) error {
	if _, err := controllers.ApplyConfigurations(ctx, c, c, m, v); err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	return nil
}

// DeleteWebhookConfigurations deletes the Mutating- and
// ValidatingWebhookConfigurations named name, if they exist.
func DeleteWebhookConfigurations(ctx context.Context, c client.Client, name string) error {
	for _, obj := range []client.Object{
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}},
		&admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}},
	} {
		if err := c.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("devenv: deleting webhook configuration %s: %w", name, err)
		}
	}
	return nil
}

// SyncLabel is the label that routes SyncWebhookConfigurations' probe
// ConfigMaps to its sentinel webhooks.
const SyncLabel = "devenv.celadon.io/sync"

// SyncWebhookConfigurations waits until the API server's admission chain
// reflects every webhook configuration written before the call.
//
// The API server reads webhook configurations from an informer, so a
// configuration is used some time after it is written, and nothing reports
// when. The informer applies changes in order, so this writes a sentinel
// Mutating- and ValidatingWebhookConfiguration, each failing closed for
// ConfigMaps carrying its own SyncLabel value, then creates such probe
// ConfigMaps in namespace until the API server rejects them through each
// sentinel: from then on it has seen everything written before the
// sentinels. The sentinels are deleted before returning; they match only
// the probes, so a late deletion affects nothing else.
func SyncWebhookConfigurations(ctx context.Context, c client.Client, namespace string, timeout time.Duration) (retErr error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	token := hex.EncodeToString(b[:])
	name := "celadon-devenv-sync-" + token
	hookName := func(kind string) string { return kind + "-" + token + ".sync.devenv.celadon.io" }
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	url := "https://127.0.0.1:1/sync" // nothing listens on port 1: the call fails at once
	timeoutSeconds := int32(1)
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule: admissionregistrationv1.Rule{
			APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"},
		},
	}}
	selector := func(kind string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{SyncLabel: kind + "-" + token}}
	}
	m := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: hookName("mutating"), ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: rules, ObjectSelector: selector("mutating"), FailurePolicy: &fail, SideEffects: &none,
			TimeoutSeconds: &timeoutSeconds, AdmissionReviewVersions: []string{"v1"},
		}},
	}
	v := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: hookName("validating"), ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: rules, ObjectSelector: selector("validating"), FailurePolicy: &fail, SideEffects: &none,
			TimeoutSeconds: &timeoutSeconds, AdmissionReviewVersions: []string{"v1"},
		}},
	}
	defer func() {
		// Not ctx: clean up even when it is done.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := DeleteWebhookConfigurations(ctx, c, name); err != nil && retErr == nil {
			retErr = err
		}
	}()
	if err := c.Create(ctx, m); err != nil {
		return fmt.Errorf("devenv: creating sync sentinel: %w", err)
	}
	if err := c.Create(ctx, v); err != nil {
		return fmt.Errorf("devenv: creating sync sentinel: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, kind := range []string{"mutating", "validating"} {
		want := `failed calling webhook "` + hookName(kind) + `"`
		err := Retry(ctx, timeout, "the API server to use the "+kind+" webhook configurations", func(ctx context.Context) error {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
				Namespace: namespace, GenerateName: "celadon-devenv-sync-",
				Labels: selector(kind).MatchLabels,
			}}
			err := c.Create(ctx, cm)
			if err == nil {
				_ = c.Delete(ctx, cm)
				return fmt.Errorf("probe ConfigMap %s admitted: the sentinel is not in use yet", cm.Name)
			}
			if strings.Contains(err.Error(), want) {
				return nil
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("devenv: %w", err)
		}
	}
	return nil
}
