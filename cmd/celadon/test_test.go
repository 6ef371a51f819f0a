package main

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

// runFreshCLI runs the command line as runCLI does, with the test and version
// commands built afresh: cobra keeps flag values between runs.
func runFreshCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var old []*cobra.Command
	for _, c := range rootCmd.Commands() {
		if c.Name() == "test" || c.Name() == "version" {
			old = append(old, c)
		}
	}
	rootCmd.RemoveCommand(old...)
	rootCmd.AddCommand(newTestCmd(), newVersionCmd())
	return runCLI(t, args...)
}

var summaryRE = regexp.MustCompile(`(?m)^(\d+) passed, (\d+) failed$`)

// summary returns the counts of the summary line, which must end stdout.
func suiteSummary(t *testing.T, stdout string) (passed, failed string) {
	t.Helper()
	lines := splitLines(stdout)
	if len(lines) == 0 {
		t.Fatalf("no output")
	}
	m := summaryRE.FindStringSubmatch(lines[len(lines)-1])
	if m == nil {
		t.Fatalf("the last line is not the summary:\n%s", stdout)
	}
	return m[1], m[2]
}

// TestShippedPolicySuites runs the suites of the shipped policies, so that
// `go test ./...` (make test) covers them.
func TestShippedPolicySuites(t *testing.T) {
	code, stdout, stderr := runFreshCLI(t, "test", "../../policies/tests")
	if code != 0 {
		t.Fatalf("celadon test ../../policies/tests exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if passed, failed := suiteSummary(t, stdout); passed == "0" || failed != "0" {
		t.Errorf("%s passed, %s failed:\n%s", passed, failed, stdout)
	}
}

// TestLibraryPolicySuites runs the suites of the policy library, which is
// not served by default, so that `go test ./...` (make test) covers them.
func TestLibraryPolicySuites(t *testing.T) {
	code, stdout, stderr := runFreshCLI(t, "test", "../../policies/library/tests")
	if code != 0 {
		t.Fatalf("celadon test ../../policies/library/tests exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if passed, failed := suiteSummary(t, stdout); passed == "0" || failed != "0" {
		t.Errorf("%s passed, %s failed:\n%s", passed, failed, stdout)
	}
}

// TestShippedPoliciesHaveSuites requires every policy of policies/ to be
// tested by a suite of policies/tests, both where it acts and where it is
// skipped.
func TestShippedPoliciesHaveSuites(t *testing.T) {
	requireSuites(t, "../../policies", "../../policies/tests")
}

// TestLibraryPoliciesHaveSuites requires the same of the library.
func TestLibraryPoliciesHaveSuites(t *testing.T) {
	requireSuites(t, "../../policies/library", "../../policies/library/tests")
}

// requireSuites requires every policy of the directory policies to be
// tested by a suite of tests, both where it acts and where it is skipped.
func requireSuites(t *testing.T, policies, tests string) {
	t.Helper()
	files, err := engine.ReadFiles(policies)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no policy files in %s", policies)
	}
	suites, err := findSuites([]string{tests})
	if err != nil {
		t.Fatal(err)
	}
	expected := map[string]map[engine.State]bool{}
	for _, f := range suites {
		s, errs := loadSuite(f)
		if len(errs) > 0 {
			t.Fatalf("%s:\n%s", f, strings.Join(errs, "\n"))
		}
		for _, c := range s.cases {
			for _, r := range c.results {
				if expected[r.policy] == nil {
					expected[r.policy] = map[engine.State]bool{}
				}
				expected[r.policy][r.state] = true
			}
		}
	}
	for _, p := range snap.Policies {
		states := expected[p.Name()]
		if !states[engine.StateSkip] {
			t.Errorf("policy %s (%s:%d): no case of %s expects it to skip", p.Name(), p.File, p.Line, tests)
		}
		if !states[engine.StatePass] && !states[engine.StateFail] && !states[engine.StateWarn] {
			t.Errorf("policy %s (%s:%d): no case of %s expects it to pass, fail or warn", p.Name(), p.File, p.Line, tests)
		}
	}
}

func TestTestPassingSuite(t *testing.T) {
	code, stdout, stderr := runFreshCLI(t, "test", "testdata/suites/passing")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr: %s", stderr)
	}
	lines := splitLines(stdout)
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "PASS testdata/suites/passing/features.yaml: ") {
			t.Errorf("unexpected line %q", l)
		}
	}
	if passed, failed := suiteSummary(t, stdout); passed != "9" || failed != "0" {
		t.Errorf("%s passed, %s failed, want 9 passed:\n%s", passed, failed, stdout)
	}
}

// TestTestFailingSuite checks that wrong expectations fail with exit 1 and
// say what differs; failing.golden holds the whole output (UPDATE_GOLDEN=1
// rewrites it).
func TestTestFailingSuite(t *testing.T) {
	code, stdout, stderr := runFreshCLI(t, "test", "testdata/suites/failing")
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr: %s", stderr)
	}
	const golden = "testdata/suites/failing.golden"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if stdout != string(want) {
		t.Errorf("output differs from %s (UPDATE_GOLDEN=1 regenerates it):\n%s", golden, unifiedDiff(golden, "got", string(want), stdout))
	}
	// What the golden file must keep saying, whatever its details.
	for _, s := range []string{
		"PASS testdata/suites/failing/wrong-expectations.yaml: right\n",
		"FAIL testdata/suites/failing/wrong-expectations.yaml: wrong state\n" +
			"    policy no-latest: got fail, want pass: pod latest uses a :latest image (team a)\n",
		`    policy no-latest: fail, but its message "pod latest uses a :latest image (team b)" does not match "team a"` + "\n",
		"    allowed: got false, want true: denied: pod latest uses a :latest image (team b)\n",
		`    warnings: none matches "INDEX not injected"; got ["team-label: pods should carry a team label"]` + "\n",
		`    patched: got 1 patch operation, want none: [{"op":"add","path":"/spec/containers/0/env","value":[{"name":"INDEX","value":"3"}]}]` + "\n",
		"    --- expected\n    +++ got\n",
		"    -      value: \"01\"\n    +      value: \"1\"\n",
		"\n1 passed, 4 failed\n",
	} {
		if !strings.Contains(stdout, s) {
			t.Errorf("output lacks %q:\n%s", s, stdout)
		}
	}
}

// TestTestMalformedSuites checks that suites that cannot run exit 2, with
// every error located at file:line:col and followed by its source line and
// a caret.
func TestTestMalformedSuites(t *testing.T) {
	const dir = "testdata/suites/malformed/"
	for _, c := range []struct {
		file string
		want []string // stderr's error lines, in order, each followed by its source line
	}{{
		file: "unknown-fields.yaml",
		want: []string{
			dir + "unknown-fields.yaml:5:1: resource: unknown field",
			dir + "unknown-fields.yaml:10:5: tests[0].expect.allow: unknown field",
			dir + "unknown-fields.yaml:12:37: tests[0].expect.results[0].mesage: unknown field",
		},
	}, {
		file: "types.yaml",
		want: []string{dir + "types.yaml:7:3: tests[0].groups: expected a list, got a string"},
	}, {
		file: "syntax.yaml",
		want: []string{dir + "syntax.yaml:3: YAML: did not find expected ',' or ']'"},
	}, {
		file: "bad-policy.yaml",
		want: []string{
			dir + "bad-policy.yaml:4:1: policies: 1 error in the policies:",
			dir + `policies/broken.yaml:10:79: policy "broken": match.conditions[0].expression: CEL: Syntax error: missing ')' at '<EOF>'`,
		},
	}, {
		file: "references.yaml",
		want: []string{
			dir + "references.yaml:8:3: resources[1]: open " + dir + "missing.yaml: no such file or directory",
			dir + "references.yaml:9:3: resources[2]: want a file name or an inline object (with apiVersion and kind), not a selector",
			dir + `references.yaml:11:4: namespaces[0].name: invalid namespace name "Team_A": `,
			dir + `references.yaml:12:18: namespaces[1].labels: invalid label key "bad key!": `,
			dir + "references.yaml:15:3: tests[0].object: 2 objects in the suite's resources have kind Pod, name latest (testdata/suites/passing/resources/pods.yaml: document 2, item 1; testdata/suites/passing/resources/pods.yaml: document 2, item 2): add kind, name or namespace",
			dir + "references.yaml:18:3: tests[1].object: no object in the suite's resources has kind Pod, name nope",
			dir + "references.yaml:21:3: tests[2].object: ../passing/resources/pods.yaml holds 3 objects: select one, e.g. {file: ../passing/resources/pods.yaml, kind: Pod, name: web-1}",
			dir + "references.yaml:26:5: tests[3].object.metadata: unknown field: a selector has file, kind, name and namespace; an inline object needs apiVersion and kind",
			dir + `references.yaml:32:8: tests[4].expect.results[0].policy: no policy "no-such-policy"; the suite's policies are index, no-latest, team-label, audit-root, owner-annotation, admins-only-delete`,
			dir + `references.yaml:33:23: tests[4].expect.results[1].result: want pass, fail, warn, error or skip, not "passed"`,
			dir + "references.yaml:34:41: tests[4].expect.results[2].message: error parsing regexp: missing closing ): `(unclosed`",
			dir + "references.yaml:35:16: tests[4].expect.warnings[0]: error parsing regexp: invalid character class range: `z-a`",
			dir + `references.yaml:36:3: tests[5].name: another case is named "bad expectations"`,
			dir + "references.yaml:36:3: tests[5].expect: nothing to check: give results, allowed, warnings, patched or patchedResource",
			dir + "references.yaml:38:3: tests[6]: DELETE has no new object: give the object being deleted as oldObject",
			dir + "references.yaml:44:3: tests[7].object: cannot be combined with review: the review's request says it",
			dir + "references.yaml:47:3: tests[8].review: open " + dir + "nowhere.json: no such file or directory",
			dir + "references.yaml:52:5: tests[9].expect.patchedResource: a DELETE has no resulting object",
			dir + `references.yaml:55:3: tests[10].namespace: testdata/suites/passing/resources/pods.yaml: document 2, item 2 is in namespace "team-b", not "team-a"`,
		},
	}} {
		t.Run(c.file, func(t *testing.T) {
			code, stdout, stderr := runFreshCLI(t, "test", dir+c.file)
			if code != 2 {
				t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			if stdout != "0 passed, 0 failed\n" {
				t.Errorf("stdout:\n%s", stdout)
			}
			got := displayedErrors(t, stderr)
			want := append(slices.Clone(c.want), "celadon: 1 suite could not be run")
			if len(got) != len(want) {
				t.Fatalf("stderr has %d lines, want %d:\n%s", len(got), len(want), stderr)
			}
			for i := range want {
				if !strings.HasPrefix(got[i], want[i]) {
					t.Errorf("stderr line %d:\n got %s\nwant %s", i+1, got[i], want[i])
				}
			}
		})
	}
}

// displayedErrors returns the lines of stderr that are not quotes of a
// source line, checking that each error located at file:line quotes that
// line of the file, with a caret under its column when it has one.
func displayedErrors(t *testing.T, stderr string) []string {
	t.Helper()
	located := regexp.MustCompile(`^(\S+?):(\d+)(?::(\d+))?: `)
	var out []string
	lines := splitLines(stderr)
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		out = append(out, l)
		m := located.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		data, err := os.ReadFile(m[1])
		if err != nil {
			t.Errorf("%s: %v", l, err)
			continue
		}
		n, _ := strconv.Atoi(m[2])
		want := []string{" | " + strings.Split(string(data), "\n")[n-1]}
		if m[3] != "" {
			col, _ := strconv.Atoi(m[3])
			want = append(want, " | "+strings.Repeat(".", col-1)+"^")
		}
		for _, w := range want {
			if i++; i >= len(lines) || lines[i] != w {
				t.Errorf("after %s:\n got %q\nwant %q", l, lines[min(i, len(lines)-1)], w)
				return out
			}
		}
	}
	return out
}

// TestTestDirectory runs every suite under testdata/suites: broken suites
// do not stop the others, exit 2 wins over 1, and YAML files that are not
// suites (policies, objects, even broken YAML) are skipped.
func TestTestDirectory(t *testing.T) {
	code, stdout, stderr := runFreshCLI(t, "test", "testdata/suites")
	if code != 2 {
		t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if passed, failed := suiteSummary(t, stdout); passed != "10" || failed != "4" {
		t.Errorf("%s passed, %s failed, want 10 and 4:\n%s", passed, failed, stdout)
	}
	if !strings.HasSuffix(stderr, "celadon: 5 suites could not be run\n") {
		t.Errorf("stderr:\n%s", stderr)
	}
	for _, l := range splitLines(stderr) {
		if strings.HasPrefix(l, "testdata/suites/passing/") || strings.HasPrefix(l, "testdata/suites/policies/") {
			t.Errorf("a file that is not a suite was read as one: %s", l)
		}
	}
}

func TestTestOptions(t *testing.T) {
	code, stdout, _ := runFreshCLI(t, "test", "testdata/suites/passing", "--run", "DELETE", "-v")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
	want := `PASS testdata/suites/passing/features.yaml: DELETE by a user outside system:masters
    request: DELETE configmaps team-a/settings (v1 ConfigMap), user bob
    policies:
      admins-only-delete  deny  fail  bob may not delete configmap settings
    DENIED: bob may not delete configmap settings
PASS testdata/suites/passing/features.yaml: DELETE by the default user, in system:masters
    request: DELETE configmaps team-a/settings (v1 ConfigMap), user kubernetes-admin
    policies:
      admins-only-delete  deny  skip  condition not-admin is false
    ALLOWED
2 passed, 0 failed
`
	if stdout != want {
		t.Errorf("--run DELETE -v:\n%s", unifiedDiff("want", "got", want, stdout))
	}
	// Flags do not leak into the next run.
	code, stdout, _ = runFreshCLI(t, "test", "testdata/suites/passing")
	if code != 0 || strings.Contains(stdout, "request:") || !strings.HasSuffix(stdout, "9 passed, 0 failed\n") {
		t.Errorf("second run inherited flags (exit %d):\n%s", code, stdout)
	}
}

func TestTestUsageErrors(t *testing.T) {
	empty := writeFiles(t, map[string]string{"policy.yaml": denyLatestPolicy})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"test"}, "requires at least 1 arg"},
		{[]string{"test", "testdata/suites/nowhere"}, "no such file or directory"},
		{[]string{"test", empty}, "no test suites (kind PolicyTest) in " + empty},
		{[]string{"test", "--run", "(", "testdata/suites/passing"}, "--run: error parsing regexp"},
		{[]string{"test", filepath.Join(empty, "policy.yaml")}, `want apiVersion celadon.io/v1alpha1 and kind PolicyTest, got "celadon.io/v1alpha1" and "Policy"`},
	} {
		code, _, stderr := runFreshCLI(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, want 2 with %q:\n%s", c.args, code, c.want, stderr)
		}
	}
}

// TestSuiteCluster checks the cluster state served to the engine.
func TestSuiteCluster(t *testing.T) {
	ctx := context.Background()
	s, errs := loadSuite("testdata/suites/passing/features.yaml")
	if len(errs) > 0 {
		t.Fatal(strings.Join(errs, "\n"))
	}
	c := s.cluster
	services := schema.GroupVersionResource{Version: "v1", Resource: "services"}
	svc, err := c.Get(ctx, services, "team-a", "db")
	if err != nil {
		t.Fatal(err)
	}
	if svc.GetName() != "db" || svc.GetKind() != "Service" {
		t.Errorf("got %v", svc.Object)
	}
	svc.SetName("changed")
	if again, _ := c.Get(ctx, services, "team-a", "db"); again.GetName() != "db" {
		t.Error("Get returns the cluster's own object, not a copy")
	}
	if _, err := c.Get(ctx, services, "team-b", "db"); !apierrors.IsNotFound(err) {
		t.Errorf("a service in another namespace: %v, want NotFound", err)
	}
	namespaces := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	if ns, err := c.Get(ctx, namespaces, "", "team-a"); err != nil || ns.GetLabels()["team"] != "a" {
		t.Errorf("namespace team-a as an object: %v, %v", ns, err)
	}
	for name, labels := range map[string]map[string]string{
		"team-a": {"team": "a", "kubernetes.io/metadata.name": "team-a"},
		"quiet":  {"index": "off", "kubernetes.io/metadata.name": "quiet"},
	} {
		ns, err := c.GetNamespace(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(ns.Labels, labels) {
			t.Errorf("namespace %s: labels %v, want %v", name, ns.Labels, labels)
		}
	}
	if _, err := c.GetNamespace(ctx, "elsewhere"); !apierrors.IsNotFound(err) {
		t.Errorf("an undeclared namespace: %v, want NotFound", err)
	}

	// With no namespace declared, every namespace exists, as with eval.
	open := newOfflineCluster()
	open.otherNamespaces = flagNamespaces{}
	ns, err := open.GetNamespace(ctx, "anything")
	if err != nil || !maps.Equal(ns.Labels, map[string]string{"kubernetes.io/metadata.name": "anything"}) {
		t.Errorf("open world: %v, %v", ns, err)
	}
	if u, err := open.Get(ctx, namespaces, "", "anything"); err != nil || u.GetName() != "anything" {
		t.Errorf("open world, as an object: %v, %v", u, err)
	}
}

// TestSuiteFormatExample runs the example suite documented at the top of
// test.go, with the shipped policies and the files of
// testdata/suites/example, so that the documentation stays true.
func TestSuiteFormatExample(t *testing.T) {
	src, err := os.ReadFile("test.go")
	if err != nil {
		t.Fatal(err)
	}
	var example strings.Builder
	for _, l := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(l, "//\t"); ok {
			example.WriteString(rest + "\n")
		} else if example.Len() > 0 {
			break
		}
	}
	if !strings.Contains(example.String(), "kind: PolicyTest") {
		t.Fatalf("no example suite in test.go:\n%s", example.String())
	}
	files := map[string]string{"policies/tests/example.yaml": example.String()}
	shipped, err := engine.ReadFiles("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range shipped {
		files["policies/"+filepath.Base(f.Name)] = string(f.Data)
	}
	err = filepath.WalkDir("testdata/suites/example", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		rel, _ := filepath.Rel("testdata/suites/example", path)
		files["policies/tests/"+rel] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, files)
	code, stdout, stderr := runFreshCLI(t, "test", filepath.Join(dir, "policies/tests"))
	if code != 0 || !strings.HasSuffix(stdout, "\n6 passed, 0 failed\n") {
		t.Errorf("the example suite: exit %d\nstdout:\n%s\nstderr:\n%s\nthe suite:\n%s", code, stdout, stderr, example.String())
	}
}

// TestTestReportsNotIdempotent: a mutation that patches again when run on
// the object it produced (appending every time, behind a condition that
// hides it from the load-time check) fails its case, whatever it expects;
// one that returns [] the second time passes.
func TestTestReportsNotIdempotent(t *testing.T) {
	const policy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: verbose
spec:
  match:
    resources: [pods]
    operations: [CREATE]
  action: mutate
  with:
    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: EXPR
`
	const suite = `apiVersion: celadon.io/v1alpha1
kind: PolicyTest
policies: [policy.yaml]
tests:
- name: verbose
  object:
    apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: shop}
    spec:
      containers:
      - {name: app, image: nginx, args: [serve]}
  expect:
    patched: true
`
	for _, tc := range []struct{ name, expr, want string }{
		{"appends every time", `'object.kind == "Pod" ? [JSONPatch{op: "add", path: "/spec/containers/0/args/-", value: "--verbose"}] : []'`,
			"FAIL " + "SUITE: verbose\n" +
				`    not idempotent: the second evaluation patches again (verbose): [{"op":"add","path":"/spec/containers/0/args/2","value":"--verbose"}]` + "\n"},
		{"appends once", `'"--verbose" in object.spec.containers[0].args ? [] : [JSONPatch{op: "add", path: "/spec/containers/0/args/-", value: "--verbose"}]'`,
			"PASS SUITE: verbose\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{
				"policy.yaml": strings.Replace(policy, "EXPR", tc.expr, 1),
				"suite.yaml":  suite,
			})
			_, stdout, stderr := runFreshCLI(t, "test", dir)
			want := strings.ReplaceAll(tc.want, "SUITE", filepath.Join(dir, "suite.yaml"))
			if !strings.Contains(stdout, want) {
				t.Errorf("stdout:\n%s\nwant it to contain:\n%s\nstderr:\n%s", stdout, want, stderr)
			}
		})
	}
}

// TestLibraryPoliciesInReadme requires every policy of the library to have
// a row in the table of policies/library/README.md, marked off by default.
func TestLibraryPoliciesInReadme(t *testing.T) {
	readme, err := os.ReadFile("../../policies/library/README.md")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("../../policies/library/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no library policies")
	}
	for _, f := range files {
		base := filepath.Base(f)
		name := strings.TrimSuffix(base, ".yaml")
		row := ""
		for _, l := range strings.Split(string(readme), "\n") {
			if strings.HasPrefix(l, "| [`"+name+"`]("+base+") |") {
				row = l
			}
		}
		if row == "" {
			t.Errorf("%s: no row \"| [`%s`](%s) | ...\" in policies/library/README.md", base, name, base)
		} else if !strings.HasSuffix(row, "| off |") {
			t.Errorf("%s: its README row does not end in \"| off |\": %s", base, row)
		}
	}
}
