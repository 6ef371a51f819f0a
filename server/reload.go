package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"

	"celadon.io/celadon/engine"
)

// Hot reload of the policy directory.
//
// The directory, not its files, is watched with fsnotify: when the kubelet
// updates a mounted ConfigMap it writes the new content into a fresh
// timestamped directory, points a "..data_tmp" symlink at it and renames
// that over "..data" in one atomic step; the key files ("policy.yaml ->
// ..data/policy.yaml") never change themselves. Any event in the directory
// schedules a reload after a short debounce (100ms), and the directory is
// also re-read every ReloadInterval, because watches get lost (the
// directory replaced, inotify queue overflow, network file systems).
//
// A reload hashes the content first (engine.Hash) and does nothing when it
// is unchanged; otherwise it compiles the whole new set and only then swaps
// it in with one atomic pointer store. A request evaluates entirely on the
// set it loaded when it started. A set that does not compile, or that holds
// no policy (unless Options.AllowEmpty), is not served:
// the last good set stays, and the error, located at file:line:col, is logged,
// counted (celadon_policy_reloads_total{result="failure"}) and shown at
// /status until the content changes again.
//
// Before compiling, a reload reads the cluster's discovery and schemas
// again (Options.Schemas), so that CRDs created since are checked and
// known. Content refused only because it names resources the cluster
// does not serve, as when a policy and its CRD are applied together, is
// not left for good: every later reload (each event, each poll) compiles
// it again, discovery read again, until it loads.
//
// A ConfigMap mounted with subPath is never updated by the kubelet: mount
// the ConfigMap as a whole directory for hot reload to work.
//
// The exceptions directory (Options.ExceptionsDir) and each of its
// subdirectories, where teams' ConfigMaps are mounted, are watched by the
// same watcher; every event and every poll reloads both, each doing
// nothing when its content is unchanged (exceptions.go).

// policySet is a compiled snapshot and what the server derives from it.
type policySet struct {
	snap      *engine.Snapshot
	observers map[string]*policyObservers
	loadedAt  time.Time
	policies  []PolicyStatus
}

// LoadError is returned by NewServer when the policy set it starts with
// does not load; Err is an engine.ErrorList when the policies do not
// compile.
type LoadError struct {
	Dir string
	Err error
}

func (e *LoadError) Error() string {
	var el engine.ErrorList
	if errors.As(e.Err, &el) {
		plural := "s"
		if len(el) == 1 {
			plural = ""
		}
		return fmt.Sprintf("policies in %s do not load (%d error%s):\n%s", e.Dir, len(el), plural, el.Error())
	}
	return fmt.Sprintf("policies in %s do not load: %s", e.Dir, loadErrorText(e.Err))
}

// loadErrorText words a load error that is not located in a file; a set
// of no policies also says how to allow one.
func loadErrorText(err error) string {
	if errors.Is(err, engine.ErrNoPolicies) {
		return err.Error() + " (to serve no policy on purpose: celadon serve --allow-empty-policies)"
	}
	return err.Error()
}

func (e *LoadError) Unwrap() error { return e.Err }

// loadInitial loads the set the server starts with; any error is fatal.
// From then on, the store's subscribers derive what the server keeps per
// set: the served policySet, the metrics, the caches and the controllers.
//
// Policies refused only because they name resources the cluster's
// discovery does not serve, a CRD's being created with them, are loaded
// again, discovery read again, for startRediscoverFor before giving up.
func (s *Server) loadInitial() error {
	s.store.Subscribe(s.swap)
	s.store.SubscribeFailures(s.reloadFailed)
	_, err := s.store.Load()
	for deadline := time.Now().Add(startRediscoverFor); err != nil && time.Now().Before(deadline); {
		f := s.store.Failure()
		if f == nil || !f.Rediscover {
			break
		}
		s.log.Info("the policies name resources the cluster does not serve (yet); reading its discovery again", "in", startRediscoverEvery.String(), "error", err.Error())
		time.Sleep(startRediscoverEvery)
		_, err = s.store.Load()
	}
	if err != nil {
		return &LoadError{Dir: s.opts.PoliciesDir, Err: err}
	}
	releaseCompileMemory()
	return nil
}

// At start, how long policies naming resources the cluster does not serve
// are loaded again, and how often; tests shorten them.
var (
	startRediscoverFor   = 30 * time.Second
	startRediscoverEvery = 2 * time.Second
)

// swap makes snap the served set; the store calls it for each new set.
func (s *Server) swap(snap *engine.Snapshot) {
	now := time.Now()
	var prev map[string]*policyObservers
	if old := s.set.Load(); old != nil { // the store calls swap for one set at a time
		prev = old.observers
	}
	set := &policySet{
		snap:      snap,
		observers: s.metrics.observersFor(snap, prev),
		loadedAt:  now,
		policies:  policyStatuses(snap),
	}
	old := s.set.Swap(set)
	if old != nil {
		s.metrics.forgetPolicies(old.observers, set.observers)
		s.forgetScans(set)
		s.metrics.reloads.WithLabelValues(reloadSuccess).Inc()
	}
	s.metrics.setLoaded(snap, now)
	s.exceptionMetrics()
	s.log.Info("policies loaded", "dir", s.opts.PoliciesDir, "hash", snap.Hash, "policies", len(snap.Policies))
}

// releaseCompileMemory returns the garbage of compiling a set to the OS:
// compiling allocates several times what the set keeps (68 MB for 1,000
// policies that keep 18), which the runtime would otherwise hand back only
// slowly. Called once per changed set, after the swap is complete.
func releaseCompileMemory() { debug.FreeOSMemory() }

// Reload re-reads the policy directory now. It swaps in the new set and
// returns true when the content changed and compiles. When the content is
// unchanged it does nothing and returns false, nil. When the content
// changed but does not load, the served set stays, and the error (an
// engine.ErrorList when compiling failed) is returned, logged, counted and
// kept for /status; the same broken content is not reported twice.
//
// The reloader calls Reload on file-system events and every
// ReloadInterval; tests may call it directly.
func (s *Server) Reload() (bool, error) {
	changed, err := s.store.Load()
	if err != nil {
		return false, s.reloadError()
	}
	if changed {
		releaseCompileMemory()
	}
	return changed, nil
}

// reloadFailed records a failed reload (f) or the end of one (nil); the
// store calls it once per broken content.
func (s *Server) reloadFailed(f *engine.LoadFailure) {
	if f == nil {
		s.log.Info("the newest policy content is served; clearing the reload error", "hash", s.Snapshot().Hash)
		s.reloadErr.Store(nil)
		s.metrics.lastFailed.Set(0)
		return
	}
	re := newReloadError(f.Time, f.Hash, s.opts.PoliciesDir, f.Err)
	s.reloadErr.Store(re)
	if s.set.Load() == nil {
		return // the initial load: NewServer reports it
	}
	s.metrics.reloads.WithLabelValues(reloadFailure).Inc()
	s.metrics.lastFailed.Set(1)
	serving := s.Snapshot().Hash
	for _, e := range re.Errors {
		s.log.Error(errors.New(e.Text), "policy reload failed; still serving the last good set",
			"file", e.File, "line", e.Line, "column", e.Column, "policy", e.Policy, "hash", f.Hash, "serving", serving)
	}
}

// reloadError returns the recorded failure as a *ReloadError; nil when the
// served set is the newest content.
func (s *Server) reloadError() error {
	if re := s.reloadErr.Load(); re != nil {
		return re
	}
	return nil
}

// watchDirs returns the directories the reloader watches: the policy
// directory (a single file's directory), and the exceptions directory with
// its subdirectories, where teams' ConfigMaps are mounted.
func (s *Server) watchDirs() []string {
	dir := s.opts.PoliciesDir
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		dir = filepath.Dir(dir) // a single file: watch its directory
	}
	dirs := []string{filepath.Clean(dir)}
	if s.opts.ExceptionsDir != "" {
		for _, d := range engine.ExceptionDirs(s.opts.ExceptionsDir) {
			if d = filepath.Clean(d); !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}

// reloadAll reloads the policies, then the exceptions.
func (s *Server) reloadAll() {
	_, _ = s.Reload()
	_, _ = s.ReloadExceptions()
}

// watch runs the reloader until ctx is done.
func (s *Server) watch(ctx context.Context) {
	log := s.log.WithValues("dirs", s.watchDirs())

	var events <-chan fsnotify.Event
	var werrs <-chan error
	var watcher *fsnotify.Watcher
	err := errors.New("disabled")
	if !s.noWatch {
		watcher, err = fsnotify.NewWatcher()
	}
	if err != nil {
		log.Error(err, "cannot watch the policy directory; polling only", "interval", s.opts.ReloadInterval)
	} else {
		defer watcher.Close()
		events, werrs = watcher.Events, watcher.Errors
	}
	// watching holds the directories watched now: one removed is watched
	// again on the next poll, and a new subdirectory of the exceptions
	// directory once an event or a poll finds it.
	watching := map[string]bool{}
	addWatches := func() {
		if watcher == nil {
			return
		}
		for _, dir := range s.watchDirs() {
			if watching[dir] {
				continue
			}
			if err := watcher.Add(dir); err != nil {
				log.Error(err, "cannot watch a directory; polling it only until it can", "dir", dir, "interval", s.opts.ReloadInterval)
				continue
			}
			watching[dir] = true
		}
	}
	addWatches()

	var tick <-chan time.Time
	if s.opts.ReloadInterval > 0 {
		t := time.NewTicker(s.opts.ReloadInterval)
		defer t.Stop()
		tick = t.C
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	if s.onWatch != nil {
		s.onWatch()
	}

	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if name := filepath.Clean(ev.Name); watching[name] && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				delete(watching, name) // the directory itself went; re-added on the next poll
			}
			debounce.Reset(reloadDebounce)
		case err, ok := <-werrs:
			if !ok {
				werrs = nil
				continue
			}
			// An overflow loses events: re-read to be sure.
			log.V(1).Info("policy directory watch error", "error", err.Error())
			debounce.Reset(reloadDebounce)
		case <-debounce.C:
			addWatches()
			s.reloadAll()
		case <-tick:
			addWatches()
			s.reloadAll()
		}
	}
}
