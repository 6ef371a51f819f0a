package loadgen

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"celadon.io/celadon/internal/devenv"
)

// SoakOptions configure Soak.
type SoakOptions struct {
	Bin         string        // the celadon binary
	PoliciesDir string        // the policies served, copied into a ConfigMap-style directory
	Duration    time.Duration // of the whole run
	Reload      time.Duration // policy edit every Reload
	Rotate      time.Duration // certificate rotation (new CA) every Rotate
	Sample      time.Duration // RSS and goroutines every Sample
	Rate        float64       // reviews/s offered per path, open loop
	Concurrency int           // connections per path
	Templates   map[string][]*Template
	Schedule    []string
}

// SoakSample is the server's state at one moment of a soak run.
type SoakSample struct {
	At         float64 `json:"at_s"`
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	RSSKiB     int64   `json:"rss_kib"`
	Goroutines int64   `json:"goroutines"`
}

// SoakResult is a soak run's outcome.
type SoakResult struct {
	Results   []*Result    `json:"results"` // per path
	Samples   []SoakSample `json:"samples"`
	Reloads   int          `json:"reloads"`   // edits served (seen on /status)
	Rotations int          `json:"rotations"` // new certificates served
	// Problems are reloads or rotations that did not take effect.
	Problems []string `json:"problems,omitempty"`
}

// soakMarker is the policy a soak run adds and removes in turn: a real
// edit (the set's hash changes) that changes no answer of the mix.
const soakMarker = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: soak-marker-%d
spec:
  match:
    resources: [example.com/widgets]
    operations: [CREATE]
  action: deny
  with:
    message: widgets are not served during a soak run
`

// Soak serves o.PoliciesDir with a `celadon serve` and sends it the mix on
// /mutate and /validate for o.Duration, editing the policies every
// o.Reload (a ConfigMap-style swap adding or removing a policy) and
// rotating the certificate to a new CA every o.Rotate (a Secret-style
// swap; the client trusts every CA from the start). It samples the
// server's RSS and goroutines (go_goroutines on /metrics) every o.Sample.
func (e *Env) Soak(ctx context.Context, o SoakOptions, logf func(string, ...any)) (*SoakResult, error) {
	files, err := devenv.ReadPolicyFiles(o.PoliciesDir)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.Dir, "soak-policies")
	if err := devenv.WriteAtomic(dir, files); err != nil {
		return nil, err
	}
	srv, err := e.StartServer(ctx, o.Bin, dir, "celadon-soak", nil, logf)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	caPEM, err := os.ReadFile(srv.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	var cas []*devenv.CA
	for range int(o.Duration/o.Rotate) + 1 {
		ca, err := devenv.NewCA("celadon soak CA " + strconv.Itoa(len(cas)))
		if err != nil {
			return nil, err
		}
		cas = append(cas, ca)
		pool.AddCert(ca.Cert)
	}

	res := &SoakResult{}
	var live Live
	stop := make(chan struct{})
	var clients []*http.Client
	var wg sync.WaitGroup
	var mu sync.Mutex
	var runErr error
	for _, path := range []string{"/mutate", "/validate"} {
		client := NewPoolClient(pool, o.Concurrency, 10*time.Second)
		clients = append(clients, client)
		cfg := RunConfig{
			Label: "soak", URL: srv.BaseURL + path, Concurrency: o.Concurrency, Rate: o.Rate,
			Duration: o.Duration, MaxDuration: o.Duration + time.Minute, Timeout: 10 * time.Second,
			Templates: o.Templates, Schedule: o.Schedule, Client: client, ServerPID: srv.PID,
			Stop: stop, Live: &live,
		}
		wg.Go(func() {
			r, err := Run(cfg)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				runErr = err
				return
			}
			res.Results = append(res.Results, r)
		})
	}

	start := time.Now()
	sample := func() {
		s := SoakSample{At: time.Since(start).Seconds(), Requests: live.OK.Load() + live.Errors.Load(), Errors: live.Errors.Load()}
		s.RSSKiB, _ = procStatusKiB(srv.PID, "VmRSS")
		if g, found, err := ScrapeMetric(srv.MetricsURL+"/metrics", "go_goroutines"); err == nil && found {
			s.Goroutines = int64(g)
		}
		res.Samples = append(res.Samples, s)
		logf("soak %4.0fs: %d requests, %d errors, RSS %.1f MiB, %d goroutines", s.At, s.Requests, s.Errors, float64(s.RSSKiB)/1024, s.Goroutines)
	}
	problem := func(format string, args ...any) {
		res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		logf("soak: "+format, args...)
	}
	sample()
	sampleT, reloadT, rotateT := time.NewTicker(o.Sample), time.NewTicker(o.Reload), time.NewTicker(o.Rotate)
	defer sampleT.Stop()
	defer reloadT.Stop()
	defer rotateT.Stop()
	end := time.After(o.Duration)
	marker := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end:
			break loop
		case <-sampleT.C:
			sample()
		case <-reloadT.C:
			before, err := statusHash(srv.MetricsURL)
			if err != nil {
				problem("reload: /status: %v", err)
				continue
			}
			edit := map[string][]byte{}
			for k, v := range files {
				edit[k] = v
			}
			if marker%2 == 0 {
				edit["soak-marker.yaml"] = fmt.Appendf(nil, soakMarker, marker)
			}
			marker++
			if err := devenv.WriteAtomic(dir, edit); err != nil {
				return nil, err
			}
			err = devenv.WaitFor(ctx, 20*time.Second, "the edit to be served", func(context.Context) (bool, error) {
				h, err := statusHash(srv.MetricsURL)
				return err == nil && h != before, nil
			})
			if err != nil {
				problem("reload %d: %v", marker, err)
				continue
			}
			res.Reloads++
		case <-rotateT.C:
			ca := cas[res.Rotations%len(cas)]
			kp, err := ca.NewServingCert()
			if err != nil {
				return nil, err
			}
			if err := devenv.WriteCerts(srv.CertDir, ca, kp); err != nil {
				return nil, err
			}
			addr := strings.TrimPrefix(srv.BaseURL, "https://")
			err = devenv.WaitFor(ctx, 30*time.Second, "the new certificate to be served", func(ctx context.Context) (bool, error) {
				got, err := devenv.ServingCertificate(ctx, addr)
				return err == nil && got.Equal(kp.Cert), nil
			})
			if err != nil {
				problem("rotation %d: %v", res.Rotations+1, err)
				continue
			}
			res.Rotations++
			for _, c := range clients {
				c.CloseIdleConnections() // new connections, under the new certificate
			}
		}
	}
	sample()
	close(stop)
	wg.Wait()
	if runErr != nil {
		return nil, runErr
	}
	return res, nil
}

// statusHash returns the served set's hash from /status.
func statusHash(metricsURL string) (string, error) {
	resp, err := http.Get(metricsURL + "/status")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var st struct {
		Hash            string          `json:"hash"`
		LastReloadError json.RawMessage `json:"lastReloadError"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return "", err
	}
	if len(st.LastReloadError) > 0 && string(st.LastReloadError) != "null" {
		return "", fmt.Errorf("reload error: %s", st.LastReloadError)
	}
	return st.Hash, nil
}

// ScrapeMetric reads the Prometheus text page at url and sums the samples
// of metric name whose labels include every one of labels (name="value"
// pairs as written there). found is false when no sample matched.
func ScrapeMetric(url, name string, labels ...string) (sum float64, found bool, err error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
line:
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name+" ") && !strings.HasPrefix(l, name+"{") {
			continue
		}
		for _, lv := range labels {
			if !strings.Contains(l, lv) {
				continue line
			}
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err != nil {
			return 0, false, fmt.Errorf("%s: %q: %v", url, l, err)
		}
		sum, found = sum+v, true
	}
	return sum, found, sc.Err()
}
