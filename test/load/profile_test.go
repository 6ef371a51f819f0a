package main

// Benchmarks of the server's request path in-process, for CPU profiles:
//
//	go test -run '^$' -bench 'Handler|HTTPS' -cpu 2 -cpuprofile /tmp/cpu.out ./test/load/
//	go tool pprof -top -cum test/load/load.test /tmp/cpu.out
//
// Handler calls the /mutate or /validate handler directly (decode,
// evaluate, encode; no network); HTTPS serves the same handlers over TLS
// with net/http and drives them with this tool's client at concurrency 32
// (client and server then share the profile: the client's frames are
// under (*worker).one).

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/server"
	"celadon.io/celadon/test/load/loadgen"
	"celadon.io/celadon/webhook"
)

// namespaces serves every namespace, labelled team=<name>. Like the
// server's informer cache, it hands out objects it keeps.
type namespaces struct{ cache sync.Map }

func (n *namespaces) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	if ns, ok := n.cache.Load(name); ok {
		return ns.(*corev1.Namespace), nil
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/metadata.name": name, "team": name}}}
	n.cache.Store(name, ns)
	return ns, nil
}

func benchServer(b *testing.B, policies string) *server.Server {
	b.Helper()
	srv, err := server.NewServer(server.Options{
		PoliciesDir:       policies,
		AllowEmpty:        true, // the "empty" set measures unmatched requests
		Registry:          builtins.Registry(),
		Namespaces:        &namespaces{},
		MetricsRegisterer: prometheus.NewRegistry(),
		Logger:            crzap.New(crzap.WriteTo(io.Discard)),
	})
	if err != nil {
		b.Fatal(err)
	}
	return srv
}

func benchTemplates(b *testing.B) (map[string][]*loadgen.Template, []string) {
	b.Helper()
	pod, err := loadgen.LoadPod("")
	if err != nil {
		b.Fatal(err)
	}
	mix, _ := loadgen.ParseMix(loadgen.DefaultMix)
	ts, err := loadgen.BuildTemplates(mix, pod)
	if err != nil {
		b.Fatal(err)
	}
	return ts, loadgen.Schedule(mix)
}

func policySets(b *testing.B) map[string]string {
	return map[string]string{"shipped": filepath.Join("..", "..", "policies"), "empty": b.TempDir()}
}

func BenchmarkHandler(b *testing.B) {
	ts, sched := benchTemplates(b)
	for _, set := range []string{"shipped", "empty"} {
		srv := benchServer(b, policySets(b)[set])
		for _, path := range []string{webhook.MutatePath, webhook.ValidatePath} {
			h := srv.Handler(path)
			b.Run(set+path, func(b *testing.B) {
				var workers atomic.Uint64
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					id := workers.Add(1)
					bodies := map[string][]*loadgen.Body{}
					for k, vs := range ts {
						for _, t := range vs {
							bodies[k] = append(bodies[k], loadgen.NewBody(t))
						}
					}
					for seq := uint64(0); pb.Next(); seq++ {
						kind := sched[seq%uint64(len(sched))]
						vs := bodies[kind]
						body, _ := vs[int(seq)%len(vs)].Next(id, seq)
						req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
						req.Header.Set("Content-Type", "application/json")
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, req)
						if rec.Code != http.StatusOK {
							b.Fatalf("status %d: %s", rec.Code, rec.Body)
						}
					}
				})
			})
		}
	}
}

func BenchmarkHTTPS(b *testing.B) {
	ts, sched := benchTemplates(b)
	srv := benchServer(b, policySets(b)["shipped"])
	mux := http.NewServeMux()
	for _, p := range srv.Paths() {
		mux.Handle(p, srv.Handler(p))
	}
	hs := httptest.NewUnstartedServer(mux)
	hs.EnableHTTP2 = false
	hs.StartTLS()
	defer hs.Close()
	pool := x509.NewCertPool()
	pool.AddCert(hs.Certificate())
	for _, path := range []string{webhook.MutatePath, webhook.ValidatePath} {
		b.Run(path[1:], func(b *testing.B) {
			client := loadgen.NewPoolClient(pool, 32, 10*time.Second)
			defer client.CloseIdleConnections()
			b.ResetTimer()
			r, err := loadgen.Run(loadgen.RunConfig{
				URL: hs.URL + path, Concurrency: 32, Count: int64(b.N), MaxDuration: time.Minute,
				Timeout: 10 * time.Second, Templates: ts, Schedule: sched, Client: client,
			})
			if err != nil {
				b.Fatal(err)
			}
			if r.ErrorCount > 0 {
				b.Fatalf("%d errors: %v", r.ErrorCount, r.ErrorSamples)
			}
			b.ReportMetric(r.RPS, "req/s")
			b.ReportMetric(r.P99ms, "p99-ms")
		})
	}
}

// BenchmarkRequest counts what one request costs the server's handler and
// nothing else: the HTTP request, its body reader and the response writer
// are reused, so allocs/op are the handler's own. "pod" is the StatefulSet
// Pod CREATE the shipped policies mutate (and validate); "unmatched" a
// ConfigMap CREATE no shipped policy matches.
func BenchmarkRequest(b *testing.B) {
	ts, _ := benchTemplates(b)
	pod := ts["pod"][0].Body
	unmatched := []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"0b1c2d3e-0000-4000-8000-000000000001",` +
		`"kind":{"group":"","version":"v1","kind":"ConfigMap"},"resource":{"group":"","version":"v1","resource":"configmaps"},` +
		`"requestKind":{"group":"","version":"v1","kind":"ConfigMap"},"requestResource":{"group":"","version":"v1","resource":"configmaps"},` +
		`"name":"settings","namespace":"shop","operation":"CREATE","userInfo":{"username":"alice","groups":["system:authenticated"]},` +
		`"object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","namespace":"shop"},"data":{"a":"b"}},` +
		`"oldObject":null,"dryRun":false,"options":{"apiVersion":"meta.k8s.io/v1","kind":"CreateOptions"}}}`)
	srv := benchServer(b, policySets(b)["shipped"])
	for _, c := range []struct {
		name, path string
		body       []byte
		patched    bool
	}{
		{"pod/mutate", webhook.MutatePath, pod, true},
		{"pod/validate", webhook.ValidatePath, pod, false},
		{"unmatched/mutate", webhook.MutatePath, unmatched, false},
		{"unmatched/validate", webhook.ValidatePath, unmatched, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			h := srv.Handler(c.path)
			body := bytes.NewReader(c.body)
			req := httptest.NewRequest(http.MethodPost, c.path, body)
			req.Header.Set("Content-Type", "application/json")
			w := &reusedWriter{header: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				body.Reset(c.body)
				w.reset()
				h.ServeHTTP(w, req)
				if w.code != http.StatusOK || bytes.Contains(w.body.Bytes(), []byte(`"patch"`)) != c.patched {
					b.Fatalf("status %d: %s", w.code, w.body.Bytes())
				}
			}
		})
	}
}

// reusedWriter is an http.ResponseWriter whose header map and body buffer
// are kept across requests.
type reusedWriter struct {
	header http.Header
	body   bytes.Buffer
	code   int
}

func (w *reusedWriter) Header() http.Header         { return w.header }
func (w *reusedWriter) WriteHeader(code int)        { w.code = code }
func (w *reusedWriter) Write(b []byte) (int, error) { return w.body.Write(b) }
func (w *reusedWriter) reset()                      { clear(w.header); w.body.Reset(); w.code = 0 }

// SetReadDeadline is a connection's, as http.ResponseController finds it.
func (w *reusedWriter) SetReadDeadline(time.Time) error { return nil }
