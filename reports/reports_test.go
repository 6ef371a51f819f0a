package reports_test

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/reports"
)

func TestBuild(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	obj := func(ns, kind, name string) corev1.ObjectReference {
		return corev1.ObjectReference{APIVersion: "v1", Kind: kind, Namespace: ns, Name: name}
	}
	rs := []reports.Result{
		{Policy: "b", State: engine.StateFail, Message: "no", Object: obj("shop", "Pod", "web"), Time: now},
		{Policy: "a", State: engine.StatePass, Object: obj("shop", "Pod", "web"), Time: now},
		{Policy: "a", State: engine.StateWarn, Object: obj("", "Namespace", "shop"), Time: now},
	}
	ns, cluster := reports.Build(rs)
	if len(ns) != 1 || ns["shop"] == nil {
		t.Fatalf("namespaced reports: %v", ns)
	}
	r := ns["shop"]
	if r.Namespace != "shop" || r.Name != reports.ReportName || r.Kind != "Report" || r.Source != reports.Source {
		t.Errorf("report meta: %+v", r.ObjectMeta)
	}
	if r.Summary.Pass != 1 || r.Summary.Fail != 1 || len(r.Results) != 2 || r.Results[0].Policy != "a" {
		t.Errorf("report: %+v", r)
	}
	if r.Results[1].Description != "no" || r.Results[1].Subjects[0].Name != "web" || r.Results[1].Timestamp.Seconds != now.Unix() {
		t.Errorf("result: %+v", r.Results[1])
	}
	if cluster == nil || cluster.Summary.Warn != 1 || cluster.Kind != "ClusterReport" || cluster.Namespace != "" {
		t.Errorf("cluster report: %+v", cluster)
	}

	// A namespace with more violations than a report may hold.
	var many []reports.Result
	for i := range reports.MaxResults + 5 {
		many = append(many, reports.Result{Policy: "p", State: engine.StateFail, Object: obj("big", "Pod", fmt.Sprintf("p%05d", i)), Time: now})
	}
	ns, cluster = reports.Build(many)
	big := ns["big"]
	if cluster != nil || big.Summary.Fail != reports.MaxResults+5 || len(big.Results) != reports.MaxResults {
		t.Fatalf("summary %+v, %d results, cluster %v", big.Summary, len(big.Results), cluster)
	}
	if got := big.Results[len(big.Results)-1].Properties[reports.PropertyTruncated]; got != "5" {
		t.Errorf("truncation property %q, want 5", got)
	}
}

func TestExceptionProperties(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	p := reports.ExceptionProperties("x", at.Add(8*24*time.Hour), at)
	if p[reports.PropertyException] != "x" || p[reports.PropertyExceptionExpires] != "2026-03-09T00:00:00Z" || p[reports.PropertyExceptionExpiresSoon] != "" {
		t.Errorf("eight days ahead: %v", p)
	}
	if p := reports.ExceptionProperties("x", at.Add(7*24*time.Hour), at); p[reports.PropertyExceptionExpiresSoon] != "true" {
		t.Errorf("seven days ahead: %v", p)
	}
	if p := reports.ExceptionProperties("x", time.Time{}, at); len(p) != 1 {
		t.Errorf("never expires: %v", p)
	}
}
