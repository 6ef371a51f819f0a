package main

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/reports"
)

// fixScanTime fixes the time reports carry.
func fixScanTime(t *testing.T) {
	t.Helper()
	saved := scanNow
	scanNow = func() time.Time { return time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC) }
	t.Cleanup(func() { scanNow = saved })
}

// withStdin makes content standard input for the test.
func withStdin(t *testing.T, content string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	saved := os.Stdin
	os.Stdin = f
	t.Cleanup(func() { os.Stdin = saved; f.Close() })
}

// TestScanManifestOutputs checks every output format of a scan of
// testdata/scan/manifests against its golden file, and the exit code: 1,
// two pods are denied.
func TestScanManifestOutputs(t *testing.T) {
	t.Chdir("testdata/scan") // so paths in the output read as from there
	fixScanTime(t)
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"table.golden", nil},
		{"table-show-pass.golden", []string{"--show-pass"}},
		{"json.golden", []string{"-o", "json"}},
		{"yaml.golden", []string{"-o", "yaml"}},
		{"junit.golden", []string{"-o", "junit"}},
		{"sarif.golden", []string{"-o", "sarif"}},
		{"report.golden", []string{"-o", "report"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"scan", "-p", "policies", "-f", "manifests"}, tc.args...)...)
			if code != 1 {
				t.Fatalf("exit %d, want 1 (pods web and debug are denied)\n%s\n%s", code, stdout, stderr)
			}
			checkGolden(t, filepath.Join("golden", tc.golden), stdout)
			// The broken policy is named on stderr, whatever the format.
			if !strings.Contains(stderr, `celadon: warning: policy "owner-annotation" failed on 1 of the 3 objects it was evaluated on: they would be admitted without it (failurePolicy Ignore); the first error: owner-is-nobody: no such key: annotations`) {
				t.Errorf("stderr:\n%s", stderr)
			}
		})
	}
}

// TestScanTableSkipsWhatDoesNotApply checks what the table says of the
// policies a scan does not run, and that their objects get no result.
func TestScanTableSkipsWhatDoesNotApply(t *testing.T) {
	code, stdout, stderr := runCLI(t, "scan", "-p", "testdata/scan/policies", "-f", "testdata/scan/manifests", "--show-pass")
	if code != 1 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	want := "not applicable to a scan:\n" +
		"  immutable-app  matches UPDATE only: a scan evaluates CREATE\n" +
		"  sts-index      mutating: a scan runs validating policies only\n"
	if !strings.Contains(stdout, want) {
		t.Errorf("stdout does not list the policies that do not apply:\n%s", stdout)
	}
	for _, l := range splitLines(stdout) {
		if f := strings.Fields(l); len(f) > 3 && (f[3] == "immutable-app" || f[3] == "sts-index") {
			t.Errorf("a result of a policy that does not apply: %q", l)
		}
	}
}

// TestScanManifestJSON reads -o json as a program would.
func TestScanManifestJSON(t *testing.T) {
	code, stdout, stderr := runCLI(t, "scan", "-p", "testdata/scan/policies", "-f", "testdata/scan/manifests", "-o", "json")
	if code != 1 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	d := decodeScanDoc(t, stdout)
	if d.Summary.Objects != 9 || d.Summary.Evaluated != 8 || d.Summary.Denied != 2 || d.Summary.Allowed != 7 {
		t.Errorf("summary %+v", d.Summary)
	}
	if got := d.results("prod", "Pod", "web"); !slices.Equal(got, []string{"no-latest=fail", "prod-no-privileged=fail"}) {
		t.Errorf("prod/web: %q", got)
	}
	// The Namespace manifest gives prod its labels; default has none, so
	// the privileged debug pod there is not refused by prod-no-privileged.
	if got := d.results("default", "Pod", "debug"); !slices.Equal(got, []string{"no-latest=fail"}) {
		t.Errorf("default/debug: %q", got)
	}
	if got := d.results("prod", "Pod", "pinned"); got != nil {
		t.Errorf("prod/pinned, which only skips, is listed without --show-pass: %q", got)
	}
	for _, o := range d.Objects {
		if o.Name == "big" && (o.Source != "testdata/scan/manifests/config.json: document 1, item 2" || o.Line != 1 || !o.Allowed) {
			t.Errorf("configmap big: %+v", o)
		}
	}
	// With --namespace-labels, default is a production namespace too.
	code, stdout, _ = runCLI(t, "scan", "-p", "testdata/scan/policies", "-f", "testdata/scan/manifests", "-o", "json", "--namespace-labels", "env=prod")
	d = decodeScanDoc(t, stdout)
	if got := d.results("default", "Pod", "debug"); code != 1 || !slices.Equal(got, []string{"no-latest=fail", "prod-no-privileged=fail"}) {
		t.Errorf("--namespace-labels env=prod: exit %d, default/debug: %q", code, got)
	}
	// Nothing to list: the objects are an empty array, the document whole.
	code, stdout, _ = runCLI(t, "scan", "-p", "testdata/scan/policies/no-latest.yaml", "-f", "testdata/scan/manifests/config.json", "-o", "json")
	d = decodeScanDoc(t, stdout)
	if code != 0 || d.Objects == nil || len(d.Objects) != 0 || d.Summary.Objects != 3 || !strings.HasSuffix(stdout, "\"objects\": []\n}\n") {
		t.Errorf("nothing listed: exit %d, %d objects of %d\n%s", code, len(d.Objects), d.Summary.Objects, stdout)
	}
	// -n is the namespace of the manifests that name none.
	code, stdout, _ = runCLI(t, "scan", "-p", "testdata/scan/policies", "-f", "testdata/scan/manifests", "-o", "json", "-n", "prod")
	d = decodeScanDoc(t, stdout)
	if got := d.results("prod", "Pod", "debug"); code != 1 || !slices.Equal(got, []string{"no-latest=fail", "prod-no-privileged=fail"}) {
		t.Errorf("-n prod: exit %d, prod/debug: %q", code, got)
	}
}

// sarifDoc is what the test checks of SARIF 2.1.0.
type sarifDoc struct {
	Schema  string `json:"$schema"`
	Version string `json:"version"`
	Runs    []struct {
		Tool struct {
			Driver struct {
				Name  string `json:"name"`
				Rules []struct {
					ID string `json:"id"`
				} `json:"rules"`
			} `json:"driver"`
		} `json:"tool"`
		Invocations []struct {
			ExecutionSuccessful        bool `json:"executionSuccessful"`
			ToolExecutionNotifications []struct {
				Level   string `json:"level"`
				Message struct{ Text string }
			} `json:"toolExecutionNotifications"`
		} `json:"invocations"`
		Results []struct {
			RuleID    string `json:"ruleId"`
			RuleIndex int    `json:"ruleIndex"`
			Kind      string `json:"kind"`
			Level     string `json:"level"`
			Message   struct {
				Text string `json:"text"`
			} `json:"message"`
			Locations []struct {
				PhysicalLocation *struct {
					ArtifactLocation struct {
						URI string `json:"uri"`
					} `json:"artifactLocation"`
					Region struct {
						StartLine int `json:"startLine"`
					} `json:"region"`
				} `json:"physicalLocation"`
				LogicalLocations []struct {
					Name               string `json:"name"`
					FullyQualifiedName string `json:"fullyQualifiedName"`
					Kind               string `json:"kind"`
				} `json:"logicalLocations"`
			} `json:"locations"`
		} `json:"results"`
	} `json:"runs"`
}

// TestScanSARIF checks the SARIF log as a code-scanning tool reads it:
// one run, a rule per policy that applies, each result pointing at its
// rule, at the manifest's file and line and, logically, at the object.
func TestScanSARIF(t *testing.T) {
	code, stdout, stderr := runCLI(t, "scan", "-p", "testdata/scan/policies", "-f", "testdata/scan/manifests", "-o", "sarif", "--show-pass")
	if code != 1 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	var d sarifDoc
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatal(err)
	}
	if d.Version != "2.1.0" || !strings.Contains(d.Schema, "sarif-schema-2.1.0") || len(d.Runs) != 1 {
		t.Fatalf("version %q, schema %q, %d runs", d.Version, d.Schema, len(d.Runs))
	}
	run := d.Runs[0]
	var ids []string
	for _, r := range run.Tool.Driver.Rules {
		ids = append(ids, r.ID)
	}
	if run.Tool.Driver.Name != "celadon" || !slices.Equal(ids, []string{"configmap-size", "no-latest", "owner-annotation", "prod-no-privileged", "team-label"}) {
		t.Errorf("driver %q, rules %q: want a rule per policy that applies", run.Tool.Driver.Name, ids)
	}
	levels := map[string]int{}
	for _, r := range run.Results {
		if r.RuleIndex < 0 || r.RuleIndex >= len(ids) || ids[r.RuleIndex] != r.RuleID {
			t.Errorf("result of %s points at rule %d", r.RuleID, r.RuleIndex)
		}
		if (r.Kind == "pass") != (r.Level == "none") || !slices.Contains([]string{"error", "warning", "none"}, r.Level) {
			t.Errorf("result %s %q: kind %s, level %s", r.RuleID, r.Message.Text, r.Kind, r.Level)
		}
		levels[r.RuleID+"="+r.Level]++
		if len(r.Locations) != 1 || len(r.Locations[0].LogicalLocations) != 1 || r.Locations[0].PhysicalLocation == nil {
			t.Fatalf("result %s: locations %+v", r.RuleID, r.Locations)
		}
		l := r.Locations[0]
		if !strings.HasPrefix(r.Message.Text, l.LogicalLocations[0].FullyQualifiedName+": ") || l.LogicalLocations[0].Kind != "resource" {
			t.Errorf("message %q, logical location %+v", r.Message.Text, l.LogicalLocations[0])
		}
		if l.LogicalLocations[0].FullyQualifiedName == "prod/pod/web" {
			if pl := l.PhysicalLocation; pl.ArtifactLocation.URI != "testdata/scan/manifests/apps.yaml" || pl.Region.StartLine != 7 {
				t.Errorf("pod web located at %+v, want apps.yaml line 7", pl)
			}
		}
	}
	// Deny failures are errors; Warn, Audit and errors under Ignore,
	// which admit, are warnings.
	for _, want := range []string{"no-latest=error", "prod-no-privileged=error", "team-label=warning", "configmap-size=warning", "owner-annotation=warning", "no-latest=none"} {
		if levels[want] == 0 {
			t.Errorf("no result %s; got %v", want, levels)
		}
	}
	notes := run.Invocations[0].ToolExecutionNotifications
	if !run.Invocations[0].ExecutionSuccessful || len(notes) != 2 || !strings.Contains(notes[0].Message.Text, `"immutable-app" is not applicable to a scan`) {
		t.Errorf("invocation: %+v", run.Invocations)
	}
	// Standard input has no file to point at.
	content, err := os.ReadFile("testdata/scan/manifests/apps.yaml")
	if err != nil {
		t.Fatal(err)
	}
	withStdin(t, string(content))
	_, stdout, _ = runCLI(t, "scan", "-p", "testdata/scan/policies", "-f", "-", "-o", "sarif")
	d = sarifDoc{}
	if err := json.Unmarshal([]byte(stdout), &d); err != nil || len(d.Runs[0].Results) == 0 {
		t.Fatalf("%v\n%s", err, stdout)
	}
	for _, r := range d.Runs[0].Results {
		if r.Locations[0].PhysicalLocation != nil {
			t.Errorf("a physical location for stdin: %+v", r.Locations[0].PhysicalLocation)
		}
	}
}

// TestScanJUnit checks that the counts of the JUnit XML agree with its
// testcases, as CI systems add them up.
func TestScanJUnit(t *testing.T) {
	_, stdout, _ := runCLI(t, "scan", "-p", "testdata/scan/policies", "-f", "testdata/scan/manifests", "-o", "junit", "--show-pass")
	var doc struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Suites   []struct {
			Name     string `xml:"name,attr"`
			Tests    int    `xml:"tests,attr"`
			Failures int    `xml:"failures,attr"`
			Errors   int    `xml:"errors,attr"`
			Skipped  int    `xml:"skipped,attr"`
			Cases    []struct {
				Name    string    `xml:"name,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatal(err)
	}
	var tests, failures, errs int
	for _, s := range doc.Suites {
		var f, e, sk int
		for _, c := range s.Cases {
			if c.Failure != nil {
				f++
			}
			if c.Error != nil {
				e++
			}
			if c.Skipped != nil {
				sk++
			}
		}
		if s.Tests != len(s.Cases) || s.Failures != f || s.Errors != e || s.Skipped != sk {
			t.Errorf("testsuite %s: tests=%d failures=%d errors=%d skipped=%d, but its testcases say %d, %d, %d, %d", s.Name, s.Tests, s.Failures, s.Errors, s.Skipped, len(s.Cases), f, e, sk)
		}
		tests, failures, errs = tests+len(s.Cases), failures+f, errs+e
	}
	if doc.Tests != tests || doc.Failures != failures || doc.Errors != errs {
		t.Errorf("testsuites: %d/%d/%d, testcases %d/%d/%d", doc.Tests, doc.Failures, doc.Errors, tests, failures, errs)
	}
	// With --show-pass every (object, policy) is a testcase: 8 objects
	// evaluated, 18 results (the two pod policies on each Deployment's
	// template among them).
	if tests != 18+2 {
		t.Errorf("%d testcases, want 18 results and 2 policies that do not apply", tests)
	}
}

// TestScanReport checks -o report: reports.Build's objects, a summary that
// counts what is not listed, and a ClusterReport for cluster-scoped
// objects.
func TestScanReport(t *testing.T) {
	fixScanTime(t)
	dir := writeFiles(t, map[string]string{
		"policies/ns.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: ns-owner}
spec:
  match: {resources: [namespaces]}
  action: deny
  with: {message: namespaces need an owner label}
  enforcement: Audit
  failurePolicy: Fail
`,
		"policies/cm.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: cm-debug}
spec:
  match:
    resources: [configmaps]
    conditions: [{expression: "object.metadata.name.startsWith('debug')"}]
  action: deny
  with: {message: debug}
`,
		"objects.yaml": `apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: debug-1, namespace: a, uid: u-1111}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: fine, namespace: a}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: fine, namespace: b}
`,
	})
	code, stdout, stderr := runCLI(t, "scan", "-p", filepath.Join(dir, "policies"), "-f", filepath.Join(dir, "objects.yaml"), "-o", "report")
	if code != 1 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	docs := strings.Split(stdout, "---\n")
	if len(docs) != 2 {
		t.Fatalf("want the Report of a and the ClusterReport, got:\n%s", stdout)
	}
	var r v1alpha1.Report
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &r); err != nil {
		t.Fatal(err)
	}
	if r.Kind != "Report" || r.Namespace != "a" || r.Name != reports.ReportName || len(r.Results) != 1 || r.Results[0].Policy != "cm-debug" || r.Results[0].Subjects[0].UID != "u-1111" {
		t.Errorf("report of a: %+v", r)
	}
	// fine's skip is counted, not listed; b has nothing to list: no report.
	if r.Summary.Fail != 1 || r.Summary.Skip != 1 {
		t.Errorf("summary of a: %+v, want 1 fail, 1 skip", r.Summary)
	}
	if r.Results[0].Timestamp.Seconds != scanNow().Unix() {
		t.Errorf("timestamp %v", r.Results[0].Timestamp)
	}
	var c v1alpha1.ClusterReport
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &c); err != nil {
		t.Fatal(err)
	}
	if c.Kind != "ClusterReport" || c.Summary.Fail != 1 || len(c.Results) != 1 || c.Results[0].Subjects[0].Name != "a" {
		t.Errorf("cluster report: %+v", c)
	}
}

// TestScanExitCodes checks 0, 1 and 2.
func TestScanExitCodes(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"warn.yaml": strings.Replace(denyLatestPolicy, "    message: no latest images\n", "    message: no latest images\n  enforcement: Warn\n", 1),
		"deny.yaml": denyLatestPolicy,
		"pod.yaml":  latestPodYAML,
		"good.yaml": podYAML,
	})
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"a denial", []string{"-p", p("deny.yaml"), "-f", p("pod.yaml")}, 1},
		{"a denial, as json", []string{"-p", p("deny.yaml"), "-f", p("pod.yaml"), "-o", "json"}, 1},
		{"nothing wrong", []string{"-p", p("deny.yaml"), "-f", p("good.yaml")}, 0},
		{"a warning only", []string{"-p", p("warn.yaml"), "-f", p("pod.yaml")}, 0},
		{"a warning only, as sarif", []string{"-p", p("warn.yaml"), "-f", p("pod.yaml"), "-o", "sarif"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"scan"}, tc.args...)...)
			if code != tc.want {
				t.Errorf("exit %d, want %d\n%s\n%s", code, tc.want, stdout, stderr)
			}
		})
	}
}

// TestScanErrors checks that bad usage and unreadable input exit 2 with a
// message naming the problem, and print nothing on stdout.
func TestScanErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"deny.yaml":     denyLatestPolicy,
		"pod.yaml":      latestPodYAML,
		"bad-yaml.yaml": podYAML + "---\n" + latestPodYAML + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n",
		"bad-item.json": `{"apiVersion": "v1", "kind": "List", "items": [` + "\n" + `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}},` + "\n" + `{"metadata": {"name": "b"}}]}`,
		"bad-meta.yaml": "apiVersion: v1\nkind: Pod\nmetadata: [a]\n",
		"scalar.yaml":   podYAML + "---\njust a string\n",
		"no-items.yaml": "apiVersion: v1\nkind: List\nitems: 3\n",
		"empty.yaml":    "# nothing\n",
		"cel.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: broken}
spec:
  match:
    resources: [pods]
    conditions: [{expression: "object.spec ==="}]
  action: deny
  with: {message: x}
`,
		"emptydir/.keep": "",
	})
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no -p", []string{"-f", p("pod.yaml")}, "-p/--policies is required"},
		{"policy error", []string{"-p", p("cel.yaml"), "-f", p("pod.yaml")}, "1 error in policies"},
		{"no policy applies", []string{"-p", "../../policies", "-f", p("pod.yaml")}, "no policy applies to a scan, which runs validating policies on CREATE:\n  protect-delete: matches DELETE only: a scan evaluates CREATE\n"},
		{"missing manifest", []string{"-p", p("deny.yaml"), "-f", p("missing.yaml")}, "missing.yaml: no such file or directory"},
		{"directory without manifests", []string{"-p", p("deny.yaml"), "-f", p("emptydir")}, "emptydir: no *.yaml, *.yml or *.json files"},
		{"no objects", []string{"-p", p("deny.yaml"), "-f", p("empty.yaml")}, "empty.yaml: no objects found"},
		{"invalid YAML names file, line and document", []string{"-p", p("deny.yaml"), "-f", p("bad-yaml.yaml")}, p("bad-yaml.yaml") + ":24: document 3: invalid YAML: "},
		{"a List item without kind", []string{"-p", p("deny.yaml"), "-f", p("bad-item.json")}, p("bad-item.json") + ": document 1, item 2: apiVersion and kind are required"},
		{"metadata not a mapping", []string{"-p", p("deny.yaml"), "-f", p("bad-meta.yaml")}, p("bad-meta.yaml") + ":1: document 1: metadata must be a mapping"},
		{"not an object", []string{"-p", p("deny.yaml"), "-f", p("scalar.yaml")}, p("scalar.yaml") + ":12: document 2: want a Kubernetes object (a mapping with apiVersion and kind), got a string"},
		{"a List without items", []string{"-p", p("deny.yaml"), "-f", p("no-items.yaml")}, p("no-items.yaml") + ":1: document 1: List has no items list"},
		{"stdin twice", []string{"-p", p("deny.yaml"), "-f", "-", "-f", "-"}, "-f - reads standard input once"},
		{"cluster flag with manifests", []string{"-p", p("deny.yaml"), "-f", p("pod.yaml"), "--context", "x"}, "--context is for scanning a cluster; -f scans manifests"},
		{"namespace labels with a cluster", []string{"-p", p("deny.yaml"), "--namespace-labels", "a=b"}, "--namespace-labels is for manifests"},
		{"chunk size 0", []string{"-p", p("deny.yaml"), "--chunk-size", "0"}, "--chunk-size must be at least 1"},
		{"qps 0", []string{"-p", p("deny.yaml"), "--qps", "0"}, "--qps must be more than 0"},
		{"unknown output", []string{"-p", p("deny.yaml"), "-f", p("pod.yaml"), "-o", "html"}, `unknown output format "html": want one of table, json, yaml, junit, sarif, report`},
		{"bad namespace labels", []string{"-p", p("deny.yaml"), "-f", p("pod.yaml"), "--namespace-labels", "env"}, `--namespace-labels: "env" is not key=value`},
		{"missing kubeconfig", []string{"-p", p("deny.yaml"), "--kubeconfig", p("nope.kubeconfig")}, "nope.kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"scan"}, tc.args...)...)
			if code != 2 {
				t.Errorf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr does not contain %q:\n%s", tc.want, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout should be empty:\n%s", stdout)
			}
		})
	}
}

// TestScanNoCluster is a careless operator: a kubeconfig pointing where
// nothing listens, and none at all. Either exits 2 at once, saying what
// is wrong, rather than hanging or retrying.
func TestScanNoCluster(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"deny.yaml": denyLatestPolicy,
		"kubeconfig": `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
	})
	start := time.Now()
	code, stdout, stderr := runCLI(t, "scan", "-p", filepath.Join(dir, "deny.yaml"), "--kubeconfig", filepath.Join(dir, "kubeconfig"))
	if code != 2 || !strings.Contains(stderr, "celadon: cannot reach the API server at https://127.0.0.1:1: ") || stdout != "" {
		t.Errorf("exit %d, want 2 and cannot reach\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v to give up on a refused connection", d)
	}

	// An API server that accepts and never answers: --request-timeout
	// ends the wait.
	hung := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hung.Close()
	hungConfig := filepath.Join(dir, "hung.kubeconfig")
	if err := os.WriteFile(hungConfig, []byte(strings.Replace(string(mustRead(t, filepath.Join(dir, "kubeconfig"))), "https://127.0.0.1:1", hung.URL, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	code, _, stderr = runCLI(t, "scan", "-p", filepath.Join(dir, "deny.yaml"), "--kubeconfig", hungConfig, "--request-timeout", "1s")
	if code != 2 || !strings.Contains(stderr, "cannot reach the API server at "+hung.URL) || !regexp.MustCompile(`(deadline|Timeout) exceeded`).MatchString(stderr) {
		t.Errorf("a hung API server: exit %d, want 2 and a timeout:\n%s", code, stderr)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v with --request-timeout 1s", d)
	}
	code, _, stderr = runCLI(t, "scan", "-p", filepath.Join(dir, "deny.yaml"), "--kubeconfig", hungConfig, "--request-timeout", "-1s")
	if code != 2 || !strings.Contains(stderr, "--request-timeout must not be negative") {
		t.Errorf("--request-timeout -1s: exit %d\n%s", code, stderr)
	}

	// No kubeconfig anywhere and not in a cluster.
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	code, _, stderr = runCLI(t, "scan", "-p", filepath.Join(dir, "deny.yaml"))
	if code != 2 || !strings.Contains(stderr, errNoCluster.Error()) {
		t.Errorf("exit %d, want 2 and %q:\n%s", code, errNoCluster, stderr)
	}
}

// TestScanPolicyErrorsEverywhere is a careless operator: a policy that
// errors on every object. Every error is a result; stderr says the policy
// failed on all of them, with its first error; failurePolicy decides the
// exit code, as it decides admission.
func TestScanPolicyErrorsEverywhere(t *testing.T) {
	broken := `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: broken}
spec:
  match:
    resources: [configmaps]
    conditions: [{expression: "object.data.missing == 'x'"}]
  action: deny
  with: {message: x}
`
	var objs strings.Builder
	for i := range 50 {
		fmt.Fprintf(&objs, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%d, namespace: ns-%d}\ndata: {a: b}\n", i, i%5)
	}
	dir := writeFiles(t, map[string]string{
		"fail/p.yaml":   broken,
		"ignore/p.yaml": strings.Replace(broken, "  action: deny", "  failurePolicy: Ignore\n  action: deny", 1),
		"cms.yaml":      objs.String(),
	})
	for _, tc := range []struct {
		policies string
		code     int
		then     string
	}{
		{"fail", 1, "they would be denied (failurePolicy Fail)"},
		{"ignore", 0, "they would be admitted without it (failurePolicy Ignore)"},
	} {
		code, stdout, stderr := runCLI(t, "scan", "-p", filepath.Join(dir, tc.policies), "-f", filepath.Join(dir, "cms.yaml"))
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d\n%s", tc.policies, code, tc.code, stderr)
		}
		want := `celadon: warning: policy "broken" failed on every object it was evaluated on (50): ` + tc.then + "; the first error: "
		if !strings.Contains(stderr, want) || !strings.Contains(stderr, "no such key: missing") {
			t.Errorf("%s: stderr does not say %q:\n%s", tc.policies, want, stderr)
		}
		lines := splitLines(stdout)
		if rows := strings.Count(stdout, "  broken  error  "); rows != 50 {
			t.Errorf("%s: %d error rows, want 50:\n%s", tc.policies, rows, stdout)
		}
		if last := lines[len(lines)-1]; !strings.HasSuffix(last, "results: 0 fail, 0 warn, 50 error, 0 pass, 0 skip") {
			t.Errorf("%s: summary %q", tc.policies, last)
		}
	}
}

// TestScanHugeListOnStdin is a careless operator: `kubectl get cm -A -o
// json | celadon scan -f -` on a large cluster, a List of 100,000 items.
// Every item is evaluated once, the table lists the violations only, and
// -o report stays within reports.MaxResults per namespace while its
// summary counts them all.
func TestScanHugeListOnStdin(t *testing.T) {
	if testing.Short() {
		t.Skip("evaluates 100,000 objects (-short)")
	}
	const n = 100_000
	var b strings.Builder
	b.WriteString(`{"apiVersion": "v1", "kind": "List", "items": [`)
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-%06d","namespace":"ns-%d","uid":"u-%d"},"data":{"k":"v"}}`, i, i%3, i)
	}
	b.WriteString("]}\n")
	input := b.String()
	dir := writeFiles(t, map[string]string{"p.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: sevens}
spec:
  match:
    resources: [configmaps]
    conditions: [{expression: "object.metadata.name.endsWith('7')"}]
  action: deny
  with: {messageExpression: "object.metadata.name + ' ends with 7'"}
`})
	withStdin(t, input)
	start := time.Now()
	code, stdout, stderr := runCLI(t, "scan", "-p", filepath.Join(dir, "p.yaml"), "-f", "-")
	t.Logf("100,000 objects from stdin, -o table: %v", time.Since(start))
	if code != 1 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	lines := splitLines(stdout)
	if want := "100000 objects scanned, 100000 matched by a policy: 90000 allowed, 10000 denied; results: 10000 fail, 0 warn, 0 error, 0 pass, 90000 skip"; lines[len(lines)-1] != want {
		t.Errorf("summary %q, want %q", lines[len(lines)-1], want)
	}
	if rows := len(lines) - 3; rows != n/10 {
		t.Errorf("%d rows, want %d (the failures only)", rows, n/10)
	}
	if !strings.HasPrefix(lines[1], "<stdin>:1  ns-1       configmap/cm-000007  sevens  fail    cm-000007 ends with 7") {
		t.Errorf("first row %q", lines[1])
	}

	withStdin(t, input)
	code, stdout, _ = runCLI(t, "scan", "-p", filepath.Join(dir, "p.yaml"), "-f", "-", "-o", "report")
	if code != 1 {
		t.Fatalf("-o report: exit %d", code)
	}
	docs := strings.Split(stdout, "---\n")
	var fail, skip int
	for i, doc := range docs {
		var r v1alpha1.Report
		if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Results) != reports.MaxResults || r.Summary.Fail < 3333 || r.Namespace != fmt.Sprintf("ns-%d", i) {
			t.Errorf("report %d: %s, %d results, summary %+v", i, r.Namespace, len(r.Results), r.Summary)
		}
		fail, skip = fail+r.Summary.Fail, skip+r.Summary.Skip
	}
	if len(docs) != 3 || fail != n/10 || skip != n-n/10 {
		t.Errorf("%d reports counting %d fail, %d skip; want 3, %d, %d", len(docs), fail, skip, n/10, n-n/10)
	}
}

// TestScanDirectories checks which files of a directory -f reads: its
// manifests, in name order, those of subdirectories with -R only, never
// hidden ones.
func TestScanDirectories(t *testing.T) {
	pod := func(name string) string { return strings.Replace(latestPodYAML, "name: web", "name: "+name, 1) }
	dir := writeFiles(t, map[string]string{
		"deny.yaml":               denyLatestPolicy,
		"m/b.yaml":                pod("b"),
		"m/a.yml":                 pod("a"),
		"m/c.json":                `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}`,
		"m/notes.txt":             pod("txt"),
		"m/.hidden.yaml":          pod("hidden"),
		"m/sub/d.yaml":            pod("d"),
		"m/.git/e.yaml":           pod("git"),
		"m/sub/deeper/f.yaml":     pod("f"),
		"m/sub/deeper/.g.yaml":    pod("g"),
		"m/sub/deeper/README.md":  "# not a manifest",
		"m/sub/deeper/h.yaml.bak": pod("bak"),
	})
	names := func(stdout string) []string {
		var out []string
		for _, l := range splitLines(stdout)[1:] {
			if f := strings.Fields(l); len(f) > 2 && strings.HasPrefix(f[2], "pod/") {
				out = append(out, strings.TrimPrefix(f[2], "pod/"))
			}
		}
		return out
	}
	_, stdout, stderr := runCLI(t, "scan", "-p", filepath.Join(dir, "deny.yaml"), "-f", filepath.Join(dir, "m"))
	if got := names(stdout); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("without -R: %q, want a, b (c has no latest image)\n%s%s", got, stdout, stderr)
	}
	_, stdout, stderr = runCLI(t, "scan", "-p", filepath.Join(dir, "deny.yaml"), "-f", filepath.Join(dir, "m"), "-R")
	if got := names(stdout); !slices.Equal(got, []string{"a", "b", "d", "f"}) {
		t.Errorf("with -R: %q, want a, b, d, f\n%s%s", got, stdout, stderr)
	}
	// A file named explicitly is read whatever its name.
	_, stdout, _ = runCLI(t, "scan", "-p", filepath.Join(dir, "deny.yaml"), "-f", filepath.Join(dir, "m/notes.txt"), "-f", filepath.Join(dir, "m/b.yaml"))
	if got := names(stdout); !slices.Equal(got, []string{"txt", "b"}) {
		t.Errorf("two files: %q, want txt, b", got)
	}
}

// TestScanProgress checks the progress line: drawn in place, at most
// every progressInterval but for a resource's last page, cleared at the
// end; never on what is not a terminal.
func TestScanProgress(t *testing.T) {
	var buf strings.Builder
	p := &progress{w: &buf, on: true, start: time.Now()}
	p.update("v1/configmaps", 500, 2000, 500, 3)
	p.update("v1/configmaps", 1000, 2000, 1000, 3) // too soon: not drawn
	p.update("v1/configmaps", 2000, 2000, 2000, 4) // the last page: drawn
	p.finish()
	out := buf.String()
	if strings.Count(out, "\r\033[K") != 3 || !strings.HasSuffix(out, "\r\033[K") {
		t.Errorf("want 2 lines drawn then cleared: %q", out)
	}
	if !strings.Contains(out, "[=====               ]  25% v1/configmaps 500/2000 · 500 objects scanned, 3 denied") ||
		!strings.Contains(out, "[====================] 100% v1/configmaps 2000/2000 · 2000 objects scanned, 4 denied") {
		t.Errorf("progress lines: %q", out)
	}
	if got := progressLine("apps/v1/deployments", 7, -1, 7, 0, 2*time.Second); got != "apps/v1/deployments 7 · 7 objects scanned, 0 denied · 2s" {
		t.Errorf("without a total: %q", got)
	}
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, w := range []io.Writer{f, &buf} {
		if p := newProgress(w); p.on {
			t.Errorf("progress on for %T, which is no terminal", w)
		}
	}
}

// TestScanREADMEExample checks that the README's worked example is what
// the scan prints.
func TestScanREADMEExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile("testdata/scan/golden/table.golden")
	if err != nil {
		t.Fatal(err)
	}
	want := "$ cd cmd/celadon/testdata/scan && celadon scan -p policies -f manifests\n" + string(golden)
	if !strings.Contains(string(readme), want) {
		t.Errorf("README.md does not show the output of testdata/scan/golden/table.golden after\n%s", want)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestListPagesExpiredContinue checks the paging of a LIST: limit and
// continue, and a continue token that expires part-way (the API server
// compacted its history), followed by the inconsistent token the API
// server offers with a note; without one, the list fails.
func TestListPagesExpiredContinue(t *testing.T) {
	item := func(name string) string {
		return `{"metadata": {"name": "` + name + `", "namespace": "a"}}`
	}
	var requests []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		requests = append(requests, r.URL.Path+"?limit="+q.Get("limit")+"&continue="+q.Get("continue"))
		w.Header().Set("Content-Type", "application/json")
		switch q.Get("continue") {
		case "":
			fmt.Fprint(w, `{"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"continue": "c1", "remainingItemCount": 3}, "items": [`+item("a")+`,`+item("b")+`]}`)
		case "c1":
			w.WriteHeader(http.StatusGone)
			fmt.Fprint(w, `{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410, "message": "too old resource version", "metadata": {"continue": "c2"}}`)
		case "c2":
			fmt.Fprint(w, `{"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"continue": "c3"}, "items": [`+item("c")+`]}`)
		case "c3":
			w.WriteHeader(http.StatusGone)
			fmt.Fprint(w, `{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410, "message": "too old resource version"}`)
		}
	}))
	defer srv.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	pages := make(chan scanPage, 1)
	go listPages(t.Context(), cs.CoreV1().RESTClient(), "/api/v1/configmaps", 2, pages)
	var got []string
	for p := range pages {
		var names []string
		for _, raw := range p.items {
			it, err := newLiveItem(raw, &scanResource{gvk: schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(it.raw), `{"apiVersion":"v1","kind":"ConfigMap",`) {
				t.Errorf("item %s: the type is not put back: %s", it.name, it.raw)
			}
			names = append(names, it.name)
		}
		errText := ""
		if p.err != nil {
			errText = p.err.Error()
		}
		got = append(got, fmt.Sprintf("%q remaining=%d note=%t err=%q", names, p.remaining, p.note != "", errText))
	}
	want := []string{
		`["a" "b"] remaining=3 note=false err=""`,
		`["c"] remaining=-1 note=true err=""`,
		`[] remaining=0 note=false err="too old resource version"`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("pages:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if wantReq := []string{"/api/v1/configmaps?limit=2&continue=", "/api/v1/configmaps?limit=2&continue=c1", "/api/v1/configmaps?limit=2&continue=c2", "/api/v1/configmaps?limit=2&continue=c3"}; !slices.Equal(requests, wantReq) {
		t.Errorf("requests %q", requests)
	}
}

// TestScanExceptions scans with -e, as the server applies its exceptions
// directory: an excepted violation is listed as skip, naming its
// exception, in the table and in -o report, and the scan exits 0.
func TestScanExceptions(t *testing.T) {
	t.Chdir("../..")
	ex := "examples/deny-exception-team-namespace"
	args := []string{"scan", "-p", ex + "/policy.yaml", "-f", ex + "/object.yaml", "-e", ex + "/exceptions", "--now", "2026-03-01T00:00:00Z"}
	code, stdout, stderr := runCLI(t, args...)
	if code != 0 || !strings.Contains(stdout, "skip") || !strings.Contains(stdout, "excepted") {
		t.Fatalf("exit %d, want 0 and the excepted result listed:\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, append(args, "-o", "report")...)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	var r v1alpha1.Report
	if err := yaml.UnmarshalStrict([]byte(strings.Split(stdout, "---\n")[0]), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Results) != 1 || r.Results[0].Result != "skip" || r.Results[0].Properties[reports.PropertyException] == "" || r.Results[0].Properties[reports.PropertyExceptionExpires] == "" {
		t.Errorf("report: %+v, want one skip naming its exception and when it expires", r.Results)
	} else if p := r.Results[0].Properties; p[reports.PropertyExceptionExpires] != "2026-03-04T00:00:00Z" || p[reports.PropertyExceptionExpiresSoon] != "true" {
		t.Errorf("properties %v: want it to expire 2026-03-04, within a week of --now", p)
	}
	// Without -e the same object is a violation.
	if code, stdout, _ := runCLI(t, args[:5]...); code != 1 {
		t.Errorf("without -e: exit %d, want 1\n%s", code, stdout)
	}
}
