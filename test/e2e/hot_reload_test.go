package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/server"
)

// warningRecorder keeps the warnings of the API server's last answers.
type warningRecorder struct {
	mu       sync.Mutex
	warnings []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.warnings = append(w.warnings, text)
}

func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.warnings
	w.warnings = nil
	return out
}

// warningClient returns a client of the suite's API server that records
// the warnings of its responses.
func warningClient(t *testing.T) (client.Client, *warningRecorder) {
	t.Helper()
	warnings := &warningRecorder{}
	cfg := rest.CopyConfig(suite.cp.Config)
	cfg.WarningHandler = warnings
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c, warnings
}

// TestHotReload replaces the policy directory's content the way the
// kubelet updates a mounted ConfigMap (a new ..data directory swapped in by
// one rename) and checks, through the API server, that the new policy is in
// force within 5 s without a restart. Then it swaps in a policy that does
// not compile: the previous policy stays in force and /status names the
// file and line of the error. Last, an emptied ConfigMap is refused the
// same way.
func TestHotReload(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	s := suite.main
	initial, err := mainPolicies()
	if err != nil {
		t.Fatal(err)
	}
	withReload := func(testdata string) map[string][]byte {
		files := map[string][]byte{}
		for k, v := range initial {
			files[k] = v
		}
		data, err := os.ReadFile(filepath.Join("testdata", testdata))
		if err != nil {
			t.Fatal(err)
		}
		files["reload.yaml"] = data
		return files
	}
	before, err := s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Back to the initial set for the other tests.
		s.setPolicies(t, initial)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		waitFor(ctx, t, "the initial policy set to be served again", func(ctx context.Context) (bool, error) {
			st, err := s.status(ctx)
			return err == nil && st.Hash == before.Hash && st.LastReloadError == nil, nil
		})
	})

	c, warnings := warningClient(t)
	ns := newNamespace(ctx, t, "reload", map[string]string{"e2e.celadon.io/reload": "true"})
	// createPod creates a pod and returns the warnings and the error.
	createPod := func(ctx context.Context) ([]string, error) {
		warnings.take()
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "probe-"}, Spec: podSpec()}
		err := c.Create(ctx, pod)
		return warnings.take(), err
	}
	const (
		v1Warning = "e2e-reload v1: pods here are admitted with this warning"
		v2Denial  = "e2e-reload v2: pods are not allowed here"
	)

	// Version 1 (testdata/reload-v1.yaml): admitted with a warning.
	waitFor(ctx, t, "a pod admitted with the v1 warning", func(ctx context.Context) (bool, error) {
		warns, err := createPod(ctx)
		if err != nil {
			return false, err
		}
		return strings.Contains(strings.Join(warns, "\n"), v1Warning), nil
	})

	// Version 2: denied, within 5 s of the swap.
	s.setPolicies(t, withReload("reload-v2.yaml"))
	swapped := time.Now()
	var last error
	err = devenv.WaitFor(ctx, reloadTimeout, "the v2 denial after the ..data swap", func(ctx context.Context) (bool, error) {
		_, err := createPod(ctx)
		last = err
		return err != nil && strings.Contains(err.Error(), v2Denial), nil
	})
	if err != nil {
		t.Fatalf("%v; last answer: %v", err, last)
	}
	t.Logf("v2 in force %v after the swap", time.Since(swapped).Round(time.Millisecond))
	v2, err := s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v2.Hash == before.Hash || v2.LastReloadError != nil {
		t.Fatalf("/status after the v2 reload: hash %s (before %s), lastReloadError %v", v2.Hash, before.Hash, v2.LastReloadError)
	}

	// A broken edit: v2 stays in force; /status names file and line.
	broken := withReload("reload-broken.yaml")
	s.setPolicies(t, broken)
	var st *server.Status
	waitFor(ctx, t, "/status to report the broken reload", func(ctx context.Context) (bool, error) {
		var err error
		st, err = s.status(ctx)
		return err == nil && st.LastReloadError != nil, err
	})
	wantLine := lineOf(t, string(broken["reload.yaml"]), "messageExpression:")
	var found bool
	for _, e := range st.LastReloadError.Errors {
		if filepath.Base(e.File) == "reload.yaml" && e.Line == wantLine && e.Policy == "e2e-reload" {
			found = true
			if !strings.Contains(e.Text, "reload.yaml:") || !strings.Contains(e.Message, "messageExpression") {
				t.Errorf("error text %q / message %q: want file:line and the field", e.Text, e.Message)
			}
		}
	}
	if !found {
		t.Errorf("/status lastReloadError does not name reload.yaml:%d (policy e2e-reload): %+v", wantLine, st.LastReloadError.Errors)
	}
	if st.Hash != v2.Hash {
		t.Errorf("/status serves hash %s after the broken edit, want v2's %s", st.Hash, v2.Hash)
	}
	if _, err := createPod(ctx); err == nil || !strings.Contains(err.Error(), v2Denial) {
		t.Errorf("after the broken edit, want v2's denial still, got %v", err)
	}

	// An emptied ConfigMap (no keys): refused like a broken edit, not a
	// reload to no policy at all; v2 stays in force.
	s.setPolicies(t, map[string][]byte{})
	waitFor(ctx, t, "/status to report the empty set refused", func(ctx context.Context) (bool, error) {
		var err error
		st, err = s.status(ctx)
		return err == nil && st.LastReloadError != nil && st.LastReloadError.Hash != "" && strings.Contains(st.LastReloadError.Error(), "no policies"), err
	})
	t.Logf("empty ConfigMap: %s", st.LastReloadError.Error())
	if st.Hash != v2.Hash || len(st.Policies) != len(v2.Policies) {
		t.Errorf("/status serves hash %s (%d policies) after the empty edit, want v2's %s", st.Hash, len(st.Policies), v2.Hash)
	}
	if _, err := createPod(ctx); err == nil || !strings.Contains(err.Error(), v2Denial) {
		t.Errorf("after the empty edit, want v2's denial still, got %v", err)
	}
}

// lineOf returns the 1-based line of the first line of text containing
// substr.
func lineOf(t *testing.T, text, substr string) int {
	t.Helper()
	for i, line := range strings.Split(text, "\n") {
		if strings.Contains(line, substr) {
			return i + 1
		}
	}
	t.Fatalf("%q not found", substr)
	return 0
}
