package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/controllers"
	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/server"
	"celadon.io/celadon/test/load/loadgen"
)

// TestSelfSignedCerts runs two servers with SelfSignedCerts on one Secret
// in the test's namespace, started at the same time with no Secret yet;
// the first also manages its webhook configurations (URL mode, pointing at
// itself, under leader election). Through the API server it checks that:
//
//  1. one Secret is written, holding a CA and a serving certificate for
//     127.0.0.1 (the webhook URL's host), and both servers serve that
//     certificate: the Secret is shared, not one per replica;
//  2. the managed configurations carry the Secret's ca.crt as caBundle,
//     and pods created through the API server are mutated by the server's
//     policy (which fails open: a TLS failure shows as a pod without
//     SELF_SIGNED_INDEX);
//  3. when the Secret's serving certificate is replaced by one that is due
//     for renewal (signed by the same CA, an hour of validity left), the
//     servers renew it: a new serving certificate in the Secret, served by
//     both with no restart, the CA and caBundle unchanged;
//  4. when the Secret's CA is replaced by one due for renewal (the first
//     CA, which signed the served certificate, still trusted after it),
//     the servers add a new CA in front of ca.crt and keep serving the
//     same certificate; the configurations trust the new bundle; and the
//     next serving renewal is signed by the new CA and served by both.
//
// From step 3 on, pods are created in a loop, and none may fail or miss
// the mutation.
func TestSelfSignedCerts(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	policy, err := os.ReadFile(filepath.Join("testdata", "self-signed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policies := map[string][]byte{"self-signed.yaml": policy}
	ns := newNamespace(ctx, t, "self-signed", map[string]string{"e2e.celadon.io/self-signed": "true"})
	const name = "celadon-e2e-self-signed"
	secretKey := client.ObjectKey{Namespace: ns, Name: "celadon-e2e-tls"}
	selfSigned := func(s *celadon, o *server.Options) {
		// No certificate in cert-dir: the server must write one before
		// its webhook starts.
		if err := os.RemoveAll(s.certDir); err != nil {
			t.Error(err)
		}
		o.SelfSignedCerts = true
		o.CertSecretNamespace, o.CertSecretName = secretKey.Namespace, secretKey.Name
		// Often, so that a renewal is picked up quickly; the default is 1m.
		o.CertCheckInterval = 200 * time.Millisecond
	}

	// Removed after the servers stop (cleanups run last first), so that
	// the leader cannot write them again.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := devenv.DeleteWebhookConfigurations(ctx, suite.c, name); err != nil {
			t.Errorf("removing the webhook configurations: %v", err)
		}
		if err := devenv.SyncWebhookConfigurations(ctx, suite.c, metav1.NamespaceDefault, waitTimeout); err != nil {
			t.Error(err)
		}
	})

	// Both servers at once: whichever writes the Secret second must take
	// the first one's certificate.
	var (
		servers [2]*celadon
		errs    [2]error
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		servers[0], errs[0] = runCeladon(ctx, name, policies, func(s *celadon, o *server.Options) {
			selfSigned(s, o)
			o.ManageWebhooks = true
			o.WebhookConfigName = name
			o.WebhookURL = s.url()
			o.LeaderElection = true
			o.LeaderElectionNamespace = ns
			o.LeaderElectionID = name
		})
	})
	wg.Go(func() {
		servers[1], errs[1] = runCeladon(ctx, name+"-2", policies, func(s *celadon, o *server.Options) {
			selfSigned(s, o)
			o.CertDNSNames = []string{"127.0.0.1"} // the first one's name, from its URL
		})
	})
	wg.Wait()
	for i, s := range servers {
		if s == nil {
			continue
		}
		t.Cleanup(func() {
			if err := s.stop(); err != nil {
				t.Errorf("stopping server %d: %v", i+1, err)
			}
		})
	}
	if err := errors.Join(errs[:]...); err != nil {
		t.Fatal(err)
	}
	s1, s2 := servers[0], servers[1]

	// 1. One Secret, one certificate, served by both.
	var secret corev1.Secret
	if err := suite.c.Get(ctx, secretKey, &secret); err != nil {
		t.Fatalf("the Secret: %v", err)
	}
	if secret.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret type %q, want %q", secret.Type, corev1.SecretTypeTLS)
	}
	caPEM := secret.Data["ca.crt"]
	leaf := verifySecretCert(t, &secret)
	for i, s := range servers {
		waitFor(ctx, t, fmt.Sprintf("server %d to serve the Secret's certificate", i+1), func(ctx context.Context) (bool, error) {
			got, err := devenv.ServingCertificate(ctx, s.addr())
			return err == nil && got.Equal(leaf), nil
		})
		if files, err := os.ReadFile(filepath.Join(s.certDir, "ca.crt")); err != nil || !bytes.Equal(files, caPEM) {
			t.Errorf("server %d: %s/ca.crt is not the Secret's ca.crt (%v)", i+1, s.certDir, err)
		}
	}

	// 2. The configurations trust the Secret's CA, and the API server
	// reaches the server with it.
	waitFor(ctx, t, "the managed configurations with the Secret's CA", func(ctx context.Context) (bool, error) {
		return configsTrust(ctx, name, caPEM)
	})
	if err := devenv.SyncWebhookConfigurations(ctx, suite.c, metav1.NamespaceDefault, waitTimeout); err != nil {
		t.Fatal(err)
	}
	owner := createOwner(ctx, t, ns, "ss")
	var (
		mu   sync.Mutex
		next int
	)
	create := func(ctx context.Context) error {
		mu.Lock()
		n := next
		next++
		mu.Unlock()
		pod := ownedPod(owner, n, nil)
		if err := suite.c.Create(ctx, pod); err != nil {
			return err
		}
		if got, _ := env(pod, "app", "SELF_SIGNED_INDEX"); got != strconv.Itoa(n) {
			return fmt.Errorf("pod %s admitted without SELF_SIGNED_INDEX=%d (the server not reached?): %s", pod.Name, n, describeEnv(pod))
		}
		return nil
	}
	// The server's namespace cache must know the namespace first.
	waitFor(ctx, t, "a first pod mutated by the self-signed server", func(ctx context.Context) (bool, error) {
		return create(ctx) == nil, nil
	})

	loop := startCreateLoop(ctx, t, create)
	loop.waitMore(ctx, t, "pods with the first certificate", 5)

	// 3. A serving certificate due for renewal, put into the Secret.
	// renewServing does that and returns the certificate the servers
	// renew it with, once both serve it.
	renewServing := func() *x509.Certificate {
		t.Helper()
		if err := suite.c.Get(ctx, secretKey, &secret); err != nil {
			t.Fatal(err)
		}
		due := dueCert(t, &secret)
		secret.Data["tls.crt"], secret.Data["tls.key"] = due.certPEM, due.keyPEM
		if err := suite.c.Update(ctx, &secret); err != nil {
			t.Fatalf("putting a certificate due for renewal into the Secret: %v", err)
		}
		var renewed *x509.Certificate
		waitFor(ctx, t, "the servers to renew the serving certificate in the Secret", func(ctx context.Context) (bool, error) {
			var now corev1.Secret
			if err := suite.c.Get(ctx, secretKey, &now); err != nil {
				return false, err
			}
			c, err := parseLeaf(now.Data["tls.crt"])
			if err != nil || c.Equal(due.cert) {
				return false, nil
			}
			secret, renewed = now, c
			return true, nil
		})
		verifySecretCert(t, &secret)
		for i, s := range servers {
			waitFor(ctx, t, fmt.Sprintf("server %d to serve the renewed certificate", i+1), func(ctx context.Context) (bool, error) {
				got, err := devenv.ServingCertificate(ctx, s.addr())
				return err == nil && got.Equal(renewed), nil
			})
		}
		return renewed
	}
	renewed := renewServing()
	if renewed.Equal(leaf) {
		t.Fatal("the renewed certificate is the first one")
	}
	if !bytes.Equal(secret.Data["ca.crt"], caPEM) {
		t.Error("ca.crt changed with a serving renewal; want the CA kept")
	}
	loop.waitMore(ctx, t, "pods with the renewed certificate", 5)
	// The servers share the process's metrics registry: one gauge, which
	// each sets just after writing its directory, so a moment after it
	// serves the certificate.
	waitFor(ctx, t, controllers.MetricCertificateExpiry+" to show the renewed certificate's expiry", func(context.Context) (bool, error) {
		return scrapeGauge(t, s1, controllers.MetricCertificateExpiry) == float64(renewed.NotAfter.Unix()), nil
	})
	if trusted, err := configsTrust(ctx, name, caPEM); err != nil || !trusted {
		t.Errorf("after the renewal, the configurations no longer carry the Secret's CA (%v)", err)
	}

	// 4. A CA due for renewal: its key in ca.key and it first in ca.crt,
	// the first CA (which signed the served certificate) after it. The
	// servers add a new CA in front, keep serving the same certificate,
	// and the configurations trust all three; the next serving renewal is
	// the new CA's.
	dueCA := issue(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "e2e CA due for renewal"},
		NotBefore:             time.Now().Add(-20 * 24 * time.Hour),
		NotAfter:              time.Now().Add(5 * 24 * time.Hour), // less than a third left
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil, nil)
	secret.Data["ca.crt"] = append(append([]byte(nil), dueCA.certPEM...), caPEM...)
	secret.Data["ca.key"] = dueCA.keyPEM
	if err := suite.c.Update(ctx, &secret); err != nil {
		t.Fatalf("putting a CA due for renewal into the Secret: %v", err)
	}
	var staged []*x509.Certificate
	waitFor(ctx, t, "the servers to add a new CA to ca.crt", func(ctx context.Context) (bool, error) {
		if err := suite.c.Get(ctx, secretKey, &secret); err != nil {
			return false, err
		}
		certs, err := parseCerts(secret.Data["ca.crt"])
		if err != nil || len(certs) != 3 {
			return false, err
		}
		staged = certs
		return true, nil
	})
	if !staged[1].Equal(dueCA.cert) || staged[0].Equal(dueCA.cert) {
		t.Fatalf("ca.crt after the CA renewal: want a new CA, then the one due, then the first")
	}
	if c, err := parseLeaf(secret.Data["tls.crt"]); err != nil || !c.Equal(renewed) {
		t.Errorf("the serving certificate changed with the CA renewal (%v); want it kept until its own renewal", err)
	}
	waitFor(ctx, t, "the managed configurations to trust the new CA", func(ctx context.Context) (bool, error) {
		return configsTrust(ctx, name, secret.Data["ca.crt"])
	})
	if err := devenv.SyncWebhookConfigurations(ctx, suite.c, metav1.NamespaceDefault, waitTimeout); err != nil {
		t.Fatal(err)
	}
	loop.waitMore(ctx, t, "pods with the new CA trusted", 5)
	fromNewCA := renewServing()
	if err := fromNewCA.CheckSignatureFrom(staged[0]); err != nil {
		t.Errorf("the serving renewal after the CA renewal is not signed by the new CA: %v", err)
	}
	loop.waitMore(ctx, t, "pods with a certificate of the new CA", 5)

	loop.stop(t, "around the renewal")
	for i, s := range []*celadon{s1, s2} {
		select {
		case err := <-s.done:
			t.Errorf("server %d stopped during the test: %v", i+1, err)
		default:
		}
	}
}

// scrapeGauge returns the value of the unlabelled metric name from s's
// /metrics; it fails t when there is none.
func scrapeGauge(t *testing.T, s *celadon, name string) float64 {
	t.Helper()
	v, found, err := loadgen.ScrapeMetric("http://"+s.metrics+"/metrics", name)
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("no %s in /metrics", name)
	}
	return v
}

// verifySecretCert checks the Secret's tls.crt matches tls.key and
// verifies for 127.0.0.1 against its ca.crt, and returns it.
func verifySecretCert(t *testing.T, s *corev1.Secret) *x509.Certificate {
	t.Helper()
	leaf, err := parseLeaf(s.Data["tls.crt"])
	if err != nil {
		t.Fatalf("Secret %s/%s tls.crt: %v", s.Namespace, s.Name, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.Data["ca.crt"]) {
		t.Fatalf("Secret %s/%s: no certificate in ca.crt", s.Namespace, s.Name)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: roots}); err != nil {
		t.Errorf("Secret %s/%s: tls.crt does not verify for 127.0.0.1 against ca.crt: %v", s.Namespace, s.Name, err)
	}
	return leaf
}

// configsTrust reports whether every webhook of the configurations named
// name has caBundle ca.
func configsTrust(ctx context.Context, name string, ca []byte) (bool, error) {
	var m admissionregistrationv1.MutatingWebhookConfiguration
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	if err := suite.c.Get(ctx, client.ObjectKey{Name: name}, &m); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	if err := suite.c.Get(ctx, client.ObjectKey{Name: name}, &v); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	var bundles [][]byte
	for _, w := range m.Webhooks {
		bundles = append(bundles, w.ClientConfig.CABundle)
	}
	for _, w := range v.Webhooks {
		bundles = append(bundles, w.ClientConfig.CABundle)
	}
	if len(bundles) == 0 {
		return false, nil
	}
	for _, b := range bundles {
		if !bytes.Equal(b, ca) {
			return false, nil
		}
	}
	return true, nil
}

func parseLeaf(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	return x509.ParseCertificate(b.Bytes)
}

type dueKeyPair struct {
	cert            *x509.Certificate
	certPEM, keyPEM []byte
}

// dueCert issues, with the Secret's CA (the first of ca.crt, whose key is
// ca.key), a serving certificate for 127.0.0.1 that is well into its
// renewal window: a day old, an hour left.
func dueCert(t *testing.T, s *corev1.Secret) dueKeyPair {
	t.Helper()
	ca, err := parseLeaf(s.Data["ca.crt"])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(s.Data["ca.key"])
	if b == nil {
		t.Fatal("no PEM ca.key in the Secret")
	}
	caKey, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	return issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:   now.Add(-24 * time.Hour),
		NotAfter:    now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}, ca, caKey)
}

// issue makes tmpl a certificate with a new key, signed by parent's
// parentKey; self-signed when parent is nil.
func issue(t *testing.T, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) dueKeyPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return dueKeyPair{
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
}

// parseCerts parses every certificate of a PEM bundle.
func parseCerts(bundle []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		if b, bundle = pem.Decode(bundle); b == nil {
			return certs, nil
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
}
