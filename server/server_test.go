package server

import (
	"celadon.io/celadon/webhook"

	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/client-go/rest"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a serving certificate for 127.0.0.1 and its key, as PEM,
// and the certificate's DER.
func (ca *testCA) issue(t *testing.T) (certPEM, keyPEM, der []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "celadon.test"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), der
}

// installCert writes tls.crt and tls.key into dir, each by an atomic
// rename, key first, as a rotation by cert-manager or the kubelet would.
func installCert(t *testing.T, dir string, certPEM, keyPEM []byte) {
	t.Helper()
	for _, f := range []struct {
		name string
		data []byte
	}{{"tls.key", keyPEM}, {"tls.crt", certPEM}} {
		tmp := filepath.Join(dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.name)); err != nil {
			t.Fatal(err)
		}
	}
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpsClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true},
	}
}

func getBody(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestServerEndToEnd runs the real server in-process, through Start: the
// controller-runtime manager, its webhook server with TLS from CertDir, the
// metrics and health probe servers. The API server is never reached: the
// namespaces come from Options.Namespaces, so no informer starts.
func TestServerEndToEnd(t *testing.T) {
	g := newGate(t, "e2e")
	certDir := t.TempDir()
	ca1 := newTestCA(t, "celadon-test-ca-1")
	cert1, key1, der1 := ca1.issue(t)
	installCert(t, certDir, cert1, key1)

	hookAddr, metricsAddr, probeAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	_, portStr, _ := net.SplitHostPort(hookAddr)
	port, _ := strconv.Atoi(portStr)
	s, err := NewServer(Options{
		PoliciesDir: writePolicies(t, map[string]string{
			"deny.yaml": handlerPolicies["20-deny.yaml"],
			"gate.yaml": policy("gate", `  match:
    resources: [pods]
    conditions: [{expression: "object.metadata.name == 'slow'"}]
  action: gate
  with: {gate: e2e, message: answered after shutdown began}
`),
		}),
		Registry:               testRegistry(),
		Host:                   "127.0.0.1",
		Port:                   port,
		CertDir:                certDir,
		MetricsBindAddress:     metricsAddr,
		InsecureMetrics:        true, // scraped over plain HTTP below
		HealthProbeBindAddress: probeAddr,
		Config:                 &rest.Config{Host: "https://127.0.0.1:1"}, // never dialled
		Namespaces:             staticNamespaces{},
		Logger:                 testr.New(t),
		ReloadInterval:         time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Other runs in this process (-count) share the global registry.
	globalCount := func(name string, labels map[string]string) float64 {
		return counter(t, ctrlmetrics.Registry, name, labels)
	}
	deniedLabels := map[string]string{"endpoint": "/validate", "decision": "denied", "code": "200"}
	allowedLabels := map[string]string{"endpoint": "/validate", "decision": "allowed"}
	deniedBefore, allowedBefore := globalCount(webhook.MetricRequests, deniedLabels), globalCount(webhook.MetricRequests, allowedLabels)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Start(ctx) }()

	validate := "https://" + hookAddr + "/validate?timeout=10s"
	postReview := func(c *http.Client, body []byte) (*reviewOut, error) {
		resp, err := c.Post(validate, "application/json", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var out reviewOut
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return nil, err
		}
		return &out, nil
	}

	// Served over HTTPS with the first certificate.
	var out *reviewOut
	eventually(t, "the webhook to answer over HTTPS", func() bool {
		select {
		case err := <-errc:
			t.Fatalf("Start returned early: %v", err)
		default:
		}
		out, err = postReview(httpsClient(ca1.pool), review(v1, "tls-1", named("bad")))
		return err == nil
	})
	if out.Response.Allowed || out.Response.UID != "tls-1" || out.Response.Result.Message != "bad pods are not allowed" {
		t.Errorf("response over HTTPS: %+v", out.Response)
	}
	// Every path is registered, e.g. the one the generated configuration
	// uses for validating policies with failurePolicy Fail.
	resp, err := httpsClient(ca1.pool).Post("https://"+hookAddr+"/validate/fail", "application/json", bytes.NewReader(review(v1, "tls-fp", named("bad"))))
	if err != nil {
		t.Fatal(err)
	}
	var fpOut reviewOut
	if err := json.NewDecoder(resp.Body).Decode(&fpOut); err != nil || fpOut.Response == nil || fpOut.Response.Allowed {
		t.Errorf("/validate/fail: HTTP %d %v %+v", resp.StatusCode, err, fpOut.Response)
	}
	resp.Body.Close()

	// Health, readiness, metrics and status on their plain-HTTP addresses.
	eventually(t, "/readyz", func() bool {
		code, _, err := getBody("http://" + probeAddr + "/readyz")
		return err == nil && code == 200
	})
	if err := s.Ready(); err != nil {
		t.Errorf("Ready() = %v", err)
	}
	if code, _, err := getBody("http://" + probeAddr + "/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz: %d %v", code, err)
	}
	code, body, err := getBody("http://" + metricsAddr + "/status")
	var st Status
	if err != nil || code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Hash != s.Snapshot().Hash || len(st.Policies) != 2 {
		t.Errorf("/status: %d %v %s", code, err, body)
	}
	code, body, err = getBody("http://" + metricsAddr + "/metrics")
	for _, want := range []string{
		`celadon_admission_requests_total{code="200",decision="denied",endpoint="/validate"} `,
		`celadon_policy_set_info{hash="` + s.Snapshot().Hash + `"} 1`,
		`celadon_policy_evaluations_total{policy="no-bad-pods",state="fail"} `,
		"celadon_admission_request_duration_seconds_bucket",
	} {
		if err != nil || code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (HTTP %d, %v) lacks %s", code, err, want)
		}
	}

	// Rotate to a certificate from another CA: new handshakes present it,
	// with no restart.
	ca2 := newTestCA(t, "celadon-test-ca-2")
	cert2, key2, der2 := ca2.issue(t)
	installCert(t, certDir, cert2, key2)
	eventually(t, "the rotated certificate", func() bool {
		conn, err := tls.Dial("tcp", hookAddr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return false
		}
		defer conn.Close()
		peer := conn.ConnectionState().PeerCertificates[0].Raw
		if !bytes.Equal(peer, der1) && !bytes.Equal(peer, der2) {
			t.Fatal("the server presents an unknown certificate")
		}
		return bytes.Equal(peer, der2)
	})
	if out, err := postReview(httpsClient(ca2.pool), review(v1, "tls-2")); err != nil || !out.Response.Allowed || out.Response.UID != "tls-2" {
		t.Errorf("request with the rotated certificate: %v %+v", err, out)
	}
	if _, err := postReview(httpsClient(ca1.pool), review(v1, "tls-old")); err == nil {
		t.Error("the old CA still verifies the server")
	}

	// Graceful shutdown: a request in flight when the context is cancelled
	// still gets its answer, and Start returns nil.
	var wg sync.WaitGroup
	var slow *reviewOut
	var slowErr error
	wg.Go(func() { slow, slowErr = postReview(httpsClient(ca2.pool), review(v1, "slow", named("slow"))) })
	<-g.entered
	cancel()
	eventually(t, "the listener to close", func() bool {
		conn, err := net.DialTimeout("tcp", hookAddr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	close(g.release)
	wg.Wait()
	if slowErr != nil || slow.Response.UID != "slow" || slow.Response.Allowed || slow.Response.Result.Message != "answered after shutdown began" {
		t.Errorf("in-flight request across shutdown: %v %+v", slowErr, slow)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Start() = %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Start did not return after cancel")
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("a second Start succeeded")
	}
	// The metrics went to controller-runtime's registry, which /metrics serves.
	if got := globalCount(webhook.MetricRequests, deniedLabels) - deniedBefore; got != 2 {
		t.Errorf("denied /validate requests in the global registry: %v more, want 2", got)
	}
	if got := globalCount(webhook.MetricRequests, allowedLabels) - allowedBefore; got != 1 {
		t.Errorf("allowed /validate requests in the global registry: %v more, want 1", got)
	}
}
