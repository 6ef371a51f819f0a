package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"good/a.yaml":    denyLatestPolicy,
		"good/b.yaml":    labelPodsPolicy,
		"good/README.md": "not a policy file: skipped\n",
		"lint/group.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: group-typo
spec:
  match:
    resources: [networking.k8s.oi/ingresses, example.com/widgets]
  action: deny
  with: {message: x}
`,
		"lint/mutate.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: strict-mutation
spec:
  match:
    resources: [pods]
    operations: [CREATE]
  action: injectEnvIndex
  failurePolicy: Fail
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: every-operation
spec:
  match:
    resources: [pods]
  action: injectEnvIndex
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: fine
spec:
  match:
    resources: [apps/statefulsets]
    operations: [CREATE, UPDATE]
  action: injectEnvIndex
  failurePolicy: Fail
`,
		"bad/1.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: bad-cel
spec:
  match:
    resources: [pods]
    conditions:
    - name: broken
      expression: |
        object.metadata.name ==
          'a' &&
  action: deny
  with:
    message: x
`,
		"bad/2.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: bad-with
spec:
  match:
    resources: [pods]
    operations: [CREATE]
  action: injectEnvIndex
  with:
    name: INDEX
    containers: [app, app]
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: unknown
spec:
  match:
    resources: [pods]
  action: mutateEverything
`,
		"syntax.yaml":     "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata:\n  name: x\n   spec: {}\n",
		"empty/x.txt":     "",
		"nopolicies.yaml": "# only a comment\n",
	})
	p := func(name string) string { return filepath.Join(dir, name) }

	t.Run("ok", func(t *testing.T) {
		code, out, stderr := runCLI(t, "validate", "-p", p("good"))
		if code != 0 || stderr != "" {
			t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
		}
		if !regexp.MustCompile(`^ok: 2 policies \(1 mutating, 1 validating\), hash [0-9a-f]{16}\n$`).MatchString(out) {
			t.Errorf("summary %q", out)
		}
		code, out, _ = runCLI(t, "validate", "-p", p("good/a.yaml"))
		if code != 0 || !strings.HasPrefix(out, "ok: 1 policy (0 mutating, 1 validating), hash ") {
			t.Errorf("exit %d: %q", code, out)
		}
	})

	t.Run("lint warnings", func(t *testing.T) {
		code, out, stderr := runCLI(t, "validate", "-p", p("lint"))
		if code != 0 {
			t.Fatalf("exit %d, want 0: warnings do not fail\nstderr:\n%s", code, stderr)
		}
		if !strings.HasPrefix(out, "ok: 4 policies (3 mutating, 1 validating)") {
			t.Errorf("summary %q", out)
		}
		f := p("lint/mutate.yaml")
		want := []string{
			p("lint/group.yaml") + `:1: policy "group-typo": warning: API group "networking.k8s.oi" is not built in (a CRD's?): did you mean "networking.k8s.io/ingresses"?`,
			f + `:1: policy "strict-mutation": warning: mutating policy with failurePolicy Fail matches pods: any error in it blocks pod creation cluster-wide; use failurePolicy Ignore unless the mutation is required`,
			f + `:12: policy "every-operation": warning: mutating builtin "injectEnvIndex" matches DELETE, which has no object to mutate: list spec.match.operations, e.g. [CREATE, UPDATE]`,
		}
		if got := strings.Split(strings.TrimRight(stderr, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("warnings:\n%s\nwant:\n%s", stderr, strings.Join(want, "\n"))
		}
	})

	t.Run("every error, with its source line", func(t *testing.T) {
		code, out, stderr := runCLI(t, "validate", "-p", p("bad"))
		if code != 2 || out != "" {
			t.Fatalf("exit %d, want 2; stdout %q", code, out)
		}
		want := []string{
			p("bad/1.yaml") + `:12:17: policy "bad-cel": match.conditions[0].expression: CEL: Syntax error: `,
			` |           'a' &&`,
			` | ................^`,
			p("bad/2.yaml") + `:12:23: policy "bad-with": with.containers[1]: container "app" is listed twice`,
			` |     containers: [app, app]`,
			` | ......................^`,
			p("bad/2.yaml") + `:21:3: policy "unknown": unknown builtin "mutateEverything"; builtins: checkIngressBackends, `,
			` |   action: mutateEverything`,
			` | ..^`,
			"celadon: " + p("bad") + ": 3 errors in policies",
		}
		got := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		if len(got) != len(want) {
			t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), stderr)
		}
		for i := range want {
			if !strings.HasPrefix(got[i], want[i]) {
				t.Errorf("line %d:\n got %s\nwant %s...", i+1, got[i], want[i])
			}
		}
	})

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"YAML syntax error", []string{"-p", p("syntax.yaml")}, p("syntax.yaml") + ":5: YAML: "},
		{"missing path", []string{"-p", p("missing")}, "missing: no such file or directory"},
		{"no policy files", []string{"-p", p("empty")}, "empty: no policy files (*.yaml, *.yml, *.json)"},
		{"no policies", []string{"-p", p("nopolicies.yaml")}, "nopolicies.yaml: no policies found"},
		{"no -p", nil, "validate: -p/--policies is required"},
		{"positional argument", []string{"-p", p("good"), "extra"}, `unknown command "extra"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := runCLI(t, append([]string{"validate"}, tt.args...)...)
			if code != 2 || out != "" {
				t.Errorf("exit %d, want 2; stdout %q", code, out)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr does not contain %q:\n%s", tt.want, stderr)
			}
			if strings.Contains(stderr, "panic") {
				t.Errorf("panic:\n%s", stderr)
			}
		})
	}
}

// TestErrorOutputGolden runs `celadon validate` on each
// testdata/errors/<case>/policy.yaml and compares its stderr, the errors as
// people read them, with <case>/stderr.golden (UPDATE_GOLDEN=1 rewrites
// them).
func TestErrorOutputGolden(t *testing.T) {
	policies, err := filepath.Glob("testdata/errors/*/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(policies) < 7 {
		t.Fatalf("found %d cases in testdata/errors, want at least 7", len(policies))
	}
	for _, policy := range policies {
		dir := filepath.Dir(policy)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, "validate", "-p", policy)
			if code != 2 || stdout != "" {
				t.Fatalf("exit %d, want 2; stdout %q", code, stdout)
			}
			golden := filepath.Join(dir, "stderr.golden")
			if os.Getenv("UPDATE_GOLDEN") != "" {
				if err := os.WriteFile(golden, []byte(stderr), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if stderr != string(want) {
				t.Errorf("stderr differs from %s (UPDATE_GOLDEN=1 regenerates it):\n%s", golden, unifiedDiff(golden, "got", string(want), stderr))
			}
			// Whatever the golden file says, it is one located error with
			// its source line.
			if lines := splitLines(string(want)); len(lines) < 3 || !strings.HasPrefix(lines[0], policy+":") || !strings.HasPrefix(lines[1], " | ") {
				t.Errorf("%s does not hold a located error and its source line:\n%s", golden, want)
			}
		})
	}
}

// TestCELVariables checks what the README's CEL section says of the
// variables: those of a ValidatingAdmissionPolicy but params and
// authorizer, which fail to load.
func TestCELVariables(t *testing.T) {
	policy := func(expr string) string {
		return `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: uses-variable
spec:
  match:
    resources: [pods]
    conditions:
    - expression: '` + expr + `'
  variables:
  - name: image
    expression: object.spec.containers[0].image
  action: deny
  with:
    message: m
`
	}
	for expr, undeclared := range map[string]string{
		`object.kind == "Pod"`:                              "",
		`oldObject == null`:                                 "",
		`request.userInfo.username != ""`:                   "",
		`namespaceObject.metadata.name != ""`:               "",
		`variables.image != ""`:                             "",
		`params.spec.x == 1`:                                "params",
		`authorizer.requestResource.check("get").allowed()`: "authorizer",
	} {
		dir := writeFiles(t, map[string]string{"p.yaml": policy(expr)})
		code, stdout, stderr := runCLI(t, "validate", "-p", filepath.Join(dir, "p.yaml"))
		switch {
		case undeclared == "" && code != 0:
			t.Errorf("%s: exit %d, want 0\n%s", expr, code, stderr)
		case undeclared != "" && (code != 2 || !strings.Contains(stderr, "undeclared reference to '"+undeclared+"'")):
			t.Errorf("%s: exit %d, want 2 and an undeclared reference to %s\n%s%s", expr, code, undeclared, stdout, stderr)
		}
	}
}
