package main

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// TestOutputCompletion checks that shell completion offers every command's
// -o formats, exactly the values the flag accepts.
func TestOutputCompletion(t *testing.T) {
	want := map[string][]string{
		"eval": {"text", "yaml", "json", "patch", "review", "results"},
		"scan": {"table", "json", "yaml", "junit", "sarif", "report"},
		"test": {"text", "json", "junit"},
	}
	runFreshCLI(t, "version") // every command with -o built afresh
	var withOutput []string
	for _, c := range rootCmd.Commands() {
		if c.Flags().Lookup("output") != nil {
			withOutput = append(withOutput, c.Name())
		}
	}
	if known := slices.Sorted(maps.Keys(want)); !slices.Equal(withOutput, known) {
		t.Fatalf("commands with -o: %q; the test knows %q", withOutput, known)
	}
	for _, name := range withOutput {
		for _, flag := range []string{"-o", "--output"} {
			code, stdout, stderr := runFreshCLI(t, "__complete", name, flag, "")
			lines := splitLines(stdout)
			if code != 0 || len(lines) == 0 || lines[len(lines)-1] != ":4" {
				t.Errorf("%s %s: exit %d, want the values then :4 (no file completion)\n%s\n%s", name, flag, code, stdout, stderr)
				continue
			}
			var values []string
			for _, l := range lines[:len(lines)-1] {
				value, desc, _ := strings.Cut(l, "\t")
				if desc == "" {
					t.Errorf("%s %s %s: no description", name, flag, value)
				}
				values = append(values, value)
			}
			if !slices.Equal(values, want[name]) {
				t.Errorf("%s %s completes to %q, want %q", name, flag, values, want[name])
			}
		}
		// The completions are the values the flag accepts.
		code, _, stderr := runFreshCLI(t, name, "-o", "nope")
		if w := `unknown output format "nope": want one of ` + strings.Join(want[name], ", "); code != 2 || !strings.Contains(stderr, w) {
			t.Errorf("%s -o nope: exit %d, want 2 and %q:\n%s", name, code, w, stderr)
		}
	}
}
