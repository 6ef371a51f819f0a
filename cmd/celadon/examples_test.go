package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/spf13/cobra"
	admissionv1 "k8s.io/api/admission/v1"
)

// runCLI runs the command line in-process, as main does, and returns the
// exit code, stdout and stderr. The eval, validate and scan commands are
// built afresh first: cobra keeps flag values between runs of the same
// command.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var old []*cobra.Command
	for _, c := range rootCmd.Commands() {
		if c.Name() == "eval" || c.Name() == "validate" || c.Name() == "scan" {
			old = append(old, c)
		}
	}
	rootCmd.RemoveCommand(old...)
	rootCmd.AddCommand(newEvalCmd(), newValidateCmd(), newScanCmd())

	var out, errb bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&errb)
	defer func() {
		rootCmd.SetOut(nil)
		rootCmd.SetErr(nil)
	}()
	// run reports errors returned by commands on os.Stderr.
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = f
	func() {
		defer func() { os.Stderr = saved }()
		code = run(args)
	}()
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	var rest bytes.Buffer
	if _, err := rest.ReadFrom(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return code, out.String(), errb.String() + rest.String()
}

// exampleCase is one folder of examples/.
type exampleCase struct {
	dir  string
	args []string // the input flags: -p, -f, --old, --request, eval.args
}

func (c exampleCase) path(name string) string { return filepath.Join(c.dir, name) }

func (c exampleCase) has(name string) bool {
	_, err := os.Stat(c.path(name))
	return err == nil
}

func (c exampleCase) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(c.path(name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func loadExample(t *testing.T, dir string) exampleCase {
	t.Helper()
	c := exampleCase{dir: dir}
	switch {
	case c.has("policies"):
		c.args = append(c.args, "-p", c.path("policies"))
	case c.has("policy.yaml"):
		c.args = append(c.args, "-p", c.path("policy.yaml"))
	default:
		t.Fatalf("%s: no policy.yaml or policies/", dir)
	}
	if c.has("object.yaml") {
		c.args = append(c.args, "-f", c.path("object.yaml"))
	}
	if c.has("old.yaml") {
		c.args = append(c.args, "--old", c.path("old.yaml"))
	}
	if c.has("review.json") {
		c.args = append(c.args, "--request", c.path("review.json"))
	}
	if c.has("cluster.yaml") {
		c.args = append(c.args, "--cluster", c.path("cluster.yaml"))
	}
	if c.has("eval.args") {
		c.args = append(c.args, strings.Fields(c.read(t, "eval.args"))...)
	}
	return c
}

// evalArgs returns the eval command line with extra flags.
func (c exampleCase) evalArgs(extra ...string) []string {
	return append(append([]string{"eval"}, c.args...), extra...)
}

// TestExamples runs every examples/*/ case through `celadon eval`, with
// the objects of cluster.yaml, when there is one, as --cluster:
//   - expected.txt is the golden -o text output (UPDATE_GOLDEN=1 rewrites it);
//   - expected-denied.txt holds the denial message(s), one line per denied
//     request; the exit code must be 1, else 0;
//   - expected.yaml is compared semantically with -o yaml;
//   - every patch from -o patch, applied to the input object, must give
//     expected.yaml, and evaluating the result again must give no patch.
func TestExamples(t *testing.T) {
	t.Chdir("../..") // so paths in the output read as from the repository root
	entries, err := os.ReadDir("examples")
	if err != nil {
		t.Fatal(err)
	}
	update := os.Getenv("UPDATE_GOLDEN") != ""
	n := 0
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || strings.HasPrefix(e.Name(), "_") {
			continue
		}
		n++
		dir := filepath.Join("examples", e.Name())
		t.Run(e.Name(), func(t *testing.T) { testExample(t, loadExample(t, dir), update) })
	}
	if n == 0 {
		t.Fatal("no examples found")
	}
}

func testExample(t *testing.T, c exampleCase, update bool) {
	wantDenied := c.has("expected-denied.txt")
	wantCode := 0
	if wantDenied {
		wantCode = 1
	}

	// Golden text output.
	code, stdout, stderr := runCLI(t, c.evalArgs()...)
	if code != wantCode {
		t.Fatalf("eval exited %d, want %d\nstdout:\n%s\nstderr:\n%s", code, wantCode, stdout, stderr)
	}
	golden := c.path("expected.txt")
	switch {
	case update:
		if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	case !c.has("expected.txt"):
		t.Errorf("%s is missing: create it with\n  UPDATE_GOLDEN=1 go test ./cmd/celadon -run 'TestExamples/%s$'\nand read it", golden, filepath.Base(c.dir))
	default:
		if want := c.read(t, "expected.txt"); stdout != want {
			t.Errorf("eval -o text differs from %s (UPDATE_GOLDEN=1 regenerates it):\n%s", golden, unifiedDiff("expected.txt", "got", want, stdout))
		}
	}

	// Denials, as the server sends them.
	if wantDenied {
		code, stdout, stderr := runCLI(t, c.evalArgs("-o", "review")...)
		if code != 1 {
			t.Fatalf("eval -o review exited %d, want 1\nstderr:\n%s", code, stderr)
		}
		var got []string
		for _, rv := range decodeReviews(t, stdout) {
			if !rv.Response.Allowed {
				got = append(got, rv.Response.Result.Message)
			}
		}
		want := strings.Split(strings.TrimRight(c.read(t, "expected-denied.txt"), "\n"), "\n")
		if !reflect.DeepEqual(got, want) {
			t.Errorf("denial messages:\n got %q\nwant %q (expected-denied.txt)", got, want)
		}
	}

	// The resulting objects.
	if c.has("expected.yaml") {
		code, stdout, stderr := runCLI(t, c.evalArgs("-o", "yaml")...)
		if code != wantCode {
			t.Fatalf("eval -o yaml exited %d, want %d\nstderr:\n%s", code, wantCode, stderr)
		}
		want := docsOf(t, "expected.yaml", []byte(c.read(t, "expected.yaml")))
		got := docsOf(t, "eval -o yaml", []byte(stdout))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("eval -o yaml differs from expected.yaml:\n%s", unifiedDiff("expected.yaml", "got", c.read(t, "expected.yaml"), stdout))
		}
	}

	// The patches apply to the input and give expected.yaml; a second
	// evaluation of the result changes nothing.
	code, stdout, stderr = runCLI(t, c.evalArgs("-o", "patch")...)
	if code != wantCode {
		t.Fatalf("eval -o patch exited %d, want %d\nstderr:\n%s", code, wantCode, stderr)
	}
	patches := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	mutated := false
	for _, p := range patches {
		mutated = mutated || p != "[]"
	}
	if !mutated {
		return
	}
	if !c.has("expected.yaml") {
		t.Fatalf("the case mutates but has no expected.yaml; patches:\n%s", stdout)
	}
	inputs := inputDocs(t, c)
	if len(inputs) != len(patches) {
		t.Fatalf("%d patches for %d input objects", len(patches), len(inputs))
	}
	want := docsOf(t, "expected.yaml", []byte(c.read(t, "expected.yaml")))
	if len(want) != len(inputs) {
		t.Fatalf("expected.yaml has %d documents for %d input objects", len(want), len(inputs))
	}
	patched := make([][]byte, len(inputs))
	for i, in := range inputs {
		p, err := jsonpatch.DecodePatch([]byte(patches[i]))
		if err != nil {
			t.Fatalf("patch %d: %v\n%s", i+1, err, patches[i])
		}
		if patched[i], err = p.Apply(in); err != nil {
			t.Fatalf("patch %d does not apply to the input: %v\n%s", i+1, err, patches[i])
		}
		if got := normalize(t, patched[i]); !reflect.DeepEqual(got, want[i]) {
			g, _ := json.MarshalIndent(got, "", "  ")
			w, _ := json.MarshalIndent(want[i], "", "  ")
			t.Errorf("object %d: the input with the patch applied differs from expected.yaml:\n%s", i+1, unifiedDiff("expected.yaml", "patched", string(w), string(g)))
		}
	}
	args := rerunArgs(t, c, patched)
	code, stdout, stderr = runCLI(t, args...)
	if code != wantCode {
		t.Fatalf("second eval exited %d, want %d\nstderr:\n%s", code, wantCode, stderr)
	}
	for i, p := range strings.Split(strings.TrimRight(stdout, "\n"), "\n") {
		if p != "[]" {
			t.Errorf("object %d: not idempotent: evaluating the patched object patches again: %s", i+1, p)
		}
	}
}

// inputDocs returns the JSON of each input object: object.yaml's objects,
// or the review's request.object.
func inputDocs(t *testing.T, c exampleCase) [][]byte {
	t.Helper()
	if c.has("review.json") {
		rv, err := loadReview(c.path("review.json"))
		if err != nil {
			t.Fatal(err)
		}
		return [][]byte{rv.Request.Object.Raw}
	}
	objs, err := loadObjects(c.path("object.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(objs))
	for i, o := range objs {
		out[i] = o.Raw
	}
	return out
}

// rerunArgs returns the eval command line for the patched objects, in a
// temporary object.yaml or review.json, with -o patch.
func rerunArgs(t *testing.T, c exampleCase, patched [][]byte) []string {
	t.Helper()
	tmp := t.TempDir()
	var flag, file string
	if c.has("review.json") {
		var rv map[string]any
		if err := json.Unmarshal([]byte(c.read(t, "review.json")), &rv); err != nil {
			t.Fatal(err)
		}
		rv["request"].(map[string]any)["object"] = json.RawMessage(patched[0])
		b, err := json.Marshal(rv)
		if err != nil {
			t.Fatal(err)
		}
		flag, file = "--request", filepath.Join(tmp, "review.json")
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		flag, file = "-f", filepath.Join(tmp, "object.json")
		if err := os.WriteFile(file, bytes.Join(patched, []byte("\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"eval"}
	for i := 0; i < len(c.args); i++ {
		if c.args[i] == flag {
			args = append(args, flag, file)
			i++
			continue
		}
		args = append(args, c.args[i])
	}
	return append(args, "-o", "patch")
}

func decodeReviews(t *testing.T, out string) []admissionv1.AdmissionReview {
	t.Helper()
	var rvs []admissionv1.AdmissionReview
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var rv admissionv1.AdmissionReview
		if err := dec.Decode(&rv); err != nil {
			t.Fatalf("eval -o review: %v\n%s", err, out)
		}
		if rv.Response == nil {
			t.Fatalf("eval -o review: no response\n%s", out)
		}
		rvs = append(rvs, rv)
	}
	return rvs
}

// docsOf splits YAML or JSON documents into plain JSON values.
func docsOf(t *testing.T, name string, data []byte) []any {
	t.Helper()
	docs, err := splitDocuments(name, data)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]any, len(docs))
	for i, d := range docs {
		out[i] = normalize(t, d.json)
	}
	return out
}

func normalize(t *testing.T, j []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(j, &v); err != nil {
		t.Fatalf("%v\n%s", err, j)
	}
	return v
}
