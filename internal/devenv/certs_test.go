package devenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

func TestServingCertVerifiesForLoopback(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.NewServingCert()
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		_, err := kp.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	if _, err := kp.Cert.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: ca.Pool()}); err == nil {
		t.Error("the certificate verifies for example.com")
	}
	other, err := NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kp.Cert.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: other.Pool()}); err == nil {
		t.Error("the certificate verifies against an unrelated CA")
	}
	if _, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM); err != nil {
		t.Errorf("key pair does not load: %v", err)
	}
}

func TestBundle(t *testing.T) {
	a, err := NewCA("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewCA("b")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	bundle := Bundle(a, b)
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("bundle does not parse")
	}
	var n int
	for rest := bundle; ; n++ {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
	}
	if n != 2 {
		t.Fatalf("bundle holds %d certificates, want 2", n)
	}
}

// TestWriteCertsRotation serves TLS from a cert directory, rotates it with
// a second WriteCerts, and checks what a new connection sees.
func TestWriteCertsRotation(t *testing.T) {
	dir := t.TempDir()
	ca1, kp1, err := GenerateCerts(dir, "first")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{CertFile: kp1.CertPEM, KeyFile: kp1.KeyPEM, CAFile: ca1.CertPEM} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s does not hold what was written", name)
		}
	}

	// A server that reads the files on every handshake, like a cert
	// watcher that has just reloaded.
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
		return &c, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	addr := l.Addr().String()

	got, err := ServingCertificate(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(kp1.Cert) {
		t.Fatal("server does not present the first certificate")
	}

	ca2, err := NewCA("second")
	if err != nil {
		t.Fatal(err)
	}
	kp2, err := ca2.NewServingCert()
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteCerts(dir, ca2, kp2); err != nil {
		t.Fatal(err)
	}
	got, err = ServingCertificate(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(kp2.Cert) {
		t.Fatal("server does not present the rotated certificate")
	}
	if _, err := got.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: x509.NewCertPool()}); err == nil {
		t.Fatal("verification against an empty pool succeeded")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(Bundle(ca1, ca2))
	if _, err := got.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: roots}); err != nil {
		t.Fatalf("the old+new bundle does not verify the new certificate: %v", err)
	}
}
