package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"

	"celadon.io/celadon/engine"
)

// configMap is a directory laid out as the kubelet lays out a mounted
// ConfigMap:
//
//	..2026_01_01_00_00_00.001/policy.yaml
//	..data -> ..2026_01_01_00_00_00.001
//	policy.yaml -> ..data/policy.yaml
//
// and updated as the kubelet updates it: new content goes into a new
// timestamped directory, a "..data_tmp" symlink to it is renamed over
// "..data" in one atomic step, and the old directory is removed.
type configMap struct {
	t   *testing.T
	dir string
	n   int
}

func newConfigMap(t *testing.T, files map[string]string) *configMap {
	c := &configMap{t: t, dir: t.TempDir()}
	c.update(files)
	return c
}

func (c *configMap) update(files map[string]string) {
	t := c.t
	t.Helper()
	c.n++
	ts := fmt.Sprintf("..2026_01_01_00_00_00.%03d", c.n)
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(c.dir, ts, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(c.dir, "..data")
	old, _ := os.Readlink(data)
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, data); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(c.dir, name)
		if _, err := os.Lstat(link); err != nil {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, keep := files[e.Name()]; !keep && !strings.HasPrefix(e.Name(), ".") {
			_ = os.Remove(filepath.Join(c.dir, e.Name()))
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(c.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func denyAll(message string) map[string]string {
	return map[string]string{"policy.yaml": policy("deny-all", "  match: {resources: [pods]}\n  action: violate\n  with: {message: "+message+"}\n")}
}

// brokenPolicy has a CEL syntax error on line 9.
const brokenPolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: deny-all
spec:
  match:
    resources: [pods]
    conditions:
    - expression: "object.metadata.name =="
  action: violate
  with: {message: broken}
`

// newReloadServer serves the ConfigMap directory and, unless interval is
// 0, runs the reloader until the test ends.
func newReloadServer(t *testing.T, cm *configMap, interval time.Duration, watch bool) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := NewServer(Options{
		PoliciesDir:       cm.dir,
		Registry:          testRegistry(),
		Namespaces:        staticNamespaces{},
		MetricsRegisterer: reg,
		Logger:            testr.New(t),
		ReloadInterval:    interval,
	})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	if interval == 0 {
		return s, reg
	}
	s.noWatch = !watch
	started := make(chan struct{})
	s.onWatch = func() { close(started) }
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.watch(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	<-started
	return s, reg
}

// denialOf returns the denial message /validate gives a pod; "" if allowed.
func denialOf(t *testing.T, s *Server, mod ...func(*admissionv1.AdmissionRequest)) string {
	t.Helper()
	r := mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "r", mod...), "application/json")).Response
	if r.Allowed {
		return ""
	}
	return r.Result.Message
}

func TestReloadFollowsConfigMapSwap(t *testing.T) {
	cm := newConfigMap(t, denyAll("one"))
	// No polling: only the directory watch can see the swap.
	s, reg := newReloadServer(t, cm, time.Hour, true)
	oldHash := s.Snapshot().Hash
	if got := denialOf(t, s); got != "one" {
		t.Fatalf("initial set: %q", got)
	}
	cm.update(denyAll("two"))
	eventually(t, "the new set to be served", func() bool { return denialOf(t, s) == "two" })
	if s.Snapshot().Hash == oldHash {
		t.Error("hash did not change")
	}
	if got := counter(t, reg, MetricReloads, map[string]string{"result": "success"}); got != 1 {
		t.Errorf("successful reloads = %v, want 1", got)
	}
	if got := counter(t, reg, MetricPolicySetInfo, map[string]string{"hash": s.Snapshot().Hash}); got != 1 {
		t.Errorf("set info for the new hash = %v, want 1", got)
	}
	if got := counter(t, reg, MetricPolicySetInfo, map[string]string{"hash": oldHash}); got != 0 {
		t.Errorf("set info for the old hash = %v, want it gone", got)
	}
	// A new key in the ConfigMap is picked up too.
	files := denyAll("two")
	files["extra.yaml"] = policy("extra", "  match: {resources: [services]}\n  action: violate\n  with: {message: x}\n")
	cm.update(files)
	eventually(t, "the added file", func() bool { return len(s.Snapshot().Policies) == 2 })
}

func TestReloadPollsWhenWatchesAreLost(t *testing.T) {
	cm := newConfigMap(t, denyAll("one"))
	s, _ := newReloadServer(t, cm, 50*time.Millisecond, false)
	cm.update(denyAll("two"))
	eventually(t, "the poll to load the new set", func() bool { return denialOf(t, s) == "two" })
}

func TestBrokenEditKeepsTheLastGoodSet(t *testing.T) {
	cm := newConfigMap(t, denyAll("one"))
	s, reg := newReloadServer(t, cm, time.Hour, true)
	good := s.Snapshot().Hash

	cm.update(map[string]string{"policy.yaml": brokenPolicy})
	eventually(t, "the reload error", func() bool { return s.Status().LastReloadError != nil })
	if s.Snapshot().Hash != good {
		t.Error("a broken set replaced the good one")
	}
	if got := denialOf(t, s); got != "one" {
		t.Errorf("served %q, want the last good set's denial", got)
	}
	if got := counter(t, reg, MetricReloads, map[string]string{"result": "failure"}); got != 1 {
		t.Errorf("failed reloads = %v, want 1", got)
	}
	if got := counter(t, reg, MetricLastReloadFailed, nil); got != 1 {
		t.Errorf("%s = %v, want 1", MetricLastReloadFailed, got)
	}

	// /status shows the error, located.
	w := httptest.NewRecorder()
	s.StatusHandler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/status", nil))
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("/status: HTTP %d %s", w.Code, w.Header())
	}
	var st Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("/status:\n%s", w.Body)
	if st.Hash != good || len(st.Policies) != 1 || st.LastReloadError == nil || len(st.LastReloadError.Errors) != 1 {
		t.Fatalf("status = %+v", st)
	}
	e := st.LastReloadError.Errors[0]
	wantFile := filepath.Join(cm.dir, "policy.yaml")
	if e.File != wantFile || e.Line != 9 || e.Column != 43 || e.Policy != "deny-all" || !strings.Contains(e.Message, "match.conditions[0].expression") ||
		!strings.HasPrefix(e.Text, wantFile+":9:43: policy \"deny-all\": ") || strings.Contains(e.Text, "\n") {
		t.Errorf("located error = %+v", e)
	}
	if st.LastReloadError.Hash == "" || st.LastReloadError.Hash == good {
		t.Errorf("error hash %q", st.LastReloadError.Hash)
	}

	// Fixing the edit loads it and clears the error.
	cm.update(denyAll("three"))
	eventually(t, "the fixed set", func() bool { return denialOf(t, s) == "three" })
	if st := s.Status(); st.LastReloadError != nil {
		t.Errorf("error not cleared: %+v", st.LastReloadError)
	}
	if got := counter(t, reg, MetricLastReloadFailed, nil); got != 0 {
		t.Errorf("%s = %v, want 0", MetricLastReloadFailed, got)
	}
}

func TestUnchangedContentIsNotReloaded(t *testing.T) {
	cm := newConfigMap(t, denyAll("one"))
	s, reg := newReloadServer(t, cm, 0, false)
	first := s.Snapshot()
	cm.update(denyAll("one")) // a new ..data with the same content
	if changed, err := s.Reload(); changed || err != nil {
		t.Errorf("Reload() = %v, %v; want false, nil", changed, err)
	}
	if s.Snapshot() != first {
		t.Error("the snapshot was replaced")
	}

	// Broken content is reported once, however often it is re-read.
	cm.update(map[string]string{"policy.yaml": brokenPolicy})
	_, err1 := s.Reload()
	_, err2 := s.Reload()
	var re *ReloadError
	if !errors.As(err1, &re) || err1 != err2 || len(re.Errors) != 1 || re.Errors[0].Line != 9 {
		t.Errorf("Reload() errors %v / %v", err1, err2)
	}
	if got := counter(t, reg, MetricReloads, map[string]string{"result": "failure"}); got != 1 {
		t.Errorf("failed reloads = %v, want 1", got)
	}

	// Reverting to the served content clears the error without a reload.
	cm.update(denyAll("one"))
	if changed, err := s.Reload(); changed || err != nil {
		t.Errorf("Reload() after revert = %v, %v", changed, err)
	}
	if s.Status().LastReloadError != nil {
		t.Error("the error outlived the broken content")
	}
	if got := counter(t, reg, MetricReloads, map[string]string{"result": "success"}); got != 0 {
		t.Errorf("successful reloads = %v, want 0", got)
	}
	if s.Snapshot() != first {
		t.Error("the snapshot was replaced")
	}
}

func TestStartingWithBrokenPoliciesFails(t *testing.T) {
	dir := writePolicies(t, map[string]string{
		"a.yaml": brokenPolicy,
		"b.yaml": policy("unknown", "  match: {resources: [pods]}\n  action: nosuchbuiltin\n"),
	})
	_, err := NewServer(Options{PoliciesDir: dir, Registry: testRegistry(), MetricsRegisterer: prometheus.NewRegistry(), Logger: testr.New(t)})
	var le *LoadError
	var el engine.ErrorList
	if !errors.As(err, &le) || !errors.As(err, &el) || len(el) != 2 {
		t.Fatalf("NewServer error = %v, want a LoadError with 2 errors", err)
	}
	msg := err.Error()
	for _, want := range []string{"(2 errors)", filepath.Join(dir, "a.yaml") + ":9:43: ", filepath.Join(dir, "b.yaml") + ":7:3: ", `unknown builtin "nosuchbuiltin"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %q:\n%s", want, msg)
		}
	}
	if _, err := NewServer(Options{PoliciesDir: filepath.Join(dir, "missing"), Registry: testRegistry(), MetricsRegisterer: prometheus.NewRegistry()}); err == nil {
		t.Error("a missing policy directory is not an error")
	}
	if _, err := NewServer(Options{}); err == nil {
		t.Error("no policy directory is not an error")
	}
}

func TestInFlightRequestFinishesOnItsSnapshot(t *testing.T) {
	g := newGate(t, "swap")
	gated := func(message string) map[string]string {
		return map[string]string{"policy.yaml": policy("gated", "  match: {resources: [pods]}\n  action: gate\n  with: {gate: swap, message: "+message+"}\n")}
	}
	cm := newConfigMap(t, gated("old"))
	s, _ := newReloadServer(t, cm, 0, false)
	var wg sync.WaitGroup
	var inflight string
	wg.Go(func() { inflight = denialOf(t, s) })
	<-g.entered
	cm.update(gated("new"))
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("Reload() = %v, %v", changed, err)
	}
	close(g.release)
	wg.Wait()
	if inflight != "old" {
		t.Errorf("in-flight request answered %q, want the set it started on (old)", inflight)
	}
	if got := denialOf(t, s); got != "new" {
		t.Errorf("next request answered %q, want new", got)
	}
}

func TestStatusListsThePolicies(t *testing.T) {
	s, _ := newTestServer(t, map[string]string{
		"a.yaml": handlerPolicies["10-label.yaml"],
		"b.yaml": policy("protect", `  match: {resources: [apps/deployments, services], operations: [DELETE]}
  action: violate
  with: {message: protected}
  enforcement: Warn
`),
	})
	st := s.Status()
	if len(st.Policies) != 2 || st.Hash != s.Snapshot().Hash || st.LastReload.IsZero() || st.LastReloadError != nil {
		t.Fatalf("status = %+v", st)
	}
	p := st.Policies[1]
	want := PolicyStatus{
		Name: "protect", Action: "violate", Type: "validating",
		Resources: []string{"apps/deployments", "services"}, Operations: []string{"DELETE"},
		FailurePolicy: "Fail", Enforcement: "Warn",
		File: filepath.Join(s.Options().PoliciesDir, "b.yaml"), Line: 1,
		Location: filepath.Join(s.Options().PoliciesDir, "b.yaml") + ":1",
	}
	if fmt.Sprint(p) != fmt.Sprint(want) {
		t.Errorf("policy status\n got %+v\nwant %+v", p, want)
	}
	if m := st.Policies[0]; m.Type != "mutating" || m.FailurePolicy != "Ignore" || strings.Join(m.Operations, ",") != "CREATE" {
		t.Errorf("mutating policy status %+v", m)
	}
	w := httptest.NewRecorder()
	s.StatusHandler().ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/status", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: HTTP %d", w.Code)
	}
	w = httptest.NewRecorder()
	s.StatusHandler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/status", nil))
	if !strings.Contains(w.Body.String(), `"lastReloadError": null`) {
		t.Errorf("/status without error:\n%s", w.Body)
	}
}

// TestEmptyPolicySetIsRefused checks the one rule for a policy directory
// that holds no policy (a ConfigMap emptied of its keys, or of all but
// comments): refused at start, refused at a reload (the last good set
// stays, the refusal counted and shown at /status), and served only with
// AllowEmpty.
func TestEmptyPolicySetIsRefused(t *testing.T) {
	cm := newConfigMap(t, denyAll("one"))
	s, reg := newReloadServer(t, cm, 0, false)
	good := s.Snapshot().Hash

	for i, files := range []map[string]string{
		{}, // no keys
		{"policy.yaml": "# deny-all, switched off for now\n# apiVersion: celadon.io/v1alpha1\n"},
	} {
		cm.update(files)
		changed, err := s.Reload()
		if changed || err == nil || !strings.Contains(err.Error(), "no policies") {
			t.Errorf("reload to %v: %v, %v; want the empty set refused", files, changed, err)
		}
		if s.Snapshot().Hash != good || denialOf(t, s) != "one" {
			t.Errorf("reload to %v replaced the served set", files)
		}
		if got := counter(t, reg, MetricReloads, map[string]string{"result": "failure"}); got != float64(i+1) {
			t.Errorf("failed reloads = %v, want %d", got, i+1)
		}
		if got := counter(t, reg, MetricReloads, map[string]string{"result": "success"}); got != 0 {
			t.Errorf("successful reloads = %v, want 0", got)
		}
		if got := counter(t, reg, MetricLastReloadFailed, nil); got != 1 {
			t.Errorf("%s = %v, want 1", MetricLastReloadFailed, got)
		}
		re := s.Status().LastReloadError
		if re == nil || len(re.Errors) != 1 || !strings.Contains(re.Errors[0].Text, "no policies") || !strings.Contains(re.Errors[0].Text, "--allow-empty-policies") {
			t.Fatalf("/status lastReloadError = %+v; want the refusal, saying how to allow it", re)
		}
		t.Logf("lastReloadError: %s", re.Errors[0].Text)
	}

	// At start, the same content is refused, unless allowed.
	_, err := NewServer(Options{PoliciesDir: cm.dir, Registry: testRegistry(), MetricsRegisterer: prometheus.NewRegistry(), Logger: testr.New(t)})
	var le *LoadError
	if !errors.As(err, &le) || !errors.Is(err, engine.ErrNoPolicies) || !strings.Contains(err.Error(), "--allow-empty-policies") {
		t.Errorf("NewServer on an empty set: %v; want a LoadError of ErrNoPolicies", err)
	}
	allowing, err := NewServer(Options{PoliciesDir: cm.dir, Registry: testRegistry(), MetricsRegisterer: prometheus.NewRegistry(), Logger: testr.New(t), AllowEmpty: true})
	if err != nil || len(allowing.Snapshot().Policies) != 0 {
		t.Fatalf("NewServer on an empty set with AllowEmpty: %v", err)
	}

	// With AllowEmpty, a reload to an empty set is served.
	cm.update(denyAll("two"))
	reg2 := prometheus.NewRegistry()
	s2, err := NewServer(Options{PoliciesDir: cm.dir, Registry: testRegistry(), Namespaces: staticNamespaces{}, MetricsRegisterer: reg2, Logger: testr.New(t), AllowEmpty: true})
	if err != nil {
		t.Fatal(err)
	}
	cm.update(map[string]string{})
	if changed, err := s2.Reload(); !changed || err != nil || len(s2.Snapshot().Policies) != 0 || denialOf(t, s2) != "" {
		t.Errorf("reload to an empty set with AllowEmpty: %v, %v", changed, err)
	}
}
