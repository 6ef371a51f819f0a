package main

import (
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	version, commit, date = "v1.2.3", "abc1234", "2026-01-02T03:04:05Z"

	code, stdout, stderr := runFreshCLI(t, "version")
	want := "celadon v1.2.3 (commit abc1234, built 2026-01-02T03:04:05Z, " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if code != 0 || stdout != want {
		t.Errorf("version: exit %d\n got %q\nwant %q\n%s", code, stdout, want, stderr)
	}
	code, stdout, _ = runFreshCLI(t, "version", "--short")
	if code != 0 || stdout != "v1.2.3\n" {
		t.Errorf("version --short: exit %d, %q", code, stdout)
	}
	// --short does not stick to the command.
	if _, stdout, _ = runFreshCLI(t, "version"); stdout != want {
		t.Errorf("version after --short: %q", stdout)
	}
	if code, _, _ := runFreshCLI(t, "version", "extra"); code != 2 {
		t.Errorf("version extra: exit %d, want 2", code)
	}
}

// TestVersionFlag checks that `celadon --version` prints what `celadon
// version` does, read when it runs, and that -v is not --version.
func TestVersionFlag(t *testing.T) {
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	version, commit, date = "v1.2.3", "abc1234", "2026-01-02T03:04:05Z"
	// cobra keeps flag values between runs of the same command.
	defer func() { _ = rootCmd.Flags().Set("version", "false") }()

	code, stdout, stderr := runFreshCLI(t, "--version")
	want := "celadon v1.2.3 (commit abc1234, built 2026-01-02T03:04:05Z, " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if code != 0 || stdout != want {
		t.Errorf("--version: exit %d\n got %q\nwant %q\n%s", code, stdout, want, stderr)
	}
	if _, fromCmd, _ := runFreshCLI(t, "version"); fromCmd != stdout {
		t.Errorf("--version printed %q, the version command %q", stdout, fromCmd)
	}
	code, stdout, _ = runFreshCLI(t, "--help")
	if code != 0 || !strings.Contains(stdout, "      --version   print the version") {
		t.Errorf("--help should list --version, without a shorthand:\n%s", stdout)
	}
	if code, _, stderr := runFreshCLI(t, "-v"); code != 2 || !strings.Contains(stderr, "unknown shorthand flag: 'v'") {
		t.Errorf("-v: exit %d, want 2 (unknown flag)\n%s", code, stderr)
	}
}

// TestVersionUnset checks the output of a plain `go build`: every field is
// filled in.
func TestVersionUnset(t *testing.T) {
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	version, commit, date = "dev", "", ""
	_, stdout, _ := runFreshCLI(t, "version")
	if !regexp.MustCompile(`^celadon \S+ \(commit \S+, built \S+, go\S* \w+/\w+\)\n$`).MatchString(stdout) {
		t.Errorf("version: %q", stdout)
	}
}

func TestFillFromBuildInfo(t *testing.T) {
	vcs := &debug.BuildInfo{
		Main: debug.Module{Path: "celadon.io/celadon", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-03-04T05:06:07Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	installed := &debug.BuildInfo{Main: debug.Module{Path: "celadon.io/celadon", Version: "v0.4.0"}}
	for _, c := range []struct {
		name string
		in   versionInfo
		bi   *debug.BuildInfo
		want versionInfo
	}{
		{"ldflags win", versionInfo{version: "v1.0.0", commit: "abc", date: "today"}, vcs, versionInfo{version: "v1.0.0", commit: "abc", date: "today"}},
		{"from VCS", versionInfo{version: "dev"}, vcs, versionInfo{version: "dev", commit: "0123456789ab-dirty", date: "2026-03-04T05:06:07Z"}},
		{"go install", versionInfo{version: "dev"}, installed, versionInfo{version: "v0.4.0"}},
		{"nothing", versionInfo{version: "dev"}, &debug.BuildInfo{}, versionInfo{version: "dev"}},
	} {
		if got := fillFromBuildInfo(c.in, c.bi); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}
