package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// RunConfig is one measured run.
type RunConfig struct {
	Label       string // e.g. "shipped" or "EMPTY"
	URL         string // https://127.0.0.1:PORT/mutate
	Concurrency int
	Rate        float64       // requests/s offered, open loop; 0: closed loop (each worker sends when answered)
	Duration    time.Duration // 0: until Count
	Count       int64         // 0: until Duration
	MaxDuration time.Duration // hard cap on the run, whatever Duration and Count say
	Warmup      time.Duration // unmeasured traffic first, on the same connections
	Timeout     time.Duration // per request
	Templates   map[string][]*Template
	Schedule    []string
	Client      *http.Client
	ServerPID   int

	// Stop, when not nil, ends the run when closed (as Duration does).
	Stop <-chan struct{}
	// Check, when not nil, judges every answered review beyond the UID
	// match and the status code: a non-nil error counts as an error of
	// kind "check". A fault test states there what the right answer is.
	Check func(t *Template, r *Review) error
	// Tolerate, when not nil, may excuse a request that got no response
	// (a *TransportError): it then counts in Result.Tolerated, not as an
	// error. For a server that is shutting down on purpose.
	Tolerate func(err *TransportError) bool
	// Started, when not nil, is called as the measured window begins,
	// after the warm-up: e.g. to take a CPU profile of the server over it.
	Started func()
	// Live, when not nil, is updated as answers arrive, so that a caller
	// can inject a fault once traffic flows.
	Live *Live
}

// Live counts a run's outcomes while it runs.
type Live struct {
	OK, Errors, Tolerated atomic.Int64
}

// Review is a decoded answer: its AdmissionResponse's fields.
type Review struct {
	UID     string
	Allowed bool
	Patch   []byte
	Code    int32  // status.code; 0 when absent
	Message string // status.message
}

// TransportError is a request that got no response, with what the
// transport saw of it.
type TransportError struct {
	Err error
	// ReusedIdle: it was sent on a kept-alive connection that had been
	// idle; WroteRequest: the whole request was written; GotResponse: some
	// byte of a response arrived.
	ReusedIdle, WroteRequest, GotResponse bool
}

func (e *TransportError) Error() string { return e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// Result is one run's figures.
type Result struct {
	Label       string            `json:"label"`
	Path        string            `json:"path"`
	Concurrency int               `json:"concurrency"`
	Rate        float64           `json:"rate,omitempty"`
	Requests    uint64            `json:"requests"`
	Seconds     float64           `json:"seconds"`
	RPS         float64           `json:"rps"`
	P50ms       float64           `json:"p50_ms"`
	P90ms       float64           `json:"p90_ms"`
	P99ms       float64           `json:"p99_ms"`
	MaxMs       float64           `json:"max_ms"`
	MeanMs      float64           `json:"mean_ms"`
	Allowed     uint64            `json:"allowed"`
	Patched     uint64            `json:"patched"`
	Denied      uint64            `json:"denied"`
	Errors      map[string]uint64 `json:"errors"`
	ErrorCount  uint64            `json:"error_count"`
	Tolerated   uint64            `json:"tolerated,omitempty"` // see RunConfig.Tolerate
	// Server figures, when its pid is known.
	ServerPeakRSSKiB int64    `json:"server_peak_rss_kib,omitempty"`       // largest VmRSS sampled during the run
	ServerHWMKiB     int64    `json:"server_vmhwm_kib,omitempty"`          // VmHWM at the end: the process's lifetime peak
	ServerCPUCores   float64  `json:"server_cpu_cores,omitempty"`          // server CPU time / wall time
	ServerCPUPerReq  float64  `json:"server_cpu_us_per_request,omitempty"` // server CPU µs per request
	ClientCPUCores   float64  `json:"client_cpu_cores"`                    // this tool's CPU time / wall time
	MachineCPUCores  float64  `json:"machine_cpu_cores"`                   // every process's CPU time / wall time (/proc/stat)
	StealCores       float64  `json:"steal_cores"`                         // CPU stolen by the hypervisor / wall time
	ErrorSamples     []string `json:"error_samples,omitempty"`
}

// NewClient returns an HTTPS client for 127.0.0.1 that trusts caFile, with
// keep-alive connections for conc concurrent requests, HTTP/1.1 as the API
// server speaks to webhooks.
func NewClient(caFile string, conc int, timeout time.Duration) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	return NewPoolClient(pool, conc, timeout), nil
}

// NewPoolClient is NewClient with the trusted CAs given as a pool.
func NewPoolClient(pool *x509.CertPool, conc int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          conc + 16,
		MaxIdleConnsPerHost:   conc + 16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: 0,
		DisableCompression:    true,
		WriteBufferSize:       16 << 10,
		ReadBufferSize:        16 << 10,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// CheckLocal refuses any URL whose host is not the loopback address.
func CheckLocal(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "https" {
		return fmt.Errorf("%s: want https", raw)
	}
	switch u.Hostname() {
	case "127.0.0.1", "localhost", "::1":
		return nil
	}
	return fmt.Errorf("%s: this tool only sends traffic to 127.0.0.1", raw)
}

type worker struct {
	id        uint64
	hist      Histogram
	allowed   uint64
	patched   uint64
	denied    uint64
	tolerated uint64
	errs      map[string]uint64
	samples   []string
	bodies    map[string][]*Body
	next      map[string]int
	resp      bytes.Buffer
}

type reviewResponse struct {
	Response *struct {
		UID     string `json:"uid"`
		Allowed bool   `json:"allowed"`
		Patch   []byte `json:"patch"`
		Status  *struct {
			Code    int32  `json:"code"`
			Message string `json:"message"`
		} `json:"status"`
	} `json:"response"`
}

func (w *worker) fail(cfg *RunConfig, kind, detail string) {
	w.errs[kind]++
	if cfg.Live != nil {
		cfg.Live.Errors.Add(1)
	}
	if len(w.samples) < 3 {
		w.samples = append(w.samples, kind+": "+detail)
	}
}

// one sends request seq; record says whether to count it.
// With a non-zero due time (open loop), latency counts from it, so that
// time spent waiting for a free worker is counted too.
func (w *worker) one(ctx context.Context, cfg *RunConfig, seq uint64, record bool, due time.Time) {
	kind := cfg.Schedule[(seq+w.id)%uint64(len(cfg.Schedule))]
	vs := w.bodies[kind]
	b := vs[w.next[kind]%len(vs)]
	w.next[kind]++
	body, uid := b.Next(w.id, seq)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	var te TransportError
	if cfg.Tolerate != nil {
		req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn:              func(i httptrace.GotConnInfo) { te.ReusedIdle = i.Reused && i.WasIdle },
			WroteRequest:         func(i httptrace.WroteRequestInfo) { te.WroteRequest = i.Err == nil },
			GotFirstResponseByte: func() { te.GotResponse = true },
		}))
	}
	start := time.Now()
	if !due.IsZero() {
		start = due
	}
	resp, err := cfg.Client.Do(req)
	gotHeader := err == nil
	if err == nil {
		w.resp.Reset()
		_, err = w.resp.ReadFrom(resp.Body)
		resp.Body.Close()
	}
	lat := time.Since(start)
	if ctx.Err() != nil {
		return // cut short by the end of the run: neither a sample nor an error
	}
	if !record {
		return
	}
	if err != nil {
		te.Err = err
		te.GotResponse = te.GotResponse || gotHeader
		if cfg.Tolerate != nil && cfg.Tolerate(&te) {
			w.tolerated++
			if cfg.Live != nil {
				cfg.Live.Tolerated.Add(1)
			}
			return
		}
		w.hist.Record(lat)
		w.fail(cfg, "transport", err.Error())
		return
	}
	w.hist.Record(lat)
	if resp.StatusCode != http.StatusOK {
		w.fail(cfg, fmt.Sprintf("http %d", resp.StatusCode), trim(w.resp.String()))
		return
	}
	var rr reviewResponse
	if err := json.Unmarshal(w.resp.Bytes(), &rr); err != nil || rr.Response == nil {
		w.fail(cfg, "decode", fmt.Sprintf("%v: %s", err, trim(w.resp.String())))
		return
	}
	r := rr.Response
	if r.UID != uid {
		w.fail(cfg, "uid mismatch", r.UID+" != "+uid)
		return
	}
	if cfg.Check != nil {
		rev := Review{UID: r.UID, Allowed: r.Allowed, Patch: r.Patch}
		if r.Status != nil {
			rev.Code, rev.Message = r.Status.Code, r.Status.Message
		}
		if err := cfg.Check(b.T, &rev); err != nil {
			w.fail(cfg, "check", b.T.Name+": "+err.Error())
			return
		}
	}
	switch {
	case r.Allowed && len(r.Patch) > 0:
		w.allowed++
		w.patched++
	case r.Allowed:
		w.allowed++
	case r.Status != nil && r.Status.Code != 0 && r.Status.Code != http.StatusForbidden:
		// An admission.Errored response (bad request, throttled, panic).
		w.fail(cfg, fmt.Sprintf("review code %d", r.Status.Code), r.Status.Message)
		return
	default:
		w.denied++
	}
	if cfg.Live != nil {
		cfg.Live.OK.Add(1)
	}
}

func trim(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// Run runs one measured load run.
func Run(cfg RunConfig) (*Result, error) {
	if cfg.Concurrency < 1 {
		return nil, fmt.Errorf("concurrency %d: want at least 1", cfg.Concurrency)
	}
	if cfg.Duration <= 0 && cfg.Count <= 0 {
		return nil, fmt.Errorf("give a duration or a count")
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = 10 * time.Minute
	}
	if cfg.Duration > cfg.MaxDuration || cfg.Duration <= 0 {
		cfg.Duration = cfg.MaxDuration
	}
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		w := &worker{id: uint64(i), errs: map[string]uint64{}, bodies: map[string][]*Body{}, next: map[string]int{}}
		for k, ts := range cfg.Templates {
			for _, t := range ts {
				w.bodies[k] = append(w.bodies[k], NewBody(t))
			}
			w.next[k] = i // spread the variants over the workers
		}
		workers[i] = w
	}

	// Warm-up: same workers, same connections, not recorded.
	if cfg.Warmup > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Warmup)
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Go(func() {
				for seq := uint64(1 << 40); ctx.Err() == nil; seq++ {
					w.one(ctx, &cfg, seq, false, time.Time{})
				}
			})
		}
		wg.Wait()
		cancel()
	}

	var sampler *rssSampler
	var cpu0 float64
	if cfg.ServerPID > 0 {
		sampler = startRSSSampler(cfg.ServerPID, 100*time.Millisecond)
		cpu0, _ = processCPU(cfg.ServerPID)
	}
	self0 := selfCPU()
	busy0, steal0, _ := machineCPU()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration)
	defer cancel()
	if cfg.Stop != nil {
		go func() {
			select {
			case <-cfg.Stop:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	var issued atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	if cfg.Started != nil {
		cfg.Started()
	}
	var dues chan time.Time
	if cfg.Rate > 0 {
		// Open loop: a pacer schedules a request every 1/Rate; a free
		// worker takes the next one. When every worker is busy the
		// schedule falls behind and the wait shows in the latencies.
		dues = make(chan time.Time, 1<<16)
		wg.Go(func() {
			defer close(dues)
			interval := time.Duration(float64(time.Second) / cfg.Rate)
			t := time.NewTicker(min(interval, time.Millisecond))
			defer t.Stop()
			next := start
			for n := int64(0); cfg.Count <= 0 || n < cfg.Count; n++ {
				for now := time.Now(); next.After(now); now = time.Now() {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
					}
				}
				select {
				case dues <- next:
				case <-ctx.Done():
					return
				}
				next = next.Add(interval)
			}
		})
	}
	for _, w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				var due time.Time
				if dues != nil {
					var ok bool
					if due, ok = <-dues; !ok {
						return
					}
				}
				seq := issued.Add(1)
				if cfg.Count > 0 && seq > cfg.Count {
					return
				}
				w.one(ctx, &cfg, uint64(seq), true, due)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cancel()

	res := &Result{Label: cfg.Label, Concurrency: cfg.Concurrency, Rate: cfg.Rate, Errors: map[string]uint64{}}
	if u, err := url.Parse(cfg.URL); err == nil {
		res.Path = u.Path
	}
	var h Histogram
	for _, w := range workers {
		h.Merge(&w.hist)
		res.Allowed += w.allowed
		res.Patched += w.patched
		res.Denied += w.denied
		res.Tolerated += w.tolerated
		for k, v := range w.errs {
			res.Errors[k] += v
			res.ErrorCount += v
		}
		for _, s := range w.samples {
			if len(res.ErrorSamples) < 5 {
				res.ErrorSamples = append(res.ErrorSamples, s)
			}
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	res.Requests = h.Count()
	res.Seconds = elapsed.Seconds()
	res.RPS = float64(res.Requests) / elapsed.Seconds()
	res.P50ms, res.P90ms, res.P99ms = ms(h.Percentile(50)), ms(h.Percentile(90)), ms(h.Percentile(99))
	res.MaxMs, res.MeanMs = ms(h.Max()), ms(h.Mean())
	res.ClientCPUCores = (selfCPU() - self0) / elapsed.Seconds()
	if busy1, steal1, err := machineCPU(); err == nil {
		res.MachineCPUCores = (busy1 - busy0) / elapsed.Seconds()
		res.StealCores = (steal1 - steal0) / elapsed.Seconds()
	}
	if sampler != nil {
		res.ServerPeakRSSKiB = sampler.stop()
		if cpu1, err := processCPU(cfg.ServerPID); err == nil {
			res.ServerCPUCores = (cpu1 - cpu0) / elapsed.Seconds()
			if res.Requests > 0 {
				res.ServerCPUPerReq = (cpu1 - cpu0) / float64(res.Requests) * 1e6
			}
		}
		res.ServerHWMKiB, _ = procStatusKiB(cfg.ServerPID, "VmHWM")
	}
	return res, nil
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// SortedKeys returns the keys of an error count map, sorted.
func SortedKeys(m map[string]uint64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
