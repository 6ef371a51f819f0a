package server

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"celadon.io/celadon/builtins"
)

const createSecretPolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: pull-secret
spec:
  match:
    resources: [namespaces]
  action: createSecret
  with:
    name: regcred
    from: {name: regcred}
`

// TestElectForControllers: a served set that uses a builtin with a
// controller (createSecret) turns leader election on, so that one replica
// runs it, unless leader election was decided.
func TestElectForControllers(t *testing.T) {
	withController := map[string]string{"p.yaml": createSecretPolicy}
	cases := []struct {
		name  string
		files map[string]string
		elect bool
		want  bool
	}{
		{"a policy whose builtin has a controller turns leader election on", withController, true, true},
		{"unless leader election was decided", withController, false, false},
		{"no such policy: off", map[string]string{"p.yaml": policy("deny-all", "  match: {resources: [pods]}\n  action: deny\n  with: {message: no}\n")}, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t, tc.files, func(o *Options) {
				o.Registry = builtins.Registry()
				o.ElectForControllers = tc.elect
				o.Namespace = "celadon"
			})
			if got := s.Options().LeaderElection; got != tc.want {
				t.Errorf("LeaderElection = %v, want %v", got, tc.want)
			}
			if tc.want && s.Options().LeaderElectionNamespace != "celadon" {
				t.Errorf("LeaderElectionNamespace = %q, want Celadon's namespace", s.Options().LeaderElectionNamespace)
			}
		})
	}
	// No namespace for the Lease: a clear error naming the builtin rather
	// than a server that fails later.
	_, err := NewServer(Options{PoliciesDir: writePolicies(t, withController), Registry: builtins.Registry(), Namespaces: staticNamespaces{},
		MetricsRegisterer: prometheus.NewRegistry(), ElectForControllers: true})
	if err == nil || !strings.Contains(err.Error(), "--leader-election-namespace") || !strings.Contains(err.Error(), "createSecret") {
		t.Errorf("NewServer without a namespace: %v, want an error naming createSecret and --leader-election-namespace", err)
	}
}
