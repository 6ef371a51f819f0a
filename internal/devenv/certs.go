package devenv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// File names in a certificate directory, as in a kubernetes.io/tls Secret
// (plus the CA, as cert-manager writes it). `celadon serve --cert-dir`
// reads CertFile and KeyFile.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	CAFile   = "ca.crt"
)

// DefaultHosts are the names a serving certificate is valid for when
// NewServingCert is given none: the loopback addresses and localhost, which
// is where the API server reaches a webhook running on the same machine.
var DefaultHosts = []string{"127.0.0.1", "::1", "localhost"}

// certValidity is long enough for a demo left running; tests rotate by
// writing a new certificate, not by letting one expire.
const certValidity = 365 * 24 * time.Hour

// CA is a self-signed ECDSA P-256 certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// CertPEM is Cert, PEM-encoded: a webhook's caBundle.
	CertPEM []byte
}

// KeyPair is a certificate signed by a CA and its key, PEM-encoded.
type KeyPair struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a CA named commonName.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"celadon devenv"}},
		NotBefore:             now.Add(-time.Hour), // tolerate clock skew
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("devenv: creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// NewServingCert issues a TLS server certificate for hosts (IP addresses
// or DNS names; DefaultHosts when empty).
func (ca *CA) NewServingCert(hosts ...string) (*KeyPair, error) {
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"celadon devenv"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("devenv: creating serving certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	return &KeyPair{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("EC PRIVATE KEY", keyDER)}, nil
}

// Pool returns a certificate pool holding the CA, to verify its
// certificates.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Bundle concatenates PEM CA certificates into one caBundle, as during a
// rotation, when the API server must trust both the old and the new CA.
func Bundle(cas ...*CA) []byte {
	var b bytes.Buffer
	for _, ca := range cas {
		b.Write(ca.CertPEM)
	}
	return b.Bytes()
}

// WriteCerts writes kp (tls.crt, tls.key) and the CA (ca.crt) into dir with
// WriteAtomic, as the kubelet updates a mounted Secret: writing into a
// directory that already holds certificates is a rotation, seen by a
// watcher of dir/tls.crt as one atomic change.
func WriteCerts(dir string, ca *CA, kp *KeyPair) error {
	return WriteAtomic(dir, map[string][]byte{
		CertFile: kp.CertPEM,
		KeyFile:  kp.KeyPEM,
		CAFile:   ca.CertPEM,
	})
}

// GenerateCerts creates a CA and a serving certificate for DefaultHosts,
// and writes them into dir with WriteCerts.
func GenerateCerts(dir, commonName string) (*CA, *KeyPair, error) {
	ca, err := NewCA(commonName)
	if err != nil {
		return nil, nil, err
	}
	kp, err := ca.NewServingCert()
	if err != nil {
		return nil, nil, err
	}
	if err := WriteCerts(dir, ca, kp); err != nil {
		return nil, nil, err
	}
	return ca, kp, nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never 0
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
