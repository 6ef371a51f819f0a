package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"celadon.io/celadon/engine"
)

// Status is what /status reports: the served policy set, each policy's
// results (of the last hour's admission requests, and of the last
// background scan), and the outcome of the last reload. It is served as JSON on the metrics bind address (plain
// HTTP, next to /metrics).
type Status struct {
	// PoliciesDir is the watched directory.
	PoliciesDir string `json:"policiesDir"`
	// Hash identifies the served set's content (engine.Hash).
	Hash string `json:"hash"`
	// Policies are the served policies, in dispatch order.
	Policies []PolicyStatus `json:"policies"`
	// LastReload is when the served set was swapped in.
	LastReload time.Time `json:"lastReload"`
	// LastReloadError is why the newest content on disk is not served;
	// null when the served set is the newest content.
	LastReloadError *ReloadError `json:"lastReloadError"`
	// ExceptionsDir is the watched exceptions directory; absent without
	// one.
	ExceptionsDir string `json:"exceptionsDir,omitempty"`
	// ExceptionsHash identifies the served content of the exceptions
	// directory; absent before it first loads.
	ExceptionsHash string `json:"exceptionsHash,omitempty"`
	// ExceptionsLastReload is when the served exceptions of the
	// directory were swapped in; absent before they first load.
	ExceptionsLastReload *time.Time `json:"exceptionsLastReload,omitempty"`
	// Exceptions are the served exceptions: the policy files', then the
	// exceptions directory's, in file order; expired ones included.
	Exceptions []ExceptionStatus `json:"exceptions"`
	// LastExceptionsReloadError is why the newest content of the
	// exceptions directory is not served; absent when it is. The policies
	// are served whatever it says.
	LastExceptionsReloadError *ReloadError `json:"lastExceptionsReloadError,omitempty"`
	// Controllers is the state the builtins' controllers report, by
	// builtin name (createSecret: its Secrets' issues), on the replica that
	// runs them (the leader); absent elsewhere.
	Controllers map[string]any `json:"controllers,omitempty"`
}

// PolicyStatus describes one served policy.
type PolicyStatus struct {
	Name          string   `json:"name"`
	Action        string   `json:"action"`
	Type          string   `json:"type"`
	Resources     []string `json:"resources"`
	Operations    []string `json:"operations"`
	FailurePolicy string   `json:"failurePolicy"`
	Enforcement   string   `json:"enforcement,omitempty"`
	File          string   `json:"file"`
	Line          int      `json:"line"`
	// Location is "file:line".
	Location string `json:"location"`
	// AdmissionLastHour counts the policy's results of the admission
	// requests this replica evaluated in the current minute and the 59
	// before, by state; zero until it is evaluated. The counts survive a
	// reload that keeps the policy's name.
	AdmissionLastHour StateCounts `json:"admissionLastHour"`
	// LastScan is what the last background scan that reported the policy
	// found (Server.RecordScan); null until one did.
	LastScan *ScanStatus `json:"lastScan"`
}

// ReloadError is a failed reload: the content that did not load, and every
// error found in it. It is an error.
type ReloadError struct {
	Time time.Time `json:"time"`
	// Hash identifies the content that failed; empty when it could not be
	// read.
	Hash   string         `json:"hash,omitempty"`
	Errors []LocatedError `json:"errors"`
}

// LocatedError is one error, located in a policy file when it can be.
type LocatedError struct {
	File string `json:"file"`
	Line int    `json:"line,omitempty"`
	// Column is 1-based, in characters; absent when unknown (YAML syntax
	// errors).
	Column int    `json:"column,omitempty"`
	Policy string `json:"policy,omitempty"`
	// Exception names the exception the error is about, instead of
	// Policy.
	Exception string `json:"exception,omitempty"`
	Message   string `json:"message"`
	// Text is the error on one line, `file:line:col: policy "name":
	// message`, as logs print it. The source line and caret that the CLI
	// prints under it are left out: a JSON string or a log line is read by
	// programs, and File, Line and Column locate it for them.
	Text string `json:"text"`
}

func (e *ReloadError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, le := range e.Errors {
		lines[i] = le.Text
	}
	return strings.Join(lines, "\n")
}

func newReloadError(now time.Time, hash, dir string, err error) *ReloadError {
	re := &ReloadError{Time: now.UTC(), Hash: hash}
	var el engine.ErrorList
	if errors.As(err, &el) {
		for _, e := range el {
			le := LocatedError{File: e.File, Line: e.Line, Column: e.Column, Policy: e.Policy, Message: e.Msg, Text: e.Error()}
			if e.Kind == "exception" {
				le.Policy, le.Exception = "", e.Policy
			}
			re.Errors = append(re.Errors, le)
		}
	}
	if len(re.Errors) == 0 {
		msg := loadErrorText(err)
		re.Errors = []LocatedError{{File: dir, Message: msg, Text: dir + ": " + msg}}
	}
	return re
}

func policyStatuses(snap *engine.Snapshot) []PolicyStatus {
	out := make([]PolicyStatus, 0, len(snap.Policies))
	for _, p := range snap.Policies {
		spec := p.Policy.Spec
		out = append(out, PolicyStatus{
			Name:          p.Name(),
			Action:        spec.Action,
			Type:          p.Type.String(),
			Resources:     append([]string{}, spec.Match.Resources...),
			Operations:    p.Operations(),
			FailurePolicy: string(spec.FailurePolicy),
			Enforcement:   string(spec.Enforcement),
			File:          p.File,
			Line:          p.Line,
			Location:      p.File + ":" + strconv.Itoa(p.Line),
		})
	}
	return out
}

// Status returns the served set, each policy's results, and the last
// reload's outcome.
func (s *Server) Status() Status {
	set := s.set.Load()
	re := s.reloadErr.Load()
	now := s.now()
	policies := make([]PolicyStatus, len(set.policies))
	for i, p := range set.policies {
		p.AdmissionLastHour = set.observers[p.Name].recent.sum(now)
		p.LastScan = s.lastScan(p.Name)
		policies[i] = p
	}
	st := Status{
		PoliciesDir:     s.opts.PoliciesDir,
		Hash:            set.snap.Hash,
		Policies:        policies,
		LastReload:      set.loadedAt.UTC(),
		LastReloadError: re,
		ExceptionsDir:   s.opts.ExceptionsDir,
		Exceptions:      exceptionStatuses(s.servedExceptions(), time.Now()),
	}
	if s.exStore != nil {
		st.ExceptionsHash = s.exStore.Current().Hash
		st.LastExceptionsReloadError = s.exReloadErr.Load()
		if at := s.exLoadedAt.Load(); at != nil {
			utc := at.UTC()
			st.ExceptionsLastReload = &utc
		}
	}
	if bc := s.controllers.Load(); bc != nil {
		st.Controllers = bc.Status()
	}
	return st
}

// StatusHandler serves Status as JSON. Start mounts it at /status on the
// metrics bind address.
func (s *Server) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := json.MarshalIndent(s.Status(), "", "  ")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(append(body, '\n'))
	})
}
