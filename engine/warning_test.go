package engine

import (
	"fmt"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

func TestWarningText(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                      "plain",
		"  spaces are kept  ":        "  spaces are kept  ",
		"line one\nline two\n":       "line one line two",
		"crlf\r\nand\ttab":           "crlf and tab",
		"bell\a, escape \x1b[31mred": "bell , escape  [31mred",
		"C1\u0085next line":          "C1 next line",
		"bad \xff byte":              "bad \uFFFD byte",
		"\n":                         "",
		"unicode: é, 名前, \u2028":     "unicode: é, 名前, \u2028", // U+2028 is not a control: the API server takes it
	} {
		if got := warningText(in); got != want {
			t.Errorf("warningText(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWarningsCarryNoControlCharacters: a Warn policy's message written as
// a YAML block scalar ends with a newline, which would make the API server
// drop the warning; an Audit one, and a builtin's own warnings, likewise.
// Warnings equal once cleaned are sent once, and one that is left empty is
// not sent.
func TestWarningsCarryNoControlCharacters(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("w", "  match: {resources: [pods]}\n  action: violate\n  with:\n    message: |\n      line one\n      line two\n  enforcement: Warn\n"),
		policyYAML("a", "  match: {resources: [pods]}\n  action: violate\n  with: {message: \"audited\\n\"}\n  enforcement: Audit\n"),
		policyYAML("w2", "  match: {resources: [pods]}\n  action: violate\n  with: {message: \"line one\\r\\nline two\"}\n  enforcement: Warn\n"),
	)
	d := evaluate(t, snap, podRequest(t, admissionv1.Create, pod("a", nil), nil), EvalOptions{})
	want := []string{"w: line one line two", "a (audit): audited", "w2: line one line two"}
	if fmt.Sprintf("%q", d.Warnings) != fmt.Sprintf("%q", want) {
		t.Errorf("warnings %q, want %q", d.Warnings, want)
	}
	if d.AuditAnnotations["a"] != "audited\n" {
		t.Errorf("audit annotation %q: the audit log takes the message as it is", d.AuditAnnotations["a"])
	}
}
