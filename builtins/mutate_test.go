package builtins

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/engine"
)

// mutatePolicy is a mutate policy on pod CREATEs with the given spec.with
// (indented by four) and spec.variables (indented by two, "" for none).
func mutatePolicy(variables, with string) string {
	p := `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: map
spec:
  match:
    resources: [pods]
    operations: [CREATE]
`
	if variables != "" {
		p += "  variables:\n" + variables
	}
	return p + "  action: mutate\n  with:\n" + with
}

const mutatePod = `apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: default
  labels:
    app: web
spec:
  containers:
  - name: app
    image: docker.io/library/nginx:1.27
  - name: sidecar
    image: quay.io/example/agent:2
    securityContext:
      runAsNonRoot: false
`

// TestMutate runs MutatingAdmissionPolicy spec.mutations pasted into
// spec.with: the patch applied by a standard library gives the object,
// and a second evaluation patches nothing.
func TestMutate(t *testing.T) {
	cases := []struct {
		name      string
		variables string
		with      string
		want      string // the pod's expected YAML; "" when unchanged
		reason    string // a substring of the result's reason
	}{
		{
			name: "add a label, escaping its key",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: >
          [JSONPatch{op: "add", path: "/metadata/labels/" + jsonpatch.escapeKey("example.com/team"), value: "web"}]
`,
			want:   strings.Replace(mutatePod, "    app: web\n", "    app: web\n    example.com/team: web\n", 1),
			reason: "add /metadata/labels/example.com~1team",
		},
		{
			name: "default a securityContext field where unset",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: |
          object.spec.containers.filter(c, !has(c.securityContext)).map(c,
            JSONPatch{op: "add", path: "/spec/containers/" + string(object.spec.containers.indexOf(c)) + "/securityContext",
              value: Object.spec.containers.securityContext{runAsNonRoot: true}})
`,
			want: strings.Replace(mutatePod, "    image: docker.io/library/nginx:1.27\n",
				"    image: docker.io/library/nginx:1.27\n    securityContext:\n      runAsNonRoot: true\n", 1),
		},
		{
			name:      "rewrite the image registry, with a variable",
			variables: "  - name: mirror\n    expression: '\"mirror.example.com/\"'\n",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: |
          object.spec.containers.filter(c, c.image.startsWith("docker.io/")).map(c,
            JSONPatch{op: "replace", path: "/spec/containers/" + string(object.spec.containers.indexOf(c)) + "/image",
              value: variables.mirror + c.image.substring(10)})
`,
			want: strings.Replace(mutatePod, "docker.io/library/nginx", "mirror.example.com/library/nginx", 1),
		},
		{
			name: "a later mutation sees the earlier one's result",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: '[JSONPatch{op: "add", path: "/metadata/annotations", value: {"a": "1"}}]'
    - patchType: JSONPatch
      jsonPatch:
        expression: |
          has(object.metadata.annotations) ? [JSONPatch{op: "add", path: "/metadata/annotations/b", value: object.metadata.annotations.a + "2"}] : []
`,
			want: strings.Replace(mutatePod, "  labels:\n", "  annotations:\n    a: \"1\"\n    b: \"12\"\n  labels:\n", 1),
		},
		{
			// As in the API server, which binds variables anew for each
			// mutation, on the object the earlier ones left.
			name:      "a later mutation's variables see the earlier one's result",
			variables: "  - name: annotated\n    expression: has(object.metadata.annotations) && 'a' in object.metadata.annotations\n",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: '[JSONPatch{op: "add", path: "/metadata/annotations", value: {"a": "1"}}]'
    - patchType: JSONPatch
      jsonPatch:
        expression: |
          [JSONPatch{op: "add", path: "/metadata/annotations/b", value: variables.annotated ? "seen" : "not seen"}]
`,
			want: strings.Replace(mutatePod, "  labels:\n", "  annotations:\n    a: \"1\"\n    b: seen\n  labels:\n", 1),
		},
		{
			name: "ApplyConfiguration merges containers by name and orders them as it lists them, as the API server does",
			with: `    mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: |
          Object{
            metadata: Object.metadata{labels: {"tier": "front"}},
            spec: Object.spec{containers: [
              Object.spec.containers{name: "sidecar", image: "quay.io/example/agent:3"},
              Object.spec.containers{name: "app", env: [Object.spec.containers.env{name: "MODE", value: "prod"}]}
            ]}
          }
`,
			want: `apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: default
  labels:
    app: web
    tier: front
spec:
  containers:
  - name: sidecar
    image: quay.io/example/agent:3
    securityContext:
      runAsNonRoot: false
  - name: app
    image: docker.io/library/nginx:1.27
    env:
    - name: MODE
      value: prod
`,
		},
		{
			name: "a long patch is summed up in the reason",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: |
          ["a", "b", "c", "d", "e", "f", "g"].map(k, JSONPatch{op: "add", path: "/metadata/labels/" + k, value: k})
`,
			want:   strings.Replace(mutatePod, "    app: web\n", "    app: web\n    a: a\n    b: b\n    c: c\n    d: d\n    e: e\n    f: f\n    g: g\n", 1),
			reason: ", and 2 more",
		},
		{
			name: "a failed test op leaves the object as it is",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: |
          [JSONPatch{op: "test", path: "/metadata/labels/app", value: "db"},
           JSONPatch{op: "add", path: "/metadata/labels/tier", value: "data"}]
`,
			reason: "no change",
		},
		{
			name: "idempotent where the expression is: nothing to do",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: |
          object.metadata.labels.app == "web" ? [] : [JSONPatch{op: "replace", path: "/metadata/labels/app", value: "web"}]
`,
			reason: "no change",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap := compilePolicies(t, mutatePolicy(tc.variables, tc.with))
			req := admissionRequest(t, admissionv1.Create, yamlJSON(t, mutatePod), nil)
			d := evaluate(t, snap, req, engine.EvalOptions{})
			if len(d.Results) != 1 || d.Results[0].State == engine.StateError {
				t.Fatalf("results %+v", d.Results)
			}
			if !strings.Contains(d.Results[0].Reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", d.Results[0].Reason, tc.reason)
			}
			if tc.want == "" {
				checkUnchanged(t, d)
				return
			}
			checkMutation(t, snap, req, d, yamlJSON(t, tc.want), engine.EvalOptions{})
		})
	}
}

// TestMutateNotIdempotent: appending every time, behind a condition that
// hides it from the load-time check, patches again on a second evaluation,
// which `celadon test` reports.
func TestMutateNotIdempotent(t *testing.T) {
	snap := compilePolicies(t, mutatePolicy("", `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: 'object.kind == "Pod" ? [JSONPatch{op: "add", path: "/spec/containers/0/args/-", value: "--verbose"}] : []'
`))
	pod := strings.Replace(mutatePod, "    image: docker.io/library/nginx:1.27\n", "    image: docker.io/library/nginx:1.27\n    args: []\n", 1)
	req := admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil)
	d := evaluate(t, snap, req, engine.EvalOptions{})
	if len(d.Patch) != 1 {
		t.Fatalf("patch %v", d.Patch)
	}
	again := *req
	again.Object.Raw = applyDecision(t, req.Object.Raw, d)
	if d2 := evaluate(t, snap, &again, engine.EvalOptions{}); len(d2.Patch) == 0 {
		t.Errorf("the second evaluation did not patch again")
	}
}

// TestMutateErrors: failures at run time are the policy's errors, and
// the cost of the expressions is charged to the request's budget.
func TestMutateErrors(t *testing.T) {
	cases := []struct {
		name, with, want string
		budget           int64
	}{
		{
			name: "a path that does not exist",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: '[JSONPatch{op: "add", path: "/status/conditions/0", value: {"type": "Ready"}}]'
`,
			want: "with.mutations[0].jsonPatch.expression: JSON Patch:",
		},
		{
			name: "an expression error",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: '[JSONPatch{op: "add", path: "/metadata/labels/x", value: object.metadata.labels.missing}]'
`,
			want: "with.mutations[0].jsonPatch.expression: no such key: missing",
		},
		{
			name: "ApplyConfiguration may not change an atomic list, as in MAP",
			with: `    mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: 'Object{spec: Object.spec{containers: [Object.spec.containers{name: "app", args: ["--verbose"]}]}}'
`,
			want: "with.mutations[0].applyConfiguration.expression: error applying patch: invalid ApplyConfiguration: may not mutate atomic arrays",
		},
		{
			name: "over the request's budget",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: 'object.spec.containers.map(c, JSONPatch{op: "add", path: "/metadata/labels/x", value: c.name})'
`,
			budget: 1,
			want:   engine.ErrCostBudgetExceeded.Error(),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap := compilePolicies(t, mutatePolicy("", tc.with))
			req := admissionRequest(t, admissionv1.Create, yamlJSON(t, mutatePod), nil)
			d := evaluate(t, snap, req, engine.EvalOptions{CostBudget: tc.budget})
			if len(d.Results) != 1 || d.Results[0].State != engine.StateError || !strings.Contains(d.Results[0].Reason, tc.want) {
				t.Fatalf("results %+v, want an error containing %q", d.Results, tc.want)
			}
			checkUnchanged(t, d)
		})
	}
}

// TestMutateLoadErrors: errors point at the policy file's line.
func TestMutateLoadErrors(t *testing.T) {
	cases := []struct{ name, with, want string }{
		{
			name: "not typed list(JSONPatch)",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: 'object.spec.containers'
`,
			want: "p.yaml:14:22:",
		},
		{
			name: "dyn is not enough, as in MAP",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: 'object.spec.containers.map(c, c)'
`,
			want: "p.yaml:14:22:",
		},
		{
			name: "always appends: not idempotent",
			with: `    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: |
          [JSONPatch{op: "add", path: "/metadata/labels/a", value: "b"},
           JSONPatch{op: "add", path: "/spec/containers/" + string(0) + "/args/-", value: "--verbose"}]
`,
			want: "p.yaml:14:9: policy \"map\": with.mutations[0].jsonPatch.expression: is not idempotent: it always appends (a path ending in /args/-)",
		},
		{
			name: "ApplyConfiguration not typed Object",
			with: `    mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: '{"metadata": {"labels": {"a": "b"}}}'
`,
			want: "p.yaml:14:22: policy \"map\": with.mutations[0].applyConfiguration.expression: CEL: must evaluate to Object",
		},
		{
			name: "no jsonPatch",
			with: "    mutations:\n    - patchType: JSONPatch\n",
			want: "p.yaml:12:7:",
		},
		{
			name: "no mutations",
			with: "    mutations: []\n",
			want: "p.yaml:11:5:",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := compileErrors(t, mutatePolicy("", tc.with))
			if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), tc.want) {
				t.Fatalf("errors:\n%v\nwant one at %s", errs, tc.want)
			}
		})
	}
}

// TestMutateEveryLoadError: every bad mutation is reported, each at its
// own line, not only the first.
func TestMutateEveryLoadError(t *testing.T) {
	src := mutatePolicy("", `    mutations:
    - patchType: JSONPatch
    - patchType: JSONPatch
      jsonPatch:
        expression: 'object.spec.containers'
    - patchType: Merge
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: '{"metadata": {"labels": {"a": "b"}}}'
    - patchType: JSONPatch
      jsonPatch:
        expression: '[JSONPatch{op: "add", path: "/spec/containers/-", value: {}}]'
    - applyConfiguration:
        expression: 'Object{}'
`)
	want := []string{
		`p.yaml:12:7: policy "map": with.mutations[0].jsonPatch: is required when patchType is JSONPatch`,
		`p.yaml:15:22: policy "map": with.mutations[1].jsonPatch.expression: CEL:`,
		`p.yaml:16:7: policy "map": with.mutations[2].patchType: must be JSONPatch or ApplyConfiguration, not "Merge"`,
		`p.yaml:19:22: policy "map": with.mutations[3].applyConfiguration.expression: CEL: must evaluate to Object`,
		`p.yaml:22:9: policy "map": with.mutations[4].jsonPatch.expression: is not idempotent`,
		`p.yaml:23:7: policy "map": with.mutations[5].patchType: is required`,
	}
	checkLoadErrors(t, compileErrors(t, src), want)
}

// TestAlwaysAppends: only what must append every time is refused; a test
// op or a condition may make the mutation idempotent.
func TestAlwaysAppends(t *testing.T) {
	for expr, want := range map[string]string{
		`[JSONPatch{op: "add", path: "/a/-", value: 1}]`:                                              "/a/-",
		`[JSONPatch{op: "copy", from: "/b", path: "/x/" + "a" + "/-"}]`:                               "/-",
		`[JSONPatch{op: "add", path: "/a/0", value: 1}]`:                                              "",
		`[JSONPatch{op: "test", path: "/b", value: 1}, JSONPatch{op: "add", path: "/a/-", value: 1}]`: "",
		`has(object.a) ? [] : [JSONPatch{op: "add", path: "/a/-", value: 1}]`:                         "",
		`[JSONPatch{op: variables.op, path: "/a/-", value: 1}]`:                                       "",
		`[JSONPatch{op: "add", path: "/a/-", value: 1}].filter(p, false)`:                             "",
	} {
		if got := alwaysAppends(expr); got != want {
			t.Errorf("alwaysAppends(%s) = %q, want %q", expr, got, want)
		}
	}
}

// TestMutateApplyCustomResource: a kind without a built-in schema cannot
// be merged correctly, so it is an error rather than a guess.
func TestMutateApplyCustomResource(t *testing.T) {
	snap := compilePolicies(t, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: map
spec:
  match:
    resources: [example.com/widgets]
    operations: [CREATE]
  action: mutate
  with:
    mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: 'Object{spec: Object.spec{size: 3}}'
`)
	req := &admissionv1.AdmissionRequest{
		UID:       "0d9f3a52-7c1e-4c57-9b1a-0c6d2f5e8a12",
		Kind:      metav1.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"},
		Resource:  metav1.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"},
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: []byte(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"size":1}}`)},
	}
	d := evaluate(t, snap, req, engine.EvalOptions{})
	if len(d.Results) != 1 || d.Results[0].State != engine.StateError || !strings.Contains(d.Results[0].Reason, "Widget") {
		t.Fatalf("results %+v, want an error naming the kind", d.Results)
	}
	checkUnchanged(t, d)
}

// TestSortOpsIsDeterministicAndApplies: CreatePatch walks maps in random
// order; sorted, its operations come out the same every time and still
// turn the object before into the object after.
func TestSortOpsIsDeterministicAndApplies(t *testing.T) {
	before := []byte(`{"metadata":{"labels":{"a":"1","b":"2","c":"3"}},"spec":{"containers":[{"name":"x","env":[{"name":"A"},{"name":"B"},{"name":"C"}]},{"name":"y"}],"volumes":[{"name":"v"}],"z":1}}`)
	after := []byte(`{"metadata":{"labels":{"a":"9","d":"4"},"annotations":{"k":"v"}},"spec":{"containers":[{"name":"x","env":[{"name":"A2"}],"image":"i"},{"name":"y","image":"j"},{"name":"w"}],"volumes":[{"name":"v"},{"name":"u"}],"y":2}}`)
	var first string
	for i := range 50 {
		ops, err := jsonpatch.CreatePatch(before, after)
		if err != nil {
			t.Fatal(err)
		}
		if err := sortOps(before, ops); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = string(b)
		} else if string(b) != first {
			t.Fatalf("run %d gave another order:\n%s\n%s", i, b, first)
		}
		p, err := jsonpatch5.DecodePatch(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Apply(before)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		var g, w any
		_ = json.Unmarshal(got, &g)
		_ = json.Unmarshal(after, &w)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("the sorted patch %s gives\n%s", b, got)
		}
	}
}
