package server

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"celadon.io/celadon/engine"
)

// policiesWithSeries returns the policies that have a series in any of the
// per-policy metrics.
func policiesWithSeries(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	perPolicy := map[string]bool{MetricPolicyEvals: true, MetricPolicyErrors: true, MetricPolicyPanics: true, MetricPolicyDuration: true}
	seen := map[string]bool{}
	for _, f := range families {
		if !perPolicy[f.GetName()] {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "policy" {
					seen[f.GetName()+"/"+l.GetValue()] = true
				}
			}
		}
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestPolicySeriesAreMadeOnFirstEvaluation: of 100 policies loaded, only the
// one evaluated has series; once a reload drops it, none remain, even when a
// request still on the old set records a result after the reload.
func TestPolicySeriesAreMadeOnFirstEvaluation(t *testing.T) {
	var others strings.Builder
	for i := range 99 {
		fmt.Fprintf(&others, "%s---\n", policy(fmt.Sprintf("cm-%d", i), "  match: {resources: [configmaps]}\n  action: violate\n  with: {message: x}\n"))
	}
	s, reg := newTestServer(t, map[string]string{"p.yaml": others.String() + handlerPolicies["20-deny.yaml"]})
	if got := policiesWithSeries(t, reg); len(got) != 0 {
		t.Fatalf("%d series before any evaluation, e.g. %s", len(got), got[0])
	}
	denialOf(t, s, named("bad"))
	want := []string{
		MetricPolicyDuration + "/no-bad-pods",
		MetricPolicyErrors + "/no-bad-pods",
		MetricPolicyEvals + "/no-bad-pods",
		MetricPolicyPanics + "/no-bad-pods",
	}
	sort.Strings(want)
	if got := policiesWithSeries(t, reg); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("series after evaluating no-bad-pods: %v, want %v", got, want)
	}

	old := s.set.Load()
	if err := writeFile(filepath.Join(s.opts.PoliciesDir, "p.yaml"), strings.TrimSuffix(others.String(), "---\n")); err != nil {
		t.Fatal(err)
	}
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("Reload() = %v, %v", changed, err)
	}
	if got := policiesWithSeries(t, reg); len(got) != 0 {
		t.Errorf("series after the reload dropped no-bad-pods: %v", got)
	}
	s.metrics.observeResults(old, []engine.PolicyResult{{Policy: "no-bad-pods", State: engine.StateFail}}, time.Now())
	if got := policiesWithSeries(t, reg); len(got) != 0 {
		t.Errorf("a request on the old set brought back series: %v", got)
	}
}
