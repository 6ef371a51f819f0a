package engine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadErrorsPointAtTheLine checks that every kind of broken policy is
// reported at the right file:line:col and names the policy, and that
// Display quotes that line with a caret under the column.
func TestLoadErrorsPointAtTheLine(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want string // substring of the single expected error, with its line and column
	}{
		{"cel syntax error", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: broken
spec:
  match:
    resources: [pods]
    conditions:
    - name: bad
      expression: "object.metadata.name =="
  action: setLabel
  with: {key: a}
`, `policies.yaml:10:43: policy "broken": match.conditions[0].expression: CEL: Syntax error`},
		{"cel type error in block scalar, second line", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: typed
spec:
  match:
    resources: [pods]
    conditions:
    - expression: |
        has(object.metadata) &&
        object.metadata.name + 1
  action: setLabel
  with: {key: a}
`, `policies.yaml:11:30: policy "typed": match.conditions[0].expression: CEL: expected type 'bool' but found 'int'`},
		{"syntax error at the end of a block scalar", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: blockend}
spec:
  match:
    resources: [pods]
    conditions:
    - expression: |
        object.metadata.name ==
  action: setLabel
  with: {key: a}
`, `policies.yaml:9:32: policy "blockend": match.conditions[0].expression: CEL: Syntax error`},
		{"condition not bool", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: notbool}
spec:
  match:
    resources: [pods]
    conditions:
    - expression: "'a'"
  action: setLabel
  with: {key: a}
`, `policies.yaml:8:20: policy "notbool": match.conditions[0].expression: CEL: must evaluate to bool, not string`},
		{"unknown field", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: unknown}
spec:
  match:
    resources: [pods]
    namespaces: [a]
  action: setLabel
  with: {key: a}
`, `policies.yaml:7:5: policy "unknown": spec.match.namespaces: unknown field`},
		{"unknown builtin", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: nob}
spec:
  match: {resources: [pods]}
  action: noSuchThing
`, `policies.yaml:6:3: policy "nob": unknown builtin "noSuchThing"; builtins: badPatch, explode, setLabel, violate`},
		{"bad with: unknown field", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: badwith}
spec:
  match: {resources: [pods]}
  action: setLabel
  with:
    key: a
    colour: red
`, `policies.yaml:9:5: policy "badwith": with.colour: unknown field`},
		{"bad with: builtin field error", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: nokey}
spec:
  match: {resources: [pods]}
  action: setLabel
  with:
    value: x
`, `policies.yaml:7:3: policy "nokey": with.key: is required`},
		{"bad with: expression", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: badexpr}
spec:
  match: {resources: [pods]}
  action: setLabel
  with:
    key: a
    valueExpression: "object.metadata.name.size()"
`, `policies.yaml:9:23: policy "badexpr": with.valueExpression: CEL: must evaluate to string, not int`},
		{"bad operation", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: badop}
spec:
  match:
    resources: [pods]
    operations: [CREATE, PATCH]
  action: setLabel
  with: {key: a}
`, `policies.yaml:7:26: policy "badop": unknown operation "PATCH"`},
		{"bad resource", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: badres}
spec:
  match:
    resources:
    - pods
    - a/b/c/d
  action: setLabel
  with: {key: a}
`, `policies.yaml:8:7: policy "badres": match.resources[1]: resource "a/b/c/d" has too many segments`},
		{"bad selector", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: badsel}
spec:
  match:
    resources: [pods]
    namespaceSelector:
      matchExpressions:
      - {key: env, operator: Sometimes}
  action: setLabel
  with: {key: a}
`, `policies.yaml:7:5: policy "badsel": namespaceSelector: "Sometimes" is not a valid label selector operator`},
		{"enforcement on a mutating builtin", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: enf}
spec:
  match: {resources: [pods]}
  action: setLabel
  with: {key: a}
  enforcement: Warn
`, `policies.yaml:8:3: policy "enf": enforcement applies to validating builtins only`},
		{"bad failure policy", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: fp}
spec:
  match: {resources: [pods]}
  action: violate
  failurePolicy: Sometimes
`, `policies.yaml:7:3: policy "fp": failurePolicy must be Fail or Ignore`},
		{"timeout out of range", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: slow}
spec:
  match: {resources: [pods]}
  action: violate
  timeoutSeconds: 31
`, `policies.yaml:7:3: policy "slow": timeoutSeconds must be between 1 and 30, not 31`},
		{"wrong kind", `apiVersion: celadon.io/v1alpha1
kind: ConfigMap
metadata: {name: cm}
`, `policies.yaml:1:1: policy "cm": apiVersion/kind must be celadon.io/v1alpha1/Policy`},
		{"missing name", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {}
spec:
  match: {resources: [pods]}
  action: violate
`, `policies.yaml:3:1: metadata.name is required`},
		{"missing resources", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: nores}
spec:
  match: {operations: [CREATE]}
  action: violate
`, `policies.yaml:5:3: policy "nores": spec.match.resources is required`},
		{"yaml parser error", "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata: {name: [}\n", `policies.yaml:3: YAML: did not find expected node content`},
		{"yaml scanner error", "apiVersion: celadon.io/v1alpha1\nkind: Policy\n  metadata: x\n", `policies.yaml:3: YAML: mapping values are not allowed`},
		{"wrong type", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: wt}
spec:
  match:
    resources: pods
  action: violate
`, `policies.yaml:6:5: policy "wt": spec.match.resources: expected a list, got a string`},
		{"bad with: wrong type", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: wrongtype}
spec:
  match: {resources: [pods]}
  action: setLabel
  with:
    key: a
    value: [x]
`, `policies.yaml:9:5: policy "wrongtype": with.value: expected a string, got a list`},
		{"resource written as a kind", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: kind}
spec:
  match:
    resources: [configmaps, Pod]
  action: violate
`, `policies.yaml:6:29: policy "kind": match.resources[1]: unknown resource "Pod": did you mean "pods"?`},
		{"resource without its group", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: nogroup}
spec:
  match:
    resources:
    - deployments
  action: violate
`, `policies.yaml:7:7: policy "nogroup": match.resources[0]: unknown resource "deployments": did you mean "apps/deployments"?`},
		{"misspelt resource", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: misspelt}
spec:
  match: {resources: [podz]}
  action: violate
`, `policies.yaml:5:23: policy "misspelt": match.resources[0]: unknown resource "podz": did you mean "pods"?`},
		{"unknown subresource", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: sub}
spec:
  match: {resources: [pods/stats]}
  action: violate
`, `policies.yaml:5:23: policy "sub": match.resources[0]: unknown subresource "pods/stats": did you mean "pods/status"?`},
		{"variable error", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: vars}
spec:
  variables:
  - name: ok
    expression: "object.metadata.name"
  - name: bad
    expression: "variables.missing"
  match: {resources: [pods]}
  action: violate
`, `policies.yaml:9:27: policy "vars": variables[1].expression: CEL: undefined field 'missing'`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile([]File{{Name: "policies.yaml", Data: []byte(tc.yaml)}}, Options{Registry: testRegistry()})
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("want an ErrorList, got %v", err)
			}
			if len(list) != 1 {
				t.Fatalf("want 1 error, got %d:\n%v", len(list), err)
			}
			e := list[0]
			if !strings.Contains(e.Error(), tc.want) {
				t.Fatalf("error\n  %s\ndoes not contain\n  %s", e.Error(), tc.want)
			}
			quoted := e.Error() + "\n | " + strings.Split(tc.yaml, "\n")[e.Line-1]
			if e.Column > 0 {
				quoted += "\n | " + strings.Repeat(".", e.Column-1) + "^"
			}
			if got := e.Display(); got != quoted {
				t.Errorf("Display:\n%s\nwant:\n%s", got, quoted)
			}
		})
	}
}

func TestEveryErrorIsReported(t *testing.T) {
	files := []File{
		{Name: "a.yaml", Data: []byte(policyYAML("one", "  match: {resources: [pods]}\n  action: nope\n") + "\n---\n" +
			policyYAML("two", "  match: {resources: [pods], conditions: [{expression: '1 +'}]}\n  action: violate\n"))},
		{Name: "b.yaml", Data: []byte(policyYAML("one", "  match: {resources: [pods]}\n  action: violate\n"))},
	}
	snap, err := Compile(files, Options{Registry: testRegistry()})
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 3 {
		t.Fatalf("want 3 errors, got %v", err)
	}
	if !strings.Contains(list[2].Error(), `b.yaml:4:3: policy "one": duplicate policy name, first defined at a.yaml:1`) {
		t.Errorf("duplicate not reported right: %v", list[2])
	}
	// Broken policies stay in the snapshot with their error.
	if p := snap.Policy("two"); p == nil || p.Err == nil {
		t.Errorf("policy two should be kept with its compile error")
	}
}

// TestEveryErrorOfAPolicyIsReported checks that an error in the policy's
// structure does not hide those of its conditions and builtin arguments.
func TestEveryErrorOfAPolicyIsReported(t *testing.T) {
	doc := `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: many}
spec:
  match:
    resources: [Pod, deployments]
    operations: [CREATE, MAKE]
    conditions:
    - expression: "'a'"
    - expression: "object.metadata.name +"
  action: setLabel
  with: {value: x}
`
	_, err := Compile([]File{{Name: "p.yaml", Data: []byte(doc)}}, Options{Registry: testRegistry()})
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want an ErrorList, got %v", err)
	}
	want := []string{
		`p.yaml:6:17: policy "many": match.resources[0]: unknown resource "Pod": did you mean "pods"?`,
		`p.yaml:6:22: policy "many": match.resources[1]: unknown resource "deployments": did you mean "apps/deployments"?`,
		`p.yaml:7:26: policy "many": unknown operation "MAKE"`,
		`p.yaml:9:20: policy "many": match.conditions[0].expression: CEL: must evaluate to bool, not string`,
		`p.yaml:10:42: policy "many": match.conditions[1].expression: CEL: Syntax error`,
		`p.yaml:12:3: policy "many": with.key: is required`,
	}
	if len(list) != len(want) {
		t.Fatalf("want %d errors, got %d:\n%v", len(want), len(list), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(list[i].Error(), w) {
			t.Errorf("error %d:\n  %s\ndoes not start with\n  %s", i, list[i].Error(), w)
		}
	}
}

func TestReadFilesFromConfigMapMount(t *testing.T) {
	dir := t.TempDir()
	ts := filepath.Join(dir, "..2026_11_22_00_00_00.000")
	must(t, os.Mkdir(ts, 0o755))
	must(t, os.WriteFile(filepath.Join(ts, "b.yaml"), []byte("b"), 0o644))
	must(t, os.WriteFile(filepath.Join(ts, "a.yml"), []byte("a"), 0o644))
	must(t, os.WriteFile(filepath.Join(ts, "notes.txt"), []byte("ignored"), 0o644))
	must(t, os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")))
	for _, f := range []string{"b.yaml", "a.yml", "notes.txt"} {
		must(t, os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)))
	}
	files, err := ReadFiles(dir)
	must(t, err)
	if len(files) != 2 || filepath.Base(files[0].Name) != "a.yml" || string(files[1].Data) != "b" {
		t.Fatalf("got %+v", files)
	}
	if Hash(files) == Hash(files[:1]) {
		t.Error("hash ignores content")
	}
	if _, err := ReadFiles(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing path should fail")
	}
}

func TestEmptyDocumentsAndJSON(t *testing.T) {
	data := "---\n" + policyYAML("a", "  match: {resources: [pods]}\n  action: violate\n") + "\n---\n---\n"
	js := `{"apiVersion":"celadon.io/v1alpha1","kind":"Policy","metadata":{"name":"b"},"spec":{"match":{"resources":["pods"]},"action":"violate"}}`
	snap, err := Compile([]File{{Name: "a.yaml", Data: []byte(data)}, {Name: "b.json", Data: []byte(js)}}, Options{Registry: testRegistry()})
	must(t, err)
	if len(snap.Policies) != 2 || snap.Policies[1].Name() != "b" {
		t.Fatalf("got %d policies", len(snap.Policies))
	}
	if got := snap.Policies[0].Policy.Spec.FailurePolicy; got != Fail {
		t.Errorf("validating default failurePolicy = %q, want Fail", got)
	}
	if got := snap.Policies[0].Policy.Spec.Enforcement; got != Deny {
		t.Errorf("default enforcement = %q, want Deny", got)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzCompile feeds arbitrary policy files to the loader: it may refuse
// them, but every error must be located in the file and nothing may panic.
func FuzzCompile(f *testing.F) {
	f.Add([]byte(policyYAML("a", "  match:\n    resources: [pods]\n    conditions: [{expression: 'object.metadata.name == \"x\"'}]\n  variables: [{name: v, expression: '1'}]\n  action: setLabel\n  with: {key: a, valueExpression: variables.v}\n")))
	f.Add([]byte("apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata: {name: [}\n"))
	f.Add([]byte("---\n---\n- a\n- b\n"))
	f.Add([]byte(`{"apiVersion":"celadon.io/v1alpha1","kind":"Policy","metadata":{"name":"j"},"spec":{"match":{"resources":["*/*"]},"action":"violate"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		snap, err := Compile([]File{{Name: "fuzz.yaml", Data: data}}, Options{Registry: testRegistry()})
		if snap == nil {
			t.Fatalf("no snapshot (err %v)", err)
		}
		var list ErrorList
		if err != nil && !errors.As(err, &list) {
			t.Fatalf("error is not an ErrorList: %v", err)
		}
		for _, e := range list {
			if e.File != "fuzz.yaml" || e.Msg == "" {
				t.Fatalf("unlocated error: %+v", e)
			}
		}
	})
}
