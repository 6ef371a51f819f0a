package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/client-go/rest"
)

// The metrics server is secure unless asked otherwise: HTTPS, and every
// request (to /status too) through the API server's authentication and
// authorization.
func TestMetricsSecureByDefault(t *testing.T) {
	var o Options
	o.setDefaults()
	m := o.metricsOptions(http.NotFoundHandler())
	if !m.SecureServing || m.FilterProvider == nil {
		t.Errorf("default metrics options: SecureServing %v, FilterProvider set %v; want HTTPS behind the API server's authentication", m.SecureServing, m.FilterProvider != nil)
	}
	if m.ExtraHandlers[StatusPath] == nil {
		t.Errorf("no %s on the metrics server", StatusPath)
	}
	if o.MetricsBindAddress != DefaultMetricsBindAddress {
		t.Errorf("MetricsBindAddress %q, want %q", o.MetricsBindAddress, DefaultMetricsBindAddress)
	}

	o.InsecureMetrics = true
	if m := o.metricsOptions(http.NotFoundHandler()); m.SecureServing || m.FilterProvider != nil {
		t.Errorf("InsecureMetrics: SecureServing %v, FilterProvider set %v; want plain HTTP", m.SecureServing, m.FilterProvider != nil)
	}
}

// The access secure metrics needs is declared, so the generated RBAC
// grants it.
func TestServerAccessDeclaresMetricsReviews(t *testing.T) {
	want := map[string]bool{"authentication.k8s.io/tokenreviews": false, "authorization.k8s.io/subjectaccessreviews": false}
	for _, a := range ServerAccess() {
		for _, r := range a.Resources {
			k := a.APIGroups[0] + "/" + r
			if _, ok := want[k]; ok && len(a.Verbs) == 1 && a.Verbs[0] == "create" && !a.Optional {
				want[k] = true
			}
		}
	}
	for k, ok := range want {
		if !ok {
			t.Errorf("ServerAccess does not grant create on %s", k)
		}
	}
}

func TestRequireClientCertRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(dir, "missing.pem"), empty} {
		if _, err := RequireClientCert(f); err == nil {
			t.Errorf("RequireClientCert(%s): no error", f)
		}
	}
}

// issueClient returns a client certificate (ExtKeyUsageClientAuth, as the
// API server's must be) signed by ca.
func (ca *testCA) issueClient(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestClientCA runs the server with ClientCAFile: a client without a
// certificate, or with one another CA signed, is refused at the TLS
// handshake; one with a certificate from the client CA is served.
func TestClientCA(t *testing.T) {
	certDir := t.TempDir()
	serving := newTestCA(t, "celadon-serving-ca")
	cert, key, _ := serving.issue(t)
	installCert(t, certDir, cert, key)
	clientCA := newTestCA(t, "apiserver-client-ca")
	caFile := filepath.Join(t.TempDir(), "client-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: clientCA.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	hookAddr := freeAddr(t)
	_, portStr, _ := net.SplitHostPort(hookAddr)
	port, _ := strconv.Atoi(portStr)
	s, err := NewServer(Options{
		PoliciesDir:            writePolicies(t, map[string]string{"deny.yaml": handlerPolicies["20-deny.yaml"]}),
		Registry:               testRegistry(),
		Host:                   "127.0.0.1",
		Port:                   port,
		CertDir:                certDir,
		ClientCAFile:           caFile,
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		Config:                 &rest.Config{Host: "https://127.0.0.1:1"}, // never dialled
		Namespaces:             staticNamespaces{},
		Logger:                 testr.New(t),
		ReloadInterval:         time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()

	post := func(certs ...tls.Certificate) (*http.Response, error) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: serving.pool, Certificates: certs},
			DisableKeepAlives: true,
		}}
		return c.Post("https://"+hookAddr+"/validate?timeout=10s", "application/json", bytes.NewReader(review(v1, "mtls", named("bad"))))
	}
	good := clientCA.issueClient(t, "kube-apiserver")
	eventually(t, "the webhook to serve a client with a certificate from the client CA", func() bool {
		select {
		case err := <-errc:
			t.Fatalf("Start returned early: %v", err)
		default:
		}
		resp, err := post(good)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("with a client certificate: HTTP %d", resp.StatusCode)
		}
		return true
	})
	// TLS 1.3 reports the refusal on the first read, so the request fails
	// either way; it must fail with a TLS alert, never reach a handler.
	if resp, err := post(); err == nil {
		resp.Body.Close()
		t.Errorf("without a client certificate: HTTP %d, want the handshake refused", resp.StatusCode)
	}
	other := newTestCA(t, "someone-else").issueClient(t, "intruder")
	if resp, err := post(other); err == nil {
		resp.Body.Close()
		t.Errorf("with a certificate from another CA: HTTP %d, want the handshake refused", resp.StatusCode)
	}
}

// pprof is served on loopback only: any other address is refused before
// anything listens.
func TestCheckLoopbackAddress(t *testing.T) {
	for _, a := range []string{"127.0.0.1:6060", "127.3.2.1:6060", "[::1]:6060", "localhost:6060", "127.0.0.1:0"} {
		if err := CheckLoopbackAddress(a); err != nil {
			t.Errorf("CheckLoopbackAddress(%q) = %v, want accepted", a, err)
		}
	}
	for _, a := range []string{":6060", "0.0.0.0:6060", "[::]:6060", "10.0.0.1:6060", "192.168.1.2:6060", "[fe80::1]:6060",
		"example.com:6060", "localhost.example.com:6060", "127.0.0.1", "localhost", "127.0.0.1:http-alt-nope"} {
		if err := CheckLoopbackAddress(a); err == nil {
			t.Errorf("CheckLoopbackAddress(%q) accepted, want refused", a)
		}
	}
	_, err := NewServer(Options{
		PoliciesDir: writePolicies(t, map[string]string{"deny.yaml": handlerPolicies["20-deny.yaml"]}),
		Registry:    testRegistry(), Namespaces: staticNamespaces{}, Logger: testr.New(t),
		PprofBindAddress: "0.0.0.0:6060",
	})
	if err == nil || !strings.Contains(err.Error(), "PprofBindAddress") || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("NewServer with PprofBindAddress 0.0.0.0:6060: %v, want refused naming the option", err)
	}
	// "" and "0" hand controller-runtime's manager no address: no listener.
	for _, a := range []string{"", "0"} {
		if got := (&Options{PprofBindAddress: a}).pprofAddress(); got != "" {
			t.Errorf("pprofAddress of %q = %q, want \"\" (off)", a, got)
		}
	}
}

// TestPprof runs the server with PprofBindAddress and takes a CPU profile
// from it, as `make profile` does.
func TestPprof(t *testing.T) {
	certDir := t.TempDir()
	cert, key, _ := newTestCA(t, "celadon-serving-ca").issue(t)
	installCert(t, certDir, cert, key)
	hookAddr, pprofAddr := freeAddr(t), freeAddr(t)
	_, portStr, _ := net.SplitHostPort(hookAddr)
	port, _ := strconv.Atoi(portStr)
	s, err := NewServer(Options{
		PoliciesDir:            writePolicies(t, map[string]string{"deny.yaml": handlerPolicies["20-deny.yaml"]}),
		Registry:               testRegistry(),
		Host:                   "127.0.0.1",
		Port:                   port,
		CertDir:                certDir,
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		PprofBindAddress:       pprofAddr,
		Config:                 &rest.Config{Host: "https://127.0.0.1:1"}, // never dialled
		Namespaces:             staticNamespaces{},
		Logger:                 testr.New(t),
		ReloadInterval:         time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()
	eventually(t, "the pprof index", func() bool {
		select {
		case err := <-errc:
			t.Fatalf("Start returned early: %v", err)
		default:
		}
		code, body, err := getBody("http://" + pprofAddr + "/debug/pprof/")
		return err == nil && code == http.StatusOK && strings.Contains(body, "goroutine")
	})
	code, body, err := getBody("http://" + pprofAddr + "/debug/pprof/profile?seconds=1")
	// A CPU profile is gzipped protobuf.
	if err != nil || code != http.StatusOK || !strings.HasPrefix(body, "\x1f\x8b") {
		t.Errorf("/debug/pprof/profile: HTTP %d, %v, %d bytes starting %q; want a gzipped profile", code, err, len(body), body[:min(len(body), 16)])
	}
}
