package loadgen

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

func TestHistogramExactBelow128ns(t *testing.T) {
	var h Histogram
	for v := 1; v <= 100; v++ {
		h.Record(time.Duration(v))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{50, 50}, {90, 90}, {99, 99}, {100, 100}, {0, 1}} {
		if got := h.Percentile(c.q); got != c.want {
			t.Errorf("p%v = %v, want %v", c.q, got, c.want)
		}
	}
	if h.Count() != 100 || h.Min() != 1 || h.Max() != 100 {
		t.Errorf("count, min, max = %d, %v, %v", h.Count(), h.Min(), h.Max())
	}
}

func TestHistogramPercentilesWithinPrecision(t *testing.T) {
	var h Histogram
	// 1..100000 µs, shuffled: the true pQ is Q*1000 µs.
	vals := make([]time.Duration, 100000)
	for i := range vals {
		vals[i] = time.Duration(i+1) * time.Microsecond
	}
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(vals), func(i, j int) { vals[i], vals[j] = vals[j], vals[i] })
	for _, v := range vals {
		h.Record(v)
	}
	for _, q := range []float64{50, 90, 99, 99.9} {
		want := time.Duration(q*1000) * time.Microsecond
		got := h.Percentile(q)
		if got < want || float64(got-want) > float64(want)/128 {
			t.Errorf("p%v = %v, want %v within +1/128", q, got, want)
		}
	}
	if h.Max() != 100*time.Millisecond {
		t.Errorf("max = %v, want exact 100ms", h.Max())
	}
	if m := h.Mean(); m < 50*time.Millisecond || m > 50*time.Millisecond+time.Microsecond {
		t.Errorf("mean = %v", m)
	}
}

func TestHistogramBuckets(t *testing.T) {
	// Every value falls in a bucket whose upper bound is >= it and within
	// 1/128 of it, and buckets are monotonic.
	prev := -1
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 257, 1000, 1 << 20, 1<<20 + 1, 123456789, 1 << 44} {
		b := bucketOf(v)
		if b < prev {
			t.Errorf("bucketOf(%d) = %d < previous %d", v, b, prev)
		}
		prev = b
		up := bucketUpper(b)
		if up < v || float64(up-v) > float64(v)/128+1 {
			t.Errorf("bucketUpper(bucketOf(%d)) = %d", v, up)
		}
	}
	if b := bucketOf(1 << 62); b != numBuckets-1 {
		t.Errorf("huge value: bucket %d, want the last, %d", b, numBuckets-1)
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Histogram{})
	for _, q := range []float64{1, 50, 99, 100} {
		if m.Percentile(q) != all.Percentile(q) {
			t.Errorf("p%v: merged %v, direct %v", q, m.Percentile(q), all.Percentile(q))
		}
	}
	if m.Count() != 1000 || m.Min() != time.Microsecond || m.Max() != time.Millisecond {
		t.Errorf("merged count, min, max = %d, %v, %v", m.Count(), m.Min(), m.Max())
	}
	var empty Histogram
	if empty.Percentile(99) != 0 || empty.Mean() != 0 {
		t.Error("empty histogram: want zeros")
	}
}

func TestParseMix(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []Weight
		err  string
	}{
		{in: DefaultMix, want: []Weight{{"pod", 8}, {"deploydelete", 1}, {"ingress", 1}}},
		{in: "pod", want: []Weight{{"pod", 1}}},
		{in: " ingress = 3 , pod=0", want: []Weight{{"ingress", 3}}},
		{in: "pod=0", err: "no kind"},
		{in: "", err: "no kind"},
		{in: "secret=1", err: "unknown kind"},
		{in: "pod=x", err: "weight"},
		{in: "pod=-1", err: "weight"},
		{in: "pod=1,pod=2", err: "twice"},
	} {
		got, err := ParseMix(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseMix(%q) error = %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseMix(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestSchedule(t *testing.T) {
	mix, _ := ParseMix(DefaultMix)
	s := Schedule(mix)
	if len(s) != 10 {
		t.Fatalf("len = %d, want 10", len(s))
	}
	count := map[string]int{}
	for _, k := range s {
		count[k]++
	}
	if count["pod"] != 8 || count["deploydelete"] != 1 || count["ingress"] != 1 {
		t.Errorf("counts %v", count)
	}
	// Interleaved: the two rare kinds are not next to each other.
	i, j := slices.Index(s, "deploydelete"), slices.Index(s, "ingress")
	if d := i - j; d == 1 || d == -1 {
		t.Errorf("schedule %v: rare kinds adjacent", s)
	}
}

func TestCheckLocal(t *testing.T) {
	for u, ok := range map[string]bool{
		"https://127.0.0.1:9443":          true,
		"https://localhost:9443/mutate":   true,
		"https://[::1]:9443":              true,
		"http://127.0.0.1:9443":           false,
		"https://10.0.0.1:9443":           false,
		"https://example.com/validate":    false,
		"https://127.0.0.1.example.com/x": false,
	} {
		if err := CheckLocal(u); (err == nil) != ok {
			t.Errorf("CheckLocal(%s) = %v, want ok=%v", u, err, ok)
		}
	}
}

func TestParseStatusKiB(t *testing.T) {
	status := "Name:\tceladon\nVmPeak:\t 1300000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   49000 kB\n"
	if v, err := parseStatusKiB(strings.NewReader(status), "VmHWM"); err != nil || v != 51234 {
		t.Errorf("VmHWM = %d, %v", v, err)
	}
	if _, err := parseStatusKiB(strings.NewReader(status), "VmSwap"); err == nil {
		t.Error("missing field: want an error")
	}
}

type namespaces struct{}

func (namespaces) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/metadata.name": name, "team": name}}}, nil
}

// TestTemplatesAreReviewsTheEngineAccepts decodes every pre-encoded body
// (after the UID is stamped) as an AdmissionReview and evaluates it with
// the shipped policies: the pod is patched (sts-index), the protected
// Deployment's DELETE is denied (protect-delete), the rest allowed.
func TestTemplatesAreReviewsTheEngineAccepts(t *testing.T) {
	pod, err := LoadPod("")
	if err != nil {
		t.Fatal(err)
	}
	mix, _ := ParseMix("pod,deploydelete,ingress")
	all, err := BuildTemplates(mix, pod)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("..", "..", "..")
	files, err := engine.ReadFiles(filepath.Join(root, "policies"))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for kind, ts := range all {
		if len(ts) == 0 {
			t.Errorf("%s: no templates", kind)
		}
		for _, tpl := range ts {
			seen[tpl.Name] = true
			if kind == KindPod && (len(tpl.Body) < 3000 || len(tpl.Body) > 8000) {
				t.Errorf("%s: body is %d bytes, want about 4 KB", tpl.Name, len(tpl.Body))
			}
			b := NewBody(tpl)
			body, uid := b.Next(7, 123456)
			if uid != "00000007-0000-4000-8000-00000001e240" {
				t.Errorf("%s: uid %s", tpl.Name, uid)
			}
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(body, &review); err != nil {
				t.Fatalf("%s: %v", tpl.Name, err)
			}
			if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" || review.Request == nil {
				t.Fatalf("%s: not an admission.k8s.io/v1 AdmissionReview request: %s", tpl.Name, body[:100])
			}
			req := review.Request
			if string(req.UID) != uid {
				t.Errorf("%s: decoded uid %s, want %s", tpl.Name, req.UID, uid)
			}
			// The template itself is untouched.
			if !strings.Contains(string(tpl.Body), uidPlaceholder) {
				t.Errorf("%s: template modified", tpl.Name)
			}
			for _, phase := range []engine.Phase{engine.PhaseMutating, engine.PhaseValidating} {
				d, err := snap.Evaluate(context.Background(), req, engine.EvalOptions{Phase: phase, Namespaces: namespaces{}})
				if err != nil {
					t.Fatalf("%s: %v", tpl.Name, err)
				}
				for _, r := range d.Results {
					if r.State == engine.StateError {
						t.Errorf("%s: policy %s errored: %s", tpl.Name, r.Policy, r.Reason)
					}
				}
				wantDenied := tpl.Denied && phase == engine.PhaseValidating
				if d.Allowed == wantDenied {
					t.Errorf("%s phase %v: allowed=%v, want %v (%s)", tpl.Name, phase, d.Allowed, !wantDenied, d.Message)
				}
				wantPatch := kind == KindPod && phase == engine.PhaseMutating
				if (len(d.Patch) > 0) != wantPatch {
					t.Errorf("%s phase %v: patch %v, want a patch: %v", tpl.Name, phase, d.Patch, wantPatch)
				}
			}
		}
	}
	for _, v := range []string{"pod/statefulset", "deploydelete/plain", "deploydelete/protected", "ingress/create"} {
		if !seen[v] {
			t.Errorf("no %s template", v)
		}
	}
}

func TestParseMachineCPU(t *testing.T) {
	busy, steal, err := parseMachineCPU([]byte("cpu  100 5 50 1000 20 3 2 40 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	if err != nil || busy != 1.60 || steal != 0.40 {
		t.Errorf("busy, steal = %v, %v, %v; want 1.6, 0.4", busy, steal, err)
	}
	if _, _, err := parseMachineCPU([]byte("intr 1 2 3")); err == nil {
		t.Error("want an error")
	}
}

// echoServer answers every review allowed, patched when patch is set.
func echoServer(t *testing.T, patch bool) *httptest.Server {
	t.Helper()
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		if patch {
			resp.Patch = []byte(`[{"op":"add","path":"/metadata/labels/x","value":"y"}]`)
		}
		json.NewEncoder(w).Encode(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	}))
	hs.EnableHTTP2 = false
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return hs
}

func testRunConfig(t *testing.T, hs *httptest.Server) RunConfig {
	t.Helper()
	pod, err := LoadPod("")
	if err != nil {
		t.Fatal(err)
	}
	mix, _ := ParseMix("pod,ingress")
	ts, err := BuildTemplates(mix, pod)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(hs.Certificate())
	return RunConfig{URL: hs.URL + "/mutate", Concurrency: 2, Timeout: 5 * time.Second, MaxDuration: time.Minute,
		Templates: ts, Schedule: Schedule(mix), Client: NewPoolClient(pool, 2, 5*time.Second)}
}

// TestRunCheckCountsWrongAnswers: an answer Check rejects is an error of
// kind "check"; the others count as allowed and in Live.
func TestRunCheckCountsWrongAnswers(t *testing.T) {
	cfg := testRunConfig(t, echoServer(t, true))
	cfg.Count, cfg.Concurrency = 40, 1 // one worker walks the schedule: pod, ingress, pod...
	cfg.Live = &Live{}
	cfg.Check = func(tpl *Template, r *Review) error {
		if tpl.Kind == KindIngress && len(r.Patch) > 0 {
			return errors.New("an ingress was patched")
		}
		return nil
	}
	r, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 40 || r.Errors["check"] != 20 || r.ErrorCount != 20 || r.Patched != 20 {
		t.Fatalf("requests %d, errors %v, patched %d; want 40, check=20, 20", r.Requests, r.Errors, r.Patched)
	}
	if cfg.Live.OK.Load() != 20 || cfg.Live.Errors.Load() != 20 {
		t.Errorf("live ok %d, errors %d; want 20, 20", cfg.Live.OK.Load(), cfg.Live.Errors.Load())
	}
	if !strings.Contains(r.ErrorSamples[0], "ingress/create: an ingress was patched") {
		t.Errorf("error sample %q", r.ErrorSamples[0])
	}
}

// TestRunStopAndTolerate: closing Stop ends a run long before its
// duration; after the server is gone, Tolerate excuses the refused dials,
// and without it they are errors.
func TestRunStopAndTolerate(t *testing.T) {
	hs := echoServer(t, false)
	for _, tolerate := range []bool{true, false} {
		cfg := testRunConfig(t, hs)
		cfg.Duration, cfg.Rate = time.Minute, 200
		cfg.Live = &Live{}
		stop := make(chan struct{})
		cfg.Stop = stop
		if tolerate {
			// Refused dials, and requests on a connection the closing
			// server dropped before answering.
			cfg.Tolerate = func(e *TransportError) bool { return !e.GotResponse }
		}
		if !tolerate {
			hs.Close()
		}
		done := make(chan *Result, 1)
		go func() {
			r, err := Run(cfg)
			if err != nil {
				t.Error(err)
			}
			done <- r
		}()
		for cfg.Live.OK.Load()+cfg.Live.Errors.Load()+cfg.Live.Tolerated.Load() < 10 {
			time.Sleep(10 * time.Millisecond)
		}
		if tolerate {
			hs.Close()
			cfg.Client.CloseIdleConnections()
			for cfg.Live.Tolerated.Load() < 5 {
				time.Sleep(10 * time.Millisecond)
			}
		}
		close(stop)
		select {
		case r := <-done:
			if tolerate && (r.ErrorCount != 0 || r.Tolerated < 5 || r.Allowed < 10) {
				t.Errorf("tolerate: %d allowed, %d tolerated, errors %v", r.Allowed, r.Tolerated, r.Errors)
			}
			if !tolerate && (r.Errors["transport"] < 10 || r.Tolerated != 0) {
				t.Errorf("no tolerate: errors %v, %d tolerated", r.Errors, r.Tolerated)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the run did not stop")
		}
	}
}

func TestScrapeMetric(t *testing.T) {
	page := `# HELP celadon_reloads_total Reloads.
# TYPE celadon_reloads_total counter
celadon_reloads_total{result="success"} 3
celadon_reloads_total{result="failure"} 2
celadon_policy_errors_total{policy="a",kind="cel"} 1
celadon_policy_errors_total{policy="a",kind="panic"} 4
celadon_policy_errors_total{policy="b",kind="cel"} 8
go_goroutines 42
go_goroutines_max 99
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, page) }))
	defer srv.Close()
	for _, c := range []struct {
		name   string
		labels []string
		sum    float64
		found  bool
	}{
		{"go_goroutines", nil, 42, true},
		{"celadon_reloads_total", []string{`result="failure"`}, 2, true},
		{"celadon_reloads_total", nil, 5, true},
		{"celadon_policy_errors_total", []string{`policy="a"`}, 5, true},
		{"celadon_policy_errors_total", []string{`policy="a"`, `kind="cel"`}, 1, true},
		{"celadon_policy_errors_total", []string{`policy="c"`}, 0, false},
		{"celadon_reloads", nil, 0, false},
	} {
		sum, found, err := ScrapeMetric(srv.URL, c.name, c.labels...)
		if err != nil || sum != c.sum || found != c.found {
			t.Errorf("%s %v: %v, %v, %v; want %v, %v", c.name, c.labels, sum, found, err, c.sum, c.found)
		}
	}
}

// TestPatchingWebhookAnswersCeladonsPatch: the patching no-op webhook
// returns the shipped policies' patch of the pod fixture for the pod, and
// no patch for anything else.
func TestPatchingWebhookAnswersCeladonsPatch(t *testing.T) {
	files, err := engine.ReadFiles(filepath.Join("..", "..", "..", "policies"))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := LoadPod("")
	if err != nil {
		t.Fatal(err)
	}
	patch, err := podPatch(snap, pod)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(patch), `"INDEX"`) {
		t.Fatalf("patch %s does not set INDEX", patch)
	}
	h := patchingWebhook(patch)
	for _, c := range []struct {
		body    string
		patched bool
	}{
		{`{"request":{"uid":"a","object":{"metadata":{"ownerReferences":[{"kind":"StatefulSet"}]}}}}`, true},
		{`{"request":{"uid":"b","object":{"metadata":{}}}}`, false},
	} {
		w := httptest.NewRecorder()
		h(w, httptest.NewRequest(http.MethodPost, "/noop", strings.NewReader(c.body)))
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(w.Body.Bytes(), &review); err != nil || review.Response == nil {
			t.Fatalf("%s: %v %s", c.body, err, w.Body)
		}
		if got := string(review.Response.Patch); (got == string(patch)) != c.patched || !review.Response.Allowed {
			t.Errorf("%s: allowed %v, patch %q", c.body, review.Response.Allowed, got)
		}
	}
}
