package loadgen

// The floor: a no-op HTTPS webhook on the same harness as Celadon, doing
// the least any webhook does per review (TLS, HTTP/1.1, reading the body,
// answering), so that Celadon's figures can be read as multiples of it.
// It runs as a process of its own (this tool's binary, -serve-floor), so
// that its CPU is measured from /proc as Celadon's is, apart from the
// client's.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"celadon.io/celadon/internal/devenv"
)

// FloorLabel labels the floor's runs.
const FloorLabel = "floor"

// FloorListenerFD is the descriptor the -serve-floor process finds its
// listener on (ExtraFiles[0]): the parent listens before it starts the
// child, so there is no port to race for and no readiness to poll.
const FloorListenerFD = 3

var (
	floorHead = []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"`)
	floorTail = []byte(`","allowed":true}}`)
	uidKey    = []byte(`"uid":"`)
)

// FloorHandler answers every review allowed, without a patch, with the
// request's uid. It decodes no JSON: it reads the whole body and copies the
// first "uid" string, which in a compact AdmissionReview (as the API server
// and this tool encode it) is request.uid, the request's first field.
func FloorHandler() http.Handler {
	pool := &sync.Pool{New: func() any { return new(bytes.Buffer) }}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := pool.Get().(*bytes.Buffer)
		defer pool.Put(buf)
		buf.Reset()
		if _, err := buf.ReadFrom(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		uid, ok := RequestUID(buf.Bytes())
		if !ok {
			http.Error(w, "no uid in the review", http.StatusBadRequest)
			return
		}
		var out [256]byte
		b := append(append(append(out[:0], floorHead...), uid...), floorTail...)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
}

// RequestUID returns the first "uid" string of a compact JSON document, as
// written (escapes kept, so that it can be copied into JSON as is).
func RequestUID(b []byte) ([]byte, bool) {
	i := bytes.Index(b, uidKey)
	if i < 0 {
		return nil, false
	}
	s := b[i+len(uidKey):]
	for j := 0; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return s[:j], true
		}
	}
	return nil, false
}

// ServeFloor serves FloorHandler over TLS on ln, with the certificate and
// key of devenv.WriteCerts in certDir, until ctx is done. HTTP/1.1 only, as
// Celadon serves by default and the API server speaks to webhooks.
func ServeFloor(ctx context.Context, ln net.Listener, certDir string) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, devenv.CertFile), filepath.Join(certDir, devenv.KeyFile))
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           FloorHandler(),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no HTTP/2
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       90 * time.Second,
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// StartFloor runs `self -serve-floor -floor-cert-dir DIR` (self: this
// tool's binary) on a listener on 127.0.0.1 it hands the process, and
// returns it as a Server (PID, BaseURL, CAFile); Env.Stop stops it.
func (e *Env) StartFloor(self, name string, logf func(string, ...any)) (*Server, error) {
	certs := filepath.Join(e.Dir, name+"-certs")
	if _, _, err := devenv.GenerateCerts(certs, "celadon load floor CA"); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := &Server{
		BaseURL: "https://" + ln.Addr().String(),
		CertDir: certs,
		CAFile:  filepath.Join(certs, devenv.CAFile),
		LogPath: filepath.Join(e.Dir, name+".log"),
	}
	logFile, err := os.Create(s.LogPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	args := []string{"-serve-floor", "-floor-cert-dir", certs}
	logf("starting the floor: %s %s", self, strings.Join(args, " "))
	s.cmd = exec.Command(self, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.ExtraFiles = []*os.File{f} // FloorListenerFD
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.PID = s.cmd.Process.Pid
	s.exited = make(chan struct{})
	go func() { s.waitErr = s.cmd.Wait(); close(s.exited) }()
	e.servers = append(e.servers, s)
	logf("floor ready: pid %d, %s", s.PID, s.BaseURL)
	return s, nil
}

// FloorListener is the listener StartFloor hands the -serve-floor process.
func FloorListener() (net.Listener, error) {
	f := os.NewFile(FloorListenerFD, "floor-listener")
	if f == nil {
		return nil, fmt.Errorf("no descriptor %d: -serve-floor is started by -floor", FloorListenerFD)
	}
	defer f.Close()
	return net.FileListener(f)
}

// FloorRatio compares Celadon's runs of one label, path, concurrency and
// rate with the floor's runs interleaved with them: the median of each
// figure over the runs, and Celadon's median over the floor's.
type FloorRatio struct {
	Label       string  `json:"label"`
	Path        string  `json:"path"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	Runs        int     `json:"runs"` // of each side
	// Errors of both sides' runs: ratios over runs with errors mislead.
	Errors uint64 `json:"errors"`

	RPS            float64 `json:"rps"`
	FloorRPS       float64 `json:"floor_rps"`
	RPSRatio       float64 `json:"rps_ratio"`
	CPUPerReq      float64 `json:"server_cpu_us_per_request"`
	FloorCPUPerReq float64 `json:"floor_cpu_us_per_request"`
	CPURatio       float64 `json:"cpu_per_request_ratio"`
	P99ms          float64 `json:"p99_ms"`
	FloorP99ms     float64 `json:"floor_p99_ms"`
	P99Ratio       float64 `json:"p99_ratio"`
}

// CompareFloor returns the FloorRatio of Celadon's runs a and the floor's
// runs f, all of one label, path, concurrency and rate.
func CompareFloor(a, f []*Result) FloorRatio {
	r := FloorRatio{Runs: min(len(a), len(f))}
	if len(a) > 0 {
		r.Label, r.Path, r.Concurrency, r.Rate = a[0].Label, a[0].Path, a[0].Concurrency, a[0].Rate
	}
	for _, x := range slices.Concat(a, f) {
		r.Errors += x.ErrorCount
	}
	med := func(rs []*Result, v func(*Result) float64) float64 {
		xs := make([]float64, len(rs))
		for i, x := range rs {
			xs[i] = v(x)
		}
		return median(xs)
	}
	ratio := func(x, y float64) float64 {
		if y == 0 {
			return 0
		}
		return x / y
	}
	rps := func(x *Result) float64 { return x.RPS }
	cpu := func(x *Result) float64 { return x.ServerCPUPerReq }
	p99 := func(x *Result) float64 { return x.P99ms }
	r.RPS, r.FloorRPS = med(a, rps), med(f, rps)
	r.CPUPerReq, r.FloorCPUPerReq = med(a, cpu), med(f, cpu)
	r.P99ms, r.FloorP99ms = med(a, p99), med(f, p99)
	r.RPSRatio, r.CPURatio, r.P99Ratio = ratio(r.RPS, r.FloorRPS), ratio(r.CPUPerReq, r.FloorCPUPerReq), ratio(r.P99ms, r.FloorP99ms)
	return r
}

// median of xs; the mean of the middle two for an even count; 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
