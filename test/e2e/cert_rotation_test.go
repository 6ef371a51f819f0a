package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"strconv"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/devenv"
)

// TestCertificateRotation rotates the serving certificate to one from a new
// CA, as a cert-manager or operator rotation would, without a restart:
//
//  1. the new CA is added to the webhook configurations' caBundle (old+new,
//     regenerated from the served policies);
//  2. tls.crt and tls.key are replaced the way the kubelet updates a
//     mounted Secret (..data symlink swap); a direct TLS handshake shows
//     the new certificate, and it verifies against the caBundle the API
//     server holds;
//  3. the configurations are installed again with the two CAs the other
//     way round: the same trust, but other bytes, so the API server builds
//     a new webhook client and handshakes afresh with the new certificate
//     (it keeps connections alive, so without this the new certificate
//     might not be verified by it before step 4);
//  4. the old CA is dropped from the caBundle.
//
// Throughout, a loop creates pods through the API server; each must be
// admitted and mutated by the shipped sts-index policy (whose webhook fails
// open, so a TLS failure would show as a pod without INDEX), and the
// fail-closed validating webhook on pods (testdata/reload-v1.yaml) turns a
// TLS failure into an error. No request may fail.
func TestCertificateRotation(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	s := suite.main
	s.mu.Lock()
	oldCA, oldKP := s.ca, s.kp
	s.mu.Unlock()

	got, err := devenv.ServingCertificate(ctx, s.addr())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(oldKP.Cert) {
		t.Fatalf("server presents %s, want the current certificate %s", got.SerialNumber, oldKP.Cert.SerialNumber)
	}
	newCA, err := devenv.NewCA("celadon-e2e rotated CA")
	if err != nil {
		t.Fatal(err)
	}
	newKP, err := newCA.NewServingCert()
	if err != nil {
		t.Fatal(err)
	}

	ns := newNamespace(ctx, t, "rotation", nil)
	owner := createOwner(ctx, t, ns, "rot")
	next := 0
	// create makes pod rot-<n> and checks that it was mutated.
	create := func(ctx context.Context) error {
		n := next
		next++
		pod := ownedPod(owner, n, nil)
		if err := suite.c.Create(ctx, pod); err != nil {
			return err
		}
		if got, _ := env(pod, "app", "INDEX"); got != strconv.Itoa(n) {
			return fmt.Errorf("pod %s admitted without INDEX=%d (Celadon not reached?): %s", pod.Name, n, describeEnv(pod))
		}
		return nil
	}
	// Celadon's namespace cache must know the namespace before the loop
	// counts failures: sts-index has a namespaceSelector.
	waitFor(ctx, t, "a first mutated pod in "+ns, func(ctx context.Context) (bool, error) {
		return create(ctx) == nil, nil
	})

	// 1. Trust both CAs.
	if err := s.installConfigs(ctx, s.srv.Snapshot(), oldCA, newCA); err != nil {
		t.Fatal(err)
	}

	loop := startCreateLoop(ctx, t, create)
	loop.waitMore(ctx, t, "pods with the old+new caBundle", 5)

	// 2. Swap the certificate files.
	if err := devenv.WriteCerts(s.certDir, newCA, newKP); err != nil {
		t.Fatal(err)
	}
	swapped := time.Now()
	waitFor(ctx, t, "the server to present the new certificate", func(ctx context.Context) (bool, error) {
		got, err := devenv.ServingCertificate(ctx, s.addr())
		return err == nil && got.Equal(newKP.Cert), nil
	})
	t.Logf("new certificate served %v after the swap", time.Since(swapped).Round(time.Millisecond))
	s.mu.Lock()
	s.ca, s.kp = newCA, newKP
	s.mu.Unlock()
	verifyAgainstInstalledBundles(ctx, t, s, newKP)
	loop.waitMore(ctx, t, "pods with the new certificate", 5)

	// 3. Fresh connections from the API server, same trust.
	if err := s.installConfigs(ctx, s.srv.Snapshot(), newCA, oldCA); err != nil {
		t.Fatal(err)
	}
	loop.waitMore(ctx, t, "pods with the new certificate on new connections", 5)

	// 4. Only the new CA.
	if err := s.installConfigs(ctx, s.srv.Snapshot(), newCA); err != nil {
		t.Fatal(err)
	}
	verifyAgainstInstalledBundles(ctx, t, s, newKP)
	loop.waitMore(ctx, t, "pods with only the new CA", 5)

	loop.stop(t, "during the rotation")
}

// verifyAgainstInstalledBundles checks that kp's certificate verifies, for
// 127.0.0.1, against the caBundle of every webhook of s's configurations as
// the API server holds them: what a new connection from it will check.
func verifyAgainstInstalledBundles(ctx context.Context, t *testing.T, s *celadon, kp *devenv.KeyPair) {
	t.Helper()
	var m admissionregistrationv1.MutatingWebhookConfiguration
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	if err := suite.c.Get(ctx, client.ObjectKey{Name: s.name}, &m); err != nil {
		t.Fatal(err)
	}
	if err := suite.c.Get(ctx, client.ObjectKey{Name: s.name}, &v); err != nil {
		t.Fatal(err)
	}
	bundles := map[string][]byte{}
	for _, w := range m.Webhooks {
		bundles[w.Name] = w.ClientConfig.CABundle
	}
	for _, w := range v.Webhooks {
		bundles[w.Name] = w.ClientConfig.CABundle
	}
	for name, bundle := range bundles {
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(bundle) {
			t.Errorf("webhook %s: caBundle holds no certificate", name)
			continue
		}
		if _, err := kp.Cert.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: roots}); err != nil {
			t.Errorf("webhook %s: the served certificate does not verify against its caBundle: %v", name, err)
		}
	}
}
