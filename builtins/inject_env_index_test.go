package builtins

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"celadon.io/celadon/engine"
)

// stsIndexPolicy is a policy injecting the ordinal into pods on CREATE, with
// the given spec.with (a YAML flow mapping, or "" for none).
func stsIndexPolicy(with string) string {
	p := `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: sts-index
spec:
  match:
    resources: [pods]
    operations: [CREATE]
  action: injectEnvIndex
`
	if with != "" {
		p += "  with: " + with + "\n"
	}
	return p
}

// stsPod is a pod of StatefulSet web called name, with extra metadata
// lines (indented by four) under labels, and spec as its spec (indented by
// two).
func stsPod(name, labels, spec string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
  labels:
    app: web
    statefulset.kubernetes.io/pod-name: %s
%s  ownerReferences:
  - apiVersion: apps/v1
    kind: StatefulSet
    name: web
    uid: 6f1c2a9e-4b7d-4e0a-9c3f-2d8e5b1a7c40
    controller: true
    blockOwnerDeletion: true
spec:
%s`, name, name, labels, spec)
}

// indexLabel is the labels line of the pod-index label.
func indexLabel(v string) string { return "    apps.kubernetes.io/pod-index: \"" + v + "\"\n" }

func TestInjectEnvIndex(t *testing.T) {
	const twoContainers = `  containers:
  - name: app
    image: registry.example.com/app:1.4
  - name: metrics
    image: registry.example.com/exporter:0.9
    env:
    - {name: PORT, value: "9100"}
`
	cases := []struct {
		name     string
		with     string
		pod      string // the pod's name
		labels   string // extra labels
		spec     string
		wantSpec string // "" when the pod must not change
		state    engine.State
		reason   string
		warning  string
	}{
		{
			name: "no env, and env with other variables",
			pod:  "web-2", spec: twoContainers,
			wantSpec: `  containers:
  - name: app
    image: registry.example.com/app:1.4
    env:
    - {name: INDEX, value: "2"}
  - name: metrics
    image: registry.example.com/exporter:0.9
    env:
    - {name: PORT, value: "9100"}
    - {name: INDEX, value: "2"}
`,
			state:  engine.StatePass,
			reason: "INDEX=2 set in containers app, metrics",
		},
		{
			name: "env: null counts as no env",
			pod:  "web-0", spec: "  containers:\n  - name: app\n    image: app\n    env: null\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    env: [{name: INDEX, value: \"0\"}]\n",
			state:    engine.StatePass,
			reason:   "INDEX=0 set in containers app",
		},
		{
			name: "env: [] gets the variable appended",
			pod:  "web-0", spec: "  containers:\n  - name: app\n    image: app\n    env: []\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    env: [{name: INDEX, value: \"0\"}]\n",
			state:    engine.StatePass,
			reason:   "INDEX=0 set in containers app",
		},
		{
			name: "a custom name",
			with: "{name: REPLICA_ORDINAL}",
			pod:  "web-11", spec: "  containers:\n  - {name: app, image: app}\n",
			wantSpec: "  containers:\n  - {name: app, image: app, env: [{name: REPLICA_ORDINAL, value: \"11\"}]}\n",
			state:    engine.StatePass,
			reason:   "REPLICA_ORDINAL=11 set in containers app",
		},
		{
			name: "a StatefulSet whose name ends in digits",
			pod:  "db-v2-3", spec: "  containers:\n  - {name: app, image: app}\n",
			wantSpec: "  containers:\n  - {name: app, image: app, env: [{name: INDEX, value: \"3\"}]}\n",
			state:    engine.StatePass,
			reason:   "INDEX=3 set in containers app",
		},
		{
			name: "variable present, overwrite false: kept",
			pod:  "web-2",
			spec: `  containers:
  - name: app
    image: app
    env:
    - {name: INDEX, value: "7"}
    - {name: MODE, value: primary}
  - name: metrics
    image: exporter
`,
			wantSpec: `  containers:
  - name: app
    image: app
    env:
    - {name: INDEX, value: "7"}
    - {name: MODE, value: primary}
  - name: metrics
    image: exporter
    env: [{name: INDEX, value: "2"}]
`,
			state:  engine.StatePass,
			reason: "INDEX=2 set in containers metrics; kept the pod's own value in containers app",
		},
		{
			name: "variable present from valueFrom, overwrite false: kept",
			pod:  "web-2",
			spec: `  containers:
  - name: app
    image: app
    env:
    - name: INDEX
      valueFrom: {configMapKeyRef: {name: ordinals, key: web-2}}
`,
			state:  engine.StatePass,
			reason: "INDEX=2 kept the pod's own value in containers app",
		},
		{
			name: "variable present, overwrite true: replaced",
			with: "{overwrite: true}",
			pod:  "web-2",
			spec: `  containers:
  - name: app
    image: app
    env:
    - {name: MODE, value: primary}
    - {name: INDEX, value: "7"}
  - name: metrics
    image: exporter
    env:
    - name: INDEX
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
`,
			wantSpec: `  containers:
  - name: app
    image: app
    env:
    - {name: MODE, value: primary}
    - {name: INDEX, value: "2"}
  - name: metrics
    image: exporter
    env:
    - {name: INDEX, value: "2"}
`,
			state:  engine.StatePass,
			reason: "INDEX=2 replaced in containers app, metrics",
		},
		{
			name:   "variable present and equal, overwrite true: no op",
			with:   "{overwrite: true}",
			pod:    "web-2",
			spec:   "  containers:\n  - name: app\n    image: app\n    env: [{name: INDEX, value: \"2\"}]\n",
			state:  engine.StatePass,
			reason: "INDEX=2 already set in containers app",
		},
		{
			name:     "duplicate entries, overwrite true: the last one, which wins, is replaced",
			with:     "{overwrite: true}",
			pod:      "web-2",
			spec:     "  containers:\n  - name: app\n    image: app\n    env: [{name: INDEX, value: \"2\"}, {name: INDEX, value: \"9\"}]\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    env: [{name: INDEX, value: \"2\"}, {name: INDEX, value: \"2\"}]\n",
			state:    engine.StatePass,
			reason:   "INDEX=2 replaced in containers app",
		},
		{
			name: "native sidecar, initContainers false: only app containers",
			pod:  "web-1",
			spec: `  initContainers:
  - {name: init-config, image: busybox}
  - {name: log-shipper, image: fluent-bit, restartPolicy: Always}
  containers:
  - {name: app, image: app}
`,
			wantSpec: `  initContainers:
  - {name: init-config, image: busybox}
  - {name: log-shipper, image: fluent-bit, restartPolicy: Always}
  containers:
  - {name: app, image: app, env: [{name: INDEX, value: "1"}]}
`,
			state:  engine.StatePass,
			reason: "INDEX=1 set in containers app",
		},
		{
			name: "native sidecar, initContainers true: init containers and sidecars too",
			with: "{initContainers: true}",
			pod:  "web-1",
			spec: `  initContainers:
  - {name: init-config, image: busybox}
  - name: log-shipper
    image: fluent-bit
    restartPolicy: Always
    env: [{name: LEVEL, value: info}]
  containers:
  - {name: app, image: app}
`,
			wantSpec: `  initContainers:
  - {name: init-config, image: busybox, env: [{name: INDEX, value: "1"}]}
  - name: log-shipper
    image: fluent-bit
    restartPolicy: Always
    env: [{name: LEVEL, value: info}, {name: INDEX, value: "1"}]
  containers:
  - {name: app, image: app, env: [{name: INDEX, value: "1"}]}
`,
			state:  engine.StatePass,
			reason: "INDEX=1 set in containers app, init-config (init), log-shipper (init)",
		},
		{
			name: "containers names a subset",
			with: "{containers: [app, log-shipper], initContainers: true}",
			pod:  "web-1",
			spec: `  initContainers:
  - {name: init-config, image: busybox}
  - {name: log-shipper, image: fluent-bit, restartPolicy: Always}
  containers:
  - {name: app, image: app}
  - {name: metrics, image: exporter}
`,
			wantSpec: `  initContainers:
  - {name: init-config, image: busybox}
  - {name: log-shipper, image: fluent-bit, restartPolicy: Always, env: [{name: INDEX, value: "1"}]}
  containers:
  - {name: app, image: app, env: [{name: INDEX, value: "1"}]}
  - {name: metrics, image: exporter}
`,
			state:  engine.StatePass,
			reason: "INDEX=1 set in containers app, log-shipper (init)",
		},
		{
			name: "containers naming a sidecar without initContainers: not injected",
			with: "{containers: [log-shipper]}",
			pod:  "web-1",
			spec: `  initContainers:
  - {name: log-shipper, image: fluent-bit, restartPolicy: Always}
  containers:
  - {name: app, image: app}
`,
			state:  engine.StateSkip,
			reason: "the pod has no container named log-shipper",
		},
		{
			name: "the pod-index label is used rather than the name",
			pod:  "web-2", labels: indexLabel("5"),
			spec:     "  containers:\n  - {name: app, image: app}\n",
			wantSpec: "  containers:\n  - {name: app, image: app, env: [{name: INDEX, value: \"5\"}]}\n",
			state:    engine.StatePass,
			reason:   "INDEX=5 set in containers app",
		},
		{
			name: "the pod-index label makes a name without ordinal usable",
			pod:  "web-primary", labels: indexLabel("0"),
			spec:     "  containers:\n  - {name: app, image: app}\n",
			wantSpec: "  containers:\n  - {name: app, image: app, env: [{name: INDEX, value: \"0\"}]}\n",
			state:    engine.StatePass,
			reason:   "INDEX=0 set in containers app",
		},
		{
			name: "valueFrom podIndexLabel",
			with: "{valueFrom: podIndexLabel, initContainers: true}",
			pod:  "web-4", labels: indexLabel("4"),
			spec: `  initContainers:
  - {name: log-shipper, image: fluent-bit, restartPolicy: Always}
  containers:
  - name: app
    image: app
    env: [{name: MODE, value: replica}]
`,
			wantSpec: `  initContainers:
  - name: log-shipper
    image: fluent-bit
    restartPolicy: Always
    env:
    - name: INDEX
      valueFrom:
        fieldRef: {apiVersion: v1, fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"}
  containers:
  - name: app
    image: app
    env:
    - {name: MODE, value: replica}
    - name: INDEX
      valueFrom:
        fieldRef: {apiVersion: v1, fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"}
`,
			state:  engine.StatePass,
			reason: "INDEX from label apps.kubernetes.io/pod-index (4) set in containers app, log-shipper (init)",
		},
		{
			name: "valueFrom podIndexLabel, overwrite: an entry without apiVersion already matches",
			with: "{valueFrom: podIndexLabel, overwrite: true}",
			pod:  "web-4", labels: indexLabel("4"),
			spec: `  containers:
  - name: app
    image: app
    env:
    - name: INDEX
      valueFrom:
        fieldRef: {fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"}
`,
			state:  engine.StatePass,
			reason: "INDEX from label apps.kubernetes.io/pod-index (4) already set in containers app",
		},
		{
			name: "valueFrom podIndexLabel, overwrite: a literal value is replaced",
			with: "{valueFrom: podIndexLabel, overwrite: true}",
			pod:  "web-4", labels: indexLabel("4"),
			spec: "  containers:\n  - name: app\n    image: app\n    env: [{name: INDEX, value: \"4\"}]\n",
			wantSpec: `  containers:
  - name: app
    image: app
    env:
    - name: INDEX
      valueFrom:
        fieldRef: {apiVersion: v1, fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"}
`,
			state:  engine.StatePass,
			reason: "INDEX from label apps.kubernetes.io/pod-index (4) replaced in containers app",
		},
		{
			name:    "valueFrom podIndexLabel without the label: skipped with a warning",
			with:    "{valueFrom: podIndexLabel}",
			pod:     "web-4",
			spec:    "  containers:\n  - {name: app, image: app}\n",
			state:   engine.StateSkip,
			reason:  `INDEX not injected: valueFrom podIndexLabel needs the label apps.kubernetes.io/pod-index, which StatefulSets set from Kubernetes 1.28, and pod "web-4" does not have it`,
			warning: `sts-index: INDEX not injected: valueFrom podIndexLabel needs the label apps.kubernetes.io/pod-index, which StatefulSets set from Kubernetes 1.28, and pod "web-4" does not have it`,
		},
		{
			name:    "a name without ordinal and no label: skipped with a warning",
			pod:     "web-primary",
			spec:    "  containers:\n  - {name: app, image: app}\n",
			state:   engine.StateSkip,
			reason:  `INDEX not injected: pod name "web-primary" does not end in -<ordinal> and the label apps.kubernetes.io/pod-index is not set`,
			warning: `sts-index: INDEX not injected: pod name "web-primary" does not end in -<ordinal> and the label apps.kubernetes.io/pod-index is not set`,
		},
		{
			name:    "a non-canonical ordinal: skipped with a warning",
			pod:     "web-007",
			spec:    "  containers:\n  - {name: app, image: app}\n",
			state:   engine.StateSkip,
			warning: `sts-index: INDEX not injected: pod name "web-007" does not end in -<ordinal> and the label apps.kubernetes.io/pod-index is not set`,
		},
		{
			name:    "an ordinal beyond int32: skipped with a warning",
			pod:     "web-4294967296",
			spec:    "  containers:\n  - {name: app, image: app}\n",
			state:   engine.StateSkip,
			warning: `sts-index: INDEX not injected: pod name "web-4294967296" does not end in -<ordinal> and the label apps.kubernetes.io/pod-index is not set`,
		},
		{
			name: "a pod-index label that is not a number: skipped with a warning",
			pod:  "web-3", labels: indexLabel("-1"),
			spec:    "  containers:\n  - {name: app, image: app}\n",
			state:   engine.StateSkip,
			warning: `sts-index: INDEX not injected: the label apps.kubernetes.io/pod-index="-1" is not a non-negative integer`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := compilePolicies(t, stsIndexPolicy(c.with))
			in := yamlJSON(t, stsPod(c.pod, c.labels, c.spec))
			req := admissionRequest(t, admissionv1.Create, in, nil)
			d := evaluate(t, snap, req, engine.EvalOptions{})
			if len(d.Results) != 1 {
				t.Fatalf("results %+v", d.Results)
			}
			r := d.Results[0]
			if r.State != c.state || !d.Allowed {
				t.Fatalf("state %s allowed %v (%s); want %s", r.State, d.Allowed, r.Reason, c.state)
			}
			if c.reason != "" && r.Reason != c.reason {
				t.Errorf("reason\n%q, want\n%q", r.Reason, c.reason)
			}
			checkWarnings(t, d, c.warning)
			if c.wantSpec == "" {
				checkUnchanged(t, d)
				return
			}
			if r.Patch == 0 {
				t.Fatalf("no patch")
			}
			want := yamlJSON(t, stsPod(c.pod, c.labels, c.wantSpec))
			checkMutation(t, snap, req, d, want, engine.EvalOptions{})
		})
	}
}

// TestInjectEnvIndexOps pins the exact operations: targeted and minimal.
func TestInjectEnvIndexOps(t *testing.T) {
	snap := compilePolicies(t, stsIndexPolicy("{overwrite: true, initContainers: true}"))
	pod := stsPod("web-3", "", `  initContainers:
  - {name: sidecar, image: s, restartPolicy: Always}
  containers:
  - {name: a, image: a}
  - {name: b, image: b, env: [{name: X, value: "1"}]}
  - {name: c, image: c, env: [{name: INDEX, value: "1"}, {name: Y, value: "2"}]}
  - {name: d, image: d, env: [{name: INDEX, value: "3"}]}
`)
	d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil), engine.EvalOptions{})
	got, err := d.PatchJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"add","path":"/spec/containers/0/env","value":[{"name":"INDEX","value":"3"}]},` +
		`{"op":"add","path":"/spec/containers/1/env/-","value":{"name":"INDEX","value":"3"}},` +
		`{"op":"replace","path":"/spec/containers/2/env/0","value":{"name":"INDEX","value":"3"}},` +
		`{"op":"add","path":"/spec/initContainers/0/env","value":[{"name":"INDEX","value":"3"}]}]`
	if !sameJSON(t, got, []byte(want)) {
		t.Fatalf("patch\n%s\nwant\n%s", got, want)
	}
	if r := d.Results[0].Reason; r != "INDEX=3 set in containers a, b, sidecar (init); replaced in containers c; already set in containers d" {
		t.Errorf("reason %q", r)
	}
}

// TestInjectEnvIndexSkips covers objects the builtin does not apply to: it
// skips them quietly, never panics and errors only on malformed pods.
func TestInjectEnvIndexSkips(t *testing.T) {
	policy := strings.Replace(stsIndexPolicy(""), "[CREATE]", "['*']", 1)
	snap := compilePolicies(t, strings.Replace(policy, "[pods]", "['*']", 1))
	notOwned := strings.Replace(stsPod("web-0", "", "  containers: [{name: app, image: app}]\n"), "kind: StatefulSet", "kind: ReplicaSet", 1)
	cases := []struct {
		name   string
		op     admissionv1.Operation
		obj    string
		state  engine.State
		reason string
	}{
		{"not owned by a StatefulSet", admissionv1.Create, notOwned, engine.StateSkip, "the pod is not owned by a StatefulSet"},
		{"no owner references", admissionv1.Create, "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0}\nspec: {containers: [{name: app}]}\n", engine.StateSkip, "the pod is not owned by a StatefulSet"},
		{"no metadata", admissionv1.Create, "apiVersion: v1\nkind: Pod\nspec: {containers: [{name: app}]}\n", engine.StateSkip, "the pod is not owned by a StatefulSet"},
		{"not a pod", admissionv1.Create, "apiVersion: v1\nkind: Service\nmetadata: {name: web-0}\n", engine.StateSkip, "the object is a Service, not a Pod"},
		{"DELETE", admissionv1.Delete, "", engine.StateSkip, "env can only be set when a pod is created, not on DELETE"},
		{"UPDATE", admissionv1.Update, stsPod("web-0", "", "  containers: [{name: app}]\n"), engine.StateSkip, "env can only be set when a pod is created, not on UPDATE"},
		{"no spec", admissionv1.Create, strings.Split(stsPod("web-0", "", ""), "spec:")[0], engine.StateSkip, "the pod has no spec"},
		{"no containers", admissionv1.Create, stsPod("web-0", "", "  hostname: x\n"), engine.StateSkip, "the pod has no containers"},
		{"containers not a list", admissionv1.Create, stsPod("web-0", "", "  containers: {name: app}\n"), engine.StateError, "spec.containers is a map[string]interface {}, not a list"},
		{"container not an object", admissionv1.Create, stsPod("web-0", "", "  containers: [app]\n"), engine.StateError, "spec.containers[0] is a string, not an object"},
		{"env not a list", admissionv1.Create, stsPod("web-0", "", "  containers: [{name: app, env: INDEX}]\n"), engine.StateError, "spec.containers[0].env is a string, not a list"},
		{"odd env entries are left alone", admissionv1.Create, stsPod("web-0", "", "  containers: [{name: app, env: [3, {name: 4}, {name: INDEX, value: 0}]}]\n"), engine.StatePass, "INDEX=0 kept the pod's own value in containers app"},
		{"a container without a name", admissionv1.Create, stsPod("web-0", "", "  containers: [{image: app}]\n"), engine.StatePass, "INDEX=0 set in containers "},
		{"metadata not an object", admissionv1.Create, "apiVersion: v1\nkind: Pod\nmetadata: 3\n", engine.StateSkip, "the pod is not owned by a StatefulSet"},
		{"owner references not a list", admissionv1.Create, "apiVersion: v1\nkind: Pod\nmetadata: {ownerReferences: StatefulSet}\n", engine.StateSkip, "the pod is not owned by a StatefulSet"},
		{"pod-index label not a string", admissionv1.Create, stsPod("web-0", "    apps.kubernetes.io/pod-index: 0\n", "  containers: [{name: app}]\n"), engine.StateSkip, `INDEX not injected: the label apps.kubernetes.io/pod-index=0 is not a string`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var req *admissionv1.AdmissionRequest
			switch c.op {
			case admissionv1.Delete:
				req = admissionRequest(t, c.op, nil, yamlJSON(t, stsPod("web-0", "", "  containers: [{name: app}]\n")))
			case admissionv1.Update:
				req = admissionRequest(t, c.op, yamlJSON(t, c.obj), yamlJSON(t, c.obj))
			default:
				req = admissionRequest(t, c.op, yamlJSON(t, c.obj), nil)
			}
			d := evaluate(t, snap, req, engine.EvalOptions{})
			r := d.Results[0]
			if r.State != c.state || r.Reason != c.reason || r.Panicked {
				t.Fatalf("state %s reason %q panicked %v; want %s %q", r.State, r.Reason, r.Panicked, c.state, c.reason)
			}
			if !d.Allowed {
				t.Errorf("denied: %s", d.Message)
			}
		})
	}
}

// TestInjectEnvIndexConcurrent runs one compiled policy from many
// goroutines (meaningful under -race).
func TestInjectEnvIndexConcurrent(t *testing.T) {
	snap := compilePolicies(t, stsIndexPolicy("{initContainers: true, overwrite: true}"))
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("web-%d", i)
			pod := stsPod(name, "", "  initContainers: [{name: s, image: s, restartPolicy: Always}]\n  containers: [{name: app, image: app, env: [{name: INDEX, value: x}]}]\n")
			d, err := snap.Evaluate(t.Context(), admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil), engine.EvalOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			if want := fmt.Sprintf("INDEX=%d set in containers s (init); replaced in containers app", i); d.Results[0].Reason != want {
				t.Errorf("reason %q, want %q", d.Results[0].Reason, want)
			}
		}()
	}
	wg.Wait()
}

// TestInjectEnvIndexLoadErrors checks that bad arguments are load errors at
// the line of the offending field.
func TestInjectEnvIndexLoadErrors(t *testing.T) {
	head := strings.TrimSuffix(stsIndexPolicy(""), "") + "  with:\n" // with: is line 10
	cases := []struct {
		name, with, want string
	}{
		{"unknown field", "    name: INDEX\n    container: [app]\n", `p.yaml:12:5: policy "sts-index": with.container: unknown field`},
		{"duplicate field", "    name: INDEX\n    overwrite: true\n    name: ORDINAL\n", `p.yaml:13:5: policy "sts-index": spec.with.name: duplicate field`},
		{"invalid env name", "    name: 2ND\n", `p.yaml:11:5: policy "sts-index": with.name: "2ND" is not a valid environment variable name: a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit`},
		{"env name with =", "    initContainers: true\n    name: A=B\n", `p.yaml:12:5: policy "sts-index": with.name: "A=B" is not a valid environment variable name`},
		{"bad valueFrom", "    name: INDEX\n    valueFrom: fieldRef\n", `p.yaml:12:5: policy "sts-index": with.valueFrom: must be literal or podIndexLabel, not "fieldRef"`},
		{"empty containers", "    containers: []\n", `p.yaml:11:5: policy "sts-index": with.containers: is empty; omit it to inject into every container`},
		{"bad container name", "    containers:\n    - app\n    - Log_Shipper\n", `p.yaml:13:7: policy "sts-index": with.containers[1]: "Log_Shipper" is not a valid container name`},
		{"duplicate container", "    containers:\n    - app\n    - sidecar\n    - app\n", `p.yaml:14:7: policy "sts-index": with.containers[2]: container "app" is listed twice`},
		{"wrong type: bool", "    name: INDEX\n    overwrite: \"yes\"\n", `p.yaml:12:5: policy "sts-index": with.overwrite: expected a boolean, got a string`},
		{"wrong type: list", "    name: INDEX\n    containers: app\n", `p.yaml:12:5: policy "sts-index": with.containers: expected a list, got a string`},
		{"wrong type: with itself", "    - name\n", `p.yaml:10:3: policy "sts-index": with: expected an object, got a list`},
		{"enforcement on a mutating builtin", "    name: INDEX\n  enforcement: Warn\n", `p.yaml:12:3: policy "sts-index": enforcement applies to validating builtins only`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkLoadError(t, compileErrors(t, head+c.with), c.want)
		})
	}
}

// TestInjectEnvIndexDefaults checks that an absent with and an explicit
// one with every default compile to the same behaviour.
func TestInjectEnvIndexDefaults(t *testing.T) {
	pod := yamlJSON(t, stsPod("web-1", "", "  initContainers: [{name: init, image: i}]\n  containers: [{name: app, image: app, env: [{name: INDEX, value: \"9\"}]}, {name: b, image: b}]\n"))
	var first string
	for _, with := range []string{"", "{}", "null", "{name: INDEX, initContainers: false, overwrite: false, valueFrom: literal}", "{name: \"\", valueFrom: \"\"}"} {
		snap := compilePolicies(t, stsIndexPolicy(with))
		d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, pod, nil), engine.EvalOptions{})
		p, _ := d.PatchJSON()
		got := string(p) + " " + d.Results[0].Reason
		if first == "" {
			first = got
			if want := `[{"op":"add","path":"/spec/containers/1/env","value":[{"name":"INDEX","value":"1"}]}] INDEX=1 set in containers b; kept the pod's own value in containers app`; got != want {
				t.Fatalf("defaults: %s\nwant %s", got, want)
			}
		} else if got != first {
			t.Errorf("with %q: %s, want %s", with, got, first)
		}
	}
}
