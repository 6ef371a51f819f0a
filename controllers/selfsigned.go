package controllers

// Self-signed certificates (Options.SelfSignedCerts): the servers keep a CA
// and a serving certificate in one Secret, shared by every replica, write
// them into CertDir the way the kubelet updates a Secret volume, and renew
// them before they expire. Nothing here runs per request.
//
// Any replica that finds the Secret missing or due for renewal writes it,
// with optimistic concurrency (create, or update at the resourceVersion it
// read; on a conflict it reads again and uses what the winner wrote). This
// needs no leader: the first certificate must be in CertDir before the
// webhook server starts, which is before a leader is elected.

import (
	"bytes"
	"cmp"
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
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/atomicdir"
	"celadon.io/celadon/internal/prom"
)

// Defaults of the self-signed certificates.
const (
	// DefaultCertSecretName is the Secret holding the CA and the serving
	// certificate.
	DefaultCertSecretName = "celadon-tls"
	// DefaultCAValidity is the CA's lifetime: 10 years.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultCertValidity is the serving certificate's lifetime: 90 days,
	// as the cert-manager overlay's.
	DefaultCertValidity = 90 * 24 * time.Hour
	// DefaultCertCheckInterval is how often each server re-reads the
	// Secret: to renew what is due, and to pick up a renewal made by
	// another replica.
	DefaultCertCheckInterval = time.Minute

	// CAKeyName is the Secret key of the CA's private key. It is never
	// written into CertDir.
	CAKeyName = "ca.key"
	// MetricCertificateExpiry is when the serving certificate the server
	// last wrote into CertDir expires, in Unix seconds: alert well before.
	MetricCertificateExpiry = "celadon_serving_certificate_expiry_timestamp_seconds"

	// clockSkew backdates NotBefore, so that a certificate is valid at once
	// on an API server whose clock is a little behind.
	clockSkew = time.Hour
	// firstCertTimeout bounds the wait for the first certificate at start
	// (the API server unreachable, RBAC missing): then Start fails, with
	// the last error.
	firstCertTimeout = time.Minute
)

// certParams say what certificates the Secret must hold.
type certParams struct {
	// Hosts are the serving certificate's names: DNS names or IP
	// addresses.
	Hosts []string
	// CAName is the CA's common name.
	CAName                   string
	CAValidity, CertValidity time.Duration
	// RenewBefore renews the serving certificate when that little validity
	// is left; 0: a third of its lifetime. The CA renews when a third of
	// its lifetime is left.
	RenewBefore time.Duration
}

// certSecret is the parsed content of the Secret.
type certSecret struct {
	ca     *x509.Certificate // the CA whose key is ca.key: it signs
	caKey  *ecdsa.PrivateKey
	bundle []*x509.Certificate // ca.crt: every CA trusted, newest first
	cert   *x509.Certificate   // tls.crt
	keyPEM []byte              // tls.key
	// certPEM is tls.crt as read.
	certPEM []byte
	// dropped counts the certificates of ca.crt left out of bundle.
	dropped int
}

// renewCerts returns the Secret data (tls.crt, tls.key, ca.crt and ca.key)
// that data must be replaced with at now, and why; nil when nothing is
// due.
//
//   - No usable CA (missing, unparsable, expired, its key not matching): a
//     new CA and a serving certificate from it. The first install, or a
//     Secret that was damaged: nothing can be kept.
//   - The serving certificate missing, unparsable, not matching its key,
//     not verifying against ca.crt, missing one of Hosts, or with less
//     than RenewBefore left: a new one from the CA, whose key is kept.
//   - The CA with less than a third of its lifetime left: a new CA is
//     added in front of ca.crt, the old one staying trusted until it
//     expires, and ca.key becomes the new CA's. It signs from the next
//     serving renewal on, by when every webhook configuration trusts it: a
//     CA renewal never makes a served certificate untrusted.
//
// CAs in ca.crt that have expired are dropped.
func renewCerts(data map[string][]byte, p certParams, now time.Time) (map[string][]byte, []string, error) {
	cur, why := parseCertSecret(data, now)
	var reasons []string
	changed := false
	if cur.ca == nil {
		ca, key, err := newCA(p.CAName, p.CAValidity, now)
		if err != nil {
			return nil, nil, err
		}
		reasons = append(reasons, "new CA: "+why)
		cur = certSecret{ca: ca, caKey: key, bundle: []*x509.Certificate{ca}}
		changed = true
	}
	if cur.dropped > 0 {
		reasons = append(reasons, fmt.Sprintf("%d expired CA certificates dropped", cur.dropped))
		changed = true
	}
	if why := servingDue(cur, p, now); why != "" {
		cert, keyPEM, err := newServingCert(p.Hosts, p.CertValidity, cur.ca, cur.caKey, now)
		if err != nil {
			return nil, nil, err
		}
		reasons = append(reasons, "new serving certificate: "+why)
		cur.cert, cur.keyPEM, cur.certPEM = cert, keyPEM, pemCert(cert)
		changed = true
	}
	if due(cur.ca, 0, now) {
		ca, key, err := newCA(p.CAName, p.CAValidity, now)
		if err != nil {
			return nil, nil, err
		}
		reasons = append(reasons, fmt.Sprintf("new CA, trusted next to the current one (expiring %s), signing from the next renewal", cur.ca.NotAfter.UTC().Format(time.RFC3339)))
		cur.bundle = append([]*x509.Certificate{ca}, cur.bundle...)
		cur.ca, cur.caKey = ca, key
		changed = true
	}
	if !changed {
		return nil, nil, nil
	}
	caKeyDER, err := x509.MarshalECPrivateKey(cur.caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the CA key: %w", err)
	}
	var bundle bytes.Buffer
	for _, c := range cur.bundle {
		bundle.Write(pemCert(c))
	}
	return map[string][]byte{
		corev1.TLSCertKey:       cur.certPEM,
		corev1.TLSPrivateKeyKey: cur.keyPEM,
		CABundleName:            bundle.Bytes(),
		CAKeyName:               pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}),
	}, reasons, nil
}

// parseCertSecret reads what can be kept of data. A nil ca means no usable
// CA, and the string says why.
func parseCertSecret(data map[string][]byte, now time.Time) (certSecret, string) {
	var s certSecret
	if len(data) == 0 {
		return s, "no certificates yet"
	}
	certs, err := parseCerts(data[CABundleName])
	if err != nil {
		return s, CABundleName + ": " + err.Error()
	}
	key, err := parseECKey(data[CAKeyName])
	if err != nil {
		return s, CAKeyName + ": " + err.Error()
	}
	for _, c := range certs {
		if !now.Before(c.NotAfter) || now.Before(c.NotBefore) || !c.IsCA {
			s.dropped++ // expired, not yet valid, or no CA
			continue
		}
		s.bundle = append(s.bundle, c)
		if pub, ok := c.PublicKey.(*ecdsa.PublicKey); ok && pub.Equal(&key.PublicKey) {
			s.ca, s.caKey = c, key
		}
	}
	if s.ca == nil {
		return certSecret{}, "no valid CA certificate in " + CABundleName + " for " + CAKeyName
	}
	if certs, err := parseCerts(data[corev1.TLSCertKey]); err == nil {
		s.cert, s.certPEM, s.keyPEM = certs[0], data[corev1.TLSCertKey], data[corev1.TLSPrivateKeyKey]
	}
	return s, ""
}

// servingDue says why s needs a new serving certificate; "" when it does
// not.
func servingDue(s certSecret, p certParams, now time.Time) string {
	c := s.cert
	if c == nil {
		return "none yet"
	}
	if key, err := parseECKey(s.keyPEM); err != nil {
		return corev1.TLSPrivateKeyKey + ": " + err.Error()
	} else if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return corev1.TLSPrivateKeyKey + " does not match " + corev1.TLSCertKey
	}
	roots := x509.NewCertPool()
	for _, ca := range s.bundle {
		roots.AddCert(ca)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return "the current one does not verify against " + CABundleName + ": " + err.Error()
	}
	for _, h := range p.Hosts {
		if err := c.VerifyHostname(h); err != nil {
			return "the current one is not valid for " + h
		}
	}
	if due(c, p.RenewBefore, now) {
		return "the current one expires " + c.NotAfter.UTC().Format(time.RFC3339)
	}
	return ""
}

// due reports whether c has less than renewBefore of validity left at now;
// renewBefore 0 is a third of its lifetime.
func due(c *x509.Certificate, renewBefore time.Duration, now time.Time) bool {
	if renewBefore <= 0 {
		renewBefore = c.NotAfter.Sub(c.NotBefore) / 3
	}
	return !now.Before(c.NotAfter.Add(-renewBefore))
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

func parseECKey(data []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM key")
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not an EC private key: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, want an EC private key", k)
	}
	return ec, nil
}

// newCA creates an ECDSA P-256 CA valid for validity from now.
func newCA(name string, validity time.Duration, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name, Organization: []string{"celadon"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	cert, err := signCert(tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the CA certificate: %w", err)
	}
	return cert, key, nil
}

// newServingCert issues a server certificate for hosts, valid for validity
// from now but never beyond the CA, and returns it with its PEM key.
func newServingCert(hosts []string, validity time.Duration, ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time) (*x509.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0], Organization: []string{"celadon"}},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, err := signCert(tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func signCert(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1)) // never 0
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// CertOptions configure a CertManager.
type CertOptions struct {
	// Secret holds the CA and the serving certificate, shared by every
	// replica.
	Secret client.ObjectKey
	// Hosts the serving certificate is for.
	Hosts []string
	// CAValidity, CertValidity and RenewBefore are the certificates' lives
	// and how long before its end the serving one is renewed.
	CAValidity, CertValidity, RenewBefore time.Duration
	// CheckInterval re-reads the Secret this often.
	CheckInterval time.Duration
	// Dir, CertName and KeyName are where the webhook server reads its
	// certificate; the CA bundle is written beside them (CABundleName).
	Dir, CertName, KeyName string
	// OnCAChange is called when a new CA bundle was written, e.g. to sync
	// the webhook configurations' caBundle.
	OnCAChange func()
	Metrics    prometheus.Registerer
	Log        logr.Logger
}

// CertManager is the manager Runnable that keeps the Secret and the
// certificate directory up to date. Every replica runs it: no leader
// election.
type CertManager struct {
	opts   CertOptions
	c      client.Client
	r      client.Reader
	key    client.ObjectKey
	params certParams
	// dir and the file names the webhook server reads.
	dir, certName, keyName string
	// written is what was last written into dir.
	written map[string][]byte
	expiry  prometheus.Gauge
}

// NewCertManager returns the manager of o. r reads the Secret: pass an
// uncached reader.
func NewCertManager(o CertOptions, c client.Client, r client.Reader) *CertManager {
	return &CertManager{
		opts: o, c: c, r: r,
		key: o.Secret,
		params: certParams{
			Hosts:        o.Hosts,
			CAName:       "celadon-ca " + o.Secret.Namespace + "/" + o.Secret.Name,
			CAValidity:   o.CAValidity,
			CertValidity: o.CertValidity,
			RenewBefore:  o.RenewBefore,
		},
		dir: o.Dir, certName: cmp.Or(o.CertName, corev1.TLSCertKey), keyName: cmp.Or(o.KeyName, corev1.TLSPrivateKeyKey),
		expiry: prom.Register(o.Metrics, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricCertificateExpiry,
			Help: "When the self-signed serving certificate last written into the cert-dir expires, in Unix seconds.",
		})),
	}
}

// NeedLeaderElection is false: every replica writes its own directory.
func (*CertManager) NeedLeaderElection() bool { return false }

// First writes the first certificate into the directory, retrying for up
// to firstCertTimeout: the webhook server cannot start without it.
func (m *CertManager) First(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, firstCertTimeout)
	defer cancel()
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		err := m.ensure(ctx)
		if err == nil {
			return nil
		}
		m.opts.Log.Error(err, "getting the self-signed certificate failed; retrying", "secret", m.key.String())
		select {
		case <-ctx.Done():
			return fmt.Errorf("getting the self-signed certificate from Secret %s: %w", m.key, err)
		case <-time.After(wait):
		}
	}
}

// Start re-checks the Secret every CertCheckInterval until ctx is done; a
// failed check is logged and retried sooner.
func (m *CertManager) Start(ctx context.Context) error {
	interval := m.opts.CheckInterval
	m.opts.Log.Info("managing the self-signed certificates", "secret", m.key.String(), "hosts", m.params.Hosts, "interval", interval)
	for {
		next := interval
		if err := m.ensure(ctx); err != nil && ctx.Err() == nil {
			m.opts.Log.Error(err, "checking the self-signed certificate failed; retrying", "secret", m.key.String())
			next = min(interval, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

// ensure renews what is due in the Secret, then writes its certificates
// into the directory when they differ from what is there; a new CA bundle
// triggers a webhook configuration sync.
func (m *CertManager) ensure(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	data, err := m.reconcileSecret(ctx)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		m.certName:   data[corev1.TLSCertKey],
		m.keyName:    data[corev1.TLSPrivateKeyKey],
		CABundleName: data[CABundleName],
	}
	if m.written == nil {
		m.written = readFiles(m.dir, files)
	}
	same := true
	for name, b := range files {
		same = same && bytes.Equal(m.written[name], b)
	}
	caChanged := !bytes.Equal(m.written[CABundleName], files[CABundleName])
	if !same {
		if err := atomicdir.Write(m.dir, files); err != nil {
			return fmt.Errorf("writing the certificates into %s: %w", m.dir, err)
		}
		m.written = files
	}
	if cert, err := parseCerts(files[m.certName]); err == nil {
		m.expiry.Set(float64(cert[0].NotAfter.Unix()))
		if !same {
			m.opts.Log.Info("serving certificate written", "dir", m.dir, "serial", cert[0].SerialNumber.Text(16),
				"notAfter", cert[0].NotAfter.UTC().Format(time.RFC3339), "caBundleChanged", caChanged)
		}
	}
	if caChanged && m.opts.OnCAChange != nil {
		m.opts.OnCAChange()
	}
	return nil
}

// reconcileSecret returns the Secret's certificates, renewing them first
// when due. It creates the Secret, or updates it at the resourceVersion it
// read; when another replica wrote first, it reads again and keeps what
// that one wrote, if it is good.
func (m *CertManager) reconcileSecret(ctx context.Context) (map[string][]byte, error) {
	for attempt := 1; ; attempt++ {
		var sec corev1.Secret
		err := m.r.Get(ctx, m.key, &sec)
		missing := apierrors.IsNotFound(err)
		if err != nil && !missing {
			return nil, fmt.Errorf("reading Secret %s: %w", m.key, err)
		}
		data, reasons, err := renewCerts(sec.Data, m.params, time.Now())
		if err != nil {
			return nil, err
		}
		if data == nil {
			return sec.Data, nil
		}
		if missing {
			sec = corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: m.key.Namespace, Name: m.key.Name,
					Labels: map[string]string{"app.kubernetes.io/managed-by": "celadon"},
				},
				Type: corev1.SecretTypeTLS,
				Data: data,
			}
			err = m.c.Create(ctx, &sec)
		} else {
			if sec.Data == nil {
				sec.Data = map[string][]byte{}
			}
			for k, v := range data {
				sec.Data[k] = v // other keys are left alone
			}
			err = m.c.Update(ctx, &sec)
		}
		switch {
		case err == nil:
			m.opts.Log.Info("self-signed certificates written", "secret", m.key.String(), "created", missing, "why", reasons)
			return data, nil
		case (apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err)) && attempt < 5:
			continue // another replica wrote first: use what it wrote
		case missing:
			return nil, fmt.Errorf("creating Secret %s: %w", m.key, err)
		default:
			return nil, fmt.Errorf("updating Secret %s: %w", m.key, err)
		}
	}
}

// readFiles returns the content of the files of dir named in names, those
// that can be read.
func readFiles(dir string, names map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for name := range names {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			out[name] = b
		}
	}
	return out
}
