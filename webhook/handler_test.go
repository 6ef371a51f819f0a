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
	h := Chain(admission.HandlerFunc(func(context.Context, admission.Request) admission.Response { panic("handler bug") }), WithLogging(log))
	panics := m.Panics.WithLabelValues(PanicHTTP)

	hh := Instrument("/validate", m, &ReviewHandler{Handler: h, Log: log, Panics: panics})
	out := reviewtest.MustReview(t, reviewtest.Post(hh, "/validate", reviewtest.Review(reviewtest.V1, "bug"), "application/json"))
	if out.Response.UID != "bug" || out.Response.Allowed || out.Response.Result.Code != 500 || !strings.Contains(out.Response.Result.Message, "handler bug") {
		t.Errorf("without OnPanic: response = %+v", out.Response)
	}

	var gotUID types.UID
	hh = Instrument("/validate", m, &ReviewHandler{Handler: h, Log: log, Panics: panics, OnPanic: func(req admission.Request, p any) admission.Response {
		gotUID = req.UID
		return admission.Allowed("").WithWarnings(fmt.Sprintf("recovered: %v", p))
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
