package server

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"celadon.io/celadon/engine"
)

// The exceptions directory (Options.ExceptionsDir).
//
// It is loaded after the policies and reloaded with them, by the same
// watcher and poll, through an engine.ExceptionStore. Unlike the policies,
// its content never stops the server: exceptions that do not load at start
// leave an empty set (every policy applies) and are reported, and a broken
// edit keeps the last good set; either way the error is logged, counted
// (celadon_exception_reloads_total{result="failure"},
// celadon_exception_reload_last_failed) and shown at /status, until the
// content changes. A team with edit on an exceptions ConfigMap can thus
// never take the policies down, nor Celadon itself.

// checkExceptionsDir refuses an exceptions directory that is the policy
// directory or holds it, or is held by it: its policies would be read as
// exceptions of the teams (and refused), or teams would write where the
// policies are.
func (o *Options) checkExceptionsDir() error {
	if o.ExceptionsDir == "" {
		return nil
	}
	ex, err1 := filepath.Abs(o.ExceptionsDir)
	pol, err2 := filepath.Abs(o.PoliciesDir)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	within := func(dir, parent string) bool {
		rel, err := filepath.Rel(parent, dir)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
	}
	if within(ex, pol) || within(pol, ex) {
		return fmt.Errorf("webhook: the exceptions directory %s and the policy directory %s must be apart: teams may edit the exceptions, not the policies", o.ExceptionsDir, o.PoliciesDir)
	}
	if o.ExceptionsMaxLifetime < 0 {
		return fmt.Errorf("webhook: ExceptionsMaxLifetime %v: want a positive duration", o.ExceptionsMaxLifetime)
	}
	return nil
}

// loadExceptions makes the exceptions store, when there is a directory,
// and loads it once; a failure is reported, not returned.
func (s *Server) loadExceptions() {
	if s.opts.ExceptionsDir == "" {
		return
	}
	s.exStore = engine.NewExceptionStore(s.opts.ExceptionsDir, engine.ExceptionOptions{MaxLifetime: s.opts.ExceptionsMaxLifetime})
	s.exStore.SubscribeFailures(s.exceptionsFailed)
	s.exStore.Subscribe(s.swapExceptions)
	_, _ = s.exStore.Load()
}

// swapExceptions records a newly served exception set.
func (s *Server) swapExceptions(set *engine.ExceptionSet) {
	if set.Hash == "" {
		return // the empty set a store starts with
	}
	now := time.Now()
	s.exLoadedAt.Store(&now)
	s.metrics.exceptionReloads.WithLabelValues(reloadSuccess).Inc()
	s.exceptionMetrics()
	s.log.Info("exceptions loaded", "dir", s.opts.ExceptionsDir, "hash", set.Hash, "exceptions", len(set.Exceptions))
}

// exceptionsFailed records exceptions that did not load (f) or the end of
// a failure (nil).
func (s *Server) exceptionsFailed(f *engine.LoadFailure) {
	if f == nil {
		s.log.Info("exception content is back to the served set; clearing the reload error", "hash", s.exStore.Current().Hash)
		s.exReloadErr.Store(nil)
		s.metrics.exceptionLastFailed.Set(0)
		return
	}
	re := newReloadError(f.Time, f.Hash, s.opts.ExceptionsDir, f.Err)
	s.exReloadErr.Store(re)
	s.metrics.exceptionReloads.WithLabelValues(reloadFailure).Inc()
	s.metrics.exceptionLastFailed.Set(1)
	cur := s.exStore.Current()
	for _, e := range re.Errors {
		s.log.Error(errors.New(e.Text), "exceptions do not load; still serving the last good exception set, and every policy",
			"file", e.File, "line", e.Line, "column", e.Column, "exception", e.Exception, "hash", f.Hash,
			"serving", cur.Hash, "exceptions", len(cur.Exceptions))
	}
}

// ReloadExceptions re-reads the exceptions directory now; see Reload. It
// returns false, nil without a directory.
func (s *Server) ReloadExceptions() (bool, error) {
	if s.exStore == nil {
		return false, nil
	}
	changed, err := s.exStore.Load()
	if err != nil {
		if re := s.exReloadErr.Load(); re != nil {
			return false, re
		}
		return false, err
	}
	return changed, nil
}

// Exceptions returns the exception set of the exceptions directory served
// now: nil without a directory.
func (s *Server) Exceptions() *engine.ExceptionSet {
	if s.exStore == nil {
		return nil
	}
	return s.exStore.Current()
}

// exceptionMetrics sets the expiry gauge of every served exception, those
// of the policy files and those of the exceptions directory, and forgets
// the applied counts of exceptions no longer served.
func (s *Server) exceptionMetrics() {
	m := s.metrics
	m.exMu.Lock()
	defer m.exMu.Unlock()
	m.exceptionExpiry.Reset()
	served := map[string]bool{}
	for _, e := range s.servedExceptions() {
		served[e.Name()] = true
		if !e.Expires.IsZero() {
			m.exceptionExpiry.WithLabelValues(e.Name(), string(e.Origin)).Set(float64(e.Expires.Unix()))
		}
	}
	for name := range m.exApplied {
		if !served[name] {
			m.exceptionsApplied.DeletePartialMatch(map[string]string{"exception": name})
			delete(m.exApplied, name)
		}
	}
	m.exceptionsLoaded.Set(float64(len(served)))
}

// servedExceptions returns the exceptions served now: the policy files',
// then the exceptions directory's.
func (s *Server) servedExceptions() []*engine.CompiledException {
	var out []*engine.CompiledException
	if set := s.set.Load(); set != nil && set.snap.Exceptions != nil {
		out = append(out, set.snap.Exceptions.Exceptions...)
	}
	if dir := s.Exceptions(); dir != nil {
		out = append(out, dir.Exceptions...)
	}
	return out
}

// ExceptionStatus describes one served exception.
type ExceptionStatus struct {
	Name       string   `json:"name"`
	Policies   []string `json:"policies"`
	Namespaces []string `json:"namespaces,omitempty"`
	Owner      string   `json:"owner"`
	Reason     string   `json:"reason"`
	// Expires is RFC 3339; absent when the exception never expires.
	Expires string `json:"expires,omitempty"`
	// Expired is true once Expires has passed: the exception is still
	// loaded, and applies no more.
	Expired bool `json:"expired"`
	// Origin is "policies" (the policy files) or "exceptions" (the
	// exceptions directory).
	Origin string `json:"origin"`
	File   string `json:"file"`
	Line   int    `json:"line"`
	// Location is "file:line".
	Location string `json:"location"`
}

func exceptionStatuses(exs []*engine.CompiledException, now time.Time) []ExceptionStatus {
	out := make([]ExceptionStatus, 0, len(exs))
	for _, e := range exs {
		spec := e.Exception.Spec
		st := ExceptionStatus{
			Name:       e.Name(),
			Policies:   slices.Clone(spec.Policies),
			Namespaces: slices.Clone(spec.Match.Namespaces),
			Owner:      spec.Owner,
			Reason:     spec.Reason,
			Expired:    e.Expired(now),
			Origin:     string(e.Origin),
			File:       e.File,
			Line:       e.Line,
			Location:   e.File + ":" + strconv.Itoa(e.Line),
		}
		if !e.Expires.IsZero() {
			st.Expires = e.Expires.UTC().Format(time.RFC3339)
		}
		out = append(out, st)
	}
	return out
}
