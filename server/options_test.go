package server

import (
	"slices"
	"strings"
	"testing"
	"time"

	"celadon.io/celadon/controllers"
)

func TestCertHosts(t *testing.T) {
	o := Options{
		WebhookService: &controllers.ServiceRef{Namespace: "ns", Name: "svc"},
		CertDNSNames:   []string{"extra.example", "svc.ns.svc", "10.0.0.1"},
	}
	if got, want := o.certHosts(), []string{"svc.ns.svc", "svc.ns.svc.cluster.local", "extra.example", "10.0.0.1"}; !slices.Equal(got, want) {
		t.Errorf("service: %v, want %v", got, want)
	}
	o = Options{WebhookURL: "https://127.0.0.1:9443/base"}
	if got, want := o.certHosts(), []string{"127.0.0.1"}; !slices.Equal(got, want) {
		t.Errorf("URL: %v, want %v", got, want)
	}
}

func TestCheckSelfSigned(t *testing.T) {
	good := func() Options {
		o := Options{PoliciesDir: "x", SelfSignedCerts: true, CertSecretNamespace: "celadon", WebhookService: &controllers.ServiceRef{Namespace: "celadon", Name: "celadon"}}
		o.setDefaults()
		return o
	}
	if err := (func() *Options { o := good(); return &o })().checkSelfSigned(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		edit func(*Options)
		want string
	}{
		{func(o *Options) { o.CertSecretNamespace = "" }, "namespace of the certificate Secret is required"},
		{func(o *Options) { o.WebhookService = nil }, "the certificate has no name"},
		{func(o *Options) { o.CertDNSNames = []string{"https://x"} }, `certificate name "https://x"`},
		{func(o *Options) { o.CABundleFile = "/ca.pem" }, "do not set CABundleFile"},
		{func(o *Options) { o.CertValidity = time.Minute }, "want at least 1h"},
		{func(o *Options) { o.CAValidity = o.CertValidity }, "want at least twice the certificate validity"},
		{func(o *Options) { o.CertRenewBefore = o.CertValidity }, "less than the certificate validity"},
	} {
		o := good()
		tc.edit(&o)
		err := o.checkSelfSigned()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one containing %q", err, tc.want)
		}
	}
}
