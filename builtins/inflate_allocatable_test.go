package builtins

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/engine"
)

func init() {
	// admissionRequest looks resources up here.
	testResources["Node"] = metav1.GroupVersionResource{Version: "v1", Resource: "nodes"}
}

// inflatePolicy is an inflateAllocatable policy for node registrations and
// node status writes, with the given spec.with (a YAML flow mapping, or ""
// for none). spec.with is line 10.
func inflatePolicy(with string) string {
	p := `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: overcommit-nodes
spec:
  match:
    resources: [nodes, nodes/status]
    operations: [CREATE, UPDATE]
  action: inflateAllocatable
`
	if with != "" {
		p += "  with: " + with + "\n"
	}
	return p
}

// inflateNode is node worker-1 with extra metadata lines (indented by two)
// and status as its status (indented by two).
func inflateNode(meta, status string) string {
	return `apiVersion: v1
kind: Node
metadata:
  name: worker-1
  labels: {celadon.io/overcommit: "true"}
` + meta + `spec:
  podCIDR: 10.244.1.0/24
status:
` + status
}

// inflateStatusWrite is an UPDATE of nodes/status, as a kubelet's status
// PATCH reaches admission.
func inflateStatusWrite(t testing.TB, obj, old string) *admissionv1.AdmissionRequest {
	t.Helper()
	req := admissionRequest(t, admissionv1.Update, yamlJSON(t, obj), yamlJSON(t, old))
	req.SubResource, req.RequestSubResource = "status", "status"
	req.UserInfo.Username, req.UserInfo.Groups = "system:node:worker-1", []string{"system:nodes", "system:authenticated"}
	return req
}

// inflateRecord is the metadata lines of the record annotations.
func inflateRecord(real, inflated string) string {
	return "  annotations:\n    celadon.io/real-allocatable: '" + real + "'\n    celadon.io/inflated-allocatable: '" + inflated + "'\n"
}

// inflateStatus is a status with the given allocatable (a flow mapping).
func inflateStatus(allocatable string) string {
	return "  allocatable: " + allocatable + "\n  conditions:\n  - {type: Ready, status: \"True\", lastHeartbeatTime: \"2026-03-02T10:00:00Z\"}\n"
}

const (
	inflateReal     = `{cpu: "4", memory: 16264516Ki, pods: "110", ephemeral-storage: 95491281146}`
	inflateInflated = `{cpu: "6", memory: "19985837260", pods: "110", ephemeral-storage: 95491281146}`
	inflateRec      = `{"cpu":"4","memory":"16264516Ki"}`
	inflateRecInfl  = `{"cpu":"6","memory":"19985837260"}`
)

func TestInflateAllocatable(t *testing.T) {
	cases := []struct {
		name       string
		with       string
		meta, stat string // the object written
		oldMeta    string // the stored node; "" with oldStat "": a CREATE
		oldStat    string
		wantMeta   string
		wantStat   string // "" when the node must not change
		state      engine.State
		reason     string
		warning    string
	}{
		{
			name:     "the first status write after the policy: inflated and recorded",
			with:     "{cpu: 1.5, memory: 1.2}",
			stat:     inflateStatus(inflateReal),
			oldStat:  inflateStatus(inflateReal),
			wantMeta: inflateRecord(inflateRec, inflateRecInfl),
			wantStat: inflateStatus(inflateInflated),
			state:    engine.StatePass,
			reason:   "inflated allocatable cpu 4 → 6, allocatable memory 16264516Ki → 19985837260",
		},
		{
			name:     "the kubelet sends its real values again: inflated again, the record holds",
			with:     "{cpu: 1.5, memory: 1.2}",
			meta:     inflateRecord(inflateRec, inflateRecInfl),
			stat:     inflateStatus(inflateReal),
			oldMeta:  inflateRecord(inflateRec, inflateRecInfl),
			oldStat:  inflateStatus(inflateInflated),
			wantMeta: inflateRecord(inflateRec, inflateRecInfl),
			wantStat: inflateStatus(inflateInflated),
			state:    engine.StatePass,
			reason:   "inflated allocatable cpu 4 → 6, allocatable memory 16264516Ki → 19985837260",
		},
		{
			name:    "a write that leaves allocatable alone (conditions only): nothing to do",
			with:    "{cpu: 1.5, memory: 1.2}",
			meta:    inflateRecord(inflateRec, inflateRecInfl),
			stat:    inflateStatus(inflateInflated),
			oldMeta: inflateRecord(inflateRec, inflateRecInfl),
			oldStat: inflateStatus(inflateInflated),
			state:   engine.StatePass,
			reason:  "already inflated: allocatable cpu 6 (real 4), allocatable memory 19985837260 (real 16264516Ki)",
		},
		{
			name:     "the real memory changed: inflated, the record updated",
			with:     "{cpu: 1.5, memory: 1.2}",
			meta:     inflateRecord(inflateRec, inflateRecInfl),
			stat:     inflateStatus(`{cpu: "4", memory: 15Gi, pods: "110"}`),
			oldMeta:  inflateRecord(inflateRec, inflateRecInfl),
			oldStat:  inflateStatus(`{cpu: "6", memory: "19985837260", pods: "110"}`),
			wantMeta: inflateRecord(`{"cpu":"4","memory":"15Gi"}`, `{"cpu":"6","memory":"18Gi"}`),
			wantStat: inflateStatus(`{cpu: "6", memory: 18Gi, pods: "110"}`),
			state:    engine.StatePass,
			reason:   "inflated allocatable cpu 4 → 6, allocatable memory 15Gi → 18Gi",
		},
		{
			name:     "the policy's ratio changed: re-inflated from the recorded real value",
			with:     "{cpu: 2, memory: 1.2}",
			meta:     inflateRecord(inflateRec, inflateRecInfl),
			stat:     inflateStatus(inflateInflated),
			oldMeta:  inflateRecord(inflateRec, inflateRecInfl),
			oldStat:  inflateStatus(inflateInflated),
			wantMeta: inflateRecord(inflateRec, `{"cpu":"8","memory":"19985837260"}`),
			wantStat: inflateStatus(`{cpu: "8", memory: "19985837260", pods: "110", ephemeral-storage: 95491281146}`),
			state:    engine.StatePass,
			reason:   "inflated allocatable cpu 4 → 8; already inflated: allocatable memory 19985837260 (real 16264516Ki)",
		},
		{
			name:     "pods added to the policy: inflated, recorded with the others",
			with:     "{cpu: 1.5, memory: 1.2, pods: 2.5}",
			meta:     inflateRecord(inflateRec, inflateRecInfl),
			stat:     inflateStatus(inflateInflated),
			oldMeta:  inflateRecord(inflateRec, inflateRecInfl),
			oldStat:  inflateStatus(inflateInflated),
			wantMeta: inflateRecord(`{"cpu":"4","memory":"16264516Ki","pods":"110"}`, `{"cpu":"6","memory":"19985837260","pods":"275"}`),
			wantStat: inflateStatus(`{cpu: "6", memory: "19985837260", pods: "275", ephemeral-storage: 95491281146}`),
			state:    engine.StatePass,
			reason:   "inflated allocatable pods 110 → 275; already inflated: allocatable cpu 6 (real 4), allocatable memory 19985837260 (real 16264516Ki)",
		},
		{
			name:     "memory dropped from the policy: no longer recorded; the kubelet's next write restores it",
			with:     "{cpu: 1.5}",
			meta:     inflateRecord(inflateRec, inflateRecInfl),
			stat:     inflateStatus(inflateInflated),
			oldMeta:  inflateRecord(inflateRec, inflateRecInfl),
			oldStat:  inflateStatus(inflateInflated),
			wantMeta: inflateRecord(`{"cpu":"4"}`, `{"cpu":"6"}`),
			wantStat: inflateStatus(inflateInflated),
			state:    engine.StatePass,
			reason:   "already inflated: allocatable cpu 6 (real 4)",
		},
		{
			name:     "exact ratios: 1.15 of 3 cpus is 3450m, not 3449m",
			with:     "{cpu: 1.15}",
			stat:     inflateStatus(`{cpu: "3", memory: 8Gi}`),
			oldStat:  inflateStatus(`{cpu: "3", memory: 8Gi}`),
			wantMeta: inflateRecord(`{"cpu":"3"}`, `{"cpu":"3450m"}`),
			wantStat: inflateStatus(`{cpu: 3450m, memory: 8Gi}`),
			state:    engine.StatePass,
			reason:   "inflated allocatable cpu 3 → 3450m",
		},
		{
			name:     "a ratio of 1 records without changing",
			with:     "{cpu: 1.5, pods: 1}",
			meta:     "  annotations: {node.alpha.kubernetes.io/ttl: \"0\"}\n",
			stat:     inflateStatus(`{cpu: 3500m, pods: "110"}`),
			oldStat:  inflateStatus(`{cpu: 3500m, pods: "110"}`),
			wantMeta: "  annotations:\n    node.alpha.kubernetes.io/ttl: \"0\"\n    celadon.io/real-allocatable: '{\"cpu\":\"3500m\",\"pods\":\"110\"}'\n    celadon.io/inflated-allocatable: '{\"cpu\":\"5250m\",\"pods\":\"110\"}'\n",
			wantStat: inflateStatus(`{cpu: 5250m, pods: "110"}`),
			state:    engine.StatePass,
			reason:   "inflated allocatable cpu 3500m → 5250m; already inflated: allocatable pods 110 (real 110)",
		},
		{
			name: "inflateCapacity: capacity too, recorded apart",
			with: "{cpu: 2, inflateCapacity: true}",
			stat: "  capacity: {cpu: \"4\", memory: 16Gi}\n" + inflateStatus(`{cpu: 3800m, memory: 15Gi}`),
			// A registration: CREATE of the node, status included.
			wantMeta: inflateRecord(`{"cpu":"3800m"}`, `{"cpu":"7600m"}`) + "    celadon.io/real-capacity: '{\"cpu\":\"4\"}'\n    celadon.io/inflated-capacity: '{\"cpu\":\"8\"}'\n",
			wantStat: "  capacity: {cpu: \"8\", memory: 16Gi}\n" + inflateStatus(`{cpu: 7600m, memory: 15Gi}`),
			state:    engine.StatePass,
			reason:   "inflated allocatable cpu 3800m → 7600m, capacity cpu 4 → 8",
		},
		{
			name:     "inflateCapacity turned off: the capacity record goes",
			with:     "{cpu: 1.5, memory: 1.2}",
			meta:     inflateRecord(inflateRec, inflateRecInfl) + "    celadon.io/real-capacity: '{\"cpu\":\"4\"}'\n    celadon.io/inflated-capacity: '{\"cpu\":\"6\"}'\n",
			stat:     inflateStatus(inflateInflated),
			oldMeta:  inflateRecord(inflateRec, inflateRecInfl),
			oldStat:  inflateStatus(inflateInflated),
			wantMeta: inflateRecord(inflateRec, inflateRecInfl),
			wantStat: inflateStatus(inflateInflated),
			state:    engine.StatePass,
			reason:   "already inflated: allocatable cpu 6 (real 4), allocatable memory 19985837260 (real 16264516Ki)",
		},
		{
			name:     "an unreadable record and values this write changed: inflated, the record rewritten",
			with:     "{cpu: 1.5, memory: 1.2}",
			meta:     inflateRecord(`{"cpu":`, inflateRecInfl),
			stat:     inflateStatus(inflateReal),
			oldMeta:  inflateRecord(`{"cpu":`, inflateRecInfl),
			oldStat:  inflateStatus(inflateInflated),
			wantMeta: inflateRecord(inflateRec, inflateRecInfl),
			wantStat: inflateStatus(inflateInflated),
			state:    engine.StatePass,
			reason:   "inflated allocatable cpu 4 → 6, allocatable memory 16264516Ki → 19985837260",
			warning:  "overcommit-nodes: celadon.io/real-allocatable or celadon.io/inflated-allocatable is not a valid record; inflating only the allocatable values this write changes",
		},
		{
			name:    "an unreadable record and values this write kept: left alone, the record too",
			with:    "{cpu: 1.5, memory: 1.2}",
			meta:    "  annotations: {celadon.io/real-allocatable: '" + inflateRec + "'}\n",
			stat:    inflateStatus(inflateInflated),
			oldMeta: "  annotations: {celadon.io/real-allocatable: '" + inflateRec + "'}\n",
			oldStat: inflateStatus(inflateInflated),
			state:   engine.StatePass,
			reason:  "already inflated: allocatable cpu 6 (unknown real value), allocatable memory 19985837260 (unknown real value)",
			warning: "overcommit-nodes: celadon.io/real-allocatable or celadon.io/inflated-allocatable is not a valid record; inflating only the allocatable values this write changes",
		},
		{
			name:     "a node without cpu in allocatable: the rest is inflated",
			with:     "{cpu: 1.5, memory: 2}",
			stat:     inflateStatus(`{memory: 1Gi}`),
			oldStat:  inflateStatus(`{memory: 1Gi}`),
			wantMeta: inflateRecord(`{"memory":"1Gi"}`, `{"memory":"2Gi"}`),
			wantStat: inflateStatus(`{memory: 2Gi}`),
			state:    engine.StatePass,
			reason:   "inflated allocatable memory 1Gi → 2Gi",
		},
		{
			name:    "a node reporting none of the resources",
			with:    "{cpu: 1.5}",
			stat:    inflateStatus(`{memory: 1Gi}`),
			oldStat: inflateStatus(`{memory: 1Gi}`),
			state:   engine.StateSkip,
			reason:  "the node reports none of cpu",
		},
		{
			name:    "a node without allocatable",
			with:    "{cpu: 1.5}",
			stat:    "  phase: Running\n",
			oldStat: "  phase: Running\n",
			state:   engine.StateSkip,
			reason:  "the node reports no status.allocatable",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := compilePolicies(t, inflatePolicy(c.with))
			var req *admissionv1.AdmissionRequest
			if c.oldStat == "" {
				req = admissionRequest(t, admissionv1.Create, yamlJSON(t, inflateNode(c.meta, c.stat)), nil)
			} else {
				req = inflateStatusWrite(t, inflateNode(c.meta, c.stat), inflateNode(c.oldMeta, c.oldStat))
			}
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
			checkWarnings(t, d, c.warning)
			if c.wantStat == "" {
				checkUnchanged(t, d)
				return
			}
			checkMutation(t, snap, req, d, yamlJSON(t, inflateNode(c.wantMeta, c.wantStat)), engine.EvalOptions{})
		})
	}
}

// TestInflateAllocatableKubeletCycle plays the kubelet's status loop: each
// update re-sends the real values over the stored inflated ones (a strategic
// merge of its patch), and each is inflated exactly once.
func TestInflateAllocatableKubeletCycle(t *testing.T) {
	snap := compilePolicies(t, inflatePolicy("{cpu: 1.5, memory: 1.2, pods: 2}"))
	stored := yamlJSON(t, inflateNode("", inflateStatus(inflateReal)))
	var first []byte
	for i := range 4 {
		// The kubelet's write: the stored node with its real allocatable and
		// a new heartbeat.
		var node map[string]any
		if err := json.Unmarshal(stored, &node); err != nil {
			t.Fatal(err)
		}
		status := node["status"].(map[string]any)
		status["allocatable"] = map[string]any{"cpu": "4", "memory": "16264516Ki", "pods": "110", "ephemeral-storage": "95491281146"}
		status["conditions"] = []any{map[string]any{"type": "Ready", "status": "True", "lastHeartbeatTime": fmt.Sprintf("2026-03-02T10:00:%02dZ", 10*i)}}
		write, err := json.Marshal(node)
		if err != nil {
			t.Fatal(err)
		}
		req := inflateStatusWrite(t, "kind: Node\napiVersion: v1\nmetadata: {name: worker-1}\n", "kind: Node\napiVersion: v1\nmetadata: {name: worker-1}\n")
		req.Object, req.OldObject = runtime.RawExtension{Raw: write}, runtime.RawExtension{Raw: stored}
		d := evaluate(t, snap, req, engine.EvalOptions{})
		if r := d.Results[0]; r.State != engine.StatePass {
			t.Fatalf("write %d: %s %s", i, r.State, r.Reason)
		}
		stored = applyDecision(t, write, d)
		var got struct {
			Metadata struct{ Annotations map[string]string } `json:"metadata"`
			Status   struct{ Allocatable map[string]string } `json:"status"`
		}
		if err := json.Unmarshal(stored, &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"cpu": "6", "memory": "19985837260", "pods": "220", "ephemeral-storage": "95491281146"}
		if fmt.Sprint(got.Status.Allocatable) != fmt.Sprint(want) {
			t.Fatalf("write %d: allocatable %v, want %v", i, got.Status.Allocatable, want)
		}
		if r := got.Metadata.Annotations[inflateRealAllocatable]; r != `{"cpu":"4","memory":"16264516Ki","pods":"110"}` {
			t.Fatalf("write %d: real %s", i, r)
		}
		ops, _ := d.PatchJSON()
		if i == 0 {
			first = ops
		} else if strings.Contains(string(ops), "annotations") {
			t.Errorf("write %d rewrote the record: %s (first: %s)", i, ops, first)
		}
	}
}

// TestInflateAllocatableSelector: the policy's objectSelector picks the
// nodes to inflate by their labels; a status write of another node is left
// alone. A kubelet's PATCH of nodes/status reaches admission as an UPDATE
// with PatchOptions, and is inflated as any status write.
func TestInflateAllocatableSelector(t *testing.T) {
	policy := strings.Replace(inflatePolicy("{cpu: 2}"), "  action:", "    objectSelector:\n      matchLabels: {celadon.io/overcommit: \"true\"}\n  action:", 1)
	snap := compilePolicies(t, policy)
	labelled := inflateNode("", inflateStatus(`{cpu: "4"}`))
	other := strings.Replace(labelled, `celadon.io/overcommit: "true"`, `celadon.io/overcommit: "false"`, 1)
	for _, c := range []struct {
		name, node, state, reason string
	}{
		{"labelled", labelled, "pass", "inflated allocatable cpu 4 → 8"},
		{"not labelled", other, "skip", "objectSelector"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := inflateStatusWrite(t, c.node, c.node)
			req.Options = runtime.RawExtension{Raw: []byte(`{"apiVersion":"meta.k8s.io/v1","kind":"PatchOptions","fieldManager":"kubelet"}`)}
			d := evaluate(t, snap, req, engine.EvalOptions{})
			r := d.Results[0]
			if string(r.State) != c.state || !strings.Contains(r.Reason, c.reason) {
				t.Fatalf("state %s reason %q; want %s %q", r.State, r.Reason, c.state, c.reason)
			}
			if c.state == "skip" {
				if len(d.Patch) != 0 {
					t.Fatalf("patched a node the selector does not match: %v", d.Patch)
				}
				return
			}
			want := inflateNode(inflateRecord(`{"cpu":"4"}`, `{"cpu":"8"}`), inflateStatus(`{cpu: "8"}`))
			checkMutation(t, snap, req, d, yamlJSON(t, want), engine.EvalOptions{})
		})
	}
}

// TestInflateAllocatableOps pins the exact operations.
func TestInflateAllocatableOps(t *testing.T) {
	snap := compilePolicies(t, inflatePolicy("{cpu: 1.5, memory: 1.2}"))
	meta := "  annotations: {celadon.io/real-allocatable: '{\"cpu\":\"2\"}', celadon.io/inflated-allocatable: '{\"cpu\":\"3\"}', celadon.io/real-capacity: x}\n"
	req := inflateStatusWrite(t, inflateNode(meta, inflateStatus(inflateReal)), inflateNode(meta, inflateStatus(inflateInflated)))
	d := evaluate(t, snap, req, engine.EvalOptions{})
	got, err := d.PatchJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"replace","path":"/status/allocatable/cpu","value":"6"},` +
		`{"op":"replace","path":"/status/allocatable/memory","value":"19985837260"},` +
		`{"op":"replace","path":"/metadata/annotations/celadon.io~1inflated-allocatable","value":"{\"cpu\":\"6\",\"memory\":\"19985837260\"}"},` +
		`{"op":"replace","path":"/metadata/annotations/celadon.io~1real-allocatable","value":"{\"cpu\":\"4\",\"memory\":\"16264516Ki\"}"},` +
		`{"op":"remove","path":"/metadata/annotations/celadon.io~1real-capacity"}]`
	if !sameJSON(t, got, []byte(want)) {
		t.Fatalf("patch\n%s\nwant\n%s", got, want)
	}
}

// TestInflateAllocatableSkips covers requests the builtin does not apply to
// and malformed nodes: skips and errors, never panics.
func TestInflateAllocatableSkips(t *testing.T) {
	policy := strings.Replace(inflatePolicy("{cpu: 1.5}"), "[CREATE, UPDATE]", "['*']", 1)
	snap := compilePolicies(t, strings.Replace(policy, "[nodes, nodes/status]", "['*/*']", 1))
	node := inflateNode("", inflateStatus(inflateReal))
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec: {}\n"
	withSub := func(r *admissionv1.AdmissionRequest, sub string) *admissionv1.AdmissionRequest {
		r.SubResource = sub
		return r
	}
	asNodes := func(r *admissionv1.AdmissionRequest) *admissionv1.AdmissionRequest {
		r.Resource = testResources["Node"]
		return r
	}
	cases := []struct {
		name   string
		req    *admissionv1.AdmissionRequest
		state  engine.State
		reason string
	}{
		{"an UPDATE of the node itself", admissionRequest(t, admissionv1.Update, yamlJSON(t, node), yamlJSON(t, node)), engine.StateSkip, "an UPDATE of a node cannot change its status; match nodes/status"},
		{"DELETE", admissionRequest(t, admissionv1.Delete, nil, yamlJSON(t, node)), engine.StateSkip, "nothing to inflate on DELETE of nodes"},
		{"a pod", admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil), engine.StateSkip, "the request is for pods, not nodes/status"},
		{"a pod's status", withSub(admissionRequest(t, admissionv1.Update, yamlJSON(t, pod), yamlJSON(t, pod)), "status"), engine.StateSkip, "the request is for pods/status, not nodes/status"},
		{"not a Node", asNodes(inflateStatusWrite(t, strings.Replace(node, "kind: Node", "kind: Pod", 1), node)), engine.StateSkip, "the object is a Pod, not a Node"},
		{"no status", inflateStatusWrite(t, strings.Split(node, "status:")[0], node), engine.StateSkip, "the node has no status"},
		{"a bad quantity", inflateStatusWrite(t, inflateNode("", inflateStatus("{cpu: many}")), node), engine.StateError, `status.allocatable.cpu: "many" is not a quantity`},
		{"a negative quantity", inflateStatusWrite(t, inflateNode("", inflateStatus("{cpu: -1}")), node), engine.StateError, `status.allocatable.cpu: "-1" is negative`},
		{"a quantity of the wrong type", inflateStatusWrite(t, inflateNode("", inflateStatus("{cpu: [1]}")), node), engine.StateError, `status.allocatable.cpu: []interface {} is not a quantity`},
		{"a number is a quantity", inflateStatusWrite(t, inflateNode("", inflateStatus("{cpu: 2}")), node), engine.StatePass, "inflated allocatable cpu 2 → 3"},
		{"metadata not an object", inflateStatusWrite(t, "apiVersion: v1\nkind: Node\nmetadata: x\nstatus: {allocatable: {cpu: 1}}\n", node), engine.StateError, "metadata is a string, not an object"},
		{"annotations not an object", inflateStatusWrite(t, inflateNode("  annotations: 1\n", inflateStatus(inflateReal)), node), engine.StateError, "metadata.annotations is a int64, not an object"},
		{"an overflow", inflateStatusWrite(t, inflateNode("", inflateStatus("{cpu: 9000000000000000}")), node), engine.StateError, "status.allocatable.cpu: 9000000000000000 × 1.500 overflows"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := evaluate(t, snap, c.req, engine.EvalOptions{})
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

// TestInflateAllocatableConcurrent runs one compiled policy from many
// goroutines (meaningful under -race).
func TestInflateAllocatableConcurrent(t *testing.T) {
	snap := compilePolicies(t, inflatePolicy("{cpu: 1.5, memory: 2}"))
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			alloc := fmt.Sprintf(`{cpu: "%d", memory: %dGi}`, 2*(i+1), i+1)
			req := inflateStatusWrite(t, inflateNode("", inflateStatus(alloc)), inflateNode("", inflateStatus(alloc)))
			d, err := snap.Evaluate(t.Context(), req, engine.EvalOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			want := fmt.Sprintf("inflated allocatable cpu %d → %d, allocatable memory %dGi → %dGi", 2*(i+1), 3*(i+1), i+1, 2*(i+1))
			if got := d.Results[0].Reason; got != want {
				t.Errorf("reason %q, want %q", got, want)
			}
		}()
	}
	wg.Wait()
}

// TestInflateAllocatableLoadErrors checks that bad arguments are load
// errors at the line of the offending field.
func TestInflateAllocatableLoadErrors(t *testing.T) {
	head := inflatePolicy("") + "  with:\n" // with: is line 10
	cases := []struct {
		name, with, want string
	}{
		{"no with", "", `p.yaml:9:3: policy "overcommit-nodes": with: at least one of cpu, memory or pods (a ratio ≥ 1) is required`},
		{"no ratio", "    inflateCapacity: true\n", `p.yaml:10:3: policy "overcommit-nodes": with: at least one of cpu, memory or pods (a ratio ≥ 1) is required`},
		{"unknown field", "    cpu: 1.5\n    storage: 2\n", `p.yaml:12:5: policy "overcommit-nodes": with.storage: unknown field`},
		{"ratio below 1", "    cpu: 0.5\n", `p.yaml:11:5: policy "overcommit-nodes": with.cpu: must be a ratio from 1 to 10, not 0.5`},
		{"a percentage", "    cpu: 1.5\n    memory: 150\n", `p.yaml:12:5: policy "overcommit-nodes": with.memory: must be a ratio from 1 to 10, not 150`},
		{"ratio as a string", "    pods: \"2\"\n", `p.yaml:11:5: policy "overcommit-nodes": with.pods: expected a number, got a string`},
		{"inflateCapacity not a bool", "    cpu: 2\n    inflateCapacity: yes\n", `p.yaml:12:5: policy "overcommit-nodes": with.inflateCapacity: expected a boolean, got a string`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			policy := head + c.with
			if c.with == "" {
				policy = inflatePolicy("")
			}
			checkLoadError(t, compileErrors(t, policy), c.want)
		})
	}
	// It must fail open: failurePolicy Fail is refused at its own line.
	t.Run("failurePolicy Fail", func(t *testing.T) {
		policy := inflatePolicy("{cpu: 2}") + "  failurePolicy: Fail\n" // line 11
		checkLoadError(t, compileErrors(t, policy), `p.yaml:11:3: policy "overcommit-nodes": failurePolicy: inflateAllocatable must fail open`)
	})
}
