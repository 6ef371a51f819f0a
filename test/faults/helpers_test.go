package faults

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"celadon.io/celadon/internal/devenv"
	celadonserver "celadon.io/celadon/server"
	"celadon.io/celadon/test/load/loadgen"
	"celadon.io/celadon/webhook"
)

// server is a `celadon serve` of one test.
type server struct {
	*loadgen.Server
	t *testing.T
	// Addr is the webhook's host:port.
	Addr string
	// PoliciesDir is laid out as a mounted ConfigMap; write it with
	// writePolicies.
	PoliciesDir string
	files       map[string][]byte
	// Pool holds the CAs the traffic trusts: the server's own, and any
	// added before startTraffic.
	Pool *x509.CertPool
}

// startServer serves the shipped policies (policies/) plus extra (file
// name → YAML), with the given extra serve flags.
func startServer(t *testing.T, extra map[string]string, flags ...string) *server {
	t.Helper()
	requireSuite(t)
	files, err := devenv.ReadPolicyFiles(filepath.Join(suite.root, "policies"))
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range extra {
		files[name] = []byte(body)
	}
	dir := filepath.Join(t.TempDir(), "policies")
	if err := devenv.WriteAtomic(dir, files); err != nil {
		t.Fatal(err)
	}
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	ls, err := suite.env.StartServer(testContext(t), suite.bin, dir, name, flags, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ls.Stop()
		if t.Failed() {
			if log, err := os.ReadFile(ls.LogPath); err == nil {
				t.Logf("server log (last 4 KB):\n%s", tail(log, 4<<10))
			}
		}
	})
	ca, err := os.ReadFile(ls.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &server{Server: ls, t: t, Addr: strings.TrimPrefix(ls.BaseURL, "https://"), PoliciesDir: dir, files: files, Pool: pool}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// testContext is cancelled when the test ends.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// writePolicies swaps the policy directory to hold the shipped policies
// and files, as the kubelet updates a ConfigMap volume; a nil value
// removes the file.
func (s *server) writePolicies(files map[string]string) {
	s.t.Helper()
	for name, body := range files {
		if body == "" {
			delete(s.files, name)
			continue
		}
		s.files[name] = []byte(body)
	}
	if err := devenv.WriteAtomic(s.PoliciesDir, s.files); err != nil {
		s.t.Fatal(err)
	}
}

// status reads /status.
func (s *server) status() celadonserver.Status {
	s.t.Helper()
	var st celadonserver.Status
	resp, err := http.Get(s.MetricsURL + celadonserver.StatusPath)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatalf("/status: %v", err)
	}
	return st
}

// metric sums the samples of a counter or gauge on /metrics whose labels
// include labels (name="value" pairs as written there).
func (s *server) metric(name string, labels ...string) float64 {
	s.t.Helper()
	sum, _, err := loadgen.ScrapeMetric(s.MetricsURL+"/metrics", name, labels...)
	if err != nil {
		s.t.Fatal(err)
	}
	return sum
}

// healthz checks that /healthz answers 200.
func (s *server) healthz() {
	s.t.Helper()
	resp, err := http.Get(s.HealthURL + "/healthz")
	if err != nil {
		s.t.Fatalf("/healthz: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("/healthz: %s", resp.Status)
	}
}

// Traffic, per webhook path: the load tool's default mix (StatefulSet pod
// CREATEs, Deployment DELETEs of which one in four is protected, Ingress
// CREATEs), open loop at trafficRate reviews/s over trafficConc
// connections; bounded by trafficMax whatever the test does.
const (
	trafficRate = 150
	trafficConc = 4
	trafficMax  = 3 * time.Minute
)

// traffic is the load tool running against a server on /mutate and
// /validate until finish.
type traffic struct {
	Live    loadgen.Live
	stop    chan struct{}
	done    chan struct{} // closed when both runs have returned
	clients []*http.Client
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []*loadgen.Result
	errs    []error
}

// shippedOutcome is the right answer of the shipped policies to a
// template of the default mix on path: pods are patched by sts-index on
// /mutate; the protected Deployment's DELETE is denied by protect-delete
// on /validate; the rest is allowed untouched.
func shippedOutcome(path string, tpl *loadgen.Template, r *loadgen.Review) error {
	wantDenied := tpl.Denied && path == webhook.ValidatePath
	if r.Allowed == wantDenied {
		return fmt.Errorf("allowed=%v, want %v (%s)", r.Allowed, !wantDenied, r.Message)
	}
	if wantDenied && !strings.Contains(r.Message, "protected") {
		return fmt.Errorf("denied with %q, want protect-delete's message", r.Message)
	}
	wantPatch := tpl.Kind == loadgen.KindPod && path == webhook.MutatePath
	if (len(r.Patch) > 0) != wantPatch {
		return fmt.Errorf("patch %s; want a patch: %v", r.Patch, wantPatch)
	}
	return nil
}

// startTraffic starts the traffic. check judges each answer (nil:
// shippedOutcome); tolerate may excuse requests that got no response.
func (s *server) startTraffic(check func(path string, tpl *loadgen.Template, r *loadgen.Review) error, tolerate func(*loadgen.TransportError) bool) *traffic {
	s.t.Helper()
	if check == nil {
		check = shippedOutcome
	}
	mix, err := loadgen.ParseMix(loadgen.DefaultMix)
	if err != nil {
		s.t.Fatal(err)
	}
	templates, err := loadgen.BuildTemplates(mix, suite.pod)
	if err != nil {
		s.t.Fatal(err)
	}
	tr := &traffic{stop: make(chan struct{}), done: make(chan struct{})}
	for _, path := range []string{webhook.MutatePath, webhook.ValidatePath} {
		client := loadgen.NewPoolClient(s.Pool, trafficConc, 10*time.Second)
		tr.clients = append(tr.clients, client)
		cfg := loadgen.RunConfig{
			Label: "normal", URL: s.BaseURL + path, Concurrency: trafficConc, Rate: trafficRate,
			Duration: trafficMax, MaxDuration: trafficMax, Timeout: 10 * time.Second,
			Templates: templates, Schedule: loadgen.Schedule(mix), Client: client, ServerPID: s.PID,
			Stop: tr.stop, Live: &tr.Live, Tolerate: tolerate,
			Check: func(tpl *loadgen.Template, r *loadgen.Review) error { return check(path, tpl, r) },
		}
		tr.wg.Go(func() {
			r, err := loadgen.Run(cfg)
			tr.mu.Lock()
			defer tr.mu.Unlock()
			if err != nil {
				tr.errs = append(tr.errs, err)
				return
			}
			tr.results = append(tr.results, r)
		})
	}
	go func() { tr.wg.Wait(); close(tr.done) }()
	return tr
}

// waitOK waits until n more requests were answered right, so that a fault
// overlaps real traffic.
func (tr *traffic) waitOK(t *testing.T, n int64) {
	t.Helper()
	target := tr.Live.OK.Load() + n
	err := devenv.WaitFor(context.Background(), time.Minute, fmt.Sprintf("%d answered requests", target), func(context.Context) (bool, error) {
		select {
		case <-tr.done:
			return false, errors.New("the traffic ended early")
		default:
		}
		return tr.Live.OK.Load() >= target, nil
	})
	if err != nil {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		t.Fatalf("%v (errors so far: %d; %v)", err, tr.Live.Errors.Load(), tr.errs)
	}
}

// closeIdle makes the traffic open new connections.
func (tr *traffic) closeIdle() {
	for _, c := range tr.clients {
		c.CloseIdleConnections()
	}
}

// finish stops the traffic and fails the test on any failed request. It
// returns the results, /mutate first.
func (tr *traffic) finish(t *testing.T) []*loadgen.Result {
	t.Helper()
	close(tr.stop)
	tr.wg.Wait()
	tr.closeIdle()
	for _, err := range tr.errs {
		t.Errorf("load run: %v", err)
	}
	for _, r := range tr.results {
		t.Logf("traffic %s: %d requests, %.0f/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d allowed (%d patched), %d denied, %d tolerated, %d errors",
			r.Path, r.Requests, r.RPS, r.P50ms, r.P99ms, r.MaxMs, r.Allowed, r.Patched, r.Denied, r.Tolerated, r.ErrorCount)
		if r.ErrorCount > 0 {
			t.Errorf("traffic %s: %d failed requests: %v, e.g. %q", r.Path, r.ErrorCount, r.Errors, r.ErrorSamples)
		}
		if r.Allowed+r.Denied == 0 {
			t.Errorf("traffic %s: no request answered", r.Path)
		}
	}
	if len(tr.results) == 2 && tr.results[0].Path != webhook.MutatePath {
		tr.results[0], tr.results[1] = tr.results[1], tr.results[0]
	}
	return tr.results
}

// runOnce sends count reviews of tpl to path with the load tool and fails
// the test unless every answer passes check.
func (s *server) runOnce(path string, tpl *loadgen.Template, count int64, pool *x509.CertPool, check func(*loadgen.Review) error) *loadgen.Result {
	s.t.Helper()
	if pool == nil {
		pool = s.Pool
	}
	client := loadgen.NewPoolClient(pool, 1, 30*time.Second)
	defer client.CloseIdleConnections()
	r, err := loadgen.Run(loadgen.RunConfig{
		Label: tpl.Name, URL: s.BaseURL + path, Concurrency: 1, Count: count, MaxDuration: time.Minute,
		Timeout: 30 * time.Second, Templates: map[string][]*loadgen.Template{tpl.Kind: {tpl}}, Schedule: []string{tpl.Kind},
		Client: client, Check: func(_ *loadgen.Template, r *loadgen.Review) error { return check(r) },
	})
	if err != nil {
		s.t.Fatal(err)
	}
	if r.ErrorCount > 0 || r.Requests != uint64(count) {
		s.t.Fatalf("%s on %s: %d of %d answered, %d errors: %v, e.g. %q", tpl.Name, path, r.Requests, count, r.ErrorCount, r.Errors, r.ErrorSamples)
	}
	return r
}
