package loadgen

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/devenv"
)

// PodLatency is the latency of Pod creation through kube-apiserver, with
// the webhook configurations installed, without them, and with the same
// configurations pointing at a webhook that allows everything at once (the
// cost of calling any webhook: the API server's share).
//
// The Unmatched figures are of the same pod without its owner, which no
// shipped policy matches, created in the same batches, alternating with
// the matched one: the narrowed configurations should not call Celadon for
// it at all. The no-op webhook's configurations are not narrowed, so that
// it stays what calling any webhook costs.
type PodLatency struct {
	With    LatencySummary `json:"with_webhook"`
	Without LatencySummary `json:"without_webhook"`
	Noop    LatencySummary `json:"noop_webhook"`
	// PatchNoop is a webhook that answers at once with the patch Celadon
	// sends for the pod, computed before the run: what the API server
	// spends calling a webhook and applying that patch.
	PatchNoop LatencySummary `json:"patching_noop_webhook"`
	// MedianDiffMs is With.P50Ms - Without.P50Ms.
	MedianDiffMs float64 `json:"median_diff_ms"`

	WithUnmatched    LatencySummary `json:"with_webhook_unmatched"`
	WithoutUnmatched LatencySummary `json:"without_webhook_unmatched"`
	NoopUnmatched    LatencySummary `json:"noop_webhook_unmatched"`
	// PatchNoopUnmatched: the patching no-op webhook allows the unmatched
	// pod without a patch.
	PatchNoopUnmatched LatencySummary `json:"patching_noop_webhook_unmatched"`
	// UnmatchedMedianDiffMs is WithUnmatched.P50Ms - WithoutUnmatched.P50Ms.
	UnmatchedMedianDiffMs float64 `json:"unmatched_median_diff_ms"`

	Batch int `json:"batch"`
}

// LatencySummary summarizes one mode's creations.
type LatencySummary struct {
	Pods  uint64  `json:"pods"`
	P50Ms float64 `json:"p50_ms"`
	P90Ms float64 `json:"p90_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

func summarize(h *Histogram) LatencySummary {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return LatencySummary{Pods: h.Count(), P50Ms: ms(h.Percentile(50)), P90Ms: ms(h.Percentile(90)), P99Ms: ms(h.Percentile(99)), MaxMs: ms(h.Max())}
}

// MeasurePodCreation creates pods (the pod fixture, renamed; it is owned
// by a StatefulSet, so the shipped sts-index mutates it) one at a time
// through kube-apiserver: pods with the webhook configurations generated
// from policiesDir installed, pods without any, and pods with the same
// configurations pointed at a no-op webhook, in interleaved batches of
// batch (the order rotating each round) so that drifts of the shared
// machine fall on every mode alike. Every switch waits until the API
// server uses the new configurations; the first pod of each batch is
// checked to be mutated, or not. The pods and configurations are deleted
// at the end.
func (e *Env) MeasurePodCreation(ctx context.Context, srv *Server, policiesDir string, podJSON []byte, pods, batch int, logf func(string, ...any)) (*PodLatency, error) {
	if pods < 1 || batch < 1 {
		return nil, fmt.Errorf("pods %d, batch %d: want at least 1", pods, batch)
	}
	files, err := engine.ReadFiles(policiesDir)
	if err != nil {
		return nil, err
	}
	snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(srv.CAFile)
	if err != nil {
		return nil, err
	}
	const configName = "celadon-load"
	mwc, vwc, err := controllers.Configurations(snap, controllers.ConfigOptions{Name: configName, URL: srv.BaseURL, CABundle: caPEM, TimeoutSeconds: 10})
	if err != nil {
		return nil, err
	}
	if mwc == nil {
		return nil, fmt.Errorf("%s: no mutating policy, nothing would change a pod", policiesDir)
	}
	patch, err := podPatch(snap, podJSON)
	if err != nil {
		return nil, err
	}
	noop := httptest.NewUnstartedServer(http.HandlerFunc(noopWebhook))
	noop.EnableHTTP2 = false
	noop.StartTLS()
	defer noop.Close()
	patching := httptest.NewUnstartedServer(patchingWebhook(patch))
	patching.EnableHTTP2 = false
	patching.StartTLS()
	defer patching.Close()
	noopM, noopV := pointedAt(mwc, vwc, noop)
	patchM, patchV := pointedAt(mwc, vwc, patching)
	cfg := *e.CP.Config
	cfg.QPS, cfg.Burst = -1, 0 // no client-side throttling in the figures
	c, err := client.New(&cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		return nil, err
	}
	var tmpl corev1.Pod
	if err := json.Unmarshal(podJSON, &tmpl); err != nil {
		return nil, fmt.Errorf("pod fixture: %w", err)
	}
	ns := tmpl.Namespace
	tmpl.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Labels: tmpl.Labels, Annotations: tmpl.Annotations, OwnerReferences: tmpl.OwnerReferences}
	tmpl.Spec.NodeName = ""
	tmpl.Status = corev1.PodStatus{}
	envCount := func(p *corev1.Pod) int {
		n := 0
		for _, ct := range p.Spec.Containers {
			n += len(ct.Env)
		}
		return n
	}
	baseEnv := envCount(&tmpl)
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = devenv.DeleteWebhookConfigurations(cctx, c, configName)
		_ = cs.CoreV1().Pods(ns).DeleteCollection(cctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "celadon.io/load=pods"})
	}()

	const (
		modeWith = iota
		modeWithout
		modeNoop
		modePatchNoop
		modes
	)
	var hists, unmatched [modes]Histogram
	n := 0
	for round := 0; ; round++ {
		done := true
		for _, h := range hists {
			done = done && h.Count() >= uint64(pods)
		}
		if done {
			break
		}
		for k := range modes {
			mode := (round + k) % modes
			h := &hists[mode]
			var err error
			switch mode {
			case modeWith:
				err = devenv.ApplyWebhookConfigurations(ctx, c, mwc, vwc)
			case modeNoop:
				err = devenv.ApplyWebhookConfigurations(ctx, c, noopM, noopV)
			case modePatchNoop:
				err = devenv.ApplyWebhookConfigurations(ctx, c, patchM, patchV)
			default:
				err = devenv.DeleteWebhookConfigurations(ctx, c, configName)
			}
			if err != nil {
				return nil, err
			}
			if err := devenv.SyncWebhookConfigurations(ctx, c, ns, time.Minute); err != nil {
				return nil, err
			}
			for i := 0; i < 2*batch && h.Count() < uint64(pods); i++ {
				pod := tmpl.DeepCopy()
				hh, matched := h, i%2 == 0
				if !matched {
					// As a Deployment's pod: no StatefulSet owner or labels.
					hh, pod.OwnerReferences = &unmatched[mode], nil
					for _, k := range []string{"statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index", "controller-revision-hash"} {
						delete(pod.Labels, k)
					}
				}
				pod.Name = fmt.Sprintf("load-%d", n)
				if pod.Labels == nil {
					pod.Labels = map[string]string{}
				}
				pod.Labels["celadon.io/load"] = "pods"
				n++
				start := time.Now()
				got, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
				lat := time.Since(start)
				if err != nil {
					return nil, fmt.Errorf("creating pod %s (mode %d): %w", pod.Name, mode, err)
				}
				if i < 2 && (envCount(got) > baseEnv) != ((mode == modeWith || mode == modePatchNoop) && matched) {
					return nil, fmt.Errorf("pod %s: %d env variables (fixture %d) in mode %d: the API server did not use the configuration it should", got.Name, envCount(got), baseEnv, mode)
				}
				hh.Record(lat)
			}
		}
		logf("round %d: %d pods with the webhook, %d without, %d with a no-op webhook, %d with a patching no-op webhook", round, hists[modeWith].Count(), hists[modeWithout].Count(), hists[modeNoop].Count(), hists[modePatchNoop].Count())
	}
	r := &PodLatency{
		With: summarize(&hists[modeWith]), Without: summarize(&hists[modeWithout]), Noop: summarize(&hists[modeNoop]), PatchNoop: summarize(&hists[modePatchNoop]),
		WithUnmatched: summarize(&unmatched[modeWith]), WithoutUnmatched: summarize(&unmatched[modeWithout]), NoopUnmatched: summarize(&unmatched[modeNoop]),
		PatchNoopUnmatched: summarize(&unmatched[modePatchNoop]),
		Batch:              batch,
	}
	r.MedianDiffMs = r.With.P50Ms - r.Without.P50Ms
	r.UnmatchedMedianDiffMs = r.WithUnmatched.P50Ms - r.WithoutUnmatched.P50Ms
	return r, nil
}

// unnarrowed keeps only the namespace exclusion of a generated
// namespaceSelector.
func unnarrowed(s *metav1.LabelSelector) *metav1.LabelSelector {
	out := &metav1.LabelSelector{}
	for _, r := range s.MatchExpressions {
		if r.Key == controllers.NamespaceNameLabel {
			out.MatchExpressions = append(out.MatchExpressions, r)
		}
	}
	return out
}

// noopWebhook allows every review at once, without a patch.
func noopWebhook(w http.ResponseWriter, r *http.Request) {
	var review struct {
		Request struct {
			UID string `json:"uid"`
		} `json:"request"`
	}
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":%q,"allowed":true}}`, review.Request.UID)
}

// pointedAt returns the configurations pointed at a webhook server, without
// their narrowing, so that it stays what calling any webhook costs.
func pointedAt(mwc *admissionregistrationv1.MutatingWebhookConfiguration, vwc *admissionregistrationv1.ValidatingWebhookConfiguration, srv *httptest.Server) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	u := srv.URL + "/noop"
	m, v := mwc.DeepCopy(), vwc.DeepCopy()
	for i := range m.Webhooks {
		m.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caPEM}
		m.Webhooks[i].ObjectSelector, m.Webhooks[i].MatchConditions = nil, nil
		m.Webhooks[i].NamespaceSelector = unnarrowed(m.Webhooks[i].NamespaceSelector)
	}
	if v != nil {
		for i := range v.Webhooks {
			v.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caPEM}
			v.Webhooks[i].ObjectSelector, v.Webhooks[i].MatchConditions = nil, nil
			v.Webhooks[i].NamespaceSelector = unnarrowed(v.Webhooks[i].NamespaceSelector)
		}
	}
	return m, v
}

// podPatch is the patch the policies give the pod fixture on CREATE.
func podPatch(snap *engine.Snapshot, podJSON []byte) ([]byte, error) {
	req := &admissionv1.AdmissionRequest{
		UID: "pod-patch", Operation: admissionv1.Create,
		Kind:     metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Object:   runtime.RawExtension{Raw: podJSON},
	}
	d, err := snap.Evaluate(context.Background(), req, engine.EvalOptions{Phase: engine.PhaseMutating})
	if err != nil {
		return nil, err
	}
	if len(d.Patch) == 0 {
		return nil, fmt.Errorf("the policies do not patch the pod fixture")
	}
	return d.PatchJSON()
}

// patchingWebhook answers at once: with patch for a pod owned by a
// StatefulSet (the matched pod), allowed without one for anything else.
func patchingWebhook(patch []byte) http.HandlerFunc {
	patch64 := base64.StdEncoding.EncodeToString(patch)
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var review struct {
			Request struct {
				UID string `json:"uid"`
			} `json:"request"`
		}
		if err := json.Unmarshal(body, &review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if bytes.Contains(body, []byte(`"kind":"StatefulSet"`)) {
			fmt.Fprintf(w, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":%q,"allowed":true,"patchType":"JSONPatch","patch":%q}}`, review.Request.UID, patch64)
			return
		}
		fmt.Fprintf(w, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":%q,"allowed":true}}`, review.Request.UID)
	}
}
