package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
)

func exception(name, body string) string {
	return fmt.Sprintf("apiVersion: celadon.io/v1alpha1\nkind: PolicyException\nmetadata:\n  name: %s\nspec:\n%s", name, body)
}

// teamException excepts deny-all in team-a until expires.
func teamException(name string, expires time.Time) string {
	return exception(name, "  policies: [deny-all]\n  match:\n    namespaces: [team-a]\n  reason: legacy images\n  owner: team-a@example.com\n  expires: "+expires.UTC().Format(time.RFC3339)+"\n")
}

// newTeamConfigMap makes a ConfigMap-style directory mounted at
// root/namespace, as a team's exceptions ConfigMap is.
func newTeamConfigMap(t *testing.T, root, namespace string, files map[string]string) *configMap {
	t.Helper()
	c := &configMap{t: t, dir: filepath.Join(root, namespace)}
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.update(files)
	return c
}

// newExceptionsServer serves the policies of cm and the exceptions of
// exceptionsDir, with the reloader watching (no polling) until the test
// ends.
func newExceptionsServer(t *testing.T, policies *configMap, exceptionsDir string) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := NewServer(Options{
		PoliciesDir:       policies.dir,
		ExceptionsDir:     exceptionsDir,
		Registry:          testRegistry(),
		Namespaces:        staticNamespaces{"team-a": nil, "team-b": nil, "default": nil},
		MetricsRegisterer: reg,
		Logger:            testr.New(t),
		ReloadInterval:    time.Hour,
	})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	started := make(chan struct{})
	s.onWatch = func() { close(started) }
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.watch(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	<-started
	return s, reg
}

func inNamespace(ns string) func(*admissionv1.AdmissionRequest) {
	return func(r *admissionv1.AdmissionRequest) { r.Namespace = ns }
}

// validate posts a pod in ns to /validate.
func validate(t *testing.T, s *Server, ns string) *admissionv1.AdmissionResponse {
	t.Helper()
	return mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "r", inNamespace(ns)), "application/json")).Response
}

// TestExceptionsDirectory follows a team's exceptions ConfigMap, mounted
// in the subdirectory of its namespace, through an edit, a broken edit and
// a fix, the policies served throughout.
func TestExceptionsDirectory(t *testing.T) {
	policies := newConfigMap(t, denyAll("no"))
	root := t.TempDir()
	expires := time.Now().Add(3*24*time.Hour + time.Hour)
	team := newTeamConfigMap(t, root, "team-a", map[string]string{"exceptions.yaml": teamException("legacy", expires)})
	s, reg := newExceptionsServer(t, policies, root)

	r := validate(t, s, "team-a")
	if !r.Allowed || len(r.Warnings) != 1 || !strings.HasPrefix(r.Warnings[0], `Celadon exception "legacy" (owner team-a@example.com) expires in 3 days (`) {
		t.Fatalf("team-a: allowed %v, warnings %q", r.Allowed, r.Warnings)
	}
	if got := denialOf(t, s, inNamespace("team-b")); got != "no" {
		t.Fatalf("team-b: %q, want denied", got)
	}
	if got := counter(t, reg, MetricExceptionsApplied, map[string]string{"exception": "legacy", "policy": "deny-all"}); got != 1 {
		t.Errorf("applied = %v, want 1", got)
	}
	if got := counter(t, reg, MetricExceptionExpiry, map[string]string{"exception": "legacy", "origin": "exceptions"}); got != float64(expires.Unix()) {
		t.Errorf("expiry gauge = %v, want %d", got, expires.Unix())
	}
	st := s.Status()
	if len(st.Exceptions) != 1 || st.Exceptions[0].Origin != "exceptions" || st.Exceptions[0].Expired || st.ExceptionsHash == "" ||
		st.Exceptions[0].File != filepath.Join(root, "team-a", "exceptions.yaml") || st.LastExceptionsReloadError != nil {
		t.Fatalf("status: %+v", st)
	}

	// A broken edit keeps the last good exceptions; the policies are
	// served all along.
	team.update(map[string]string{"exceptions.yaml": strings.Replace(teamException("legacy", expires), "[team-a]", "[team-a, team-b]", 1)})
	eventually(t, "the exceptions error", func() bool { return s.Status().LastExceptionsReloadError != nil })
	re := s.Status().LastExceptionsReloadError
	if e := re.Errors[0]; e.Exception != "legacy" || e.Policy != "" || e.Line != 8 || e.Column != 26 || !strings.Contains(e.Message, `namespace "team-b"`) {
		t.Errorf("located error: %+v", e)
	}
	if !validate(t, s, "team-a").Allowed || denialOf(t, s, inNamespace("team-b")) != "no" {
		t.Error("the last good exceptions should be served: team-a allowed, team-b denied")
	}
	if got := counter(t, reg, MetricExceptionLastFailed, nil); got != 1 {
		t.Errorf("%s = %v, want 1", MetricExceptionLastFailed, got)
	}
	policies.update(denyAll("still no"))
	eventually(t, "the policies to reload meanwhile", func() bool { return denialOf(t, s, inNamespace("team-b")) == "still no" })

	// The team removes its exception: the policy applies again.
	team.update(map[string]string{"exceptions.yaml": "# none left\n"})
	eventually(t, "the exception to go", func() bool { return denialOf(t, s, inNamespace("team-a")) == "still no" })
	if st := s.Status(); st.LastExceptionsReloadError != nil || len(st.Exceptions) != 0 {
		t.Errorf("status: %+v", st)
	}
	if got := counter(t, reg, MetricExceptionLastFailed, nil); got != 0 {
		t.Errorf("%s = %v, want 0", MetricExceptionLastFailed, got)
	}
	if got := counter(t, reg, MetricExceptionsApplied, map[string]string{"exception": "legacy", "policy": "deny-all"}); got != 0 {
		t.Errorf("the applied count of a removed exception = %v, want it gone", got)
	}
	// A new team's directory is watched as it appears.
	newTeamConfigMap(t, root, "team-b", map[string]string{"x.yaml": teamException("b", expires)})
	eventually(t, "team-b's directory", func() bool { return s.Status().LastExceptionsReloadError != nil })
	if e := s.Status().LastExceptionsReloadError.Errors[0]; !strings.Contains(e.Text, `namespace "team-a": the exceptions of `+root+`/team-b/ match in namespace "team-b" only`) {
		t.Errorf("team-b's exception for team-a: %+v", e)
	}
}

// TestBrokenExceptionsDoNotStopTheServer: exceptions that do not load at
// start are reported, and the server serves every policy.
func TestBrokenExceptionsDoNotStopTheServer(t *testing.T) {
	cases := map[string]func(t *testing.T) string{
		"a policy smuggled in": func(t *testing.T) string {
			return writePolicies(t, map[string]string{"x.yaml": policy("allow", "  match: {resources: [pods]}\n  action: violate\n")})
		},
		"a directory that is not there": func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") },
		"an exception for the whole cluster": func(t *testing.T) string {
			return writePolicies(t, map[string]string{"x.yaml": exception("all", "  policies: [deny-all]\n  match: {}\n  reason: r\n  owner: o\n  expires: "+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+"\n")})
		},
	}
	for name, dir := range cases {
		t.Run(name, func(t *testing.T) {
			s, reg := newTestServer(t, denyAll("no"), func(o *Options) { o.ExceptionsDir = dir(t) })
			if got := denialOf(t, s, inNamespace("team-a")); got != "no" {
				t.Errorf("served %q, want the policy's denial", got)
			}
			st := s.Status()
			if st.LastExceptionsReloadError == nil || len(st.Exceptions) != 0 {
				t.Fatalf("status: %+v", st)
			}
			t.Logf("reported: %s", st.LastExceptionsReloadError)
			if got := counter(t, reg, MetricExceptionReloads, map[string]string{"result": "failure"}); got != 1 {
				t.Errorf("failed exception loads = %v, want 1", got)
			}
		})
	}
}

// TestPolicyFileExceptionsAreServed: the exceptions among the policies
// are listed at /status and apply without an exceptions directory.
func TestPolicyFileExceptionsAreServed(t *testing.T) {
	files := denyAll("no")
	files["exceptions.yaml"] = exception("platform", "  policies: ['deny-*']\n  match: {namespaces: [kube-system]}\n  reason: system pods\n  owner: platform\n")
	s, _ := newTestServer(t, files)
	if !validate(t, s, "kube-system").Allowed || denialOf(t, s) != "no" {
		t.Error("kube-system should be excepted, default not")
	}
	st := s.Status()
	if len(st.Exceptions) != 1 || st.Exceptions[0].Origin != "policies" || st.Exceptions[0].Expires != "" || st.ExceptionsDir != "" {
		t.Errorf("status: %+v", st)
	}
}

// TestExceptionsDirectoryApartFromThePolicies: a careless --exceptions-dir
// equal to --policies, or holding it, or held by it, is refused at start.
func TestExceptionsDirectoryApartFromThePolicies(t *testing.T) {
	dir := writePolicies(t, denyAll("no"))
	for _, ex := range []string{dir, dir + "/", filepath.Dir(dir), filepath.Join(dir, "exceptions")} {
		_, err := NewServer(Options{PoliciesDir: dir, ExceptionsDir: ex, Registry: testRegistry(), Namespaces: staticNamespaces{}, MetricsRegisterer: prometheus.NewRegistry()})
		if err == nil || !strings.Contains(err.Error(), "must be apart") {
			t.Errorf("--exceptions-dir %s with --policies %s: %v", ex, dir, err)
		}
	}
	if _, err := NewServer(Options{PoliciesDir: dir, ExceptionsDir: dir + "-exceptions", Registry: testRegistry(), Namespaces: staticNamespaces{}, MetricsRegisterer: prometheus.NewRegistry()}); err != nil {
		t.Errorf("a sibling directory whose name starts alike: %v", err)
	}
}
