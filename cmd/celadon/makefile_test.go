package main

// Tests of the Makefile targets around the celadon binary, run by make
// itself; the test binary stands in for bin/celadon where one is run.

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// asMainEnv makes the test binary run as the celadon command (TestMain), so
// that make can run it without a build of its own.
const asMainEnv = "CELADON_TEST_RUN_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// makeCommand returns make, to run in the repository root, as a make of
// its own rather than a sub-make of `make test`: no inherited flags or
// jobserver.
func makeCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	if testing.Short() {
		t.Skip("runs make (-short)")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	cmd := exec.Command("make", append([]string{"--no-print-directory"}, args...)...)
	cmd.Dir = "../.."
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES":
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

// runMake runs make with BIN a fresh directory whose celadon is this test
// binary, which make is told not to rebuild. It returns stdout, stderr and
// make's error.
func runMake(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	celadon := filepath.Join(bin, "celadon")
	if err := os.Symlink(self, celadon); err != nil {
		t.Fatal(err)
	}
	cmd := makeCommand(t, append([]string{"-o", celadon, "BIN=" + bin}, args...)...)
	cmd.Env = append(cmd.Env, asMainEnv+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// demoHeader starts the output of one example in `make demo`.
var demoHeader = regexp.MustCompile(`^=== (examples/[^/ ]+)/$`)

// TestMakeDemo runs `make demo` and checks every example's output against
// its golden expected.txt and its exit code against expected-denied.txt, as
// TestExamples does: the demo must run each example as the tests do,
// whatever its layout (policy.yaml or policies/).
func TestMakeDemo(t *testing.T) {
	stdout, stderr, err := runMake(t, "demo")
	if err != nil {
		t.Fatalf("make demo: %v\nstderr:\n%s\nstdout:\n%s", err, stderr, stdout)
	}
	sections := map[string][]string{}
	var order []string
	cur := ""
	for _, l := range splitLines(stdout) {
		if m := demoHeader.FindStringSubmatch(l); m != nil {
			cur = m[1]
			order = append(order, cur)
			continue
		}
		if cur == "" {
			t.Fatalf("output before the first example: %q", l)
		}
		sections[cur] = append(sections[cur], l)
	}
	entries, err := os.ReadDir("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), "_") {
			want = append(want, "examples/"+e.Name())
		}
	}
	if !slices.Equal(order, want) {
		t.Errorf("make demo ran %q,\nwant every example: %q", order, want)
	}
	for _, name := range order {
		lines := sections[name]
		if len(lines) == 0 {
			t.Errorf("%s: no output", name)
			continue
		}
		last := lines[len(lines)-1]
		code, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(last, "(exit "), ")"))
		if err != nil {
			t.Errorf("%s: last line %q, want (exit N)", name, last)
			continue
		}
		c := exampleCase{dir: filepath.Join("../..", name)}
		want := 0
		if c.has("expected-denied.txt") {
			want = 1
		}
		if code != want {
			t.Errorf("%s: exit %d, want %d\n%s", name, code, want, strings.Join(lines, "\n"))
			continue
		}
		got := strings.Join(lines[:len(lines)-1], "\n") + "\n"
		if golden := c.read(t, "expected.txt"); got != golden {
			t.Errorf("%s: make demo differs from expected.txt:\n%s", name, unifiedDiff("expected.txt", "make demo", golden, got))
		}
	}
}

// TestMakeDemoFails checks that `make demo` fails when an example cannot be
// evaluated, rather than printing "(exit 2)" and succeeding.
func TestMakeDemoFails(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"good/policy.yaml":     labelPodsPolicy,
		"good/object.yaml":     podYAML,
		"nopolicy/object.yaml": podYAML,
	})
	stdout, stderr, err := runMake(t, "demo", "EXAMPLES="+dir)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("make demo with a broken example: %v, want it to fail\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "demo: cannot evaluate "+dir+"/nopolicy") || strings.Contains(stderr, dir+"/good") {
		t.Errorf("stderr should name the broken example only:\n%s", stderr)
	}
	if !strings.Contains(stdout, "=== "+dir+"/good/\n") || !strings.Contains(stdout, "(exit 0)\n") {
		t.Errorf("the other example should still run:\n%s", stdout)
	}
}

// buildFlagsRE finds the flags of a `go build` command line: -trimpath and
// the -ldflags value, quoted.
var buildFlagsRE = regexp.MustCompile(`go build (-trimpath )?-ldflags (?:'([^']*)'|"([^"]*)")`)

// buildFlags returns the go build flags of a command line, with the values
// of -X left out (they are the Makefile's or the build arguments'), and
// whether -trimpath is there.
func buildFlags(t *testing.T, what, line string) (ldflags []string, trimpath bool) {
	t.Helper()
	m := buildFlagsRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("%s: no go build -ldflags in:\n%s", what, line)
	}
	for _, f := range strings.Fields(m[2] + m[3]) {
		name, _, _ := strings.Cut(f, "=")
		ldflags = append(ldflags, name)
	}
	return ldflags, m[1] != ""
}

// TestBuildFlags checks that `make build` builds bin/celadon as the image
// does: -trimpath, stripped (-s -w), the version stamped in.
func TestBuildFlags(t *testing.T) {
	bin := t.TempDir()
	cmd := makeCommand(t, "-n", "BIN="+bin, bin+"/celadon")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n: %v\n%s", err, out)
	}
	makeLD, makeTrim := buildFlags(t, "make -n build", string(out))
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	dockerLD, dockerTrim := buildFlags(t, "Dockerfile", string(dockerfile))
	want := []string{"-s", "-w", "-X", "main.version", "-X", "main.commit", "-X", "main.date"}
	if !slices.Equal(dockerLD, want) || !dockerTrim {
		t.Errorf("Dockerfile: -trimpath %v, -ldflags %q; want -trimpath and %q", dockerTrim, dockerLD, want)
	}
	if !slices.Equal(makeLD, dockerLD) || makeTrim != dockerTrim {
		t.Errorf("make builds with -trimpath %v, -ldflags %q;\nthe Dockerfile with -trimpath %v, -ldflags %q", makeTrim, makeLD, dockerTrim, dockerLD)
	}
}
