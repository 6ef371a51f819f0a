package controllers

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

func scanSnapshot(t *testing.T, docs string) *engine.Snapshot {
	t.Helper()
	snap, err := engine.Compile([]engine.File{{Name: "p.yaml", Data: []byte(docs)}}, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

const scanPolicies = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: cm}
spec:
  match: {resources: [configmaps, apps/deployments, pods/status], operations: [CREATE]}
  action: deny
  with: {message: no}
  enforcement: Audit
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: delete-only}
spec:
  match: {resources: [secrets], operations: [DELETE]}
  action: deny
  with: {message: no}
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: mutating}
spec:
  match: {resources: [services], operations: [CREATE]}
  action: injectEnvIndex
  with: {name: INDEX}
`

func TestScanResources(t *testing.T) {
	snap := scanSnapshot(t, scanPolicies)
	got := ScanResources(snap)
	// Validating CREATE policies only, no subresource.
	want := []engine.ResourceRule{{Group: "", Resource: "configmaps"}, {Group: "apps", Resource: "deployments"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ScanResources = %+v, want %+v", got, want)
	}
	access := ScanAccess(got)
	if len(access) != 3 || access[1].APIGroups[0] != "" || access[1].Resources[0] != "configmaps" || access[2].APIGroups[0] != "apps" {
		t.Errorf("ScanAccess = %+v", access)
	}
}

func TestRecordAdmission(t *testing.T) {
	snap := scanSnapshot(t, scanPolicies)
	now := time.Unix(1_800_000_000, 0)
	b := NewBackgroundScanner(ScanOptions{Interval: time.Minute, Now: func() time.Time { return now }}, nil, nil)
	cm := func(uid string) runtime.RawExtension {
		raw, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "c", "namespace": "ns", "uid": uid}})
		return runtime.RawExtension{Raw: raw}
	}
	audit := &engine.Decision{Allowed: true, Results: []engine.PolicyResult{{Policy: "cm", State: engine.StateFail, Enforcement: engine.Audit, Reason: "no"}}}
	update := &admissionv1.AdmissionRequest{Operation: admissionv1.Update, Namespace: "ns", Name: "c", Object: cm("u1"), OldObject: cm("u1")}

	dry := update.DeepCopy()
	dry.DryRun = ptr.To(true)
	b.RecordAdmission(dry, audit)
	if n := len(b.currentAudits(snap, now)); n != 0 {
		t.Fatalf("a dry run was kept: %d results", n)
	}
	b.RecordAdmission(update, &engine.Decision{Allowed: true, Results: []engine.PolicyResult{{Policy: "cm", State: engine.StatePass}}})
	if n := len(b.currentAudits(snap, now)); n != 0 {
		t.Fatalf("a pass was kept: %d results", n)
	}
	b.RecordAdmission(update, audit)
	rs := b.currentAudits(snap, now)
	if len(rs) != 1 || rs[0].Object.UID != "u1" || rs[0].Object.Namespace != "ns" || rs[0].Properties["enforcement"] != "Audit" {
		t.Fatalf("kept %+v, want the Audit result of u1", rs)
	}
	// Deleting the object forgets it.
	b.RecordAdmission(&admissionv1.AdmissionRequest{Operation: admissionv1.Delete, Namespace: "ns", Name: "c", OldObject: cm("u1")}, &engine.Decision{Allowed: true})
	if n := len(b.currentAudits(snap, now)); n != 0 {
		t.Fatalf("a deleted object's result was kept: %d", n)
	}
	// So does time, and the policy's removal.
	b.RecordAdmission(update, audit)
	if n := len(b.currentAudits(snap, now.Add(3*time.Minute))); n != 0 {
		t.Fatalf("a result older than two intervals was kept: %d", n)
	}
	b.RecordAdmission(update, audit)
	if n := len(b.currentAudits(scanSnapshot(t, strings.SplitN(scanPolicies, "---\n", 2)[1]), now)); n != 0 {
		t.Fatalf("a removed policy's result was kept: %d", n)
	}
}

func TestSameReport(t *testing.T) {
	a := map[string]any{"source": "celadon", "summary": map[string]any{"fail": int64(1)}, "results": []any{map[string]any{"policy": "p", "timestamp": map[string]any{"seconds": int64(1)}}}}
	b := map[string]any{"source": "celadon", "summary": map[string]any{"fail": int64(1)}, "results": []any{map[string]any{"policy": "p", "timestamp": map[string]any{"seconds": int64(2)}}}}
	if !sameReport(a, b) {
		t.Error("reports differing in timestamps only are not the same")
	}
	b["results"] = []any{map[string]any{"policy": "q"}}
	if sameReport(a, b) {
		t.Error("reports with different results are the same")
	}
	if _, ok := a["results"].([]any)[0].(map[string]any)["timestamp"]; !ok {
		t.Error("sameReport changed its argument")
	}
}
