package main

// `celadon validate`: compile and lint a policy set.

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

func init() { rootCmd.AddCommand(newValidateCmd()) }

func newValidateCmd() *cobra.Command {
	var policies string
	var ex exceptionFlags
	var expiring time.Duration
	cmd := &cobra.Command{
		Use:   "validate -p POLICIES [-e EXCEPTIONS]",
		Short: "Compile and lint policies",
		Long: `Validate compiles every policy in POLICIES (a file, or a directory of *.yaml,
*.yml and *.json files) as the webhook would load them, and lints them.

Errors are printed on stderr as
  file:line:col: policy "name": message
followed by the source line and a caret under the column; warnings, one
per line, as
  file:line: policy "name": warning: message

PolicyException documents among the policies are compiled with them, and
-e EXCEPTIONS compiles an exceptions directory (or file) as
"celadon serve --exceptions-dir" loads it, its rules included; the
expiry limit is read from --now. Warnings, at file:line:col, name an
exception's policies entry that matches no policy, an exception that has
expired, one that expires within --expiring-within of --now (7 days:
"expires in 3 days (2026-03-04T00:00:00Z)", with its owner), and an
exception of the policy files that matches every request.

Exit status: 0 when the policies and exceptions compile (warnings or not),
2 otherwise.`,
		Example: `  celadon validate -p policies/
  celadon validate -p policies/ -e exceptions/
  celadon validate -p policies/ -e exceptions/ --expiring-within 720h   # what expires within 30 days`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now, err := ex.clock()
			if err != nil {
				return err
			}
			snap, err := loadPolicies(cmd, policies)
			var dir *engine.ExceptionSet
			if err == nil {
				dir, err = ex.load(cmd, now)
			}
			if snap != nil {
				for _, w := range lint(snap) {
					fmt.Fprintln(cmd.ErrOrStderr(), w)
				}
				if err == nil {
					for _, w := range exceptionWarnings(snap, dir, now, expiring) {
						fmt.Fprintln(cmd.ErrOrStderr(), w)
					}
				}
			}
			if err != nil {
				return err
			}
			var mutating, validating int
			for _, p := range snap.Policies {
				if p.Type == engine.Mutating {
					mutating++
				} else {
					validating++
				}
			}
			exceptions := ""
			if n := len(snap.Exceptions.Exceptions); n > 0 {
				exceptions = fmt.Sprintf(", %d exception%s", n, pluralS(n))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d polic%s (%d mutating, %d validating)%s, hash %s\n",
				len(snap.Policies), pluralY(len(snap.Policies)), mutating, validating, exceptions, snap.Hash)
			if dir != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "ok: %d exception%s in %s, hash %s\n", len(dir.Exceptions), pluralS(len(dir.Exceptions)), ex.path, dir.Hash)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&policies, "policies", "p", "", "policy file or directory (required)")
	ex.add(cmd)
	cmd.Flags().DurationVar(&expiring, "expiring-within", engine.ExpiryWarningWindow, "warn of exceptions expiring within this time of --now; 0 for none")
	return cmd
}

func pluralY(n int) string {
	if n == 1 {
		return "y"
	}
	return "ies"
}

// loadPolicies reads and compiles a policy set. Compile errors are printed
// on stderr, one per line, and give an error exiting 2; the snapshot is
// returned with them when there is one.
func loadPolicies(cmd *cobra.Command, path string) (*engine.Snapshot, error) {
	if path == "" {
		return nil, usageErrorf("%s: -p/--policies is required", cmd.Name())
	}
	files, err := engine.ReadFiles(path)
	if err != nil {
		return nil, usageErrorf("policies: %v", err)
	}
	if len(files) == 0 {
		return nil, usageErrorf("%s: no policy files (*.yaml, *.yml, *.json)", path)
	}
	snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		n := printPolicyErrors(cmd.ErrOrStderr(), err)
		return snap, &exitError{code: 2, err: fmt.Errorf("%s: %d error%s in policies", path, n, pluralS(n))}
	}
	if len(snap.Policies) == 0 {
		return nil, usageErrorf("%s: no policies found", path)
	}
	return snap, nil
}

// printPolicyErrors prints each error of an engine.ErrorList, sorted by
// file, line and column, as its line followed by the source line and a
// caret; it returns how many there were.
func printPolicyErrors(w io.Writer, err error) int {
	var list engine.ErrorList
	if !errors.As(err, &list) {
		fmt.Fprintln(w, err)
		return 1
	}
	sorted := slices.Clone(list)
	slices.SortStableFunc(sorted, func(a, b *engine.Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	for _, e := range sorted {
		fmt.Fprintln(w, e.Display())
	}
	return len(sorted)
}

// lint returns warnings about policies that compile but are risky, each as
// `file:line: policy "name": warning: message`.
func lint(snap *engine.Snapshot) []string {
	var out []string
	warn := func(p *engine.CompiledPolicy, format string, args ...any) {
		e := &engine.Error{File: p.File, Line: p.Line, Policy: p.Name(), Msg: "warning: " + fmt.Sprintf(format, args...)}
		out = append(out, e.Error())
	}
	for _, p := range snap.Policies {
		for _, w := range p.Warnings() {
			out = append(out, w.Error())
		}
		for _, r := range p.Resources() {
			if meant := engine.GroupTypo(r); meant != "" {
				warn(p, "API group %q is not built in (a CRD's?): did you mean %q?", r.Group, meant)
			}
		}
		if p.Type != engine.Mutating {
			continue
		}
		ops := map[string]bool{}
		for _, op := range p.Operations() {
			ops[op] = true
		}
		matchesPods := false
		for _, r := range p.Resources() {
			if (r.Group == "" || r.Group == "*") && (r.Resource == "pods" || r.Resource == "*") && (r.Subresource == "" || r.Resource == "*") {
				matchesPods = true
			}
		}
		if matchesPods && ops["CREATE"] && p.Policy.Spec.FailurePolicy == engine.Fail {
			warn(p, "mutating policy with failurePolicy Fail matches pods: any error in it blocks pod creation cluster-wide; use failurePolicy Ignore unless the mutation is required")
		}
		unrestricted := len(p.Policy.Spec.Match.Operations) == 0 || stringIn(p.Policy.Spec.Match.Operations, "*")
		if unrestricted && ops["DELETE"] {
			warn(p, "mutating builtin %q matches DELETE, which has no object to mutate: list spec.match.operations, e.g. [CREATE, UPDATE]", p.Policy.Spec.Action)
		}
	}
	return out
}
