package controllers

import (
	"context"
	"sort"
	"sync"
	"time"

	"celadon.io/celadon/engine"
)

// controllerRestart is the pause before a failed builtin controller is
// started again.
const controllerRestart = 30 * time.Second

// BuiltinControllers runs, on the elected leader, one controller per builtin
// that declares one (engine.ControllerBuiltin), from the first served set
// that uses the builtin on. Nothing here runs per request.
type BuiltinControllers struct {
	cc   engine.ControllerContext
	wake chan struct{} // a new policy set

	mu      sync.Mutex
	running map[string]engine.Controller // by builtin name
}

// NewBuiltinControllers returns the runner of the controllers that the
// sets of cc.Policies need.
func NewBuiltinControllers(cc engine.ControllerContext) *BuiltinControllers {
	b := &BuiltinControllers{cc: cc, wake: make(chan struct{}, 1), running: map[string]engine.Controller{}}
	cc.Policies.Subscribe(func(*engine.Snapshot) {
		select {
		case b.wake <- struct{}{}:
		default: // pending already
		}
	})
	return b
}

// NeedLeaderElection: builtin controllers write, so one replica runs them.
func (*BuiltinControllers) NeedLeaderElection() bool { return true }

// Start starts the controllers the served set needs, and those later sets
// need, until ctx is done; then waits for them to stop.
func (b *BuiltinControllers) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		for _, bc := range controllerBuiltinsOf(b.cc.Policies.Current()) {
			b.start(ctx, &wg, bc)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-b.wake:
		}
	}
}

// start makes and runs the controller of one builtin unless it runs.
func (b *BuiltinControllers) start(ctx context.Context, wg *sync.WaitGroup, bc engine.Builtin) {
	name := bc.Name()
	b.mu.Lock()
	_, ok := b.running[name]
	b.mu.Unlock()
	if ok {
		return
	}
	cc := b.cc
	cc.Log = b.cc.Log.WithValues("builtin", name)
	c, err := bc.(engine.ControllerBuiltin).NewController(cc)
	if err != nil {
		cc.Log.Error(err, "cannot make the builtin's controller; retrying with the next policy set")
		return
	}
	b.mu.Lock()
	b.running[name] = c
	b.mu.Unlock()
	cc.Log.Info("starting the builtin's controller")
	wg.Go(func() {
		for {
			err := c.Start(ctx)
			if ctx.Err() != nil {
				return
			}
			cc.Log.Error(err, "the builtin's controller stopped; restarting it", "after", controllerRestart)
			select {
			case <-ctx.Done():
				return
			case <-time.After(controllerRestart):
			}
		}
	})
}

// Status returns the state the running controllers report, by builtin
// name; nil when none reports.
func (b *BuiltinControllers) Status() map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out map[string]any
	for name, c := range b.running {
		r, ok := c.(engine.StatusReporter)
		if !ok {
			continue
		}
		if st := r.Status(); st != nil {
			if out == nil {
				out = map[string]any{}
			}
			out[name] = st
		}
	}
	return out
}

// controllerBuiltinsOf returns the builtins of snap that declare a
// controller.
func controllerBuiltinsOf(snap *engine.Snapshot) []engine.Builtin {
	var out []engine.Builtin
	for _, b := range snap.Builtins() {
		if _, ok := b.(engine.ControllerBuiltin); ok {
			out = append(out, b)
		}
	}
	return out
}

// ControllerBuiltins names the builtins of snap that declare a controller,
// sorted.
func ControllerBuiltins(snap *engine.Snapshot) []string {
	var names []string
	for _, b := range controllerBuiltinsOf(snap) {
		names = append(names, b.Name())
	}
	sort.Strings(names)
	return names
}
