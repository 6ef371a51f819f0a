package builtins

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"celadon.io/celadon/engine"
)

// scalePolicy is a scaleRequests policy for pods on CREATE with the given
// spec.with (a YAML flow mapping, or "" for none). spec.with is line 10.
func scalePolicy(with string) string {
	p := `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: overcommit
spec:
  match:
    resources: [pods]
    operations: [CREATE]
  action: scaleRequests
`
	if with != "" {
		p += "  with: " + with + "\n"
	}
	return p
}

// scalePod is pod web-0 with extra metadata lines (indented by two) and
// spec as its spec (indented by two).
func scalePod(meta, spec string) string {
	return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-0\n  namespace: shop\n" + meta + "spec:\n" + spec
}

// scaleAnnotation is the metadata lines of the record annotation.
func scaleAnnotation(record string) string {
	return "  annotations:\n    celadon.io/original-requests: '" + record + "'\n"
}

func TestScaleRequests(t *testing.T) {
	const burstable = `  containers:
  - name: app
    image: app:1
    resources:
      requests: {cpu: 500m, memory: 256Mi}
      limits: {cpu: "1", memory: 512Mi}
`
	cases := []struct {
		name     string
		with     string
		meta     string
		spec     string
		wantMeta string
		wantSpec string // "" when the pod must not change
		state    engine.State
		reason   string
	}{
		{
			name: "cpu and memory scaled; memory to whole bytes; limits untouched",
			with: "{cpu: 0.5, memory: 0.8}",
			spec: burstable,
			wantSpec: `  containers:
  - name: app
    image: app:1
    resources:
      requests: {cpu: 250m, memory: "214748364"}
      limits: {cpu: "1", memory: 512Mi}
`,
			wantMeta: scaleAnnotation(`{"app":{"cpu":"500m","memory":"256Mi"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of app (cpu 500m → 250m, memory 256Mi → 214748364)",
		},
		{
			name: "memoryUnit Mi rounds down to whole mebibytes; existing annotations are kept",
			with: "{memory: 0.8, memoryUnit: Mi}",
			meta: "  annotations: {team: web}\n",
			spec: burstable,
			wantSpec: `  containers:
  - name: app
    image: app:1
    resources:
      requests: {cpu: 500m, memory: 204Mi}
      limits: {cpu: "1", memory: 512Mi}
`,
			wantMeta: "  annotations:\n    team: web\n    celadon.io/original-requests: '{\"app\":{\"memory\":\"256Mi\"}}'\n",
			state:    engine.StatePass,
			reason:   "scaled requests of app (memory 256Mi → 204Mi)",
		},
		{
			name:     "memoryUnit Gi",
			with:     "{memory: 0.5, memoryUnit: Gi}",
			spec:     "  containers:\n  - {name: app, image: app, resources: {requests: {memory: 3Gi}}}\n",
			wantSpec: "  containers:\n  - {name: app, image: app, resources: {requests: {memory: 1Gi}}}\n",
			wantMeta: scaleAnnotation(`{"app":{"memory":"3Gi"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of app (memory 3Gi → 1Gi)",
		},
		{
			name: "memoryUnit Ki; a request below one unit is never raised to it",
			with: "{memory: 0.3, memoryUnit: Ki}",
			spec: `  containers:
  - {name: a, image: a, resources: {requests: {memory: 10000}}}
  - {name: b, image: b, resources: {requests: {memory: 1000}}}
`,
			wantSpec: `  containers:
  - {name: a, image: a, resources: {requests: {memory: 2Ki}}}
  - {name: b, image: b, resources: {requests: {memory: 1000}}}
`,
			wantMeta: scaleAnnotation(`{"a":{"memory":"10000"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of a (memory 10000 → 2Ki)",
		},
		{
			name:     "ratios are exact: 0.29 of 100m is 29m, not 28m",
			with:     "{cpu: 0.29}",
			spec:     "  containers:\n  - {name: app, image: app, resources: {requests: {cpu: 100m}}}\n",
			wantSpec: "  containers:\n  - {name: app, image: app, resources: {requests: {cpu: 29m}}}\n",
			wantMeta: scaleAnnotation(`{"app":{"cpu":"100m"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of app (cpu 100m → 29m)",
		},
		{
			name: "cpu rounds down to whole millicores, never to 0",
			with: "{cpu: 0.5}",
			spec: `  containers:
  - {name: a, image: a, resources: {requests: {cpu: 3m}}}
  - {name: b, image: b, resources: {requests: {cpu: 1m}}}
  - {name: c, image: c, resources: {requests: {cpu: "0.0015"}}}
`,
			wantSpec: `  containers:
  - {name: a, image: a, resources: {requests: {cpu: 1m}}}
  - {name: b, image: b, resources: {requests: {cpu: 1m}}}
  - {name: c, image: c, resources: {requests: {cpu: 1m}}}
`,
			wantMeta: scaleAnnotation(`{"a":{"cpu":"3m"},"c":{"cpu":"0.0015"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of a (cpu 3m → 1m); c (cpu 0.0015 → 1m)",
		},
		{
			name: "the minimum floors the result, but never raises a request",
			with: "{cpu: 0.5, memory: 0.5, minimum: {cpu: 80m, memory: 48Mi}}",
			spec: `  containers:
  - {name: a, image: a, resources: {requests: {cpu: 100m, memory: 64Mi}}}
  - {name: b, image: b, resources: {requests: {cpu: 50m, memory: 32Mi}}}
  - {name: c, image: c, resources: {requests: {cpu: 1, memory: 1Gi}}}
`,
			wantSpec: `  containers:
  - {name: a, image: a, resources: {requests: {cpu: 80m, memory: 48Mi}}}
  - {name: b, image: b, resources: {requests: {cpu: 50m, memory: 32Mi}}}
  - {name: c, image: c, resources: {requests: {cpu: 500m, memory: 512Mi}}}
`,
			wantMeta: scaleAnnotation(`{"a":{"cpu":"100m","memory":"64Mi"},"c":{"cpu":"1","memory":"1Gi"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of a (cpu 100m → 80m, memory 64Mi → 48Mi); c (cpu 1 → 500m, memory 1Gi → 512Mi)",
		},
		{
			name:   "a Guaranteed pod is left alone",
			with:   "{cpu: 0.5, memory: 0.5}",
			spec:   "  containers:\n  - {name: app, image: app, resources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 1000m, memory: 1Gi}}}\n",
			state:  engine.StateSkip,
			reason: "the pod is of the Guaranteed QoS class, which lower requests would make Burstable; allowGuaranteed: true scales it anyway",
		},
		{
			name:   "a Guaranteed pod whose requests are defaulted from its limits",
			with:   "{cpu: 0.5}",
			spec:   "  initContainers:\n  - {name: init, image: i, resources: {limits: {cpu: 100m, memory: 64Mi}}}\n  containers:\n  - {name: app, image: app, resources: {limits: {cpu: 1, memory: 1Gi}}}\n",
			state:  engine.StateSkip,
			reason: "the pod is of the Guaranteed QoS class, which lower requests would make Burstable; allowGuaranteed: true scales it anyway",
		},
		{
			name:     "allowGuaranteed: requests defaulted from limits are added",
			with:     "{cpu: 0.5, allowGuaranteed: true}",
			spec:     "  containers:\n  - {name: app, image: app, resources: {limits: {cpu: 1, memory: 1Gi}}}\n",
			wantSpec: "  containers:\n  - {name: app, image: app, resources: {limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 500m}}}\n",
			wantMeta: scaleAnnotation(`{"app":{"cpu":"1"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of app (cpu 1 → 500m)",
		},
		{
			name:     "allowGuaranteed with requests present: replaced",
			with:     "{cpu: 0.5, memory: 0.5, allowGuaranteed: true}",
			spec:     "  containers:\n  - {name: app, image: app, resources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 1, memory: 1Gi}}}\n",
			wantSpec: "  containers:\n  - {name: app, image: app, resources: {requests: {cpu: 500m, memory: 512Mi}, limits: {cpu: 1, memory: 1Gi}}}\n",
			wantMeta: scaleAnnotation(`{"app":{"cpu":"1","memory":"1Gi"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of app (cpu 1 → 500m, memory 1Gi → 512Mi)",
		},
		{
			name: "a pod with one Guaranteed-looking container of two is Burstable: scaled",
			with: "{cpu: 0.5}",
			spec: `  containers:
  - {name: a, image: a, resources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 1, memory: 1Gi}}}
  - {name: b, image: b, resources: {requests: {cpu: 200m}}}
`,
			wantSpec: `  containers:
  - {name: a, image: a, resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: 1, memory: 1Gi}}}
  - {name: b, image: b, resources: {requests: {cpu: 100m}}}
`,
			wantMeta: scaleAnnotation(`{"a":{"cpu":"1"},"b":{"cpu":"200m"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of a (cpu 1 → 500m); b (cpu 200m → 100m)",
		},
		{
			name: "containers and initContainers select; native sidecars are init containers",
			with: "{cpu: 0.5, containers: [app, proxy], initContainers: true}",
			spec: `  initContainers:
  - {name: setup, image: s, resources: {requests: {cpu: 100m}}}
  - {name: proxy, image: p, restartPolicy: Always, resources: {requests: {cpu: 100m}}}
  containers:
  - {name: app, image: a, resources: {requests: {cpu: 100m}}}
  - {name: other, image: o, resources: {requests: {cpu: 100m}}}
`,
			wantSpec: `  initContainers:
  - {name: setup, image: s, resources: {requests: {cpu: 100m}}}
  - {name: proxy, image: p, restartPolicy: Always, resources: {requests: {cpu: 50m}}}
  containers:
  - {name: app, image: a, resources: {requests: {cpu: 50m}}}
  - {name: other, image: o, resources: {requests: {cpu: 100m}}}
`,
			wantMeta: scaleAnnotation(`{"app":{"cpu":"100m"},"proxy":{"cpu":"100m"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of app (cpu 100m → 50m); proxy (init) (cpu 100m → 50m)",
		},
		{
			name:     "init containers are not scaled by default",
			with:     "{cpu: 0.5}",
			spec:     "  initContainers:\n  - {name: setup, image: s, resources: {requests: {cpu: 100m}}}\n  containers:\n  - {name: app, image: a, resources: {requests: {cpu: 100m}}}\n",
			wantSpec: "  initContainers:\n  - {name: setup, image: s, resources: {requests: {cpu: 100m}}}\n  containers:\n  - {name: app, image: a, resources: {requests: {cpu: 50m}}}\n",
			wantMeta: scaleAnnotation(`{"app":{"cpu":"100m"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of app (cpu 100m → 50m)",
		},
		{
			name:     "a request above its limit (an invalid pod) is brought down to the limit at most",
			with:     "{cpu: 0.9}",
			spec:     "  containers:\n  - {name: app, image: a, resources: {requests: {cpu: 2}, limits: {cpu: 1}}}\n",
			wantSpec: "  containers:\n  - {name: app, image: a, resources: {requests: {cpu: \"1\"}, limits: {cpu: 1}}}\n",
			wantMeta: scaleAnnotation(`{"app":{"cpu":"2"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of app (cpu 2 → 1)",
		},
		{
			name:     "decimal memory becomes a canonical quantity",
			with:     "{memory: 0.5}",
			spec:     "  containers:\n  - {name: app, image: a, resources: {requests: {memory: 1G}}}\n",
			wantSpec: "  containers:\n  - {name: app, image: a, resources: {requests: {memory: \"500000000\"}}}\n",
			wantMeta: scaleAnnotation(`{"app":{"memory":"1G"}}`),
			state:    engine.StatePass,
			reason:   "scaled requests of app (memory 1G → 500000000)",
		},
		{
			name:   "already scaled: the annotation stops a second scaling",
			with:   "{cpu: 0.5}",
			meta:   scaleAnnotation(`{"app":{"cpu":"200m"}}`),
			spec:   "  containers:\n  - {name: app, image: a, resources: {requests: {cpu: 100m}}}\n",
			state:  engine.StateSkip,
			reason: "requests already scaled: the pod has the annotation celadon.io/original-requests",
		},
		{
			name:   "a BestEffort pod: nothing to scale",
			with:   "{cpu: 0.5, memory: 0.5}",
			spec:   "  containers:\n  - {name: app, image: a}\n",
			state:  engine.StatePass,
			reason: "requests unchanged in app: none set, or already at the minimum",
		},
		{
			name:   "requests at the floor: unchanged, no annotation",
			with:   "{cpu: 0.5, minimum: {cpu: 10m}}",
			spec:   "  containers:\n  - {name: app, image: a, resources: {requests: {cpu: 10m}}}\n",
			state:  engine.StatePass,
			reason: "requests unchanged in app: none set, or already at the minimum",
		},
		{
			name:   "no container of that name",
			with:   "{cpu: 0.5, containers: [db]}",
			spec:   "  containers:\n  - {name: app, image: a, resources: {requests: {cpu: 10m}}}\n",
			state:  engine.StateSkip,
			reason: "the pod has no container named db",
		},
		{
			name:   "pod-level resources",
			with:   "{cpu: 0.5}",
			spec:   "  resources: {requests: {cpu: 1}}\n  containers:\n  - {name: app, image: a, resources: {requests: {cpu: 1}}}\n",
			state:  engine.StateSkip,
			reason: "the pod sets pod-level resources (spec.resources); its container requests are not what the scheduler counts",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := compilePolicies(t, scalePolicy(c.with))
			req := admissionRequest(t, admissionv1.Create, yamlJSON(t, scalePod(c.meta, c.spec)), nil)
			d := evaluate(t, snap, req, engine.EvalOptions{})
			if len(d.Results) != 1 {
				t.Fatalf("results %+v", d.Results)
			}
			r := d.Results[0]
			if r.State != c.state || !d.Allowed {
				t.Fatalf("state %s allowed %v (%s); want %s", r.State, d.Allowed, r.Reason, c.state)
			}
			if r.Reason != c.reason {
				t.Errorf("reason\n%q, want\n%q", r.Reason, c.reason)
			}
			if len(d.Warnings) != 0 {
				t.Errorf("warnings %q", d.Warnings)
			}
			if c.wantSpec == "" {
				checkUnchanged(t, d)
				return
			}
			checkMutation(t, snap, req, d, yamlJSON(t, scalePod(c.wantMeta, c.wantSpec)), engine.EvalOptions{})
		})
	}
}

// TestScaleRequestsOps pins the exact operations.
func TestScaleRequestsOps(t *testing.T) {
	snap := compilePolicies(t, scalePolicy("{cpu: 0.5, memory: 0.5, initContainers: true}"))
	pod := scalePod("  labels: {app: web}\n", `  initContainers:
  - {name: i, image: i, resources: {requests: {memory: 64Mi}, limits: {cpu: 100m}}}
  containers:
  - {name: a, image: a, resources: {requests: {cpu: 100m, memory: 64Mi}}}
  - {name: b, image: b}
  - {name: c, image: c, resources: {limits: {memory: 64Mi}}}
`)
	d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil), engine.EvalOptions{})
	got, err := d.PatchJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"replace","path":"/spec/containers/0/resources/requests/cpu","value":"50m"},` +
		`{"op":"replace","path":"/spec/containers/0/resources/requests/memory","value":"32Mi"},` +
		`{"op":"add","path":"/spec/containers/2/resources/requests","value":{"memory":"32Mi"}},` +
		`{"op":"add","path":"/spec/initContainers/0/resources/requests/cpu","value":"50m"},` +
		`{"op":"replace","path":"/spec/initContainers/0/resources/requests/memory","value":"32Mi"},` +
		`{"op":"add","path":"/metadata/annotations","value":{"celadon.io/original-requests":"{\"a\":{\"cpu\":\"100m\",\"memory\":\"64Mi\"},\"c\":{\"memory\":\"64Mi\"},\"i\":{\"cpu\":\"100m\",\"memory\":\"64Mi\"}}"}}]`
	if !sameJSON(t, got, []byte(want)) {
		t.Fatalf("patch\n%s\nwant\n%s", got, want)
	}
}

// TestScaleRequestsErrors covers requests the builtin does not apply to and
// malformed pods: skips and errors, never panics.
func TestScaleRequestsErrors(t *testing.T) {
	policy := strings.Replace(scalePolicy("{cpu: 0.5, memory: 0.5}"), "[CREATE]", "['*']", 1)
	snap := compilePolicies(t, strings.Replace(policy, "[pods]", "['*']", 1))
	pod := scalePod("", "  containers: [{name: app, resources: {requests: {cpu: 1}}}]\n")
	cases := []struct {
		name   string
		op     admissionv1.Operation
		obj    string
		state  engine.State
		reason string
	}{
		{"UPDATE", admissionv1.Update, pod, engine.StateSkip, "requests can only be scaled when a pod is created, not on UPDATE"},
		{"DELETE", admissionv1.Delete, "", engine.StateSkip, "requests can only be scaled when a pod is created, not on DELETE"},
		{"not a pod", admissionv1.Create, "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n", engine.StateSkip, "the object is a Service, not a Pod"},
		{"no spec", admissionv1.Create, "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n", engine.StateSkip, "the pod has no spec"},
		{"no containers", admissionv1.Create, scalePod("", "  hostname: x\n"), engine.StateSkip, "the pod has no containers"},
		{"metadata not an object", admissionv1.Create, "apiVersion: v1\nkind: Pod\nmetadata: 3\nspec: {}\n", engine.StateError, "metadata is a int64, not an object"},
		{"annotations not an object", admissionv1.Create, scalePod("  annotations: [a]\n", "  containers: []\n"), engine.StateError, "metadata.annotations is a []interface {}, not an object"},
		{"containers not a list", admissionv1.Create, scalePod("", "  containers: {name: app}\n"), engine.StateError, "spec.containers is a map[string]interface {}, not a list"},
		{"a container not an object", admissionv1.Create, scalePod("", "  containers: [app]\n"), engine.StateError, "spec.containers[0] is a string, not an object"},
		{"resources not an object", admissionv1.Create, scalePod("", "  containers: [{name: app, resources: 1}]\n"), engine.StateError, "spec.containers[0].resources is a int64, not an object"},
		{"requests not an object", admissionv1.Create, scalePod("", "  containers: [{name: app, resources: {requests: [1]}}]\n"), engine.StateError, "spec.containers[0].resources.requests is a []interface {}, not an object"},
		{"a bad quantity", admissionv1.Create, scalePod("", "  containers: [{name: app, resources: {limits: {cpu: lots}}}]\n"), engine.StateError, `spec.containers[0].resources.limits.cpu: "lots" is not a quantity`},
		{"a quantity of the wrong type", admissionv1.Create, scalePod("", "  containers: [{name: app, resources: {requests: {memory: true}}}]\n"), engine.StateError, "spec.containers[0].resources.requests.memory is a bool, not a quantity"},
		{"numbers are quantities", admissionv1.Create, scalePod("", "  containers: [{name: app, resources: {requests: {cpu: 1, memory: 1048576}}}]\n"), engine.StatePass, "scaled requests of app (cpu 1 → 500m, memory 1048576 → 512Ki)"},
		{"pod-level resources of the wrong type are not pod-level resources", admissionv1.Create, scalePod("", "  resources: 3\n  containers: [{name: app}]\n"), engine.StatePass, "requests unchanged in app: none set, or already at the minimum"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var req *admissionv1.AdmissionRequest
			switch c.op {
			case admissionv1.Delete:
				req = admissionRequest(t, c.op, nil, yamlJSON(t, pod))
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

// TestScaleRequestsConcurrent runs one compiled policy from many goroutines
// (meaningful under -race).
func TestScaleRequestsConcurrent(t *testing.T) {
	snap := compilePolicies(t, scalePolicy("{cpu: 0.5, memory: 0.5, memoryUnit: Mi}"))
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod := scalePod("", fmt.Sprintf("  containers: [{name: app, resources: {requests: {cpu: %dm, memory: %dMi}}}]\n", 100*(i+1), 64*(i+1)))
			d, err := snap.Evaluate(t.Context(), admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil), engine.EvalOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			want := fmt.Sprintf("scaled requests of app (cpu %dm → %dm, memory %dMi → %dMi)", 100*(i+1), 50*(i+1), 64*(i+1), 32*(i+1))
			if got := d.Results[0].Reason; got != want {
				t.Errorf("reason %q, want %q", got, want)
			}
		}()
	}
	wg.Wait()
}

// TestScaleRequestsLoadErrors checks that bad arguments are load errors at
// the line of the offending field.
func TestScaleRequestsLoadErrors(t *testing.T) {
	head := scalePolicy("") + "  with:\n" // with: is line 10
	cases := []struct {
		name, with, want string
	}{
		{"no with", "", `p.yaml:9:3: policy "overcommit": with: cpu or memory (a ratio in (0, 1]) is required`},
		{"neither ratio", "    minimum: {cpu: 10m}\n", `p.yaml:10:3: policy "overcommit": with: cpu or memory (a ratio in (0, 1]) is required`},
		{"unknown field", "    cpu: 0.5\n    ram: 0.5\n", `p.yaml:12:5: policy "overcommit": with.ram: unknown field`},
		{"ratio 0", "    cpu: 0\n", `p.yaml:11:5: policy "overcommit": with.cpu: must be a ratio in (0, 1], not 0`},
		{"ratio above 1", "    memory: 1.5\n", `p.yaml:11:5: policy "overcommit": with.memory: must be a ratio in (0, 1], not 1.5`},
		{"negative ratio", "    cpu: 0.5\n    memory: -0.5\n", `p.yaml:12:5: policy "overcommit": with.memory: must be a ratio in (0, 1], not -0.5`},
		{"ratio as a string", "    cpu: \"50%\"\n", `p.yaml:11:5: policy "overcommit": with.cpu: expected a number, got a string`},
		{"unknown minimum", "    cpu: 0.5\n    minimum: {gpu: 1}\n", `p.yaml:12:15: policy "overcommit": with.minimum.gpu: unknown field`},
		{"minimum of an unscaled resource", "    cpu: 0.5\n    minimum:\n      memory: 16Mi\n", `p.yaml:13:7: policy "overcommit": with.minimum.memory: applies only when memory is scaled: set memory`},
		{"bad minimum", "    cpu: 0.5\n    minimum:\n      cpu: ten\n", `p.yaml:13:7: policy "overcommit": with.minimum.cpu: "ten" is not a quantity`},
		{"minimum of the wrong type", "    cpu: 0.5\n    minimum:\n      cpu: [1]\n", `p.yaml:13:7: policy "overcommit": with.minimum.cpu: expected a quantity such as 10m or 16Mi, got []interface {}`},
		{"zero minimum", "    memory: 0.5\n    minimum:\n      memory: 0\n", `p.yaml:13:7: policy "overcommit": with.minimum.memory: must be positive, not 0`},
		{"sub-millicore minimum", "    cpu: 0.5\n    minimum:\n      cpu: 0.5m\n", `p.yaml:13:7: policy "overcommit": with.minimum.cpu: 500u is not a positive whole number of millicores`},
		{"fractional byte minimum", "    memory: 0.5\n    minimum:\n      memory: 0.5\n", `p.yaml:13:7: policy "overcommit": with.minimum.memory: 500m is not a positive whole number of bytes`},
		{"bad memoryUnit", "    memory: 0.5\n    memoryUnit: MB\n", `p.yaml:12:5: policy "overcommit": with.memoryUnit: must be Ki, Mi or Gi (absent: whole bytes), not "MB"`},
		{"memoryUnit without memory", "    cpu: 0.5\n    memoryUnit: Mi\n", `p.yaml:12:5: policy "overcommit": with.memoryUnit: applies only when memory is scaled: set memory`},
		{"empty containers", "    cpu: 0.5\n    containers: []\n", `p.yaml:12:5: policy "overcommit": with.containers: is empty; omit it to scale every container`},
		{"duplicate container", "    cpu: 0.5\n    containers: [a, a]\n", `p.yaml:12:21: policy "overcommit": with.containers[1]: container "a" is listed twice`},
		{"bad container", "    cpu: 0.5\n    containers:\n    - App\n", `p.yaml:13:7: policy "overcommit": with.containers[0]: "App" is not a valid container name`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			policy := head + c.with
			if c.with == "" {
				policy = scalePolicy("")
			}
			checkLoadError(t, compileErrors(t, policy), c.want)
		})
	}
}

// TestScaleRequestsHuge covers requests at and beyond the largest that
// int64 millicores (cpu) or bytes (memory) hold: those scale exactly, the
// larger are left as they are with a warning, never wrapped around.
func TestScaleRequestsHuge(t *testing.T) {
	snap := compilePolicies(t, scalePolicy("{cpu: 0.5, memory: 0.5}"))
	const (
		cpuTooLarge = "above 9223372036854775807m, the largest cpu request that can be scaled"
		memTooLarge = "above 9223372036854775807, the largest memory request that can be scaled"
	)
	cases := []struct {
		res, value string
		reason     string // "": too large
	}{
		{"cpu", "9223372036854775", "cpu 9223372036854775 → 4611686018427387500m"},
		{"cpu", "9223372036854775807m", "cpu 9223372036854775807m → 4611686018427387903m"},
		{"cpu", "9223372036854775.807", "cpu 9223372036854775.807 → 4611686018427387903m"},
		{"cpu", "9223372036854775808m", ""},
		{"cpu", "9223372036854775.808", ""},
		{"cpu", "9223372036854776", ""},
		{"cpu", "9223372036854777", ""},
		{"cpu", "10000000000000000", ""},
		{"cpu", "1e19", ""},
		{"cpu", "18446744073709551616", ""},
		{"memory", "9223372036854775807", "memory 9223372036854775807 → 4611686018427387903"},
		{"memory", "7Ei", "memory 7Ei → 3584Pi"},
		{"memory", "9223372036854775808", ""},
		// apimachinery parses a binary suffix beyond int64 as the largest
		// int64, as the API server then stores it: no overflow.
		{"memory", "8Ei", "memory 8Ei → 4611686018427387903"},
		{"memory", "16Ei", "memory 16Ei → 4611686018427387903"},
		{"memory", "9223372036854776k", ""},
		{"memory", "1e19", ""},
		{"memory", "18446744073709551616", ""},
	}
	for _, c := range cases {
		t.Run(c.res+"="+c.value, func(t *testing.T) {
			pod := scalePod("", fmt.Sprintf("  containers: [{name: app, resources: {requests: {%s: %q}}}, {name: side, resources: {requests: {cpu: 10m}}}]\n", c.res, c.value))
			req := admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil)
			d := evaluate(t, snap, req, engine.EvalOptions{})
			r := d.Results[0]
			if c.reason != "" {
				want := "scaled requests of app (" + c.reason + "); side (cpu 10m → 5m)"
				if r.State != engine.StatePass || r.Reason != want {
					t.Fatalf("state %s reason %q; want pass %q", r.State, r.Reason, want)
				}
				checkWarnings(t, d, "")
				return
			}
			tooLarge := cpuTooLarge
			if c.res == "memory" {
				tooLarge = memTooLarge
			}
			left := fmt.Sprintf("app: %s request %s left as it is: %s", c.res, c.value, tooLarge)
			want := "scaled requests of side (cpu 10m → 5m); " + left
			if r.State != engine.StatePass || r.Reason != want {
				t.Fatalf("state %s reason %q; want pass %q", r.State, r.Reason, want)
			}
			checkWarnings(t, d, "overcommit: "+left)
			p, _ := d.PatchJSON()
			if strings.Contains(string(p), "/spec/containers/0/") {
				t.Errorf("app's requests patched: %s", p)
			}
		})
	}
	t.Run("nothing else to scale", func(t *testing.T) {
		pod := scalePod("", "  containers: [{name: app, resources: {requests: {cpu: \"9223372036854776\"}}}]\n")
		d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil), engine.EvalOptions{})
		left := "app: cpu request 9223372036854776 left as it is: " + cpuTooLarge
		if r := d.Results[0]; r.State != engine.StatePass || r.Reason != "requests unchanged: "+left {
			t.Fatalf("state %s reason %q", r.State, r.Reason)
		}
		checkWarnings(t, d, "overcommit: "+left)
		checkUnchanged(t, d)
	})
}
