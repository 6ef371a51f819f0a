package main

// The machine-readable outputs of `celadon test`: -o json and -o junit.

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"

	"celadon.io/celadon/engine"
)

// testReport is a run of `celadon test`: what every output prints.
type testReport struct {
	passed, failed, broken int
	// suites in the order run: those that could not be run, and those with
	// a case selected by --run.
	suites []*suiteReport
}

type suiteReport struct {
	file   string
	name   string       // metadata.name
	errors []string     // why the suite could not be run; then it has no cases
	cases  []caseReport // the cases run
}

type caseReport struct {
	c        *suiteCase
	problems []string         // what differed from the expectations
	d        *engine.Decision // nil when the evaluation failed
}

func (c caseReport) passed() bool { return len(c.problems) == 0 }

// The JSON of -o json. Every key is always present.
type (
	testJSON struct {
		Passed int         `json:"passed"` // cases
		Failed int         `json:"failed"` // cases
		Broken int         `json:"broken"` // suites that could not be run
		Suites []suiteJSON `json:"suites"`
	}
	suiteJSON struct {
		File   string     `json:"file"`
		Name   string     `json:"name"`
		Errors []string   `json:"errors"`
		Cases  []caseJSON `json:"cases"`
	}
	caseJSON struct {
		Name     string          `json:"name"`
		Passed   bool            `json:"passed"`
		Problems []string        `json:"problems"`
		Request  requestOutput   `json:"request"`
		Decision *decisionOutput `json:"decision"` // null when the evaluation failed
	}
)

// writeJSON writes the report as one indented JSON object.
func (r *testReport) writeJSON(w io.Writer) error {
	out := testJSON{Passed: r.passed, Failed: r.failed, Broken: r.broken, Suites: []suiteJSON{}}
	for _, s := range r.suites {
		sj := suiteJSON{File: s.file, Name: s.name, Errors: append([]string{}, s.errors...), Cases: []caseJSON{}}
		for _, c := range s.cases {
			cj := caseJSON{Name: c.c.name, Passed: c.passed(), Problems: append([]string{}, c.problems...), Request: newRequestOutput(c.c.req)}
			if c.d != nil {
				d, err := newDecisionOutput(c.d)
				if err != nil {
					return fmt.Errorf("%s: %s: %v", s.file, c.c.name, err)
				}
				cj.Decision = &d
			}
			sj.Cases = append(sj.Cases, cj)
		}
		out.Suites = append(out.Suites, sj)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// The XML of -o junit, in the shape CI systems read (Jenkins, GitLab,
// GitHub Actions reporters): a testsuite per suite file, a testcase per
// case, a failure with what differed. A suite that could not be run is a
// testsuite holding one testcase, junitLoadCase, with an error.
type (
	junitTestsuites struct {
		XMLName  xml.Name         `xml:"testsuites"`
		Name     string           `xml:"name,attr"`
		Tests    int              `xml:"tests,attr"`
		Failures int              `xml:"failures,attr"`
		Errors   int              `xml:"errors,attr"`
		Suites   []junitTestsuite `xml:"testsuite"`
	}
	junitTestsuite struct {
		Name     string          `xml:"name,attr"`
		Tests    int             `xml:"tests,attr"`
		Failures int             `xml:"failures,attr"`
		Errors   int             `xml:"errors,attr"`
		Skipped  int             `xml:"skipped,attr,omitempty"`
		Cases    []junitTestcase `xml:"testcase"`
	}
	junitTestcase struct {
		Name      string        `xml:"name,attr"`
		Classname string        `xml:"classname,attr"`
		File      string        `xml:"file,attr"`
		Failure   *junitProblem `xml:"failure"`
		Error     *junitProblem `xml:"error"`
		Skipped   *junitSkipped `xml:"skipped"`
		SystemOut *junitText    `xml:"system-out"`
	}
	junitSkipped struct {
		Message string `xml:"message,attr"`
	}
	junitText struct {
		Text string `xml:",cdata"` // xmlText
	}
	junitProblem struct {
		Message string `xml:"message,attr"`
		Type    string `xml:"type,attr"`
		Text    string `xml:",cdata"` // xmlText
	}
)

// xmlText returns s as the text of CDATA: encoding/xml escapes the
// characters XML does not allow in attributes and character data, not in
// CDATA, so they are replaced here, as it does, with U+FFFD.
func xmlText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r',
			r >= 0x20 && r <= 0xD7FF,
			r >= 0xE000 && r <= 0xFFFD,
			r >= 0x10000 && r <= 0x10FFFF:
			return r
		}
		return '\uFFFD'
	}, s)
}

// junitLoadCase names the testcase standing for a suite that could not be
// run.
const junitLoadCase = "(suite)"

// writeJUnit writes the report as JUnit XML; verbose adds each case's
// request and policy results as its system-out.
func (r *testReport) writeJUnit(w io.Writer, verbose bool) error {
	out := junitTestsuites{Name: "celadon test"}
	for _, s := range r.suites {
		ts := junitTestsuite{Name: s.file}
		if len(s.errors) > 0 {
			ts.Errors = 1
			ts.Cases = append(ts.Cases, junitTestcase{
				Name: junitLoadCase, Classname: s.file, File: s.file,
				Error: &junitProblem{
					Message: fmt.Sprintf("the suite could not be run: %d error%s", len(s.errors), pluralS(len(s.errors))),
					Type:    "SuiteError",
					Text:    xmlText(strings.Join(s.errors, "\n")),
				},
			})
		}
		for _, c := range s.cases {
			tc := junitTestcase{Name: c.c.name, Classname: s.file, File: s.file}
			if !c.passed() {
				ts.Failures++
				first, _, _ := strings.Cut(c.problems[0], "\n")
				tc.Failure = &junitProblem{Message: first, Type: "ExpectationFailed", Text: xmlText(strings.Join(c.problems, "\n"))}
			}
			if verbose && c.d != nil {
				tc.SystemOut = &junitText{xmlText(suiteCaseDetails(c.c, c.d))}
			}
			ts.Cases = append(ts.Cases, tc)
		}
		ts.Tests = len(ts.Cases)
		out.Tests += ts.Tests
		out.Failures += ts.Failures
		out.Errors += ts.Errors
		out.Suites = append(out.Suites, ts)
	}
	return writeJUnitDocument(w, out)
}

// writeJUnitDocument writes out as an indented JUnit XML document.
func writeJUnitDocument(w io.Writer, out junitTestsuites) error {
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
