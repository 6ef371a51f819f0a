package webhook

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"celadon.io/celadon/internal/reviewtest"
)

// signalReader reports its first Read on read, then reads r.
type signalReader struct {
	r    io.Reader
	read chan struct{}
	once bool
}

func (s *signalReader) Read(p []byte) (int, error) {
	if !s.once {
		s.once = true
		close(s.read)
	}
	return s.r.Read(p)
}

// headerOnly starts serving a request that announces a body of
// MaxRequestBytes and sends none, and returns once the handler waits for
// its first byte; send delivers the body (or an error) and waits for the
// answer.
func headerOnly(t *testing.T, h http.Handler) (send func(body []byte, err error) *httptest.ResponseRecorder) {
	t.Helper()
	pr, pw := io.Pipe()
	sr := &signalReader{r: pr, read: make(chan struct{})}
	r := httptest.NewRequest(http.MethodPost, "/validate?timeout=5s", sr)
	r.ContentLength = MaxRequestBytes
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); h.ServeHTTP(w, r) }()
	select {
	case <-sr.read:
	case <-done:
		t.Fatalf("answered %d before reading the body: %s", w.Code, w.Body)
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never read the body")
	}
	return func(body []byte, err error) *httptest.ResponseRecorder {
		go func() {
			if _, werr := pw.Write(body); werr == nil {
				pw.CloseWithError(err)
			}
		}()
		<-done
		return w
	}
}

func allowAll() Handler {
	return HandlerFunc(func(context.Context, admission.Request) Response { return Allowed() })
}

// TestHeaderOnlyAllocatesNothing: a request announcing 7 MiB whose body
// has not arrived costs no buffer; before, the handler grew one to the
// announced Content-Length, and forty such connections killed a server
// under 256 MiB.
func TestHeaderOnlyAllocatesNothing(t *testing.T) {
	h := &ReviewHandler{Handler: allowAll()}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	send := headerOnly(t, h)
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 256<<10 {
		t.Errorf("a connection that sent only headers (Content-Length %d) allocated %d bytes; want under 256 KiB", MaxRequestBytes, grew)
	}
	if w := send(reviewtest.Review(reviewtest.V1, "late"), io.EOF); w.Code != http.StatusOK {
		t.Fatalf("status %d (%s), want 200 once the body came", w.Code, w.Body)
	}
}

// TestBodyBudget checks the budget a ReviewHandler takes as bytes arrive.
func TestBodyBudget(t *testing.T) {
	review := reviewtest.Review(reviewtest.V1, "u")

	t.Run("header-only holds nothing", func(t *testing.T) {
		b := NewBodyBudget(0, nil)
		send := headerOnly(t, &ReviewHandler{Handler: allowAll(), Bodies: b})
		if got := b.InUse(); got != 0 {
			t.Errorf("InUse = %d while no byte of the body came, want 0", got)
		}
		if w := send(review, io.EOF); w.Code != http.StatusOK {
			t.Fatalf("status %d (%s), want 200", w.Code, w.Body)
		}
		if got := b.InUse(); got != 0 {
			t.Errorf("InUse = %d after the answer, want 0", got)
		}
	})

	t.Run("waits for room", func(t *testing.T) {
		b := NewBodyBudget(0, nil)
		full := bodyGrant{b: b}
		if err := full.take(context.Background(), b.Size()); err != nil {
			t.Fatal(err)
		}
		h := &ReviewHandler{Handler: allowAll(), Bodies: b}
		answered := make(chan *httptest.ResponseRecorder, 1)
		go func() { answered <- reviewtest.Post(h, "/validate?timeout=10s", review, "application/json") }()
		select {
		case w := <-answered:
			t.Fatalf("answered %d (%s) with the budget full, want a wait", w.Code, w.Body)
		case <-time.After(200 * time.Millisecond):
		}
		full.release()
		select {
		case w := <-answered:
			if w.Code != http.StatusOK {
				t.Fatalf("status %d (%s), want 200 once room freed up", w.Code, w.Body)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("not answered after the budget was released")
		}
		if got := b.InUse(); got != 0 {
			t.Errorf("InUse = %d after the answer, want 0", got)
		}
	})

	t.Run("refused past the deadline", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		m := NewMetrics(reg)
		b := NewBodyBudget(0, m.BodyBytes)
		full := bodyGrant{b: b}
		if err := full.take(context.Background(), b.Size()); err != nil {
			t.Fatal(err)
		}
		defer full.release()
		start := time.Now()
		h := &ReviewHandler{Handler: allowAll(), Bodies: b, Throttled: m.Throttled.WithLabelValues("/validate")}
		w := reviewtest.Post(h, "/validate?timeout=200ms", review, "application/json")
		if w.Code != http.StatusTooManyRequests {
			t.Fatalf("status %d (%s), want 429", w.Code, w.Body)
		}
		if msg := reviewtest.StatusMessage(t, w); !strings.Contains(msg, "request bodies in flight") || !strings.Contains(msg, "deadline") {
			t.Errorf("message %q, want it to name the body budget and the deadline", msg)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("refused after %v, want at the 180ms deadline", d)
		}
		if got := b.InUse(); got != b.Size() {
			t.Errorf("InUse = %d, want only the %d held by the test", got, b.Size())
		}
		if got := reviewtest.Counter(t, reg, MetricThrottled, nil); got != 1 {
			t.Errorf("%s = %v, want 1", MetricThrottled, got)
		}
		if got := reviewtest.Counter(t, reg, MetricBodyBytes, nil); got != float64(b.Size()) {
			t.Errorf("%s = %v, want %d", MetricBodyBytes, got, b.Size())
		}
	})

	t.Run("released on every answer", func(t *testing.T) {
		b := NewBodyBudget(0, nil)
		panicky := HandlerFunc(func(context.Context, admission.Request) Response { panic("bug") })
		big := bytes.Repeat([]byte(" "), MaxRequestBytes+10)
		for name, c := range map[string]struct {
			h    Handler
			body io.Reader
			code int
		}{
			"allowed":       {allowAll(), bytes.NewReader(review), 200},
			"garbage":       {allowAll(), strings.NewReader("{not json"), 400},
			"too large":     {allowAll(), bytes.NewReader(big), 413},
			"read error":    {allowAll(), io.MultiReader(bytes.NewReader(review[:20]), errReader{}), 400},
			"handler panic": {panicky, bytes.NewReader(review), 200}, // answered with an internal error in the review
		} {
			r := httptest.NewRequest(http.MethodPost, "/validate", c.body)
			r.ContentLength = -1 // unknown: read to the end
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			(&ReviewHandler{Handler: c.h, Bodies: b}).ServeHTTP(w, r)
			if w.Code != c.code {
				t.Errorf("%s: status %d (%.200s), want %d", name, w.Code, w.Body, c.code)
			}
			if got := b.InUse(); got != 0 {
				t.Errorf("%s: InUse = %d after the answer, want 0", name, got)
			}
		}
	})

	t.Run("one holder waits, the next is refused", func(t *testing.T) {
		b := NewBodyBudget(0, nil)
		ctx := context.Background()
		var a, c bodyGrant
		a.b, c.b = b, b
		if err := a.take(ctx, bodyChunk); err != nil {
			t.Fatal(err)
		}
		if err := c.take(ctx, b.Size()-bodyChunk); err != nil {
			t.Fatal(err)
		}
		// a holds a chunk and waits for another: the one waiting holder.
		waited := make(chan error, 1)
		go func() { waited <- a.take(ctx, bodyChunk) }()
		for !b.waiting.Load() {
			time.Sleep(time.Millisecond)
		}
		// c, holding too, would wait on a as a waits on c: refused at once.
		if err := c.take(ctx, bodyChunk); !errors.Is(err, errBudgetBusy) {
			t.Fatalf("second waiting holder: %v, want errBudgetBusy", err)
		}
		c.release()
		if err := <-waited; err != nil {
			t.Fatalf("the waiting holder: %v", err)
		}
		a.release()
		if got := b.InUse(); got != 0 {
			t.Errorf("InUse = %d, want 0", got)
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// TestReadBodySpillsIntoChunks: bodies around and past spillSize, read in
// reads of every size, come back whole, and a large one in a buffer of its
// own size rather than a doubled one.
func TestReadBodySpillsIntoChunks(t *testing.T) {
	for _, size := range []int{1, firstRead, spillSize - 1, spillSize, spillSize + 1, spillSize + bodyChunk, 3<<20 + 12345} {
		for _, step := range []int{1000, 70000} {
			want := make([]byte, size)
			for i := range want {
				want[i] = byte(i*7 + size)
			}
			g := bodyGrant{b: NewBodyBudget(16<<20, nil)}
			buf, err := readBody(context.Background(), iotest.HalfReader(&stepReader{r: bytes.NewReader(want), step: step}), MaxRequestBytes+1, &g)
			if err != nil {
				t.Fatalf("size %d step %d: %v", size, step, err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("size %d step %d: got %d bytes, not the body", size, step, buf.Len())
			}
			if size > spillSize && buf.Cap() != size {
				t.Errorf("size %d: a buffer of %d bytes", size, buf.Cap())
			}
			g.release()
		}
	}
}

// stepReader returns at most step bytes a read.
type stepReader struct {
	r    io.Reader
	step int
}

func (s *stepReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), s.step)]) }
