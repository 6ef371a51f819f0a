package controllers

// Management of the webhook configurations (Options.ManageWebhooks): the
// elected leader keeps the Mutating- and ValidatingWebhookConfiguration in
// sync with the served policy set. Nothing here runs per request.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/engine"
)

// Defaults of the webhook configuration management.
const (
	// DefaultWebhookSyncInterval is how often the leader rewrites the
	// configurations that drifted from the served set, besides after
	// every reload.
	DefaultWebhookSyncInterval = time.Minute
	// DefaultCACheckInterval is how often the leader re-reads the CA
	// bundle file, and syncs at once when it changed: a CA that a
	// certificate issuer (cert-manager) rotated in the mounted Secret
	// reaches the configurations within seconds, as its serving
	// certificate reaches the webhook server.
	DefaultCACheckInterval = 10 * time.Second
	// CABundleName is the file of CertDir read as the CA bundle by default.
	CABundleName = "ca.crt"
)

// readyPoll is how often a syncer waiting for SyncOptions.Ready asks again.
var readyPoll = time.Second

// ApplyConfigurations creates each of the configurations given (nil ones
// are skipped), or replaces the one of the same name when its webhooks,
// labels or annotations differ from the generated ones; an object already
// up to date (compared with the API server's defaults applied) is not
// written. The generated object is the whole desired state: fields, labels
// and annotations it does not set are cleared, as `kubectl replace` would.
// Updates are retried on conflict. It reports whether anything was
// written.
//
// r reads the live objects; pass the client itself, or an uncached reader.
func ApplyConfigurations(ctx context.Context, c client.Client, r client.Reader, m *admissionregistrationv1.MutatingWebhookConfiguration, v *admissionregistrationv1.ValidatingWebhookConfiguration) (bool, error) {
	if r == nil {
		r = c
	}
	changed := false
	if m != nil {
		w, err := applyConfig(ctx, c, r, m, &admissionregistrationv1.MutatingWebhookConfiguration{}, func(desired, live client.Object) bool {
			return apiequality.Semantic.DeepEqual(
				normalizeMutating(desired.(*admissionregistrationv1.MutatingWebhookConfiguration).Webhooks),
				normalizeMutating(live.(*admissionregistrationv1.MutatingWebhookConfiguration).Webhooks))
		})
		if err != nil {
			return changed, err
		}
		changed = changed || w
	}
	if v != nil {
		w, err := applyConfig(ctx, c, r, v, &admissionregistrationv1.ValidatingWebhookConfiguration{}, func(desired, live client.Object) bool {
			return apiequality.Semantic.DeepEqual(
				normalizeValidating(desired.(*admissionregistrationv1.ValidatingWebhookConfiguration).Webhooks),
				normalizeValidating(live.(*admissionregistrationv1.ValidatingWebhookConfiguration).Webhooks))
		})
		if err != nil {
			return changed, err
		}
		changed = changed || w
	}
	return changed, nil
}

// applyConfig creates desired, or updates live into it unless sameWebhooks
// and the metadata say it is up to date.
func applyConfig(ctx context.Context, c client.Client, r client.Reader, desired, live client.Object, sameWebhooks func(desired, live client.Object) bool) (bool, error) {
	kind := fmt.Sprintf("%T", desired)
	kind = kind[strings.LastIndex(kind, ".")+1:]
	written := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj := desired.DeepCopyObject().(client.Object)
		obj.SetResourceVersion("")
		err := r.Get(ctx, client.ObjectKeyFromObject(obj), live)
		switch {
		case apierrors.IsNotFound(err):
			if err := c.Create(ctx, obj); err != nil {
				if apierrors.IsAlreadyExists(err) {
					// Created meanwhile: retry as an update.
					return apierrors.NewConflict(admissionregistrationv1.Resource(kind), obj.GetName(), err)
				}
				return fmt.Errorf("creating %s %s: %w", kind, obj.GetName(), err)
			}
			written = true
			return nil
		case err != nil:
			return fmt.Errorf("reading %s %s: %w", kind, obj.GetName(), err)
		}
		if sameWebhooks(obj, live) && sameMap(obj.GetLabels(), live.GetLabels()) && sameMap(obj.GetAnnotations(), live.GetAnnotations()) {
			return nil
		}
		obj.SetResourceVersion(live.GetResourceVersion())
		if err := c.Update(ctx, obj); err != nil {
			if apierrors.IsConflict(err) {
				return err
			}
			return fmt.Errorf("updating %s %s: %w", kind, obj.GetName(), err)
		}
		written = true
		return nil
	})
	return written, err
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// Defaults the API server applies to fields Configurations leaves unset,
// so that a generated webhook compares equal to its live copy.
func normalizeRules(rules []admissionregistrationv1.RuleWithOperations) []admissionregistrationv1.RuleWithOperations {
	out := make([]admissionregistrationv1.RuleWithOperations, len(rules))
	for i, r := range rules {
		r = *r.DeepCopy()
		if r.Scope == nil {
			all := admissionregistrationv1.AllScopes
			r.Scope = &all
		}
		out[i] = r
	}
	return out
}

func normalizeSelector(s *metav1.LabelSelector) *metav1.LabelSelector {
	if s == nil {
		return &metav1.LabelSelector{}
	}
	return s
}

func normalizeService(cc admissionregistrationv1.WebhookClientConfig) admissionregistrationv1.WebhookClientConfig {
	cc = *cc.DeepCopy()
	if cc.Service != nil && cc.Service.Port == nil {
		p := DefaultServicePort
		cc.Service.Port = &p
	}
	return cc
}

func normalizeMutating(ws []admissionregistrationv1.MutatingWebhook) []admissionregistrationv1.MutatingWebhook {
	out := make([]admissionregistrationv1.MutatingWebhook, len(ws))
	for i, w := range ws {
		w = *w.DeepCopy()
		w.Rules = normalizeRules(w.Rules)
		w.ClientConfig = normalizeService(w.ClientConfig)
		w.NamespaceSelector = normalizeSelector(w.NamespaceSelector)
		w.ObjectSelector = normalizeSelector(w.ObjectSelector)
		out[i] = w
	}
	return out
}

func normalizeValidating(ws []admissionregistrationv1.ValidatingWebhook) []admissionregistrationv1.ValidatingWebhook {
	out := make([]admissionregistrationv1.ValidatingWebhook, len(ws))
	for i, w := range ws {
		w = *w.DeepCopy()
		w.Rules = normalizeRules(w.Rules)
		w.ClientConfig = normalizeService(w.ClientConfig)
		w.NamespaceSelector = normalizeSelector(w.NamespaceSelector)
		w.ObjectSelector = normalizeSelector(w.ObjectSelector)
		out[i] = w
	}
	return out
}

// ConfigSyncer is the manager Runnable that writes the configurations
// generated from the served set. It needs leader election: only the leader
// writes.
type ConfigSyncer struct {
	opts SyncOptions
	c    client.Client
	r    client.Reader
	wake chan struct{} // a new set, or a new CA
	// lastCA is the bundle of the last successful sync.
	lastCA []byte
}

// SyncOptions configure a ConfigSyncer.
type SyncOptions struct {
	// Config names the configurations and says where the API server calls;
	// its CABundle is read from CAFile at every sync.
	Config ConfigOptions
	CAFile string
	// Interval re-checks the configurations this often, repairing drift,
	// besides after every new set; 0 or less: only then.
	Interval time.Duration
	// CACheckInterval re-reads CAFile this often and syncs when it
	// differs from the last bundle written. Default
	// DefaultCACheckInterval; negative: never (a Signal, the Interval or
	// a new set still picks up a new CA).
	CACheckInterval time.Duration
	// Policies is the served set.
	Policies *engine.Store
	// Ready, when set, reports whether this server can answer the
	// webhooks it would register (policies loaded, caches synced, the
	// webhook listening). No configuration is written until it returns
	// nil, so that the API server is never sent to a Celadon that cannot
	// answer yet: an install is inert until a replica serves.
	Ready func() error
	Log   logr.Logger
}

// NewConfigSyncer returns the syncer, woken by every new policy set. r
// reads the live configurations: pass an uncached reader.
func NewConfigSyncer(o SyncOptions, c client.Client, r client.Reader) *ConfigSyncer {
	y := &ConfigSyncer{opts: o, c: c, r: r, wake: make(chan struct{}, 1)}
	o.Policies.Subscribe(func(*engine.Snapshot) { y.Signal() })
	return y
}

// NeedLeaderElection is true: only the leader writes.
func (*ConfigSyncer) NeedLeaderElection() bool { return true }

// Start syncs at once, after every new set, every Signal and every
// Interval, until ctx is done. A failed sync is logged and retried on the
// next signal or tick. While Ready reports an error nothing is written; it
// is asked again every readyPoll.
func (y *ConfigSyncer) Start(ctx context.Context) error {
	log := y.opts.Log.WithValues("webhookConfiguration", y.opts.Config.Name)
	log.Info("managing the webhook configurations", "caBundle", y.opts.CAFile, "interval", y.opts.Interval)
	var tick <-chan time.Time
	if y.opts.Interval > 0 {
		t := time.NewTicker(y.opts.Interval)
		defer t.Stop()
		tick = t.C
	}
	var caTick <-chan time.Time
	caEvery := y.opts.CACheckInterval
	if caEvery == 0 {
		caEvery = DefaultCACheckInterval
	}
	if caEvery > 0 {
		t := time.NewTicker(caEvery)
		defer t.Stop()
		caTick = t.C
	}
	retryAfter := time.NewTimer(time.Hour)
	retryAfter.Stop()
	defer retryAfter.Stop()
	waiting := false
	for {
		snap := y.opts.Policies.Current()
		var (
			written  bool
			err      error
			notReady error
		)
		if y.opts.Ready != nil {
			notReady = y.opts.Ready()
		}
		if notReady == nil {
			if waiting {
				log.Info("the server is ready: writing the webhook configurations")
				waiting = false
			}
			written, err = y.sync(ctx, snap)
		}
		switch {
		case notReady != nil:
			if !waiting {
				log.Info("waiting for the server to be ready before writing the webhook configurations", "reason", notReady.Error())
				waiting = true
			}
			retryAfter.Reset(readyPoll)
		case err != nil && ctx.Err() == nil:
			log.Error(err, "syncing the webhook configurations failed; retrying", "hash", snap.Hash)
			retryAfter.Reset(5 * time.Second)
		case written:
			log.Info("webhook configurations updated", "hash", snap.Hash, "policies", len(snap.Policies))
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-y.wake:
			case <-retryAfter.C:
			case <-tick:
			case <-caTick:
				if ca, err := os.ReadFile(y.opts.CAFile); err == nil && bytes.Equal(ca, y.lastCA) {
					continue // unchanged: nothing to do
				}
			}
			break wait
		}
	}
}

// sync writes the configurations generated from snap, with the CA bundle
// file as it is now.
func (y *ConfigSyncer) sync(ctx context.Context, snap *engine.Snapshot) (bool, error) {
	ca, err := os.ReadFile(y.opts.CAFile)
	if err != nil {
		return false, fmt.Errorf("reading the CA bundle: %w", err)
	}
	o := y.opts.Config
	o.CABundle = ca
	m, v, err := Configurations(snap, o)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	written, err := ApplyConfigurations(ctx, y.c, y.r, m, v)
	if err == nil {
		y.lastCA = ca
	}
	return written, err
}

// Signal asks the syncer to sync, e.g. after the CA changed; it never
// blocks.
func (y *ConfigSyncer) Signal() {
	select {
	case y.wake <- struct{}{}:
	default: // pending already
	}
}
