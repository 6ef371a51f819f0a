package controllers

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

var testCertParams = certParams{
	Hosts:        []string{"celadon.celadon.svc", "celadon.celadon.svc.cluster.local", "127.0.0.1"},
	CAName:       "test CA",
	CAValidity:   300 * 24 * time.Hour,
	CertValidity: 30 * 24 * time.Hour,
}

// mustRenew runs renewCerts and fails unless it wrote new data.
func mustRenew(t *testing.T, data map[string][]byte, p certParams, now time.Time) (map[string][]byte, []string) {
	t.Helper()
	out, reasons, err := renewCerts(data, p, now)
	if err != nil {
		t.Fatal(err)
	}
	if out == nil {
		t.Fatalf("renewCerts at %s: nothing renewed, want new data", now.Format(time.RFC3339))
	}
	return out, reasons
}

// mustKeep runs renewCerts and fails unless it left data alone.
func mustKeep(t *testing.T, data map[string][]byte, p certParams, now time.Time) {
	t.Helper()
	out, reasons, err := renewCerts(data, p, now)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		t.Fatalf("renewCerts at %s renewed (%v), want nothing due", now.Format(time.RFC3339), reasons)
	}
}

// checkServing parses the Secret data as the webhook server and the API
// server would: tls.crt with tls.key as a key pair, verified against
// ca.crt for every host at now. It returns the serving certificate.
func checkServing(t *testing.T, data map[string][]byte, hosts []string, now time.Time) *x509.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(data[corev1.TLSCertKey], data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatalf("tls.crt and tls.key: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data[CABundleName]) {
		t.Fatal("ca.crt holds no certificate")
	}
	for _, h := range hosts {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: roots, CurrentTime: now}); err != nil {
			t.Errorf("the serving certificate does not verify for %s against ca.crt: %v", h, err)
		}
	}
	return leaf
}

func bundleOf(t *testing.T, data map[string][]byte) []*x509.Certificate {
	t.Helper()
	certs, err := parseCerts(data[CABundleName])
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func TestRenewCertsFirstAndSteady(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	data, reasons := mustRenew(t, nil, testCertParams, now)
	if len(reasons) != 2 || !strings.HasPrefix(reasons[0], "new CA: no certificates yet") || !strings.HasPrefix(reasons[1], "new serving certificate") {
		t.Errorf("reasons %q", reasons)
	}
	for _, k := range []string{"tls.crt", "tls.key", "ca.crt", "ca.key"} {
		if len(data[k]) == 0 {
			t.Errorf("no %s", k)
		}
	}
	leaf := checkServing(t, data, testCertParams.Hosts, now)
	if got, want := leaf.DNSNames, testCertParams.Hosts[:2]; !slices.Equal(got, want) {
		t.Errorf("DNS names %v, want %v", got, want)
	}
	if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "127.0.0.1" {
		t.Errorf("IP addresses %v, want 127.0.0.1", leaf.IPAddresses)
	}
	if leaf.IsCA || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("serving certificate: IsCA %v, ExtKeyUsage %v; want a server certificate", leaf.IsCA, leaf.ExtKeyUsage)
	}
	if got := leaf.NotAfter.Sub(now); got != testCertParams.CertValidity {
		t.Errorf("serving certificate valid for %v from now, want %v", got, testCertParams.CertValidity)
	}
	ca := bundleOf(t, data)
	if len(ca) != 1 || !ca[0].IsCA || ca[0].NotAfter.Sub(now) != testCertParams.CAValidity {
		t.Errorf("ca.crt: %d certificates, want one CA valid for %v", len(ca), testCertParams.CAValidity)
	}

	// Nothing is due until two thirds of the serving lifetime (which
	// starts an hour back, for clock skew) have passed.
	renewAt := leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 3)
	mustKeep(t, data, testCertParams, now)
	mustKeep(t, data, testCertParams, renewAt.Add(-time.Second))
	mustRenew(t, data, testCertParams, renewAt)
}

func TestRenewCertsKeepsTheCA(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	data, _ := mustRenew(t, nil, testCertParams, now)
	old := checkServing(t, data, testCertParams.Hosts, now)

	later := now.Add(25 * 24 * time.Hour) // 5 days left of 30: due
	renewed, reasons := mustRenew(t, data, testCertParams, later)
	if len(reasons) != 1 || !strings.Contains(reasons[0], "new serving certificate: the current one expires") {
		t.Errorf("reasons %q, want only a serving renewal", reasons)
	}
	leaf := checkServing(t, renewed, testCertParams.Hosts, later)
	if leaf.Equal(old) || bytes.Equal(renewed["tls.key"], data["tls.key"]) {
		t.Error("the serving certificate or its key was not replaced")
	}
	if !bytes.Equal(renewed["ca.crt"], data["ca.crt"]) || !bytes.Equal(renewed["ca.key"], data["ca.key"]) {
		t.Error("the CA changed with a serving renewal; want it kept")
	}
	mustKeep(t, renewed, testCertParams, later)
}

func TestRenewCertsReissues(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	data, _ := mustRenew(t, nil, testCertParams, now)
	other, _ := mustRenew(t, nil, testCertParams, now)
	for _, tc := range []struct {
		name   string
		edit   func(map[string][]byte)
		params certParams
		reason string
		newCA  bool
		// after is how long after the data was made renewCerts runs.
		after time.Duration
	}{
		{name: "a new host", params: withHosts(testCertParams, "celadon.other.svc"), reason: "not valid for celadon.other.svc"},
		{name: "a key of another certificate", edit: func(d map[string][]byte) { d["tls.key"] = other["tls.key"] }, reason: "tls.key does not match tls.crt"},
		{name: "a certificate of another CA", edit: func(d map[string][]byte) { d["tls.crt"], d["tls.key"] = other["tls.crt"], other["tls.key"] }, reason: "does not verify against ca.crt"},
		{name: "no serving certificate", edit: func(d map[string][]byte) { delete(d, "tls.crt") }, reason: "none yet"},
		{name: "garbage", edit: func(d map[string][]byte) {
			d["tls.crt"] = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		}, reason: "none yet"},
		{name: "a renew-before beyond what is left", params: withRenewBefore(testCertParams, 29*24*time.Hour), after: 2 * 24 * time.Hour, reason: "the current one expires"},
		{name: "no CA key", edit: func(d map[string][]byte) { delete(d, "ca.key") }, reason: "new CA: ca.key: no PEM key", newCA: true},
		{name: "a CA key of another CA", edit: func(d map[string][]byte) { d["ca.key"] = other["ca.key"] }, reason: "new CA: no valid CA certificate in ca.crt for ca.key", newCA: true},
		{name: "no ca.crt", edit: func(d map[string][]byte) { delete(d, "ca.crt") }, reason: "new CA: ca.crt: no PEM certificate", newCA: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := maps.Clone(data)
			if tc.edit != nil {
				tc.edit(d)
			}
			p := testCertParams
			if tc.params.Hosts != nil {
				p = tc.params
			}
			at := now.Add(tc.after)
			if tc.after > 0 {
				mustKeep(t, d, p, now)
			}
			out, reasons := mustRenew(t, d, p, at)
			if !strings.Contains(strings.Join(reasons, "; "), tc.reason) {
				t.Errorf("reasons %q, want one saying %q", reasons, tc.reason)
			}
			checkServing(t, out, p.Hosts, at)
			if sameCA := bytes.Equal(out["ca.key"], data["ca.key"]); sameCA == tc.newCA {
				t.Errorf("CA kept: %v, want %v", sameCA, !tc.newCA)
			}
			mustKeep(t, out, p, at)
		})
	}
}

// TestRenewCertsCARotation follows a CA through its renewal: the new CA
// is trusted next to the old one first, signs from the next serving
// renewal, and the old one is dropped once expired. At no point does the
// served certificate stop verifying against the bundle written with it.
func TestRenewCertsCARotation(t *testing.T) {
	p := testCertParams
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	data, _ := mustRenew(t, nil, p, start)
	firstCA := bundleOf(t, data)[0]

	// Walk day by day past the first CA's expiry, renewing what is due.
	var staged, signedByNew, dropped bool
	for now := start; now.Before(firstCA.NotAfter.Add(60 * 24 * time.Hour)); now = now.Add(24 * time.Hour) {
		out, reasons, err := renewCerts(data, p, now)
		if err != nil {
			t.Fatal(err)
		}
		if out == nil {
			continue
		}
		leaf := checkServing(t, out, p.Hosts, now)
		bundle := bundleOf(t, out)
		joined := strings.Join(reasons, "; ")
		switch {
		case strings.Contains(joined, "new CA, trusted next to the current one"):
			if staged {
				t.Fatalf("%s: a second CA staged before the first CA expired: %q", now.Format(time.DateOnly), reasons)
			}
			staged = true
			if len(bundle) != 2 || !bundle[1].Equal(firstCA) {
				t.Fatalf("%s: staged bundle of %d, want the new CA then the old", now.Format(time.DateOnly), len(bundle))
			}
			if err := leaf.CheckSignatureFrom(firstCA); err != nil {
				t.Errorf("%s: the serving certificate is not the old CA's when the new one is staged: %v", now.Format(time.DateOnly), err)
			}
		case staged && !signedByNew && strings.Contains(joined, "new serving certificate"):
			if err := leaf.CheckSignatureFrom(bundle[0]); err != nil || bundle[0].Equal(firstCA) {
				t.Fatalf("%s: the first renewal after staging is not signed by the new CA", now.Format(time.DateOnly))
			}
			signedByNew = true
		case strings.Contains(joined, "expired CA certificates dropped"):
			dropped = true
			if len(bundle) != 1 || bundle[0].Equal(firstCA) {
				t.Errorf("%s: after dropping, bundle of %d", now.Format(time.DateOnly), len(bundle))
			}
		}
		data = out
	}
	if !staged || !signedByNew || !dropped {
		t.Errorf("staged %v, signed by the new CA %v, old CA dropped %v; want all", staged, signedByNew, dropped)
	}
}

func withHosts(p certParams, hosts ...string) certParams {
	p.Hosts = append(append([]string(nil), p.Hosts...), hosts...)
	return p
}

func withRenewBefore(p certParams, d time.Duration) certParams {
	p.RenewBefore = d
	return p
}
