package controllers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"celadon.io/celadon/engine"
)

// reconcileBuiltin is a builtin with a controller: it counts the controllers
// made and their starts, and its first start fails, to be restarted.
type reconcileBuiltin struct {
	made, starts *atomic.Int32
}

func (reconcileBuiltin) Name() string            { return "reconcile" }
func (reconcileBuiltin) Type() engine.ActionType { return engine.Mutating }
func (reconcileBuiltin) Compile(*engine.CompileContext) (engine.Action, error) {
	return engine.ActionFunc(func(*engine.ActionContext) (engine.Outcome, error) { return engine.Outcome{}, nil }), nil
}

func (b reconcileBuiltin) NewController(cc engine.ControllerContext) (engine.Controller, error) {
	if cc.Policies == nil || !cc.Policies.Current().UsesBuiltin("reconcile") {
		return nil, errors.New("made without a policy that uses the builtin")
	}
	b.made.Add(1)
	return reconcileController(b), nil
}

type reconcileController reconcileBuiltin

func (c reconcileController) Start(ctx context.Context) error {
	if c.starts.Add(1) == 1 {
		return errors.New("first start fails")
	}
	<-ctx.Done()
	return nil
}

func (c reconcileController) Status() any { return map[string]int32{"starts": c.starts.Load()} }

const reconcilePolicy = "  match: {resources: [namespaces]}\n  action: reconcile\n"

func controllerRegistry(b reconcileBuiltin) *engine.Registry {
	r := engine.NewRegistry()
	r.Register(b)
	r.Register(denyBuiltin{})
	return r
}

// denyBuiltin is a builtin without a controller.
type denyBuiltin struct{}

func (denyBuiltin) Name() string            { return "violate" }
func (denyBuiltin) Type() engine.ActionType { return engine.Validating }
func (denyBuiltin) Compile(*engine.CompileContext) (engine.Action, error) {
	return engine.ActionFunc(func(*engine.ActionContext) (engine.Outcome, error) { return engine.Outcome{Violation: "no"}, nil }), nil
}

// policy returns a policy document of the given name and spec lines.
func policy(name, spec string) string {
	return "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata:\n  name: " + name + "\nspec:\n" + spec
}

// TestBuiltinControllers checks the server starts a builtin's controller
// only once a served set uses the builtin, restarts it when it fails, and
// reports its status under the builtin's name.
func TestBuiltinControllers(t *testing.T) {
	b := reconcileBuiltin{made: new(atomic.Int32), starts: new(atomic.Int32)}
	deny := map[string]string{"a.yaml": policy("deny-all", "  match: {resources: [pods]}\n  action: violate\n")}
	dir := t.TempDir()
	for name, content := range deny {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store := engine.NewStore(dir, engine.Options{Registry: controllerRegistry(b)})
	if _, err := store.Load(); err != nil {
		t.Fatal(err)
	}
	bc := NewBuiltinControllers(engine.ControllerContext{Policies: store, Log: testr.New(t)})
	if !bc.NeedLeaderElection() {
		t.Error("builtin controllers must run on the leader only")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- bc.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()

	time.Sleep(50 * time.Millisecond) // give a wrong start the time to happen
	if n := b.made.Load(); n != 0 {
		t.Fatalf("%d controllers made while no policy uses the builtin", n)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.yaml"), []byte(policy("sync", reconcilePolicy)), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := store.Load(); !changed || err != nil {
		t.Fatalf("Reload: %v, %v", changed, err)
	}
	waitUntil(t, "the controller's first start", func() bool { return b.starts.Load() >= 1 })
	if n := b.made.Load(); n != 1 {
		t.Errorf("%d controllers made, want 1", n)
	}
	// Another set that uses it: the same controller keeps running.
	if err := os.WriteFile(filepath.Join(dir, "c.yaml"), []byte(policy("sync-2", reconcilePolicy)), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := store.Load(); !changed || err != nil {
		t.Fatalf("Reload: %v, %v", changed, err)
	}
	st := bc.Status()
	if _, ok := st["reconcile"]; !ok {
		t.Errorf("status %v: want the controller's, under its builtin's name", st)
	}
	if n := b.made.Load(); n != 1 {
		t.Errorf("%d controllers made after a second set, want 1", n)
	}
}

// waitUntil polls cond for up to ten seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
