package main

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"strings"
	"testing"
)

// The suites of the report tests: one with passing and failing cases, one
// that cannot be run.
var reportSuites = []string{"testdata/suites/failing", "testdata/suites/malformed/syntax.yaml"}

const (
	failingSuite   = "testdata/suites/failing/wrong-expectations.yaml"
	malformedSuite = "testdata/suites/malformed/syntax.yaml"
)

// checkGolden compares got with the golden file (UPDATE_GOLDEN=1 rewrites
// it).
func checkGolden(t *testing.T, golden, got string) {
	t.Helper()
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (UPDATE_GOLDEN=1 regenerates it):\n%s", golden, unifiedDiff(golden, "got", string(want), got))
	}
}

// The JUnit XML as a CI system reads it.
type (
	junitDoc struct {
		XMLName  xml.Name `xml:"testsuites"`
		Tests    int      `xml:"tests,attr"`
		Failures int      `xml:"failures,attr"`
		Errors   int      `xml:"errors,attr"`
		Suites   []struct {
			Name     string `xml:"name,attr"`
			Tests    int    `xml:"tests,attr"`
			Failures int    `xml:"failures,attr"`
			Errors   int    `xml:"errors,attr"`
			Cases    []struct {
				Name      string       `xml:"name,attr"`
				Classname string       `xml:"classname,attr"`
				Failure   *junitReadPb `xml:"failure"`
				Error     *junitReadPb `xml:"error"`
				SystemOut *string      `xml:"system-out"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	junitReadPb struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	}
)

func parseJUnit(t *testing.T, out string) junitDoc {
	t.Helper()
	var doc junitDoc
	if !strings.HasPrefix(out, `<?xml version="1.0" encoding="UTF-8"?>`+"\n") {
		t.Errorf("no XML declaration:\n%s", out)
	}
	if err := xml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return doc
}

// TestTestJUnit checks -o junit: a testsuite per suite file, a testcase per
// case, a failure saying what differed, an error for a suite that cannot be
// run, and the exit status of -o text.
func TestTestJUnit(t *testing.T) {
	code, stdout, stderr := runFreshCLI(t, append([]string{"test", "-o", "junit"}, reportSuites...)...)
	if code != 2 {
		t.Errorf("exit %d, want 2 (a suite cannot be run)", code)
	}
	if !strings.Contains(stderr, malformedSuite+":3: YAML:") || !strings.Contains(stderr, "celadon: 1 suite could not be run") {
		t.Errorf("stderr should still say why the suite cannot be run:\n%s", stderr)
	}
	checkGolden(t, "testdata/suites/report.junit.golden.xml", stdout)

	doc := parseJUnit(t, stdout)
	if doc.Tests != 6 || doc.Failures != 4 || doc.Errors != 1 || len(doc.Suites) != 2 {
		t.Fatalf("testsuites: tests %d, failures %d, errors %d, %d suites; want 6, 4, 1, 2", doc.Tests, doc.Failures, doc.Errors, len(doc.Suites))
	}
	s0, s1 := doc.Suites[0], doc.Suites[1]
	if s0.Name != failingSuite || s0.Tests != 5 || s0.Failures != 4 || s0.Errors != 0 || len(s0.Cases) != 5 {
		t.Errorf("first testsuite: %s, tests %d, failures %d, errors %d", s0.Name, s0.Tests, s0.Failures, s0.Errors)
	}
	for _, c := range s0.Cases {
		if c.Classname != failingSuite || c.Error != nil || c.SystemOut != nil {
			t.Errorf("testcase %q: classname %q, error %v, system-out %v", c.Name, c.Classname, c.Error, c.SystemOut)
		}
		switch c.Name {
		case "right":
			if c.Failure != nil {
				t.Errorf("right: failure %+v", c.Failure)
			}
		case "wrong message and allowed":
			if c.Failure == nil ||
				c.Failure.Message != `policy no-latest: fail, but its message "pod latest uses a :latest image (team b)" does not match "team a"` ||
				c.Failure.Text != c.Failure.Message+"\nallowed: got false, want true: denied: pod latest uses a :latest image (team b)" {
				t.Errorf("%s: failure %+v", c.Name, c.Failure)
			}
		default:
			if c.Failure == nil || c.Failure.Message == "" || !strings.HasPrefix(c.Failure.Text, c.Failure.Message) {
				t.Errorf("%s: failure %+v", c.Name, c.Failure)
			}
		}
	}
	if s1.Name != malformedSuite || s1.Tests != 1 || s1.Errors != 1 || len(s1.Cases) != 1 ||
		s1.Cases[0].Name != "(suite)" || s1.Cases[0].Error == nil ||
		s1.Cases[0].Error.Message != "the suite could not be run: 1 error" ||
		!strings.HasPrefix(s1.Cases[0].Error.Text, malformedSuite+":3: YAML:") {
		t.Errorf("the suite that cannot be run: %+v", s1)
	}

	// Exit status as with -o text; -v adds system-out.
	code, stdout, _ = runFreshCLI(t, "test", "-o", "junit", "testdata/suites/failing")
	if code != 1 || parseJUnit(t, stdout).Failures != 4 {
		t.Errorf("failing suite: exit %d, want 1:\n%s", code, stdout)
	}
	code, stdout, _ = runFreshCLI(t, "test", "-o", "junit", "-v", "testdata/suites/passing")
	doc = parseJUnit(t, stdout)
	if code != 0 || doc.Tests != 9 || doc.Failures != 0 || doc.Errors != 0 {
		t.Errorf("passing suite: exit %d, want 0, 9 tests:\n%s", code, stdout)
	}
	for _, c := range doc.Suites[0].Cases {
		if c.SystemOut == nil || !strings.HasPrefix(*c.SystemOut, "request: ") {
			t.Errorf("-v: %s: system-out %v", c.Name, c.SystemOut)
		}
	}
}

// TestTestJSON checks -o json: every suite, case, problem and policy
// result, and the exit status of -o text.
func TestTestJSON(t *testing.T) {
	code, stdout, stderr := runFreshCLI(t, append([]string{"test", "-o", "json"}, reportSuites...)...)
	if code != 2 {
		t.Errorf("exit %d, want 2 (a suite cannot be run)", code)
	}
	if !strings.Contains(stderr, malformedSuite+":3: YAML:") {
		t.Errorf("stderr should still say why the suite cannot be run:\n%s", stderr)
	}
	checkGolden(t, "testdata/suites/report.golden.json", stdout)

	type report struct {
		Passed, Failed, Broken int
		Suites                 []struct {
			File, Name string
			Errors     []string
			Cases      []struct {
				Name     string
				Passed   bool
				Problems []string
				Request  struct{ Operation, Namespace, Name string }
				Decision *struct {
					Allowed bool
					Message string
					Results []struct{ Policy, State, Reason string }
					Patch   []any
				}
			}
		}
	}
	var r report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if r.Passed != 1 || r.Failed != 4 || r.Broken != 1 || len(r.Suites) != 2 {
		t.Fatalf("passed %d, failed %d, broken %d, %d suites; want 1, 4, 1, 2", r.Passed, r.Failed, r.Broken, len(r.Suites))
	}
	s0, s1 := r.Suites[0], r.Suites[1]
	if s0.File != failingSuite || len(s0.Errors) != 0 || len(s0.Cases) != 5 {
		t.Fatalf("first suite: %+v", s0)
	}
	right, wrong := s0.Cases[0], s0.Cases[1]
	if right.Name != "right" || !right.Passed || len(right.Problems) != 0 || right.Decision == nil ||
		right.Decision.Allowed || right.Decision.Message != "pod latest uses a :latest image (team a)" ||
		right.Request.Operation != "CREATE" || right.Request.Namespace != "team-a" || right.Request.Name != "latest" {
		t.Errorf("case right: %+v", right)
	}
	if len(right.Decision.Results) != 4 || right.Decision.Results[1].Policy != "no-latest" || right.Decision.Results[1].State != "fail" {
		t.Errorf("case right: results %+v", right.Decision.Results)
	}
	if wrong.Name != "wrong state" || wrong.Passed ||
		len(wrong.Problems) != 1 || wrong.Problems[0] != "policy no-latest: got fail, want pass: pod latest uses a :latest image (team a)" {
		t.Errorf("case wrong state: %+v", wrong)
	}
	if s1.File != malformedSuite || len(s1.Errors) != 1 || !strings.HasPrefix(s1.Errors[0], malformedSuite+":3: YAML:") || len(s1.Cases) != 0 {
		t.Errorf("the suite that cannot be run: %+v", s1)
	}

	// Exit status as with -o text; --run leaves out the suites it selects
	// nothing of.
	code, stdout, _ = runFreshCLI(t, "test", "-o", "json", "--run", "right", "testdata/suites/failing", "testdata/suites/passing")
	r = report{}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if code != 0 || r.Passed != 1 || r.Failed != 0 || len(r.Suites) != 1 || len(r.Suites[0].Cases) != 1 {
		t.Errorf("--run right: exit %d, want 0 and one case:\n%s", code, stdout)
	}
	if code, _, _ := runFreshCLI(t, "test", "-o", "json", "testdata/suites/failing"); code != 1 {
		t.Errorf("failing suite: exit %d, want 1", code)
	}
}
