package engine_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	evjsonpatch "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	kjson "sigs.k8s.io/json"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

// selectedPolicy is a second mutating policy on the benchmark pod, behind
// an objectSelector, as in the profile of issue 16.
const selectedPolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: sidecar}
spec:
  match:
    resources: [pods]
    operations: [CREATE]
    objectSelector: {matchLabels: {app.kubernetes.io/name: web}}
  action: injectSidecar
  with:
    containers:
    - {name: proxy, image: envoy, env: [{name: POD, value: "${{ object.metadata.name }}"}]}
    volumes: [{name: proxy-config, emptyDir: {}}]
    volumeMounts: [{mount: {name: proxy-config, mountPath: /etc/proxy}}]
`

// podPolicies run the pod builtins whose patches replace values and add
// twice into one container.
const podPolicies = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: consul}
spec:
  match: {resources: [pods], operations: [CREATE]}
  action: consulLifecycle
  with: {service: web, port: http, containers: [app]}
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: scale}
spec:
  match: {resources: [pods], operations: [CREATE]}
  action: scaleRequests
  with: {cpu: 0.5, memory: 0.8, initContainers: true}
`

// TestMutatePathKeepsTheTape runs a StatefulSet pod CREATE through the
// shipped policies and further mutating policies that read the object
// after sts-index's deferred patch: none decodes the pod into maps, and
// the object they leave is the pod with the decision's patch applied.
func TestMutatePathKeepsTheTape(t *testing.T) {
	shipped, err := engine.ReadFiles("../policies")
	if err != nil {
		t.Fatal(err)
	}
	req := podCreate(t)
	for _, c := range []struct {
		name     string
		policies string
		patched  int // policies that patch
	}{
		{"shipped", "", 1},
		{"objectSelector", selectedPolicy, 2},
		{"pod builtins", selectedPolicy + "---\n" + podPolicies, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			files := append([]engine.File{}, shipped...)
			if c.policies != "" {
				files = append(files, engine.File{Name: "second.yaml", Data: []byte(c.policies)})
			}
			snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
			if err != nil {
				t.Fatal(err)
			}
			d, err := snap.Evaluate(context.Background(), req, engine.EvalOptions{Phase: engine.PhaseMutating, Namespaces: shopNamespace{}})
			if err != nil || !d.Allowed {
				t.Fatalf("%+v, %v", d, err)
			}
			patched := 0
			for _, r := range d.Results {
				if r.State != engine.StatePass && r.State != engine.StateSkip {
					t.Fatalf("%s: %s: %s", r.Policy, r.State, r.Reason)
				}
				if r.Patch > 0 {
					patched++
				}
			}
			if patched != c.patched {
				t.Fatalf("%d policies patched, want %d: %+v", patched, c.patched, d.Results)
			}
			if engine.ObjectDecoded(d) {
				t.Error("the object was decoded into maps")
			}
			// What they read was the patched pod: the object, decoded now,
			// is the request's with the patch applied.
			got, err := d.Object()
			if err != nil {
				t.Fatal(err)
			}
			want := decodePod(t, req.Object.Raw, d.Patch)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("object %v\nwant %v", got, want)
			}
		})
	}
}

// decodePod applies a patch to raw with evanphx/json-patch, apart from the
// engine, and decodes the result as the engine does.
func decodePod(t *testing.T, raw []byte, patch []jsonpatch.JsonPatchOperation) map[string]any {
	t.Helper()
	text, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	p, err := evjsonpatch.DecodePatch(text)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := kjson.UnmarshalCaseSensitivePreserveInts(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
