package server

// What answers on the network, and to whom: the metrics server's
// authentication.

import (
	"crypto/tls"
	"net/http"

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
