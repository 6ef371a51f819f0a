package main

// The flags eval, validate and test share for exceptions: -e/--exceptions
// reads a directory as `celadon serve --exceptions-dir` does, --now sets
// the time expiries are read at.

import (
	"fmt"
	"path"
	"time"

	"github.com/spf13/cobra"

	"celadon.io/celadon/engine"
)

type exceptionFlags struct {
	path        string
	now         string
	maxLifetime time.Duration
}

func (x *exceptionFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&x.path, "exceptions", "e", "", "exceptions directory or file, read as celadon serve --exceptions-dir reads it (its rules included)")
	f.StringVar(&x.now, "now", "", "the time exceptions' expiry is read at, RFC 3339 (default: now)")
	f.DurationVar(&x.maxLifetime, "exceptions-max-lifetime", engine.DefaultExceptionMaxLifetime, "as celadon serve's: how far after --now an exception of -e may expire")
}

// clock returns the time of --now, or the current time.
func (x *exceptionFlags) clock() (time.Time, error) {
	if x.now == "" {
		return time.Now(), nil
	}
	t, err := time.Parse(time.RFC3339, x.now)
	if err != nil {
		return time.Time{}, usageErrorf("--now %q: want an RFC 3339 timestamp such as 2026-03-31T00:00:00Z", x.now)
	}
	return t, nil
}

// load reads and compiles the exceptions of -e; nil without -e. Errors
// are printed as policy errors are, and exit 2.
func (x *exceptionFlags) load(cmd *cobra.Command, now time.Time) (*engine.ExceptionSet, error) {
	if x.path == "" {
		return nil, nil
	}
	return loadExceptions(cmd, x.path, now, x.maxLifetime)
}

// loadExceptions reads and compiles an exceptions directory or file at
// the time now, printing errors as printPolicyErrors does.
func loadExceptions(cmd *cobra.Command, path string, now time.Time, maxLifetime time.Duration) (*engine.ExceptionSet, error) {
	if maxLifetime < 0 {
		return nil, usageErrorf("--exceptions-max-lifetime %v: want a positive duration", maxLifetime)
	}
	files, err := engine.ReadExceptionFiles(path)
	if err != nil {
		return nil, usageErrorf("exceptions: %v", err)
	}
	set, err := engine.CompileExceptions(files, engine.ExceptionOptions{Now: now, MaxLifetime: maxLifetime})
	if err != nil {
		n := printPolicyErrors(cmd.ErrOrStderr(), err)
		return set, &exitError{code: 2, err: fmt.Errorf("%s: %d error%s in exceptions", path, n, pluralS(n))}
	}
	return set, nil
}

// exceptionWarnings returns the warnings validate prints about the
// exceptions of the policy files and of -e: policies they name that the
// set does not have, expiries past or within window of now, and, in the
// policy files, an exception that matches every request.
func exceptionWarnings(snap *engine.Snapshot, dir *engine.ExceptionSet, now time.Time, window time.Duration) []string {
	var all []*engine.CompiledException
	all = append(all, snap.Exceptions.Exceptions...)
	if dir != nil {
		all = append(all, dir.Exceptions...)
	}
	var out []string
	warn := func(e *engine.CompiledException, path, format string, args ...any) {
		out = append(out, e.ErrorAt(path, "warning: "+fmt.Sprintf(format, args...)).Error())
	}
	for _, e := range all {
		spec := e.Exception.Spec
		for i, p := range spec.Policies {
			found := false
			for _, pol := range snap.Policies {
				if ok, _ := path.Match(p, pol.Name()); ok {
					found = true
					break
				}
			}
			switch {
			case found:
			case isPattern(p):
				warn(e, fmt.Sprintf("spec.policies[%d]", i), "policies[%d]: the glob %q matches no policy: the exception does nothing for it", i, p)
			default:
				warn(e, fmt.Sprintf("spec.policies[%d]", i), "policies[%d]: no policy is named %q: the exception does nothing for it", i, p)
			}
		}
		switch left := e.Expires.Sub(now); {
		case e.Expires.IsZero():
		case left <= 0:
			warn(e, "spec.expires", "expired on %s: it applies no more; delete it (owner %s)", e.Expires.UTC().Format(time.RFC3339), e.Owner())
		case window > 0 && left <= window:
			warn(e, "spec.expires", "expires %s (%s): then its policies apply again; renew it or fix what it excepts (owner %s)",
				engine.ExpiresIn(left), e.Expires.UTC().Format(time.RFC3339), e.Owner())
		}
		if m := spec.Match; e.Origin == engine.FromPolicies && len(m.Namespaces) == 0 && m.NamespaceSelector == nil && m.ObjectSelector == nil &&
			len(m.Names) == 0 && len(m.Resources) == 0 && len(m.Operations) == 0 && len(m.Conditions) == 0 {
			warn(e, "spec.match", "the exception matches every request: its policies are off everywhere; delete them instead, or narrow spec.match")
		}
	}
	return out
}

// isPattern reports whether a policies entry is a glob.
func isPattern(p string) bool {
	for _, r := range p {
		switch r {
		case '*', '?', '[', '\\':
			return true
		}
	}
	return false
}
