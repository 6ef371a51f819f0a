package server

import (
	"net/http"
	"testing"
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
