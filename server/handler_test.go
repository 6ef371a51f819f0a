package server

import (
	"celadon.io/celadon/builtins"
	"celadon.io/celadon/webhook"

	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

var handlerPolicies = map[string]string{
	"10-label.yaml": policy("label", `  match: {resources: [pods], operations: [CREATE]}
  action: setLabel
  with: {key: celadon.io/seen, value: "yes", warn: label added}
`),
	"20-deny.yaml": policy("no-bad-pods", `  match:
    resources: [pods]
    conditions:
    - name: is-bad
      expression: object.metadata.name == 'bad'
  action: violate
  with: {message: bad pods are not allowed}
`),
}

func named(name string) func(*admissionv1.AdmissionRequest) {
	return func(r *admissionv1.AdmissionRequest) {
		r.Name = name
		r.Object.Raw = []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"` + name + `","namespace":"default"},"spec":{"containers":[{"name":"app","image":"nginx"}]}}`)
	}
}

func TestMutatePatchesV1AndV1beta1(t *testing.T) {
	s, reg := newTestServer(t, handlerPolicies)
	for _, version := range []string{v1, v1beta1} {
		t.Run(version, func(t *testing.T) {
			w := post(s.MutateHandler(), "/mutate?timeout=10s", review(version, "uid-"+version), "application/json")
			out := mustReview(t, w)
			if out.APIVersion != version || out.Kind != "AdmissionReview" {
				t.Errorf("answered %s %s, want %s AdmissionReview", out.APIVersion, out.Kind, version)
			}
			r := out.Response
			if string(r.UID) != "uid-"+version {
				t.Errorf("uid %q not echoed", r.UID)
			}
			if !r.Allowed || r.Result == nil || r.Result.Code != 200 {
				t.Errorf("allowed=%v result=%+v, want allowed with code 200", r.Allowed, r.Result)
			}
			if r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
				t.Errorf("patchType %v, want JSONPatch", r.PatchType)
			}
			var ops []map[string]any
			if err := json.Unmarshal(r.Patch, &ops); err != nil {
				t.Fatalf("patch %q: %v", r.Patch, err)
			}
			if len(ops) != 1 || ops[0]["op"] != "add" || ops[0]["path"] != "/metadata/labels" {
				t.Errorf("patch = %v", ops)
			}
			// On the wire the patch is a base64 string.
			var raw struct {
				Response struct {
					Patch string `json:"patch"`
				} `json:"response"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil {
				t.Fatal(err)
			}
			if dec, err := base64.StdEncoding.DecodeString(raw.Response.Patch); err != nil || !bytes.Equal(dec, r.Patch) {
				t.Errorf("wire patch %q is not the base64 of the patch: %v", raw.Response.Patch, err)
			}
			if len(r.Warnings) != 1 || r.Warnings[0] != "label added" {
				t.Errorf("warnings = %q", r.Warnings)
			}
		})
	}
	if got := counter(t, reg, webhook.MetricRequests, map[string]string{"endpoint": "/mutate", "decision": "patched", "code": "200"}); got != 2 {
		t.Errorf("patched requests = %v, want 2", got)
	}
	if got := counter(t, reg, MetricPolicyEvals, map[string]string{"policy": "label", "state": "pass"}); got != 2 {
		t.Errorf("label pass evaluations = %v, want 2", got)
	}
	if got := counter(t, reg, webhook.MetricRequestDuration, map[string]string{"endpoint": "/mutate"}); got != 2 {
		t.Errorf("latency samples = %v, want 2", got)
	}
}

func TestValidateDeniesV1AndV1beta1(t *testing.T) {
	s, reg := newTestServer(t, handlerPolicies)
	for _, version := range []string{v1, v1beta1} {
		t.Run(version, func(t *testing.T) {
			out := mustReview(t, post(s.ValidateHandler(), "/validate", review(version, "deny-uid", named("bad")), "application/json"))
			r := out.Response
			if out.APIVersion != version {
				t.Errorf("answered %s, want %s", out.APIVersion, version)
			}
			if r.Allowed || r.UID != "deny-uid" {
				t.Fatalf("allowed=%v uid=%q, want a denial of deny-uid", r.Allowed, r.UID)
			}
			if r.Result == nil || r.Result.Code != http.StatusForbidden || r.Result.Reason != metav1.StatusReasonForbidden ||
				r.Result.Message != "bad pods are not allowed" {
				t.Errorf("result = %+v", r.Result)
			}
			if r.Patch != nil || r.PatchType != nil {
				t.Errorf("a denial carries a patch: %s", r.Patch)
			}
		})
	}
	if got := counter(t, reg, webhook.MetricRequests, map[string]string{"endpoint": "/validate", "decision": "denied", "code": "200"}); got != 2 {
		t.Errorf("denied requests = %v, want 2", got)
	}
}

func TestEndpointsRunTheirPhaseOnly(t *testing.T) {
	s, _ := newTestServer(t, handlerPolicies)
	// /mutate does not run the validating policy...
	r := mustReview(t, post(s.MutateHandler(), "/mutate", review(v1, "u1", named("bad")), "application/json")).Response
	if !r.Allowed || len(r.Patch) == 0 {
		t.Errorf("/mutate: allowed=%v patch=%s, want a patch and no denial", r.Allowed, r.Patch)
	}
	// ... and /validate does not run the mutating one.
	r = mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "u2"), "application/json")).Response
	if !r.Allowed || r.Patch != nil || len(r.Warnings) > 0 {
		t.Errorf("/validate: allowed=%v patch=%s warnings=%q, want a plain allow", r.Allowed, r.Patch, r.Warnings)
	}
}

func TestBadRequests(t *testing.T) {
	s, reg := newTestServer(t, handlerPolicies)
	good := review(v1, "good")
	withoutRequest := []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`)
	cases := []struct {
		name        string
		method      string
		body        []byte
		contentType string
		code        int
		reason      string
	}{
		{"garbage JSON", "POST", []byte(`{"apiVersion": admission`), "application/json", 400, "not a JSON AdmissionReview"},
		{"not an object", "POST", []byte(`[1,2,3]`), "application/json", 400, "not a JSON AdmissionReview"},
		{"empty body", "POST", nil, "application/json", 400, "request body is empty"},
		{"blank body", "POST", []byte("  \n"), "application/json", 400, "request body is empty"},
		{"wrong kind", "POST", bytes.Replace(good, []byte(`"kind":"AdmissionReview"`), []byte(`"kind":"Pod"`), 1), "application/json", 400, `kind "Pod" is not AdmissionReview`},
		{"wrong apiVersion", "POST", bytes.Replace(good, []byte(v1), []byte("admission.k8s.io/v2"), 1), "application/json", 400, `unsupported apiVersion "admission.k8s.io/v2"`},
		{"no apiVersion", "POST", []byte(`{"kind":"AdmissionReview","request":{"uid":"x"}}`), "application/json", 400, "AdmissionReview has no apiVersion"},
		{"missing request", "POST", withoutRequest, "application/json", 400, "AdmissionReview has no request"},
		{"null request", "POST", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`), "application/json", 400, "AdmissionReview has no request"},
		{"request without uid", "POST", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`), "application/json", 400, "request has no uid"},
		{"wrong content type", "POST", good, "text/plain", 400, `Content-Type "text/plain" is not application/json`},
		{"missing content type", "POST", good, "", 400, "missing Content-Type"},
		{"GET", "GET", nil, "", 405, "method GET not allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(c.method, "/validate", bytes.NewReader(c.body))
			if c.body == nil {
				r.Body = http.NoBody
			}
			if c.contentType != "" {
				r.Header.Set("Content-Type", c.contentType)
			}
			w := httptest.NewRecorder()
			s.ValidateHandler().ServeHTTP(w, r)
			if w.Code != c.code {
				t.Fatalf("HTTP %d, want %d: %s", w.Code, c.code, w.Body)
			}
			if msg := statusMessage(t, w); !strings.Contains(msg, c.reason) {
				t.Errorf("message %q does not say %q", msg, c.reason)
			}
			// The server keeps serving.
			if out := mustReview(t, post(s.ValidateHandler(), "/validate", good, "application/json")); !out.Response.Allowed {
				t.Errorf("good request after a bad one: %+v", out.Response)
			}
		})
	}
	if got := counter(t, reg, webhook.MetricRequests, map[string]string{"endpoint": "/validate", "decision": "error", "code": "400"}); got != 12 {
		t.Errorf("400 requests counted = %v, want 12", got)
	}
	if got := counter(t, reg, webhook.MetricRequests, map[string]string{"endpoint": "/validate", "decision": "error", "code": "405"}); got != 1 {
		t.Errorf("405 requests counted = %v, want 1", got)
	}
	// A content type with parameters is still JSON.
	if out := mustReview(t, post(s.ValidateHandler(), "/validate", good, "application/json; charset=utf-8")); !out.Response.Allowed {
		t.Errorf("charset parameter: %+v", out.Response)
	}
}

func TestOversizedBody(t *testing.T) {
	s, reg := newTestServer(t, handlerPolicies)
	// A valid review just over the cap: the object carries the padding.
	pad := strings.Repeat("x", webhook.MaxRequestBytes)
	big := review(v1, "big", func(r *admissionv1.AdmissionRequest) {
		r.Object.Raw = []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"big","annotations":{"pad":"` + pad + `"}}}`)
	})
	for _, chunked := range []bool{false, true} {
		r := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(big))
		r.Header.Set("Content-Type", "application/json")
		if chunked {
			r.ContentLength = -1 // unknown length: the cap applies while reading
		}
		w := httptest.NewRecorder()
		s.MutateHandler().ServeHTTP(w, r)
		if w.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked=%v: HTTP %d, want 413: %.200s", chunked, w.Code, w.Body)
		}
		if msg := statusMessage(t, w); !strings.Contains(msg, "over the limit of 7340032 bytes") {
			t.Errorf("chunked=%v: message %q", chunked, msg)
		}
	}
	if got := counter(t, reg, webhook.MetricRequests, map[string]string{"endpoint": "/mutate", "decision": "error", "code": "413"}); got != 2 {
		t.Errorf("413 requests counted = %v, want 2", got)
	}
	// Just under the cap is served.
	under := review(v1, "under", func(r *admissionv1.AdmissionRequest) {
		r.Object.Raw = []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"under","annotations":{"pad":"` + pad[:webhook.MaxRequestBytes-2048] + `"}}}`)
	})
	if out := mustReview(t, post(s.MutateHandler(), "/mutate", under, "application/json")); !out.Response.Allowed {
		t.Errorf("a review under the cap: %+v", out.Response.Result)
	}
}

func TestOwnServiceAccountIsAllowedUntouched(t *testing.T) {
	s, reg := newTestServer(t, handlerPolicies, func(o *Options) { o.ServiceAccount = "celadon-system/celadon" })
	if got := s.Options().ServiceAccount; got != "system:serviceaccount:celadon-system:celadon" {
		t.Fatalf("service account normalized to %q", got)
	}
	as := func(user string) func(*admissionv1.AdmissionRequest) {
		return func(r *admissionv1.AdmissionRequest) { r.UserInfo = authenticationv1.UserInfo{Username: user} }
	}
	r := mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "own", named("bad"), as("system:serviceaccount:celadon-system:celadon")), "application/json")).Response
	if !r.Allowed || r.UID != "own" {
		t.Errorf("own service account: allowed=%v uid=%q", r.Allowed, r.UID)
	}
	r = mustReview(t, post(s.MutateHandler(), "/mutate", review(v1, "own2", as("system:serviceaccount:celadon-system:celadon")), "application/json")).Response
	if !r.Allowed || r.Patch != nil {
		t.Errorf("own service account was mutated: %s", r.Patch)
	}
	if got := counter(t, reg, MetricPolicyEvals, nil); got != 0 {
		t.Errorf("policies were evaluated for the own service account: %v", got)
	}
	// Another service account of the same namespace is not exempt.
	r = mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "other", named("bad"), as("system:serviceaccount:celadon-system:other")), "application/json")).Response
	if r.Allowed {
		t.Error("another service account bypassed the policies")
	}
}

func TestServiceAccountUsername(t *testing.T) {
	for in, want := range map[string]string{
		"":                                "",
		"ns/sa":                           "system:serviceaccount:ns:sa",
		"ns:sa":                           "system:serviceaccount:ns:sa",
		"system:serviceaccount:ns:sa":     "system:serviceaccount:ns:sa",
		"system:serviceaccount:ns:sa:bad": "",
		"justaname":                       "",
		"/sa":                             "",
	} {
		got, err := ServiceAccountUsername(in)
		if (err != nil) != (want == "" && in != "") || got != want {
			t.Errorf("ServiceAccountUsername(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	t.Setenv("POD_NAMESPACE", "celadon")
	t.Setenv("SERVICE_ACCOUNT", "webhook")
	if got := ServiceAccountFromEnv(); got != "system:serviceaccount:celadon:webhook" {
		t.Errorf("ServiceAccountFromEnv() = %q", got)
	}
	t.Setenv("SERVICE_ACCOUNT", "")
	if got := ServiceAccountFromEnv(); got != "" {
		t.Errorf("ServiceAccountFromEnv() without SERVICE_ACCOUNT = %q", got)
	}
}

var probePolicy = map[string]string{
	"probe.yaml": policy("probe", "  match: {resources: [pods]}\n  action: probe\n"),
}

// probeWarnings posts to /mutate?query and returns the probe's warnings.
func probeWarnings(t *testing.T, s *Server, query string, mod ...func(*admissionv1.AdmissionRequest)) map[string]string {
	t.Helper()
	r := mustReview(t, post(s.MutateHandler(), "/mutate"+query, review(v1, "probe", mod...), "application/json")).Response
	out := map[string]string{}
	for _, w := range r.Warnings {
		k, v, _ := strings.Cut(w, "=")
		out[k] = v
	}
	return out
}

func TestDeadlineFollowsTheAPIServerTimeout(t *testing.T) {
	s, _ := newTestServer(t, probePolicy)
	// Only upper bounds, and lower bounds far from them: the time spent
	// before the builtin runs is not asserted.
	for query, bounds := range map[string][2]time.Duration{
		"?timeout=2s": {0, 1800 * time.Millisecond},
		"":            {2 * time.Second, 9 * time.Second}, // no timeout: the 10s default
	} {
		left, err := time.ParseDuration(probeWarnings(t, s, query)["deadline"])
		if err != nil {
			t.Fatalf("%q: %v", query, err)
		}
		if left <= bounds[0] || left > bounds[1] {
			t.Errorf("%q: %v left for evaluation, want in (%v, %v]", query, left, bounds[0], bounds[1])
		}
	}
}

func TestDryRunIsPassedThrough(t *testing.T) {
	s, _ := newTestServer(t, probePolicy)
	if got := probeWarnings(t, s, "")["dryRun"]; got != "false" {
		t.Errorf("dryRun = %q, want false", got)
	}
	if got := probeWarnings(t, s, "", func(r *admissionv1.AdmissionRequest) { r.DryRun = ptr.To(true) })["dryRun"]; got != "true" {
		t.Errorf("dryRun = %q, want true", got)
	}
}

func TestBuiltinPanicIsDecidedByFailurePolicy(t *testing.T) {
	s, reg := newTestServer(t, map[string]string{
		"p.yaml": policy("explode-fail", `  match:
    resources: [pods]
    conditions: [{name: fail-me, expression: "object.metadata.name == 'fail-me'"}]
  action: explode
  failurePolicy: Fail
---
`) + policy("explode-ignore", `  match:
    resources: [pods]
    conditions: [{name: ignore-me, expression: "object.metadata.name == 'ignore-me'"}]
  action: explode
  failurePolicy: Ignore
`),
	})
	r := mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "f", named("fail-me")), "application/json")).Response
	if r.Allowed || r.Result == nil || !strings.Contains(r.Result.Message, `policy "explode-fail" failed: builtin panicked`) {
		t.Errorf("failurePolicy Fail: allowed=%v result=%+v", r.Allowed, r.Result)
	}
	r = mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "i", named("ignore-me")), "application/json")).Response
	if !r.Allowed {
		t.Errorf("failurePolicy Ignore: denied: %+v", r.Result)
	}
	// The client is told, as the API server tells of a
	// ValidatingAdmissionPolicy: by name, without the error's details.
	if want := "Evaluation failed for Celadon policy 'explode-ignore' (failurePolicy Ignore): the request was admitted without it"; len(r.Warnings) != 1 || r.Warnings[0] != want {
		t.Errorf("failurePolicy Ignore: warnings %q, want %q", r.Warnings, want)
	}
	for _, p := range []string{"explode-fail", "explode-ignore"} {
		if got := counter(t, reg, MetricPolicyPanics, map[string]string{"policy": p}); got != 1 {
			t.Errorf("%s panics = %v, want 1", p, got)
		}
		if got := counter(t, reg, MetricPolicyErrors, map[string]string{"policy": p}); got != 1 {
			t.Errorf("%s errors = %v, want 1", p, got)
		}
	}
	if got := counter(t, reg, webhook.MetricPanics, map[string]string{"where": "builtin"}); got != 2 {
		t.Errorf("builtin panics = %v, want 2", got)
	}
	// Still serving.
	if r := mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "ok"), "application/json")).Response; !r.Allowed {
		t.Errorf("after panics: %+v", r.Result)
	}
}

func TestEnginePanicIsDecidedByFailurePolicy(t *testing.T) {
	for _, fp := range []string{"Fail", "Ignore"} {
		t.Run(fp, func(t *testing.T) {
			s, reg := newTestServer(t, map[string]string{
				"p.yaml": policy("selective", `  match:
    resources: [pods]
    namespaceSelector: {matchLabels: {team: a}}
  action: violate
  with: {message: no}
  failurePolicy: `+fp+"\n"),
			}, func(o *Options) { o.Namespaces = panickyNamespaces{} })
			r := mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "p"), "application/json")).Response
			if r.UID != "p" {
				t.Errorf("uid %q", r.UID)
			}
			switch fp {
			case "Fail":
				if r.Allowed || !strings.Contains(r.Result.Message, "internal error evaluating policies: namespace getter exploded (failurePolicy Fail: selective)") {
					t.Errorf("allowed=%v result=%+v", r.Allowed, r.Result)
				}
			case "Ignore":
				if !r.Allowed || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "namespace getter exploded") {
					t.Errorf("allowed=%v warnings=%q", r.Allowed, r.Warnings)
				}
			}
			if got := counter(t, reg, webhook.MetricPanics, map[string]string{"where": "engine"}); got != 1 {
				t.Errorf("engine panics = %v, want 1", got)
			}
			// Still serving: a request the policy does not match.
			r = mustReview(t, post(s.MutateHandler(), "/mutate", review(v1, "ok"), "application/json")).Response
			if !r.Allowed {
				t.Errorf("after the panic: %+v", r.Result)
			}
		})
	}
}

func TestConcurrencyLimit(t *testing.T) {
	g := newGate(t, "limit")
	s, reg := newTestServer(t, map[string]string{
		"gate.yaml": policy("gate", "  match: {resources: [pods]}\n  action: gate\n  with: {gate: limit, message: held}\n"),
	}, func(o *Options) { o.MaxConcurrent = 1 })

	var wg sync.WaitGroup
	var first *httptest.ResponseRecorder
	wg.Go(func() { first = post(s.ValidateHandler(), "/validate", review(v1, "first"), "application/json") })
	<-g.entered // the only slot is taken

	// The apiserver's 300ms timeout leaves 270ms to find a slot; then the
	// answer is an HTTP 429, a failed call, so that the API server applies
	// the webhook's failurePolicy (a review would be a denial).
	w := post(s.ValidateHandler(), "/validate?timeout=300ms", review(v1, "second"), "application/json")
	if w.Code != http.StatusTooManyRequests {
		t.Errorf("throttled request: HTTP %d, want 429: %s", w.Code, w.Body)
	} else if msg := statusMessage(t, w); !strings.Contains(msg, "too many concurrent admission requests (limit 1)") {
		t.Errorf("throttled request: message %q", msg)
	}
	if got := counter(t, reg, webhook.MetricThrottled, map[string]string{"endpoint": "/validate"}); got != 1 {
		t.Errorf("throttled = %v, want 1", got)
	}
	if got := counter(t, reg, webhook.MetricInFlight, nil); got != 1 {
		t.Errorf("in flight = %v, want 1", got)
	}
	close(g.release)
	wg.Wait()
	if r := mustReview(t, first).Response; r.Allowed || r.Result.Message != "held" {
		t.Errorf("first request: %+v", r.Result)
	}
	if got := counter(t, reg, webhook.MetricInFlight, nil); got != 0 {
		t.Errorf("in flight = %v, want 0", got)
	}
	if got := counter(t, reg, webhook.MetricRequests, map[string]string{"endpoint": "/validate", "decision": "error", "code": "429"}); got != 1 {
		t.Errorf("error decisions = %v, want 1", got)
	}
}

// TestUnusableObjectIsAFailedCall: an object the engine cannot read is
// answered with HTTP 400, a failed call for the API server, whose
// failurePolicy then decides; never a review that denies.
func TestUnusableObjectIsAFailedCall(t *testing.T) {
	s, reg := newTestServer(t, handlerPolicies)
	body := review(v1, "broken-object", func(r *admissionv1.AdmissionRequest) { r.Object = runtime.RawExtension{Raw: []byte(`"just a string"`)} })
	w := post(s.MutateHandler(), "/mutate", body, "application/json")
	if w.Code != http.StatusBadRequest || !strings.Contains(statusMessage(t, w), "request.object") {
		t.Errorf("HTTP %d %s, want 400 naming request.object", w.Code, w.Body)
	}
	if got := counter(t, reg, webhook.MetricRequests, map[string]string{"decision": "error", "code": "400"}); got != 1 {
		t.Errorf("error decisions = %v", got)
	}
}

// BenchmarkMutate measures the request path: decode, evaluate, encode.
func BenchmarkMutate(b *testing.B) {
	dir := b.TempDir()
	if err := writeFile(dir+"/p.yaml", handlerPolicies["10-label.yaml"]+"---\n"+handlerPolicies["20-deny.yaml"]); err != nil {
		b.Fatal(err)
	}
	s, err := NewServer(Options{PoliciesDir: dir, Registry: testRegistry(), Namespaces: staticNamespaces{}, MetricsRegisterer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	body := review(v1, "bench")
	h := s.MutateHandler()
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/mutate?timeout=10s", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
		_, _ = io.Copy(io.Discard, w.Body)
	}
}

func TestFailurePolicyPaths(t *testing.T) {
	s, reg := newTestServer(t, map[string]string{
		"p.yaml": handlerPolicies["10-label.yaml"] + "---\n" + // mutating, Ignore by default
			policy("deny-fail", "  match: {resources: [pods]}\n  action: violate\n  with: {message: A}\n") + "---\n" +
			policy("deny-ignore", "  match: {resources: [pods]}\n  action: violate\n  with: {message: B}\n  failurePolicy: Ignore\n"),
	})
	if got := strings.Join(s.Paths(), " "); got != "/mutate /mutate/fail /mutate/ignore /validate /validate/fail /validate/ignore" {
		t.Fatalf("paths: %s", got)
	}
	for path, want := range map[string]string{
		"/validate":        "A; B",
		"/validate/fail":   "A",
		"/validate/ignore": "B",
		"/mutate":          "patched",
		"/mutate/fail":     "allowed",
		"/mutate/ignore":   "patched",
	} {
		r := mustReview(t, post(s.Handler(path), path, review(v1, "fp"), "application/json")).Response
		got := "allowed"
		switch {
		case !r.Allowed:
			got = r.Result.Message
		case len(r.Patch) > 0:
			got = "patched"
		}
		if got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
		if c := counter(t, reg, webhook.MetricRequests, map[string]string{"endpoint": path}); c != 1 {
			t.Errorf("%s: %v requests counted, want 1", path, c)
		}
	}
	if s.Handler("/mutate/other") != nil {
		t.Error("a handler for an unknown path")
	}
}

// TestValidateReasonSetsTheCode: a validate policy's denial answers with
// its first failing validation's reason and that reason's code, as the API
// server answers a ValidatingAdmissionPolicy; every other denial, deny's,
// stays 403 Forbidden.
func TestValidateReasonSetsTheCode(t *testing.T) {
	validate := func(name, names, reasons string) string {
		return policy(name, `  match:
    resources: [pods]
    conditions:
    - name: named
      expression: object.metadata.name in `+names+`
  action: validate
  with:
    validations:
`+reasons)
	}
	files := map[string]string{
		"10-invalid.yaml": validate("invalid", "['invalid', 'validate-first']", `    - expression: "false"
      message: not valid
    - expression: "false"
      message: too large too
      reason: RequestEntityTooLarge
`),
		"20-default.yaml": validate("default", "['default']", `    - expression: "false"
      message: no reason given
`),
		"30-large.yaml": validate("large", "['large']", `    - expression: "true"
      message: passes
      reason: Invalid
    - expression: "false"
      message: too large
      reason: RequestEntityTooLarge
`),
		"40-unauthorized.yaml": validate("unauthorized", "['unauthorized']", `    - expression: "false"
      message: who are you
      reason: Unauthorized
`),
		"50-forbidden.yaml": validate("forbidden", "['forbidden']", `    - expression: "false"
      message: forbidden
      reason: Forbidden
`),
		"60-deny.yaml": policy("deny", `  match:
    resources: [pods]
    conditions:
    - name: named
      expression: object.metadata.name in ['denied', 'deny-first', 'validate-first']
  action: deny
  with: {message: denied}
`),
		"70-after.yaml": validate("after", "['deny-first']", `    - expression: "false"
      message: after
`),
	}
	s, reg := newTestServer(t, files, func(o *Options) { o.Registry = builtins.Registry() })
	for _, c := range []struct {
		name   string
		code   int32
		reason metav1.StatusReason
		msg    string
	}{
		{"invalid", http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "not valid; too large too"},
		{"default", http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "no reason given"},
		{"large", http.StatusRequestEntityTooLarge, metav1.StatusReasonRequestEntityTooLarge, "too large"},
		{"unauthorized", http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "who are you"},
		{"forbidden", http.StatusForbidden, metav1.StatusReasonForbidden, "forbidden"},
		{"denied", http.StatusForbidden, metav1.StatusReasonForbidden, "denied"},
		// The first denying policy, in order, gives the reason.
		{"validate-first", http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "not valid; too large too; denied"},
		{"deny-first", http.StatusForbidden, metav1.StatusReasonForbidden, "denied; after"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "uid", named(c.name)), "application/json")).Response
			if r.Allowed || r.Result == nil || r.Result.Code != c.code || r.Result.Reason != c.reason || r.Result.Message != c.msg {
				t.Errorf("allowed=%v result=%+v, want a denial %d %s %q", r.Allowed, r.Result, c.code, c.reason, c.msg)
			}
		})
	}
	// Denials all, whatever their code: none is counted an error.
	if got := counter(t, reg, webhook.MetricRequests, map[string]string{"endpoint": "/validate", "decision": "denied", "code": "200"}); got != 8 {
		t.Errorf("denied requests = %v, want 8", got)
	}
}
