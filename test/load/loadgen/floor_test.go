package loadgen

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"celadon.io/celadon/internal/devenv"
)

// TestServeFloor serves the floor as -serve-floor does and runs every
// request kind against it: Run's uid check passes for each (the first uid
// of a review is the request's, even when the object has one), and every
// answer is allowed without a patch.
func TestServeFloor(t *testing.T) {
	certs := t.TempDir()
	if _, _, err := devenv.GenerateCerts(certs, "floor test CA"); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeFloor(ctx, ln, certs) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeFloor: %v", err)
		}
	}()

	pod, err := LoadPod("")
	if err != nil {
		t.Fatal(err)
	}
	mix, err := ParseMix(strings.Join(Kinds, ","))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := BuildTemplates(mix, pod)
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(filepath.Join(certs, devenv.CAFile), 2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(RunConfig{URL: "https://" + ln.Addr().String() + "/mutate", Concurrency: 2, Count: 60, Timeout: 5 * time.Second,
		MaxDuration: time.Minute, Templates: ts, Schedule: Schedule(mix), Client: client})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 60 || r.ErrorCount != 0 || r.Allowed != 60 || r.Patched != 0 {
		t.Errorf("requests %d, errors %v %v, allowed %d, patched %d; want 60 allowed, none patched, no error", r.Requests, r.Errors, r.ErrorSamples, r.Allowed, r.Patched)
	}

	// HTTP/1.1 only, as Celadon serves by default: h2 is not negotiated.
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("negotiated %q, want http/1.1", p)
	}
	conn.Close()
}

func TestRequestUID(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{`{"kind":"AdmissionReview","request":{"uid":"abc-1","object":{"metadata":{"uid":"obj"}}}}`, "abc-1", true},
		{`{"request":{"uid":"a\"b\\","x":1}}`, `a\"b\\`, true}, // escapes kept as written
		{`{"request":{"name":"x"}}`, "", false},
		{`{"request":{"uid":"unterminated`, "", false},
	} {
		got, ok := RequestUID([]byte(c.in))
		if string(got) != c.want || ok != c.ok {
			t.Errorf("RequestUID(%s) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// CompareFloor takes the median of each side, then the ratio; errors of
// both sides add up.
func TestCompareFloor(t *testing.T) {
	a := []*Result{
		{Label: "shipped", Path: "/mutate", Concurrency: 32, RPS: 4000, ServerCPUPerReq: 330, P99ms: 20},
		{Label: "shipped", Path: "/mutate", Concurrency: 32, RPS: 3000, ServerCPUPerReq: 400, P99ms: 30, ErrorCount: 2},
		{Label: "shipped", Path: "/mutate", Concurrency: 32, RPS: 5000, ServerCPUPerReq: 300, P99ms: 10},
	}
	f := []*Result{
		{Label: FloorLabel, RPS: 16000, ServerCPUPerReq: 50, P99ms: 4},
		{Label: FloorLabel, RPS: 16000, ServerCPUPerReq: 40, P99ms: 6, ErrorCount: 1},
		{Label: FloorLabel, RPS: 20000, ServerCPUPerReq: 60, P99ms: 5},
	}
	r := CompareFloor(a, f)
	want := FloorRatio{Label: "shipped", Path: "/mutate", Concurrency: 32, Runs: 3, Errors: 3,
		RPS: 4000, FloorRPS: 16000, RPSRatio: 0.25,
		CPUPerReq: 330, FloorCPUPerReq: 50, CPURatio: 6.6,
		P99ms: 20, FloorP99ms: 5, P99Ratio: 4}
	if r != want {
		t.Errorf("CompareFloor = %+v\nwant %+v", r, want)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of an even count = %v, want 2.5", m)
	}
}
