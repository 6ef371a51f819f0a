package main

// `celadon test`: policy test suites, in the spirit of `kyverno test` and
// `gator verify`.
//
// A suite is a YAML file of kind PolicyTest. `celadon test DIR` runs every
// suite found under DIR, recursively (*.yaml and *.yml files whose kind is
// PolicyTest; other YAML files, such as the objects the suites use, are
// skipped). Paths in a suite are relative to the suite file.
//
//	apiVersion: celadon.io/v1alpha1
//	kind: PolicyTest
//	metadata:
//	  name: shop                          # optional, for humans
//	policies:                             # policy files or directories, relative to this
//	- ../sts-index.yaml                   # file, loaded in this order
//	- ../protect-delete.yaml
//	exceptions:                           # exceptions directories or files, read as celadon
//	- exceptions/                         #   serve --exceptions-dir reads them (optional)
//	now: 2026-03-01T00:00:00Z             # the time exceptions' expiry is read at (optional)
//	resources:                            # objects the cases select by kind, name, namespace:
//	- resources/pods.yaml                 #   files (YAML documents, JSON, Lists)
//	- apiVersion: apps/v1                 #   or inline objects
//	  kind: Deployment
//	  metadata:
//	    name: api
//	    namespace: shop
//	    labels: {celadon.io/protected: "true"}
//	  spec: {replicas: 3}
//	namespaces:                           # the namespaces that exist and their labels: what
//	- name: shop                          # namespaceSelector and namespaceObject see
//	  labels: {team: shop}
//	- name: legacy
//	  labels: {celadon.io/sts-index: disabled}
//	cluster:                              # other objects in the cluster, for builtins that
//	- resources/cluster.yaml              # look objects up: files or inline objects
//	tests:
//	- name: a pod of a StatefulSet gets its ordinal
//	  object: {kind: Pod, name: web-2}    # a selector: one of the suite's resources
//	  namespace: shop                     # the request's namespace; fills in metadata.namespace
//	  expect:
//	    allowed: true
//	    results:
//	    - policy: sts-index
//	      result: pass                    # pass | fail | warn | error | skip
//	      message: INDEX=2 set            # a regular expression, searched in the policy's reason
//	    patchedResource: resources/web-2-indexed.yaml
//	- name: the same pod in an opted-out namespace is left alone
//	  object: {kind: Pod, name: web-2}
//	  namespace: legacy
//	  expect:
//	    results:
//	    - {policy: sts-index, result: skip, message: namespaceSelector}
//	    patched: false
//	- name: deleting a protected Deployment is denied
//	  oldObject: {kind: Deployment, name: api}    # DELETE: oldObject alone
//	  user: alice                                 # default kubernetes-admin
//	  groups: [system:authenticated, developers]  # default system:masters, system:authenticated
//	  expect:
//	    allowed: false
//	    results:
//	    - {policy: protect-delete, result: fail, message: "^deployment shop/api is protected"}
//	- name: scaling it is not
//	  object: resources/api-scaled.yaml           # UPDATE: object (a file of one object)
//	  oldObject: {kind: Deployment, name: api}    # and oldObject
//	  expect:
//	    allowed: true
//	    results:
//	    - {policy: protect-delete, result: skip}
//	- name: a recorded AdmissionReview
//	  review: reviews/create-web-debug.json       # instead of object, oldObject, user...
//	  expect:
//	    allowed: true
//	    warnings: ["INDEX not injected"]          # each must match one of the warnings
//	    patched: false
//	- name: the release bot may delete it, by an exception that expires on March 6
//	  oldObject: {kind: Deployment, name: api}
//	  user: release-bot
//	  expect:
//	    allowed: true
//	    results:
//	    - {policy: protect-delete, result: skip, message: 'exception "release-bot-migration"'}
//	    warnings: ["expires in 5 days"]
//
// (policies/tests/ holds the suites of the shipped policies; this example
// runs in cmd/celadon/test_test.go with the files of
// cmd/celadon/testdata/suites/example/.)
//
// policies are read as `celadon eval -p` reads them: a directory gives its
// *.yaml, *.yml and *.json files, sorted, not its subdirectories.
//
// Each case admits one request:
//
//   - object: the object of a CREATE or UPDATE; oldObject: the object before
//     an UPDATE, or the object a DELETE removes. Each is a file holding one
//     object, a selector {file, kind, name, namespace} (without file, among
//     the suite's resources; with it, among the file's objects) that must
//     match exactly one object, or an inline object (a mapping with
//     apiVersion).
//   - operation: CREATE, UPDATE, DELETE or CONNECT; by default CREATE with
//     object, UPDATE with object and oldObject, DELETE with oldObject alone.
//   - namespace: the request's namespace; it fills in the objects'
//     metadata.namespace, which must not say otherwise. By default the
//     object's own namespace, or "default".
//   - user, groups, subResource: who asks, and for which subresource.
//   - review: an AdmissionReview file (admission.k8s.io/v1 or v1beta1),
//     instead of all the fields above.
//
// The request is evaluated as by `celadon eval`: mutating policies, then
// validating ones on the mutated object. Expectations, all optional but at
// least one required:
//
//   - results: per policy, its state (a policy the request's resource or
//     operation does not match is a skip) and, with message, a regular
//     expression the policy's reason must contain: the denial or warning for
//     fail and warn, the error for error, why for skip, what changed for pass.
//     Policies not listed are not checked.
//   - allowed: whether the request is admitted.
//   - warnings: regular expressions, each matching one of the warnings
//     returned to the client.
//   - patched: whether the request gets a JSON patch.
//   - patchedResource: the object as admitted (patched; unchanged when
//     nothing changed or the request is denied), compared semantically: a
//     file, a selector or an inline object, as for object.
//
// Cluster state: namespaces lists the namespaces that exist, each labelled
// kubernetes.io/metadata.name too; Namespace objects in cluster count as
// well. A request in another namespace then finds none (an error for
// policies with a namespaceSelector). A suite that declares no namespace
// at all runs as `celadon eval` does: every namespace exists, labelled only
// kubernetes.io/metadata.name. The objects of cluster (and the namespaces)
// are served to builtins by group, resource, namespace and name.
//
// Output: a line per case, `PASS suite.yaml: name` or `FAIL suite.yaml:
// name` followed by what differed, then `N passed, M failed`. Exit status:
// 0 when every case passes, 1 when one fails, 2 when a suite cannot be run
// (unknown fields, missing files, policy errors, ...; each reported as
// `file:line:col: message` followed by the source line and a caret, the
// suite's other cases not run). --run REGEXP runs
// only the cases whose "suite: name" matches; -v prints every case's request
// and policy results. -o json and -o junit print the same run for programs
// and CI systems instead (test_report.go), with the same exit status; the
// errors of suites that cannot be run go to stderr as well.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/source"
)

func init() { rootCmd.AddCommand(newTestCmd()) }

// The apiVersion and kind of a suite.
const (
	suiteAPIVersion = "celadon.io/v1alpha1"
	suiteKind       = "PolicyTest"
)

type testOptions struct {
	run        string
	verbose    bool
	output     string
	exceptions exceptionFlags
}

// Output formats of test: -o.
var testOutputs = []outputFormat{
	{"text", "PASS or FAIL per case with what differed, then a summary"},
	{"json", "every suite, case, problem and policy result, as JSON"},
	{"junit", "JUnit XML for CI: a testsuite per suite file, a testcase per case"},
}

func newTestCmd() *cobra.Command {
	o := &testOptions{}
	cmd := &cobra.Command{
		Use:   "test DIR|FILE...",
		Short: "Run policy test suites",
		Long: `Test runs policy test suites: YAML files of kind PolicyTest
(apiVersion celadon.io/v1alpha1), found recursively under each DIR, or named
as FILE. A suite names its policies, the objects it admits, the cluster's
namespaces and objects, and test cases: a request each, with the expected
result of each policy, whether it is allowed, its warnings and the patched
object.

A suite may also name exceptions directories (exceptions:, read as
"celadon serve --exceptions-dir" reads them, their rules included) and the
time their expiry is read at (now:, RFC 3339); -e and --now give them to
every suite (a suite's now: wins). Exceptions among the policies apply too.

Each case prints "PASS suite: name" or "FAIL suite: name" with what differed;
a summary "N passed, M failed" ends the output.

For CI systems, -o junit prints JUnit XML instead: a <testsuite> per suite
file (its path as name), a <testcase> per case (its name, the suite file as
classname and file) with a <failure> saying what differed; a suite that cannot
be run is a <testsuite> whose one <testcase name="(suite)"> has an <error>;
-v adds each case's request and policy results as its <system-out>.
-o json prints one JSON object, every key always present:
  {"passed", "failed", "broken" (suites that could not be run),
   "suites": [{"file", "name", "errors", "cases": [{"name", "passed",
   "problems", "request", "decision": {"allowed", "message", "warnings",
   "auditAnnotations", "results", "patch"}}]}]}
with "request" and the keys of "decision" as "celadon eval -o results"
prints them; "decision" is null when the case could not be evaluated.
A suite that runs but has no case --run selects is not listed.

Exit status: 0 when every case passes, 1 when one fails, 2 when a suite cannot
be run (unknown fields, missing files, policy errors: each printed as
file:line:col: message, followed by the source line and a caret).`,
		Example: `  celadon test policies/tests
  celadon test policies/tests/sts-index.yaml -v
  celadon test policies/tests --run 'protected'
  celadon test policies/tests -o junit > policy-tests.xml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.runSuites(cmd, args) },
	}
	f := cmd.Flags()
	f.StringVar(&o.run, "run", "", `run only the cases whose "suite: name" matches this regular expression`)
	f.BoolVarP(&o.verbose, "verbose", "v", false, "print every case's request and policy results, passing or not (-o junit: as each testcase's system-out)")
	o.exceptions.add(cmd)
	addOutputFlag(cmd, &o.output, testOutputs)
	return cmd
}

func (o *testOptions) runSuites(cmd *cobra.Command, args []string) error {
	var filter *regexp.Regexp
	if o.run != "" {
		var err error
		if filter, err = regexp.Compile(o.run); err != nil {
			return usageErrorf("--run: %v", err)
		}
	}
	files, err := findSuites(args)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if len(files) == 0 {
		return usageErrorf("no test suites (kind %s) in %s", suiteKind, strings.Join(args, ", "))
	}
	defaults := suiteDefaults{exceptions: o.exceptions.path, maxLifetime: o.exceptions.maxLifetime}
	if o.exceptions.now != "" {
		if defaults.now, err = o.exceptions.clock(); err != nil {
			return err
		}
	}
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	var rep testReport
	for _, file := range files {
		s, errs := loadSuiteWith(file, defaults)
		if len(errs) > 0 {
			rep.broken++
			for _, e := range errs {
				fmt.Fprintln(errOut, e)
			}
			rep.suites = append(rep.suites, &suiteReport{file: file, errors: errs})
			continue
		}
		sr := &suiteReport{file: file, name: s.name}
		for _, c := range s.cases {
			if filter != nil && !filter.MatchString(s.file+": "+c.name) {
				continue
			}
			problems, d := s.check(cmd.Context(), c)
			cr := caseReport{c: c, problems: problems, d: d}
			sr.cases = append(sr.cases, cr)
			if len(problems) == 0 {
				rep.passed++
			} else {
				rep.failed++
			}
			if o.output != "text" {
				continue
			}
			var b bytes.Buffer
			if cr.passed() {
				fmt.Fprintf(&b, "PASS %s: %s\n", s.file, c.name)
			} else {
				fmt.Fprintf(&b, "FAIL %s: %s\n", s.file, c.name)
				for _, p := range problems {
					writeIndentedLines(&b, p)
				}
			}
			if o.verbose && d != nil {
				writeIndentedLines(&b, suiteCaseDetails(c, d))
			}
			if _, err := out.Write(b.Bytes()); err != nil {
				return &exitError{code: 2, err: err}
			}
		}
		if len(sr.cases) > 0 {
			rep.suites = append(rep.suites, sr)
		}
	}
	switch o.output {
	case "text":
		_, err = fmt.Fprintf(out, "%d passed, %d failed\n", rep.passed, rep.failed)
	case "json":
		err = rep.writeJSON(out)
	case "junit":
		err = rep.writeJUnit(out, o.verbose)
	}
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	switch {
	case rep.broken > 0:
		return &exitError{code: 2, err: fmt.Errorf("%d suite%s could not be run", rep.broken, pluralS(rep.broken))}
	case rep.failed > 0:
		return &exitError{code: 1}
	}
	return nil
}

// writeIndentedLines writes text, one or more lines, indented by four spaces.
func writeIndentedLines(w io.Writer, text string) {
	for _, l := range splitLines(text) {
		fmt.Fprintf(w, "    %s\n", l)
	}
}

// suiteCaseDetails describes a case's request and its decision, for -v.
func suiteCaseDetails(c *suiteCase, d *engine.Decision) string {
	var b strings.Builder
	fmt.Fprintf(&b, "request: %s\n", requestLine(c.req))
	if len(d.Results) == 0 {
		b.WriteString("policies: none match\n")
	} else {
		b.WriteString("policies:\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, r := range d.Results {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Policy, r.Action, r.State, oneLine(r.Reason))
		}
		_ = tw.Flush()
	}
	for _, w := range d.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", oneLine(w))
	}
	switch {
	case !d.Allowed:
		fmt.Fprintf(&b, "DENIED: %s\n", oneLine(d.Message))
	case len(d.Patch) > 0:
		fmt.Fprintf(&b, "ALLOWED with %d patch operation%s\n", len(d.Patch), pluralS(len(d.Patch)))
	default:
		b.WriteString("ALLOWED\n")
	}
	return b.String()
}

// findSuites returns the suite files named by args: files as given, and the
// *.yaml and *.yml files of kind PolicyTest under directories, recursively,
// in lexical order. Hidden files and directories are skipped.
func findSuites(args []string) ([]string, error) {
	var files []string
	seen := map[string]bool{}
	add := func(path string) {
		if !seen[filepath.Clean(path)] {
			seen[filepath.Clean(path)] = true
			files = append(files, path)
		}
	}
	for _, arg := range args {
		st, err := os.Stat(arg)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			add(arg)
			continue
		}
		err = filepath.WalkDir(arg, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			hidden := strings.HasPrefix(d.Name(), ".") && path != arg
			if d.IsDir() {
				if hidden {
					return filepath.SkipDir
				}
				return nil
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml":
			default:
				return nil
			}
			if !hidden && isSuiteFile(path) {
				add(path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

// suiteKindLine finds a PolicyTest in a file too broken to parse, so that
// its errors are reported rather than the file skipped.
var suiteKindLine = regexp.MustCompile(`(?m)^kind:\s*["']?` + suiteKind + `["']?\s*(#.*)?$`)

// isSuiteFile reports whether a YAML file holds a PolicyTest.
func isSuiteFile(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return true // reported when the suite loads
	}
	docs, err := source.Parse(path, data)
	for _, d := range docs {
		var head struct {
			Kind string `json:"kind"`
		}
		if json.Unmarshal(d.JSON, &head) == nil && head.Kind == suiteKind {
			return true
		}
	}
	return err != nil && suiteKindLine.Match(data)
}

// The suite file's schema.
type (
	suiteSpec struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name,omitempty"`
		} `json:"metadata"`
		Policies   []string          `json:"policies"`
		Exceptions []string          `json:"exceptions,omitempty"`
		Now        string            `json:"now,omitempty"`
		Resources  []json.RawMessage `json:"resources,omitempty"`
		Namespaces []namespaceSpec   `json:"namespaces,omitempty"`
		Cluster    []json.RawMessage `json:"cluster,omitempty"`
		Tests      []caseSpec        `json:"tests"`
	}
	namespaceSpec struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels,omitempty"`
	}
	caseSpec struct {
		Name        string          `json:"name"`
		Object      json.RawMessage `json:"object,omitempty"`
		OldObject   json.RawMessage `json:"oldObject,omitempty"`
		Review      string          `json:"review,omitempty"`
		Operation   string          `json:"operation,omitempty"`
		Namespace   string          `json:"namespace,omitempty"`
		User        string          `json:"user,omitempty"`
		Groups      []string        `json:"groups,omitempty"`
		SubResource string          `json:"subResource,omitempty"`
		Expect      expectSpec      `json:"expect"`
	}
	expectSpec struct {
		Allowed         *bool           `json:"allowed,omitempty"`
		Results         []resultSpec    `json:"results,omitempty"`
		Warnings        []string        `json:"warnings,omitempty"`
		Patched         *bool           `json:"patched,omitempty"`
		PatchedResource json.RawMessage `json:"patchedResource,omitempty"`
	}
	resultSpec struct {
		Policy  string `json:"policy"`
		Result  string `json:"result"`
		Message string `json:"message,omitempty"`
	}
	// suiteSelector picks one object of a file or of the suite's resources.
	suiteSelector struct {
		File      string `json:"file,omitempty"`
		Kind      string `json:"kind,omitempty"`
		Name      string `json:"name,omitempty"`
		Namespace string `json:"namespace,omitempty"`
	}
)

// suite is a loaded suite, ready to run.
type suite struct {
	file       string
	name       string // metadata.name
	snap       *engine.Snapshot
	exceptions *engine.ExceptionSet // the exceptions directory's; nil for none
	now        time.Time
	cluster    *offlineCluster
	cases      []*suiteCase
}

// suiteDefaults are what the command line gives every suite: -e, --now
// (zero: the current time) and --exceptions-max-lifetime.
type suiteDefaults struct {
	exceptions  string
	now         time.Time
	maxLifetime time.Duration
}

// suiteCase is one request and what is expected of it.
type suiteCase struct {
	name    string
	req     *admissionv1.AdmissionRequest
	before  map[string]any // the object as sent; nil for DELETE
	allowed *bool
	patched *bool
	results []expectedResult
	warns   []*regexp.Regexp
	// want is the expected resulting object; wantFrom says where it is from.
	want     *inputObject
	wantFrom string
}

type expectedResult struct {
	policy  string
	state   engine.State
	message *regexp.Regexp
}

var suiteStates = []engine.State{engine.StatePass, engine.StateFail, engine.StateWarn, engine.StateError, engine.StateSkip}

// check runs a case and returns what differs from its expectations, and the
// decision.
func (s *suite) check(ctx context.Context, c *suiteCase) ([]string, *engine.Decision) {
	d, err := s.snap.Evaluate(ctx, c.req, engine.EvalOptions{Phase: engine.PhaseAll, Namespaces: s.cluster, Cluster: s.cluster,
		Exceptions: s.exceptions, Now: func() time.Time { return s.now }})
	if err != nil {
		return []string{"evaluation failed: " + err.Error()}, nil
	}
	var problems []string
	for _, w := range c.results {
		state, reason := policyResultOf(d, w.policy)
		if state != w.state {
			p := fmt.Sprintf("policy %s: got %s, want %s", w.policy, state, w.state)
			if reason != "" {
				p += ": " + oneLine(reason)
			}
			problems = append(problems, p)
			continue
		}
		if w.message != nil && !w.message.MatchString(reason) {
			problems = append(problems, fmt.Sprintf("policy %s: %s, but its message %q does not match %q", w.policy, state, oneLine(reason), w.message))
		}
	}
	if c.allowed != nil && *c.allowed != d.Allowed {
		if d.Allowed {
			problems = append(problems, "allowed: got true, want false")
		} else {
			problems = append(problems, "allowed: got false, want true: denied: "+oneLine(d.Message))
		}
	}
	for _, re := range c.warns {
		if !slices.ContainsFunc(d.Warnings, re.MatchString) {
			got := "none"
			if len(d.Warnings) > 0 {
				got = fmt.Sprintf("%q", d.Warnings)
			}
			problems = append(problems, fmt.Sprintf("warnings: none matches %q; got %s", re, got))
		}
	}
	if c.patched != nil && *c.patched != (len(d.Patch) > 0) {
		if len(d.Patch) > 0 {
			p, _ := d.PatchJSON()
			problems = append(problems, fmt.Sprintf("patched: got %d patch operation%s, want none: %s", len(d.Patch), pluralS(len(d.Patch)), p))
		} else {
			problems = append(problems, "patched: got no patch, want one")
		}
	}
	if p := s.checkIdempotent(ctx, c, d); p != "" {
		problems = append(problems, p)
	}
	if c.want != nil {
		got := c.before
		patched, err := d.Object()
		if err != nil {
			return append(problems, "evaluation failed: "+err.Error()), d
		}
		if d.Allowed && patched != nil {
			got = patched
		}
		if p := comparePatched(c.want.Object, got, c.wantFrom); p != "" {
			problems = append(problems, p)
		}
	}
	return problems, d
}

// checkIdempotent evaluates the mutating policies again on the object
// as the first evaluation admitted it, as the API server's reinvocation
// may, and returns a problem when that patches again: a mutation that is
// not idempotent (e.g. one appending to a list every time).
func (s *suite) checkIdempotent(ctx context.Context, c *suiteCase, d *engine.Decision) string {
	if !d.Allowed || len(d.Patch) == 0 {
		return ""
	}
	patched, err := d.Object()
	if err != nil || patched == nil {
		return ""
	}
	raw, err := json.Marshal(patched)
	if err != nil {
		return "idempotence: " + err.Error()
	}
	again := *c.req
	again.Object = runtime.RawExtension{Raw: raw}
	d2, err := s.snap.Evaluate(ctx, &again, engine.EvalOptions{Phase: engine.PhaseMutating, Namespaces: s.cluster, Cluster: s.cluster,
		Exceptions: s.exceptions, Now: func() time.Time { return s.now }})
	if err != nil || len(d2.Patch) == 0 {
		return ""
	}
	var who []string
	for _, r := range d2.Results {
		if r.Patch > 0 {
			who = append(who, r.Policy)
		}
	}
	p, _ := d2.PatchJSON()
	return fmt.Sprintf("not idempotent: the second evaluation patches again (%s): %s", strings.Join(who, ", "), p)
}

// policyResultOf returns a policy's state and reason. A policy that the request's
// resource or operation does not match has no result: it is a skip.
func policyResultOf(d *engine.Decision, policy string) (engine.State, string) {
	for _, r := range d.Results {
		if r.Policy == policy {
			return r.State, r.Reason
		}
	}
	return engine.StateSkip, "the request's resource or operation does not match the policy"
}

// comparePatched compares the expected object with the resulting one, as
// JSON values, and returns "" or a unified diff of their YAML.
func comparePatched(want, got map[string]any, wantFrom string) string {
	w, err1 := plainJSONValue(want)
	g, err2 := plainJSONValue(got)
	if err1 == nil && err2 == nil && reflect.DeepEqual(w, g) {
		return ""
	}
	if got == nil {
		return "patchedResource: the request has no resulting object"
	}
	wy, _ := objectYAML(want)
	gy, _ := objectYAML(got)
	return fmt.Sprintf("patchedResource: the result differs from %s:\n%s", wantFrom, unifiedDiff("expected", "got", wy, gy))
}

// plainJSONValue returns v as a plain JSON value, so that numbers compare equal
// whatever their Go type.
func plainJSONValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}

// suiteLoader reads a suite file and everything it refers to, collecting
// every error, each located at the suite's file and line.
type suiteLoader struct {
	file  string
	dir   string
	doc   *source.Document // nil until the file is parsed
	errs  []string
	cache map[string][]inputObject
	pool  []inputObject // the suite's resources
}

// errorf records an error about the field at path, printed as
// `file:line:col: path: message` with the source line and a caret.
func (l *suiteLoader) errorf(path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	if l.doc == nil {
		l.errs = append(l.errs, l.file+": "+msg)
		return
	}
	l.errs = append(l.errs, l.doc.ErrorAt(l.doc.Pos(path), msg).Display())
}

// loadSuite reads a suite, its policies and its objects. It returns every
// error found, or a suite ready to run.
func loadSuite(file string) (*suite, []string) { return loadSuiteWith(file, suiteDefaults{}) }

// loadSuiteWith is loadSuite with the command line's defaults.
func loadSuiteWith(file string, defaults suiteDefaults) (*suite, []string) {
	l := &suiteLoader{file: file, dir: filepath.Dir(file), cache: map[string][]inputObject{}}
	spec, ok := l.parse()
	if !ok {
		return nil, l.errs
	}
	s := &suite{file: file, name: spec.Metadata.Name, cluster: newOfflineCluster(), now: defaults.now}
	if spec.Now != "" {
		t, err := time.Parse(time.RFC3339, spec.Now)
		if err != nil {
			l.errorf("now", "%q is not an RFC 3339 timestamp such as 2026-03-31T00:00:00Z", spec.Now)
		}
		s.now = t
	}
	if s.now.IsZero() {
		s.now = time.Now()
	}
	s.snap = l.policies(spec.Policies)
	s.exceptions = l.exceptions(spec.Exceptions, defaults, s.now)
	for i, raw := range spec.Resources {
		l.pool = append(l.pool, l.objects(fmt.Sprintf("resources[%d]", i), raw)...)
	}
	l.namespaces(s.cluster, spec.Namespaces)
	for i, raw := range spec.Cluster {
		path := fmt.Sprintf("cluster[%d]", i)
		for _, o := range l.objects(path, raw) {
			if err := s.cluster.add(o); err != nil {
				l.errorf(path, "%v", err)
			}
		}
	}
	if len(s.cluster.namespaces) == 0 {
		s.cluster.otherNamespaces = flagNamespaces{}
	}
	if len(spec.Tests) == 0 {
		l.errorf("tests", "no test cases")
	}
	names := map[string]bool{}
	for i, cs := range spec.Tests {
		path := fmt.Sprintf("tests[%d]", i)
		if cs.Name == "" {
			l.errorf(path+".name", "required")
		} else if names[cs.Name] {
			l.errorf(path+".name", "another case is named %q", cs.Name)
		}
		names[cs.Name] = true
		if c := l.buildCase(path, i+1, cs, s.snap); c != nil {
			s.cases = append(s.cases, c)
		}
	}
	if len(l.errs) > 0 {
		return nil, l.errs
	}
	return s, nil
}

// parse reads the suite file strictly: unknown fields are errors.
func (l *suiteLoader) parse() (*suiteSpec, bool) {
	data, err := os.ReadFile(l.file)
	if err != nil {
		l.errs = append(l.errs, err.Error())
		return nil, false
	}
	docs, err := source.Parse(l.file, data)
	var syntax *source.Error
	if errors.As(err, &syntax) {
		l.errs = append(l.errs, syntax.Display())
		return nil, false
	}
	switch len(docs) {
	case 0:
		l.errs = append(l.errs, l.file+": empty file, want a "+suiteKind)
		return nil, false
	case 1:
	default:
		l.doc = docs[1]
		l.errorf("", "a suite file holds one %s; document 2 is one too many", suiteKind)
		return nil, false
	}
	l.doc = docs[0]
	spec := &suiteSpec{}
	for _, e := range l.doc.Decode(spec) {
		l.errorf(e.Path, "%s", e.Msg)
	}
	if spec.APIVersion != suiteAPIVersion || spec.Kind != suiteKind {
		l.errorf("kind", "want apiVersion %s and kind %s, got %q and %q", suiteAPIVersion, suiteKind, spec.APIVersion, spec.Kind)
	}
	return spec, len(l.errs) == 0
}

// policies loads and compiles the suite's policies. Compile errors are
// reported as printPolicyErrors prints them.
func (l *suiteLoader) policies(paths []string) *engine.Snapshot {
	if len(paths) == 0 {
		l.errorf("policies", "required: policy files or directories, relative to the suite")
		return nil
	}
	var files []engine.File
	for i, p := range paths {
		path := fmt.Sprintf("policies[%d]", i)
		fs, err := engine.ReadFiles(l.resolve(p))
		if err != nil {
			l.errorf(path, "%v", err)
			continue
		}
		if len(fs) == 0 {
			l.errorf(path, "%s: no policy files (*.yaml, *.yml, *.json)", l.resolve(p))
		}
		files = append(files, fs...)
	}
	if len(l.errs) > 0 {
		return nil
	}
	snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		var b bytes.Buffer
		n := printPolicyErrors(&b, err)
		l.errorf("policies", "%d error%s in the policies:", n, pluralS(n))
		l.errs = append(l.errs, splitLines(b.String())...)
		return nil
	}
	if len(snap.Policies) == 0 {
		l.errorf("policies", "no policies found")
		return nil
	}
	return snap
}

// exceptions loads and compiles the suite's exceptions directories (and
// the command line's -e) as one exceptions directory, at the suite's time.
// Errors are reported as for policies.
func (l *suiteLoader) exceptions(paths []string, defaults suiteDefaults, now time.Time) *engine.ExceptionSet {
	var files []engine.File
	for i, p := range paths {
		fs, err := engine.ReadExceptionFiles(l.resolve(p))
		if err != nil {
			l.errorf(fmt.Sprintf("exceptions[%d]", i), "%v", err)
			continue
		}
		files = append(files, fs...)
	}
	if defaults.exceptions != "" {
		fs, err := engine.ReadExceptionFiles(defaults.exceptions)
		if err != nil {
			l.errs = append(l.errs, "-e: "+err.Error())
		}
		files = append(files, fs...)
	}
	if len(files) == 0 || len(l.errs) > 0 {
		return nil
	}
	set, err := engine.CompileExceptions(files, engine.ExceptionOptions{Now: now, MaxLifetime: defaults.maxLifetime})
	if err != nil {
		var b bytes.Buffer
		n := printPolicyErrors(&b, err)
		l.errorf("exceptions", "%d error%s in the exceptions:", n, pluralS(n))
		l.errs = append(l.errs, splitLines(b.String())...)
		return nil
	}
	return set
}

// resolve makes a path in the suite relative to the suite's directory.
func (l *suiteLoader) resolve(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(l.dir, p)
}

// load reads the objects of a file named in the suite, once.
func (l *suiteLoader) load(path, rel string) ([]inputObject, bool) {
	if rel == "-" {
		l.errorf(path, "a file name is required; standard input cannot be read")
		return nil, false
	}
	full := l.resolve(rel)
	if objs, ok := l.cache[full]; ok {
		return objs, objs != nil
	}
	objs, err := loadObjects(full)
	if err != nil {
		l.errorf(path, "%v", err)
	}
	l.cache[full] = objs
	return objs, err == nil
}

// objects returns the objects of a resources or cluster entry: a file's
// objects or an inline object.
func (l *suiteLoader) objects(path string, raw json.RawMessage) []inputObject {
	switch v := l.decodeRef(path, raw).(type) {
	case string:
		objs, _ := l.load(path, v)
		return objs
	case *inputObject:
		return []inputObject{*v}
	case *suiteSelector:
		l.errorf(path, "want a file name or an inline object (with apiVersion and kind), not a selector")
	}
	return nil
}

// object resolves a reference to one object: a file holding one object, a
// selector, or an inline object. It returns nil when the reference is
// refAbsent or wrong (the error is recorded).
func (l *suiteLoader) object(path string, raw json.RawMessage) *inputObject {
	if refAbsent(raw) {
		return nil
	}
	switch v := l.decodeRef(path, raw).(type) {
	case string:
		objs, ok := l.load(path, v)
		if !ok {
			return nil
		}
		if len(objs) > 1 {
			l.errorf(path, "%s holds %d objects: select one, e.g. {file: %s, kind: %s, name: %s}", v, len(objs), v, objs[0].gvk().Kind, objs[0].metadataString("name"))
			return nil
		}
		return &objs[0]
	case *inputObject:
		return v
	case *suiteSelector:
		return l.selectObject(path, v)
	}
	return nil
}

func refAbsent(raw json.RawMessage) bool {
	s := bytes.TrimSpace(raw)
	return len(s) == 0 || string(s) == "null"
}

// decodeRef decodes an object reference: a string (a file name), an
// *inputObject (an inline object) or an *suiteSelector; nil on error.
func (l *suiteLoader) decodeRef(path string, raw json.RawMessage) any {
	var v any
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &v); err != nil {
		l.errorf(path, "%v", err)
		return nil
	}
	switch v := v.(type) {
	case string:
		if v == "" {
			l.errorf(path, "empty file name")
			return nil
		}
		return v
	case map[string]any:
		if _, inline := v["apiVersion"]; inline {
			o := &inputObject{Source: l.file + ":" + l.doc.Pos(path).String() + " (" + path + ")", Raw: raw, Object: v}
			if err := o.check(); err != nil {
				l.errorf(path, "%s", strings.TrimPrefix(err.Error(), o.Source+": "))
				return nil
			}
			return o
		}
		sel := &suiteSelector{}
		if errs := source.Decode(raw, sel).Within(path); len(errs) > 0 {
			msg := errs[0].Msg
			if msg == source.UnknownField {
				msg += ": a selector has file, kind, name and namespace; an inline object needs apiVersion and kind"
			}
			l.errorf(errs[0].Path, "%s", msg)
			return nil
		}
		if *sel == (suiteSelector{}) {
			l.errorf(path, "empty selector: give file, kind, name or namespace")
			return nil
		}
		return sel
	}
	l.errorf(path, "want a file name, a selector {file, kind, name, namespace} or an inline object, not %s", jsonKind(v))
	return nil
}

// selectObject picks the one object that a selector matches.
func (l *suiteLoader) selectObject(path string, sel *suiteSelector) *inputObject {
	candidates, where := l.pool, "the suite's resources"
	if sel.File != "" {
		objs, ok := l.load(path+".file", sel.File)
		if !ok {
			return nil
		}
		candidates, where = objs, sel.File
	}
	var crit []string
	for _, c := range []struct{ field, value string }{{"kind", sel.Kind}, {"name", sel.Name}, {"namespace", sel.Namespace}} {
		if c.value != "" {
			crit = append(crit, c.field+" "+c.value)
		}
	}
	var matches []*inputObject
	for i := range candidates {
		o := &candidates[i]
		if (sel.Kind == "" || o.gvk().Kind == sel.Kind) &&
			(sel.Name == "" || o.metadataString("name") == sel.Name) &&
			(sel.Namespace == "" || o.metadataString("namespace") == sel.Namespace) {
			matches = append(matches, o)
		}
	}
	switch {
	case len(matches) == 1:
		return matches[0]
	case len(crit) == 0 && len(candidates) > 1:
		l.errorf(path, "%s holds %d objects: select one with kind, name or namespace", where, len(candidates))
	case len(matches) == 0:
		if len(candidates) == 0 {
			l.errorf(path, "no object matches %s: %s has none", strings.Join(crit, ", "), where)
		} else {
			l.errorf(path, "no object in %s has %s", where, strings.Join(crit, ", "))
		}
	default:
		var srcs []string
		for _, m := range matches {
			srcs = append(srcs, m.Source)
		}
		l.errorf(path, "%d objects in %s have %s (%s): add kind, name or namespace", len(matches), where, strings.Join(crit, ", "), strings.Join(srcs, "; "))
	}
	return nil
}

// namespaces adds the declared namespaces to the cluster.
func (l *suiteLoader) namespaces(c *offlineCluster, specs []namespaceSpec) {
	for i, ns := range specs {
		path := fmt.Sprintf("namespaces[%d]", i)
		if msgs := validation.IsDNS1123Label(ns.Name); len(msgs) > 0 {
			l.errorf(path+".name", "invalid namespace name %q: %s", ns.Name, strings.Join(msgs, "; "))
			continue
		}
		labels := map[string]any{}
		for k, v := range ns.Labels {
			if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
				l.errorf(path+".labels", "invalid label key %q: %s", k, strings.Join(msgs, "; "))
			}
			if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
				l.errorf(path+".labels", "invalid value %q for label %q: %s", v, k, strings.Join(msgs, "; "))
			}
			labels[k] = v
		}
		obj := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns.Name, "labels": labels}}
		if err := c.add(inputObject{Source: path, Object: obj}); err != nil {
			l.errorf(path, "namespace %q is declared twice", ns.Name)
		}
	}
}

// buildCase builds a case's request and its expectations; nil on error.
func (l *suiteLoader) buildCase(path string, n int, cs caseSpec, snap *engine.Snapshot) *suiteCase {
	nerrs := len(l.errs)
	c := &suiteCase{name: cs.Name, allowed: cs.Expect.Allowed, patched: cs.Expect.Patched}
	if cs.Review != "" {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"object", !refAbsent(cs.Object)}, {"oldObject", !refAbsent(cs.OldObject)}, {"operation", cs.Operation != ""},
			{"namespace", cs.Namespace != ""}, {"user", cs.User != ""}, {"groups", cs.Groups != nil}, {"subResource", cs.SubResource != ""},
		} {
			if f.set {
				l.errorf(path+"."+f.name, "cannot be combined with review: the review's request says it")
			}
		}
		rv, err := loadReview(l.resolve(cs.Review))
		if err != nil {
			l.errorf(path+".review", "%v", err)
		} else {
			c.req = rv.Request
			if c.before, err = decodeObjectJSON(rv.Request.Object.Raw); err != nil {
				l.errorf(path+".review", "request.object: %v", err)
			}
		}
	} else {
		c.req, c.before = l.request(path, n, cs)
	}
	if c.req != nil {
		l.expectations(path+".expect", c, cs.Expect, snap)
	}
	if len(l.errs) > nerrs {
		return nil
	}
	return c
}

// request builds a case's AdmissionRequest from its object and old object.
func (l *suiteLoader) request(path string, n int, cs caseSpec) (*admissionv1.AdmissionRequest, map[string]any) {
	obj := l.object(path+".object", cs.Object)
	old := l.object(path+".oldObject", cs.OldObject)
	if (obj == nil && !refAbsent(cs.Object)) || (old == nil && !refAbsent(cs.OldObject)) {
		return nil, nil // reported
	}
	var op admissionv1.Operation
	switch {
	case cs.Operation != "":
		op = admissionv1.Operation(strings.ToUpper(cs.Operation))
		switch op {
		case admissionv1.Create, admissionv1.Update, admissionv1.Delete, admissionv1.Connect:
		default:
			l.errorf(path+".operation", "want CREATE, UPDATE, DELETE or CONNECT, not %q", cs.Operation)
			return nil, nil
		}
	case obj != nil && old != nil:
		op = admissionv1.Update
	case old != nil:
		op = admissionv1.Delete
	default:
		op = admissionv1.Create
	}
	switch {
	case obj == nil && old == nil:
		l.errorf(path, "give object (CREATE), object and oldObject (UPDATE), oldObject (DELETE), or review")
		return nil, nil
	case (op == admissionv1.Create || op == admissionv1.Connect) && (obj == nil || old != nil):
		l.errorf(path, "%s takes object, not oldObject", op)
		return nil, nil
	case op == admissionv1.Update && (obj == nil || old == nil):
		l.errorf(path, "UPDATE needs object and oldObject")
		return nil, nil
	case op == admissionv1.Delete && (obj != nil || old == nil):
		l.errorf(path, "DELETE has no new object: give the object being deleted as oldObject")
		return nil, nil
	}
	if cs.Namespace != "" {
		var ok bool
		if obj, ok = l.inNamespace(path, obj, cs.Namespace); !ok {
			return nil, nil
		}
		if old, ok = l.inNamespace(path, old, cs.Namespace); !ok {
			return nil, nil
		}
	}
	req, err := buildRequest(n, obj, old, requestOptions{Operation: op, SubResource: cs.SubResource, User: cs.User})
	if err != nil {
		l.errorf(path, "%v", err)
		return nil, nil
	}
	if cs.Groups != nil {
		req.UserInfo.Groups = cs.Groups
	}
	if obj == nil {
		return req, nil
	}
	return req, obj.Object
}

// inNamespace returns the object in namespace ns, as the API server fills
// in metadata.namespace from the request's path.
func (l *suiteLoader) inNamespace(path string, o *inputObject, ns string) (*inputObject, bool) {
	if o == nil {
		return nil, true
	}
	if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
		l.errorf(path+".namespace", "invalid namespace %q: %s", ns, strings.Join(msgs, "; "))
		return nil, false
	}
	gvk := o.gvk()
	if clusterScopedKinds[gvk.GroupKind()] {
		l.errorf(path+".namespace", "a %s is cluster-scoped: it has no namespace", gvk.Kind)
		return nil, false
	}
	switch have := o.metadataString("namespace"); have {
	case ns:
		return o, true
	case "":
	default:
		l.errorf(path+".namespace", "%s is in namespace %q, not %q", o.Source, have, ns)
		return nil, false
	}
	u := unstructured.Unstructured{Object: runtime.DeepCopyJSON(o.Object)}
	u.SetNamespace(ns)
	raw, err := json.Marshal(u.Object)
	if err != nil {
		l.errorf(path, "%v", err)
		return nil, false
	}
	return &inputObject{Source: o.Source, Raw: raw, Object: u.Object}, true
}

// expectations reads a case's expectations.
func (l *suiteLoader) expectations(path string, c *suiteCase, e expectSpec, snap *engine.Snapshot) {
	if e.Allowed == nil && e.Patched == nil && len(e.Results) == 0 && len(e.Warnings) == 0 && refAbsent(e.PatchedResource) {
		l.errorf(path, "nothing to check: give results, allowed, warnings, patched or patchedResource")
		return
	}
	seen := map[string]bool{}
	for i, r := range e.Results {
		rp := fmt.Sprintf("%s.results[%d]", path, i)
		w := expectedResult{policy: r.Policy, state: engine.State(r.Result)}
		switch {
		case r.Policy == "":
			l.errorf(rp+".policy", "required")
		case seen[r.Policy]:
			l.errorf(rp+".policy", "policy %q is listed twice", r.Policy)
		case snap != nil && snap.Policy(r.Policy) == nil:
			var names []string
			for _, p := range snap.Policies {
				names = append(names, p.Name())
			}
			l.errorf(rp+".policy", "no policy %q; the suite's policies are %s", r.Policy, strings.Join(names, ", "))
		}
		seen[r.Policy] = true
		if !slices.Contains(suiteStates, w.state) {
			l.errorf(rp+".result", "want pass, fail, warn, error or skip, not %q", r.Result)
		}
		if r.Message != "" {
			var err error
			if w.message, err = regexp.Compile(r.Message); err != nil {
				l.errorf(rp+".message", "%v", err)
			}
		}
		c.results = append(c.results, w)
	}
	for i, p := range e.Warnings {
		re, err := regexp.Compile(p)
		if err != nil {
			l.errorf(fmt.Sprintf("%s.warnings[%d]", path, i), "%v", err)
			continue
		}
		c.warns = append(c.warns, re)
	}
	if !refAbsent(e.PatchedResource) {
		if c.req.Operation == admissionv1.Delete {
			l.errorf(path+".patchedResource", "a DELETE has no resulting object")
			return
		}
		if c.want = l.object(path+".patchedResource", e.PatchedResource); c.want != nil {
			c.wantFrom = c.want.Source
		}
	}
}
