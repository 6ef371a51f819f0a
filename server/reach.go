package server

// What answers on the network, and to whom: the metrics server's
// authentication, and the webhook's verification of the API server's
// client certificate.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// metricsOptions returns the metrics server's options: /metrics and status
// (at StatusPath) on MetricsBindAddress, behind the API server's
// authentication and authorization unless InsecureMetrics. The filter
// wraps the extra handlers too, so /status is guarded like /metrics.
func (o *Options) metricsOptions(status http.Handler) metricsserver.Options {
	m := metricsserver.Options{
		BindAddress:   o.MetricsBindAddress,
		ExtraHandlers: map[string]http.Handler{StatusPath: status},
	}
	if !o.InsecureMetrics {
		m.SecureServing = true
		m.FilterProvider = filters.WithAuthenticationAndAuthorization
		// HTTP/2 off, as for the webhook (Options.EnableHTTP2).
		if !o.EnableHTTP2 {
			m.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
		}
	}
	return m
}

// RequireClientCert returns a TLS option that refuses, at the handshake,
// any client without a certificate signed by a CA of the PEM bundle file:
// the webhook then answers the API server (configured to present such a
// certificate) and nobody else. It fails when the file holds no
// certificate, so that a wrong path never silently means "anyone".
func RequireClientCert(caFile string) (func(*tls.Config), error) {
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, errors.New("client CA " + caFile + ": no PEM certificate in it")
	}
	return func(c *tls.Config) {
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}, nil
}
