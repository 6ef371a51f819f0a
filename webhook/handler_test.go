package webhook

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"celadon.io/celadon/internal/reviewtest"
)

// The whole chain, through a Server with policies, is tested in package
// server; these tests need no server.

// panicReader panics when read: a bug before the review is decoded.
type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("decoder bug") }

func TestEvalTimeout(t *testing.T) {
	def := 10 * time.Second
	cases := map[string]time.Duration{
		"":                      9 * time.Second, // absent: 90% of the default
		"timeout=10s":           9 * time.Second,
		"timeout=5s":            4500 * time.Millisecond,
		"dryRun=All&timeout=2s": 1800 * time.Millisecond,
		"timeout=1s&x=y":        900 * time.Millisecond,
		"timeout=50ms":          100 * time.Millisecond, // floor
		"timeout=0s":            9 * time.Second,        // invalid: default
		"timeout=-3s":           9 * time.Second,
		"timeout=soon":          9 * time.Second,
		"timeout=1h":            27 * time.Second, // the API server caps at 30s
		"timeout=3%73":          2700 * time.Millisecond,
		"xtimeout=3s":           9 * time.Second,
	}
	for q, want := range cases {
		if got := evalTimeout(q, def); got != want {
			t.Errorf("evalTimeout(%q) = %v, want %v", q, got, want)
		}
	}
}

// TestOneRecoverAtTheBoundary checks the ReviewHandler's recover, the one
// of a request besides the engine's around builtins: a panic while a
// decoded request is answered gets OnPanic's answer, or an internal error
// in the review; a panic before decoding is an HTTP 500.
func TestOneRecoverAtTheBoundary(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	log := testr.New(t)
	h := Chain(HandlerFunc(func(context.Context, admission.Request) Response { panic("handler bug") }), WithLogging(log))
	panics := m.Panics.WithLabelValues(PanicHTTP)

	hh := Instrument("/validate", m, &ReviewHandler{Handler: h, Log: log, Panics: panics})
	out := reviewtest.MustReview(t, reviewtest.Post(hh, "/validate", reviewtest.Review(reviewtest.V1, "bug"), "application/json"))
	if out.Response.UID != "bug" || out.Response.Allowed || out.Response.Result.Code != 500 || !strings.Contains(out.Response.Result.Message, "handler bug") {
		t.Errorf("without OnPanic: response = %+v", out.Response)
	}

	var gotUID types.UID
	hh = Instrument("/validate", m, &ReviewHandler{Handler: h, Log: log, Panics: panics, OnPanic: func(req admission.Request, p any) Response {
		gotUID = req.UID
		return Allowed().WithWarnings(fmt.Sprintf("recovered: %v", p))
	}})
	out = reviewtest.MustReview(t, reviewtest.Post(hh, "/validate", reviewtest.Review(reviewtest.V1, "decided"), "application/json"))
	if gotUID != "decided" || out.Response.UID != "decided" || !out.Response.Allowed || len(out.Response.Warnings) != 1 || out.Response.Warnings[0] != "recovered: handler bug" {
		t.Errorf("with OnPanic (saw uid %q): response = %+v", gotUID, out.Response)
	}

	r := httptest.NewRequest(http.MethodPost, "/validate", panicReader{})
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	hh.ServeHTTP(w, r)
	if w.Code != 500 || !strings.Contains(reviewtest.StatusMessage(t, w), "decoder bug") {
		t.Errorf("a panic before decoding: HTTP %d %s", w.Code, w.Body)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Panics, m.Requests)
	if got := reviewtest.Counter(t, reg, MetricPanics, map[string]string{"where": "http"}); got != 1 {
		t.Errorf("http panics = %v, want 1 (the decided ones are the OnPanic's to count)", got)
	}
	if got := reviewtest.Counter(t, reg, MetricRequests, map[string]string{"decision": "error", "code": "500"}); got != 1 {
		t.Errorf("HTTP 500 requests = %v, want 1", got)
	}
}

func TestLimiterWaitsForASlot(t *testing.T) {
	l := NewLimiter(1)
	if !l.Acquire(context.Background()) {
		t.Fatal("first Acquire failed")
	}
	got := make(chan bool)
	go func() { got <- l.Acquire(context.Background()) }()
	l.Release()
	if !<-got {
		t.Error("a waiting Acquire did not get the freed slot")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if l.Acquire(ctx) {
		t.Error("Acquire succeeded with every slot taken and a done context")
	}
}

// TestNoSlotIsAFailedCall checks what a request that finds no evaluation
// slot gets: an HTTP 429 with a metav1.Status saying why, and no
// Retry-After, so that the API server's webhook client fails the call at
// once and applies the failurePolicy. An AdmissionReview with allowed:
// false, as before, is a denial even under failurePolicy Ignore.
func TestNoSlotIsAFailedCall(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	l := NewLimiter(1)
	if !l.Acquire(context.Background()) { // the only slot is taken
		t.Fatal("Acquire failed")
	}
	defer l.Release()
	throttled := m.Throttled.WithLabelValues("/validate")
	evaluated := false
	h := Chain(HandlerFunc(func(context.Context, admission.Request) Response {
		evaluated = true
		return Allowed()
	}), WithLimit(l, throttled, nil))
	rh := Instrument("/validate", m, &ReviewHandler{Handler: h, Log: testr.New(t)})

	w := reviewtest.Post(rh, "/validate?timeout=200ms", reviewtest.Review(reviewtest.V1, "busy"), "application/json")
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("HTTP %d, want 429 (a failed call, not a review): %s", w.Code, w.Body)
	}
	if msg := reviewtest.StatusMessage(t, w); !strings.Contains(msg, "too many concurrent admission requests (limit 1)") {
		t.Errorf("message %q does not say why", msg)
	}
	if !strings.Contains(w.Body.String(), `"reason":"TooManyRequests"`) {
		t.Errorf("body %s has no reason TooManyRequests", w.Body)
	}
	if ra := w.Header().Get("Retry-After"); ra != "" {
		t.Errorf("Retry-After %q: the API server's client would retry a busy server", ra)
	}
	if evaluated {
		t.Error("the request was evaluated without a slot")
	}
	if got := reviewtest.Counter(t, reg, MetricThrottled, nil); got != 1 {
		t.Errorf("throttled = %v, want 1", got)
	}
	if got := reviewtest.Counter(t, reg, MetricRequests, map[string]string{"decision": DecisionError, "code": "429"}); got != 1 {
		t.Errorf("requests{decision=error,code=429} = %v, want 1", got)
	}
}

// TestDeadlinePassedIsAFailedCall checks that a request whose deadline
// passed by the time it got its slot is not evaluated (every policy would
// report "not evaluated", and a Fail policy deny) but answered HTTP 503.
func TestDeadlinePassedIsAFailedCall(t *testing.T) {
	l := NewLimiter(1)
	evaluated := false
	h := Chain(HandlerFunc(func(context.Context, admission.Request) Response {
		evaluated = true
		return Allowed()
	}), WithLimit(l, nil, nil))
	ctx, cancel := context.WithTimeout(context.Background(), -time.Second)
	defer cancel()
	resp := h.Handle(ctx, admission.Request{})
	if evaluated {
		t.Error("a request past its deadline was evaluated")
	}
	if !notEvaluated(&resp) || resp.Code() != http.StatusServiceUnavailable || !strings.Contains(resp.Message(), "deadline passed") {
		t.Errorf("response %+v, want NotEvaluated 503", resp)
	}
	if !l.Acquire(context.Background()) {
		t.Error("the slot was not released")
	}

	rh := &ReviewHandler{Handler: HandlerFunc(func(context.Context, admission.Request) Response { return resp }), Log: testr.New(t)}
	w := reviewtest.Post(rh, "/mutate", reviewtest.Review(reviewtest.V1, "late"), "application/json")
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("HTTP %d, want 503: %s", w.Code, w.Body)
	}
	if msg := reviewtest.StatusMessage(t, w); !strings.Contains(msg, "deadline passed") {
		t.Errorf("message %q", msg)
	}
}
