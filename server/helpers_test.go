package server

import (
	"celadon.io/celadon/internal/reviewtest"

	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"celadon.io/celadon/engine"
)

// testRegistry holds test-only builtins, so these tests do not depend on
// package builtins' behaviour.
func testRegistry() *engine.Registry {
	r := engine.NewRegistry()
	r.Register(setLabelBuiltin{})
	r.Register(violateBuiltin{})
	r.Register(explodeBuiltin{})
	r.Register(gateBuiltin{})
	r.Register(probeBuiltin{})
	return r
}

// setLabelBuiltin adds metadata.labels[key]=value and warns.
type setLabelBuiltin struct{}

func (setLabelBuiltin) Name() string            { return "setLabel" }
func (setLabelBuiltin) Type() engine.ActionType { return engine.Mutating }
func (setLabelBuiltin) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args struct {
		Key   string `json:"key"`
		Value string `json:"value"`
		Warn  string `json:"warn"`
	}
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	if args.Key == "" {
		return nil, c.FieldError("key", "is required")
	}
	return engine.ActionFunc(func(ac *engine.ActionContext) (engine.Outcome, error) {
		var warnings []string
		if args.Warn != "" {
			warnings = []string{args.Warn}
		}
		labels := ac.Object().Get("metadata").Get("labels")
		if v, ok := labels.Get(args.Key).Str(); ok && v == args.Value {
			return engine.Outcome{Warnings: warnings}, nil
		}
		if !labels.IsObject() {
			return engine.Outcome{Warnings: warnings, Patch: []engine.JSONPatchOp{engine.Op("add", "/metadata/labels", map[string]any{args.Key: args.Value})}}, nil
		}
		return engine.Outcome{Warnings: warnings, Patch: []engine.JSONPatchOp{engine.Op("add", "/metadata/labels/"+engine.EscapePointer(args.Key), args.Value)}}, nil
	}), nil
}

// violateBuiltin reports with.message as a violation.
type violateBuiltin struct{}

func (violateBuiltin) Name() string            { return "violate" }
func (violateBuiltin) Type() engine.ActionType { return engine.Validating }
func (violateBuiltin) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args struct {
		Message string `json:"message"`
	}
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	return engine.ActionFunc(func(*engine.ActionContext) (engine.Outcome, error) {
		return engine.Outcome{Violation: args.Message}, nil
	}), nil
}

// explodeBuiltin panics, for real, in a validating or mutating policy.
type explodeBuiltin struct{}

func (explodeBuiltin) Name() string            { return "explode" }
func (explodeBuiltin) Type() engine.ActionType { return engine.Validating }
func (explodeBuiltin) Compile(*engine.CompileContext) (engine.Action, error) {
	return engine.ActionFunc(func(*engine.ActionContext) (engine.Outcome, error) {
		var m map[string]int
		m["boom"]++ // a nil-map panic
		return engine.Outcome{}, nil
	}), nil
}

// gates let a test hold gateBuiltin's actions until it releases them.
var gates sync.Map // name -> *gate

type gate struct {
	entered chan struct{} // receives once per action entering the gate
	release chan struct{} // closed to let every action through
}

func newGate(t *testing.T, name string) *gate {
	g := &gate{entered: make(chan struct{}, 16), release: make(chan struct{})}
	gates.Store(name, g)
	t.Cleanup(func() {
		gates.Delete(name)
		select {
		case <-g.release:
		default:
			close(g.release)
		}
	})
	return g
}

// gateBuiltin waits at the gate named with.gate, then reports with.message
// as a violation when it is not empty.
type gateBuiltin struct{}

func (gateBuiltin) Name() string            { return "gate" }
func (gateBuiltin) Type() engine.ActionType { return engine.Validating }
func (gateBuiltin) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args struct {
		Gate    string `json:"gate"`
		Message string `json:"message"`
	}
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	return engine.ActionFunc(func(ac *engine.ActionContext) (engine.Outcome, error) {
		v, ok := gates.Load(args.Gate)
		if !ok {
			return engine.Outcome{}, fmt.Errorf("no gate %q", args.Gate)
		}
		g := v.(*gate)
		g.entered <- struct{}{}
		select {
		case <-g.release:
		case <-ac.Done():
			return engine.Outcome{}, ac.Err()
		}
		return engine.Outcome{Violation: args.Message}, nil
	}), nil
}

// probeBuiltin reports what the action saw of the request as warnings:
// dryRun, the deadline left, and the namespace's labels.
type probeBuiltin struct{}

func (probeBuiltin) Name() string            { return "probe" }
func (probeBuiltin) Type() engine.ActionType { return engine.Mutating }
func (probeBuiltin) Compile(*engine.CompileContext) (engine.Action, error) {
	return engine.ActionFunc(func(ac *engine.ActionContext) (engine.Outcome, error) {
		w := []string{fmt.Sprintf("dryRun=%v", ac.DryRun)}
		if dl, ok := ac.Deadline(); ok {
			w = append(w, "deadline="+time.Until(dl).String())
		}
		if ac.Namespace != nil {
			w = append(w, fmt.Sprintf("namespace=%s team=%s", ac.Namespace.Name, ac.Namespace.Labels["team"]))
		}
		return engine.Outcome{Warnings: w}, nil
	}), nil
}

// policy returns one policy document.
func policy(name, body string) string {
	return fmt.Sprintf("apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata:\n  name: %s\nspec:\n%s", name, body)
}

// writePolicies writes files into a fresh plain directory.
func writePolicies(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// newTestServer builds a server on files with the test registry, its own
// metrics registry and a logger writing to the test log.
func newTestServer(t testing.TB, files map[string]string, mod ...func(*Options)) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts := Options{
		PoliciesDir:       writePolicies(t, files),
		Registry:          testRegistry(),
		Namespaces:        staticNamespaces{},
		MetricsRegisterer: reg,
		Logger:            testr.NewWithInterface(t, testr.Options{}),
	}
	for _, m := range mod {
		m(&opts)
	}
	s, err := NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	return s, reg
}

// The review helpers are reviewtest's.
var (
	review        = reviewtest.Review
	post          = reviewtest.Post
	mustReview    = reviewtest.MustReview
	counter       = reviewtest.Counter
	statusMessage = reviewtest.StatusMessage
)

const (
	v1      = reviewtest.V1
	v1beta1 = reviewtest.V1beta1
)

type reviewOut = reviewtest.ReviewOut

// eventually polls cond until it holds or the bounded timeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// staticNamespaces is an engine.NamespaceGetter over a fixed set.
type staticNamespaces map[string]map[string]string

func (s staticNamespaces) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	labels, ok := s[name]
	if !ok {
		return nil, apierrors.NewNotFound(corev1.Resource("namespaces"), name)
	}
	return &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}, nil
}

// panickyNamespaces panics when asked: the engine calls it outside any
// builtin, so the panic escapes Evaluate.
type panickyNamespaces struct{}

func (panickyNamespaces) GetNamespace(context.Context, string) (*corev1.Namespace, error) {
	panic("namespace getter exploded")
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }

func init() {
	// controller-runtime's packages log through its global logger; tests
	// pass their own to the Server, so keep the global one quiet.
	ctrllog.SetLogger(logr.Discard())
}
