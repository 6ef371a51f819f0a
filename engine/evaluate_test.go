package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestParseResource(t *testing.T) {
	cases := map[string]ResourceRule{
		"pods":                        {Resource: "pods"},
		"pods/status":                 {Resource: "pods", Subresource: "status"},
		"apps/deployments":            {Group: "apps", Resource: "deployments"},
		"apps/deployments/scale":      {Group: "apps", Resource: "deployments", Subresource: "scale"},
		"networking.k8s.io/ingresses": {Group: "networking.k8s.io", Resource: "ingresses"},
		"policy/poddisruptionbudgets": {Group: "policy", Resource: "poddisruptionbudgets"},
		"nodes/status":                {Resource: "nodes", Subresource: "status"},
		"*":                           {Group: "*", Resource: "*"},
		"*/*":                         {Group: "*", Resource: "*", Subresource: "*"},
		"pods/*":                      {Resource: "pods", Subresource: "*"},
	}
	for in, want := range cases {
		got, err := parseResource(in)
		if err != nil || ResourceRule(got) != want {
			t.Errorf("parseResource(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a//b", "a/b/c/d"} {
		if _, err := parseResource(bad); err == nil {
			t.Errorf("parseResource(%q) should fail", bad)
		}
	}
}

func TestCandidatesComeFromTheIndexInOrder(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("p0", "  match: {resources: [pods], operations: [CREATE]}\n  action: violate\n"),
		policyYAML("p1", "  match: {resources: ['*']}\n  action: violate\n"),
		policyYAML("p2", "  match: {resources: [apps/deployments, pods], operations: ['*']}\n  action: violate\n"),
		policyYAML("p3", "  match: {resources: [pods/status]}\n  action: violate\n"),
		policyYAML("p4", "  match: {resources: ['pods/*']}\n  action: violate\n"),
		policyYAML("p5", "  match: {resources: ['*/*'], operations: [DELETE]}\n  action: violate\n"),
	)
	names := func(ps []*CompiledPolicy) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.Name())
		}
		return strings.Join(s, ",")
	}
	cases := []struct{ group, resource, sub, op, want string }{
		{"", "pods", "", "CREATE", "p0,p1,p2"},
		{"", "pods", "", "UPDATE", "p1,p2"},
		{"", "pods", "", "DELETE", "p1,p2,p5"},
		{"", "pods", "status", "UPDATE", "p3,p4"},
		{"", "pods", "exec", "CONNECT", "p4"},
		{"apps", "deployments", "", "DELETE", "p1,p2,p5"},
		{"apps", "deployments", "scale", "UPDATE", ""},
		{"", "services", "", "CREATE", "p1"},
	}
	for _, c := range cases {
		if got := names(snap.Candidates(c.group, c.resource, c.sub, c.op)); got != c.want {
			t.Errorf("Candidates(%s/%s/%s %s) = %q, want %q", c.group, c.resource, c.sub, c.op, got, c.want)
		}
	}
}

func TestSelectors(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("ns", "  match:\n    resources: [pods, namespaces]\n    namespaceSelector: {matchLabels: {inject: 'on'}}\n  action: violate\n  with: {message: ns}\n"),
		policyYAML("obj", "  match:\n    resources: [pods]\n    objectSelector: {matchExpressions: [{key: protected, operator: Exists}]}\n  action: violate\n  with: {message: obj}\n"),
	)
	nss := namespaces{"on": {"inject": "on"}, "off": {"inject": "off"}}
	t.Run("namespace labels match", func(t *testing.T) {
		req := podRequest(t, admissionv1.Create, pod("a", nil), nil)
		req.Namespace = "on"
		d := evaluate(t, snap, req, EvalOptions{Namespaces: nss})
		if got := states(d); got != "ns=fail,obj=skip" {
			t.Fatalf("states %s", got)
		}
	})
	t.Run("namespace labels differ", func(t *testing.T) {
		req := podRequest(t, admissionv1.Create, pod("a", nil), nil)
		req.Namespace = "off"
		d := evaluate(t, snap, req, EvalOptions{Namespaces: nss})
		if got := states(d); got != "ns=skip,obj=skip" || !d.Allowed {
			t.Fatalf("states %s", got)
		}
	})
	t.Run("unknown namespace is an error under failurePolicy", func(t *testing.T) {
		req := podRequest(t, admissionv1.Create, pod("a", nil), nil)
		req.Namespace = "ghost"
		d := evaluate(t, snap, req, EvalOptions{Namespaces: nss})
		if d.Results[0].State != StateError || !strings.Contains(d.Results[0].Reason, `namespace "ghost"`) || d.Allowed {
			t.Fatalf("got %+v", d.Results[0])
		}
	})
	t.Run("a namespace is matched on its own labels", func(t *testing.T) {
		ns := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "x", "labels": map[string]any{"inject": "on"}}}
		req := &admissionv1.AdmissionRequest{Operation: admissionv1.Create, Resource: metav1.GroupVersionResource{Version: "v1", Resource: "namespaces"}, Object: raw(t, ns)}
		if got := states(evaluate(t, snap, req, EvalOptions{})); got != "ns=fail" {
			t.Fatalf("states %s", got)
		}
	})
	t.Run("objectSelector uses the old object on DELETE", func(t *testing.T) {
		req := podRequest(t, admissionv1.Delete, nil, pod("a", map[string]string{"protected": "true"}))
		req.Namespace = "off"
		if got := states(evaluate(t, snap, req, EvalOptions{Namespaces: nss})); got != "ns=skip,obj=fail" {
			t.Fatalf("states %s", got)
		}
	})
}

// TestCELVariablesAndLibraries shows that expressions written for a
// ValidatingAdmissionPolicy work here: the same variables and libraries.
func TestCELVariablesAndLibraries(t *testing.T) {
	conds := []string{
		`object.metadata.name == "web-0"`,
		`request.operation == "UPDATE" && request.userInfo.username == "alice" && request.namespace == "default"`,
		`request.kind.kind == "Pod" && request.resource.resource == "pods"`,
		`oldObject.metadata.labels.tier == "old"`,
		`namespaceObject.metadata.labels.env == "prod"`,
		`variables.first == "app" && variables.image.startsWith("nginx")`,
		`quantity("500m").isLessThan(quantity("1"))`,
		`"web-0".matches("^web-[0-9]+$") && "a,b".split(",").size() == 2`,
		`isCIDR("10.0.0.0/8") && ip("10.0.0.1").family() == 4`,
		`url("https://example.com/x").getHost() == "example.com"`,
		`[1, 2, 3].all(x, x > 0) && sets.contains([1, 2, 3], [1])`,
		`object.spec.containers.exists(c, c.image == "nginx")`,
		`!has(object.metadata.annotations)`,
	}
	var b strings.Builder
	b.WriteString("  variables:\n  - name: first\n    expression: object.spec.containers[0].name\n  - name: image\n    expression: object.spec.containers.filter(c, c.name == variables.first)[0].image\n")
	b.WriteString("  match:\n    resources: [pods]\n    conditions:\n")
	for _, c := range conds {
		b.WriteString("    - expression: '" + strings.ReplaceAll(c, "'", "''") + "'\n")
	}
	b.WriteString("  action: violate\n  with: {message: all true}\n")
	snap := mustCompile(t, policyYAML("cel", b.String()))
	req := podRequest(t, admissionv1.Update, pod("web-0", nil), pod("web-0", map[string]string{"tier": "old"}))
	d := evaluate(t, snap, req, EvalOptions{Namespaces: namespaces{"default": {"env": "prod"}}})
	if d.Results[0].State != StateFail || d.Message != "all true" {
		t.Fatalf("every condition should hold: %+v", d.Results[0])
	}
	if d.CostRemaining >= DefaultCostBudget || d.CostRemaining <= 0 {
		t.Errorf("cost remaining %d: the budget should be charged", d.CostRemaining)
	}
}

// TestMutationsCompose checks that each mutating policy sees the object as
// the previous one left it, that the composed patch applies with a standard
// library to give the final object, and that a second pass is a no-op.
func TestMutationsCompose(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("first", "  match: {resources: [pods]}\n  action: setLabel\n  with: {key: team, value: blue}\n"),
		policyYAML("second", "  match:\n    resources: [pods]\n    conditions: [{expression: 'object.metadata.labels.team == \"blue\"'}]\n  action: setLabel\n  with: {key: color/x, valueExpression: object.metadata.labels.team}\n  failurePolicy: Fail\n"),
		policyYAML("check", "  match:\n    resources: [pods]\n    conditions: [{expression: 'object.metadata.labels[\"color/x\"] == \"blue\"'}]\n  action: violate\n  with: {message: saw the mutated object}\n  enforcement: Warn\n"),
	)
	input := pod("web-0", nil)
	req := podRequest(t, admissionv1.Create, input, nil)
	d := evaluate(t, snap, req, EvalOptions{})
	if got := states(d); got != "first=pass,second=pass,check=warn" {
		t.Fatalf("states %s: %+v", got, d.Results)
	}
	if len(d.Warnings) != 1 || d.Warnings[0] != "check: saw the mutated object" {
		t.Errorf("warnings %q", d.Warnings)
	}
	patched := applyWithLibrary(t, req.Object.Raw, d)
	want := pod("web-0", map[string]string{"team": "blue", "color/x": "blue"})
	if !jsonEqualBytes(t, patched, want) {
		t.Fatalf("patched object\n%s\nwant\n%v", patched, want)
	}
	obj, err := d.Object()
	must(t, err)
	if !reflect.DeepEqual(normalize(t, obj), normalize(t, want)) {
		t.Errorf("decision object %v differs from the patched one", obj)
	}
	again := evaluate(t, snap, podRequest(t, admissionv1.Create, decode(t, patched), nil), EvalOptions{})
	if len(again.Patch) != 0 {
		t.Errorf("second pass patched again: %v", again.Patch)
	}
}

// TestLastMutationIsNotDecoded: the object is parsed, read by CEL and the
// builtin without decoding, and the only patch is deferred; Decision.Object
// applies it on demand. TestMutationsCompose covers a read after a patch.
func TestLastMutationIsNotDecoded(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("team", "  match:\n    resources: [pods]\n    conditions: [{expression: 'object.metadata.name.startsWith(\"web\")'}]\n  action: setLabel\n  with: {key: team, value: blue}\n"),
	)
	req := podRequest(t, admissionv1.Create, pod("web-0", map[string]string{"app": "web"}), nil)
	d := evaluate(t, snap, req, EvalOptions{})
	if got := states(d); got != "team=pass" {
		t.Fatalf("states %s: %+v", got, d.Results)
	}
	if d.object.doc == nil || len(d.object.pending) != 1 {
		t.Fatalf("the object was decoded (pending %v)", d.object.pending)
	}
	obj, err := d.Object()
	must(t, err)
	want := pod("web-0", map[string]string{"app": "web", "team": "blue"})
	if !reflect.DeepEqual(normalize(t, obj), normalize(t, want)) {
		t.Errorf("decision object %v, want %v", obj, want)
	}
	if !jsonEqualBytes(t, applyWithLibrary(t, req.Object.Raw, d), want) {
		t.Errorf("the patch gives another object than Decision.Object")
	}
}

// TestReinvocation: a policy that ran before a later one changed the object
// sees the final object once more, so evaluating the result again is a
// no-op, as with reinvocationPolicy IfNeeded.
func TestReinvocation(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("early", "  match:\n    resources: [pods]\n    conditions: [{expression: \"has(object.metadata.labels) && 'late' in object.metadata.labels\"}]\n  action: setLabel\n  with: {key: early, value: 'yes'}\n"),
		policyYAML("late", "  match: {resources: [pods]}\n  action: setLabel\n  with: {key: late, value: 'yes'}\n"),
		policyYAML("check", "  match:\n    resources: [pods]\n    conditions: [{expression: \"object.metadata.labels.early == 'yes'\"}]\n  action: violate\n  with: {message: validation saw every mutation}\n  enforcement: Warn\n"),
	)
	req := podRequest(t, admissionv1.Create, pod("p", nil), nil)
	d := evaluate(t, snap, req, EvalOptions{})
	if got := states(d); got != "early=pass,late=pass,check=warn" {
		t.Fatalf("states %s: %+v", got, d.Results)
	}
	if !strings.Contains(d.Results[0].Reason, "reinvoked") {
		t.Errorf("reason %q should say the policy was reinvoked", d.Results[0].Reason)
	}
	patched := applyWithLibrary(t, req.Object.Raw, d)
	if !jsonEqualBytes(t, patched, pod("p", map[string]string{"early": "yes", "late": "yes"})) {
		t.Fatalf("patched %s", patched)
	}
	again := evaluate(t, snap, podRequest(t, admissionv1.Create, decode(t, patched), nil), EvalOptions{})
	if len(again.Patch) != 0 {
		t.Errorf("second pass patched again: %v", again.Patch)
	}
}

func TestPhases(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("m", "  match: {resources: [pods]}\n  action: setLabel\n  with: {key: a, value: b}\n"),
		policyYAML("v", "  match: {resources: [pods]}\n  action: violate\n  with: {message: no}\n"),
	)
	req := podRequest(t, admissionv1.Create, pod("p", nil), nil)
	if got := states(evaluate(t, snap, req, EvalOptions{Phase: PhaseMutating})); got != "m=pass" {
		t.Errorf("mutating phase: %s", got)
	}
	if got := states(evaluate(t, snap, req, EvalOptions{Phase: PhaseValidating})); got != "v=fail" {
		t.Errorf("validating phase: %s", got)
	}
	d := evaluate(t, snap, req, EvalOptions{})
	if got := states(d); got != "m=pass,v=fail" || d.Allowed || len(d.Patch) != 0 {
		t.Errorf("all: %s allowed=%v patch=%v", got, d.Allowed, d.Patch)
	}
}

func TestFailurePolicyFilter(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("ignored", "  match: {resources: [pods]}\n  action: setLabel\n  with: {key: a, value: b}\n"),
		policyYAML("failing", "  match: {resources: [pods]}\n  action: setLabel\n  with: {key: c, value: d}\n  failurePolicy: Fail\n"),
	)
	req := podRequest(t, admissionv1.Create, pod("p", nil), nil)
	if got := states(evaluate(t, snap, req, EvalOptions{FailurePolicy: Fail})); got != "failing=pass" {
		t.Errorf("Fail only: %s", got)
	}
	if got := states(evaluate(t, snap, req, EvalOptions{FailurePolicy: Ignore})); got != "ignored=pass" {
		t.Errorf("Ignore only: %s", got)
	}
}

func TestEnforcementAndFailurePolicy(t *testing.T) {
	cases := []struct {
		name, policy string
		state        State
		allowed      bool
		message      string
		warning      string
		audit        string
		panicked     bool
	}{
		{name: "deny", policy: "  action: violate\n  with: {message: nope}\n", state: StateFail, message: "nope"},
		{name: "warn", policy: "  action: violate\n  with: {message: careful}\n  enforcement: Warn\n", state: StateWarn, allowed: true, warning: "p: careful"},
		{name: "audit", policy: "  action: violate\n  with: {message: noted}\n  enforcement: Audit\n", state: StateFail, allowed: true, audit: "noted", warning: "p (audit): noted"},
		{name: "error, Fail", policy: "  action: explode\n  failurePolicy: Fail\n", state: StateError, message: `policy "p" failed: exploded`},
		{name: "error, Ignore (mutating default)", policy: "  action: explode\n", state: StateError, allowed: true, warning: "Evaluation failed for Celadon policy 'p' (failurePolicy Ignore): the request was admitted without it"},
		{name: "panic, Fail", policy: "  action: explode\n  with: {panic: true}\n  failurePolicy: Fail\n", state: StateError, message: `policy "p" failed: builtin panicked: assignment to entry in nil map`, panicked: true},
		{name: "panic, Ignore", policy: "  action: explode\n  with: {panic: true}\n", state: StateError, allowed: true, panicked: true, warning: "Evaluation failed for Celadon policy 'p' (failurePolicy Ignore): the request was admitted without it"},
		{name: "patch that does not apply", policy: "  action: badPatch\n  failurePolicy: Fail\n", state: StateError, message: "does not apply"},
		{name: "CEL runtime error, Fail", policy: "  action: violate\n  with: {message: x}\n", state: StateError, message: "no such key: missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			match := "  match: {resources: [pods]}\n"
			if strings.HasPrefix(c.name, "CEL runtime error") {
				match = "  match:\n    resources: [pods]\n    conditions: [{expression: dyn(object).metadata.missing == 'x'}]\n"
			}
			snap := mustCompile(t, policyYAML("p", match+c.policy))
			d := evaluate(t, snap, podRequest(t, admissionv1.Create, pod("a", nil), nil), EvalOptions{})
			r := d.Results[0]
			if r.State != c.state || d.Allowed != c.allowed || r.Panicked != c.panicked {
				t.Fatalf("got state=%s allowed=%v panicked=%v (%s)", r.State, d.Allowed, r.Panicked, r.Reason)
			}
			if !strings.Contains(d.Message, c.message) || (c.message == "" && d.Message != "") {
				t.Errorf("message %q, want %q", d.Message, c.message)
			}
			var warnings []string
			if c.warning != "" {
				warnings = []string{c.warning}
			}
			if fmt.Sprint(d.Warnings) != fmt.Sprint(warnings) {
				t.Errorf("warnings %q, want %q", d.Warnings, warnings)
			}
			if c.audit != d.AuditAnnotations["p"] {
				t.Errorf("audit annotations %v", d.AuditAnnotations)
			}
		})
	}
}

func TestDenialsAreAllListed(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("a", "  match: {resources: [pods]}\n  action: violate\n  with: {message: first problem}\n"),
		policyYAML("b", "  match: {resources: [pods]}\n  action: violate\n  with: {message: second problem}\n"),
	)
	d := evaluate(t, snap, podRequest(t, admissionv1.Create, pod("a", nil), nil), EvalOptions{})
	if d.Allowed || d.Message != "first problem; second problem" {
		t.Fatalf("got %v %q", d.Allowed, d.Message)
	}
}

// TestOutcomeAuditAnnotations: a builtin's audit annotations are recorded
// under "<policy>.<key>" whether or not it finds a violation, beside
// enforcement Audit's own, and not when the policy skips.
func TestOutcomeAuditAnnotations(t *testing.T) {
	cases := []struct {
		name, policy string
		want         map[string]string
	}{
		{name: "pass", policy: "  match: {resources: [pods]}\n  action: violate\n  with: {annotations: {k: v}}\n", want: map[string]string{"p.k": "v"}},
		{name: "deny", policy: "  match: {resources: [pods]}\n  action: violate\n  with: {message: nope, annotations: {k: v}}\n", want: map[string]string{"p.k": "v"}},
		{name: "audit", policy: "  match: {resources: [pods]}\n  action: violate\n  with: {message: noted, annotations: {k: v}}\n  enforcement: Audit\n", want: map[string]string{"p": "noted", "p.k": "v"}},
		{name: "skip", policy: "  match:\n    resources: [pods]\n    conditions: [{expression: 'false'}]\n  action: violate\n  with: {annotations: {k: v}}\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := mustCompile(t, policyYAML("p", c.policy))
			d := evaluate(t, snap, podRequest(t, admissionv1.Create, pod("a", nil), nil), EvalOptions{})
			if fmt.Sprint(d.AuditAnnotations) != fmt.Sprint(c.want) {
				t.Errorf("audit annotations %v, want %v (%s)", d.AuditAnnotations, c.want, states(d))
			}
		})
	}
}

// TestCostBudget: a runaway expression stops at the per-call limit and
// errors under its failurePolicy; the request's budget is shared.
func TestCostBudget(t *testing.T) {
	runaway := "  match:\n    resources: [pods]\n    conditions:\n    - expression: 'dyn(object).spec.big.all(x, dyn(object).spec.big.all(y, dyn(object).spec.big.all(z, x + y + z >= 0)))'\n  action: violate\n  with: {message: unreachable}\n  failurePolicy: Ignore\n"
	snap := mustCompile(t,
		policyYAML("runaway", runaway),
		policyYAML("after", "  match: {resources: [pods]}\n  action: violate\n  with: {message: still evaluated}\n  enforcement: Warn\n"),
	)
	obj := pod("a", nil)
	big := make([]any, 200)
	for i := range big {
		big[i] = int64(i)
	}
	obj["spec"].(map[string]any)["big"] = big
	d := evaluate(t, snap, podRequest(t, admissionv1.Create, obj, nil), EvalOptions{})
	r := d.Results[0]
	if r.State != StateError || !strings.Contains(r.Reason, "cost limit") || !d.Allowed {
		t.Fatalf("runaway: %+v", r)
	}
	if d.Results[1].State != StateWarn {
		t.Errorf("the next policy should still run: %+v", d.Results[1])
	}

	// A small request budget is exhausted by the first expression; the
	// second one is refused without running.
	cheap := policyYAML("c1", "  match:\n    resources: [pods]\n    conditions: [{expression: 'object.spec.containers.all(c, c.name != \"\")'}]\n  action: violate\n  with: {message: x}\n  enforcement: Warn\n")
	snap = mustCompile(t, cheap, strings.ReplaceAll(cheap, "c1", "c2"))
	d = evaluate(t, snap, podRequest(t, admissionv1.Create, pod("a", nil), nil), EvalOptions{CostBudget: 3})
	if d.Results[1].State != StateError || !strings.Contains(d.Results[1].Reason, ErrCostBudgetExceeded.Error()) {
		t.Fatalf("budget: %+v", d.Results)
	}
}

func TestDeadline(t *testing.T) {
	snap := mustCompile(t, policyYAML("p", "  match: {resources: [pods]}\n  action: violate\n  with: {message: x}\n"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := snap.Evaluate(ctx, podRequest(t, admissionv1.Create, pod("a", nil), nil), EvalOptions{})
	must(t, err)
	if d.Results[0].State != StateError || !strings.Contains(d.Results[0].Reason, "context canceled") || d.Allowed {
		t.Fatalf("got %+v", d.Results[0])
	}
}

func TestBadRequests(t *testing.T) {
	snap := mustCompile(t, policyYAML("p", "  match: {resources: [pods]}\n  action: violate\n"))
	if _, err := snap.Evaluate(context.Background(), nil, EvalOptions{}); err == nil {
		t.Error("nil request should fail")
	}
	req := podRequest(t, admissionv1.Create, nil, nil)
	req.Object = runtime.RawExtension{Raw: []byte("{not json")}
	if _, err := snap.Evaluate(context.Background(), req, EvalOptions{}); err == nil || !strings.Contains(err.Error(), "request.object") {
		t.Errorf("malformed object: %v", err)
	}
	// A request no policy can match is answered without decoding.
	req.Resource.Resource = "services"
	if d, err := snap.Evaluate(context.Background(), req, EvalOptions{}); err != nil || !d.Allowed || len(d.Results) != 0 {
		t.Errorf("unmatched request: %+v, %v", d, err)
	}
}

func TestApplyPatch(t *testing.T) {
	doc := func() map[string]any {
		return decode(t, []byte(`{"a":{"list":[1,2,3],"k/e~y":"v"}}`))
	}
	cases := []struct {
		ops  []JSONPatchOp
		want string
		err  string
	}{
		{ops: []JSONPatchOp{Op("add", "/a/list/-", 4)}, want: `{"a":{"list":[1,2,3,4],"k/e~y":"v"}}`},
		{ops: []JSONPatchOp{Op("add", "/a/list/0", 0)}, want: `{"a":{"list":[0,1,2,3],"k/e~y":"v"}}`},
		{ops: []JSONPatchOp{Op("remove", "/a/list/1", nil)}, want: `{"a":{"list":[1,3],"k/e~y":"v"}}`},
		{ops: []JSONPatchOp{Op("replace", "/a/k~1e~0y", "w")}, want: `{"a":{"list":[1,2,3],"k/e~y":"w"}}`},
		{ops: []JSONPatchOp{Op("add", "/b", map[string]any{"c": []any{}}), Op("add", "/b/c/-", "x")}, want: `{"a":{"list":[1,2,3],"k/e~y":"v"},"b":{"c":["x"]}}`},
		{ops: []JSONPatchOp{Op("replace", "/missing", 1)}, err: "replace of missing key"},
		{ops: []JSONPatchOp{Op("add", "/a/list/9", 1)}, err: "out of range"},
		{ops: []JSONPatchOp{Op("add", "/x/y", 1)}, err: "path not found"},
		{ops: []JSONPatchOp{Op("move", "/a", 1)}, err: "unsupported operation"},
	}
	for _, c := range cases {
		d := doc()
		err := applyPatch(d, c.ops)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error %v, want %q", c.ops, err, c.err)
			}
			continue
		}
		must(t, err)
		got, _ := json.Marshal(d)
		if !jsonEqualBytes(t, got, decode(t, []byte(c.want))) {
			t.Errorf("%v: got %s want %s", c.ops, got, c.want)
		}
		// The standard library agrees.
		p, _ := json.Marshal(c.ops)
		patch, err := jsonpatch5.DecodePatch(p)
		must(t, err)
		orig, _ := json.Marshal(doc())
		lib, err := patch.Apply(orig)
		must(t, err)
		if !jsonEqualBytes(t, lib, decode(t, got)) {
			t.Errorf("%v: library gives %s, we give %s", c.ops, lib, got)
		}
	}
}

func applyWithLibrary(t testing.TB, original []byte, d *Decision) []byte {
	t.Helper()
	p, err := d.PatchJSON()
	must(t, err)
	patch, err := jsonpatch5.DecodePatch(p)
	must(t, err)
	out, err := patch.Apply(original)
	must(t, err)
	return out
}

func decode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	must(t, json.Unmarshal(b, &m))
	return m
}

func normalize(t testing.TB, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err)
	var out any
	must(t, json.Unmarshal(b, &out))
	return out
}

func jsonEqualBytes(t testing.TB, b []byte, want any) bool {
	t.Helper()
	var got any
	must(t, json.Unmarshal(b, &got))
	return reflect.DeepEqual(got, normalize(t, want))
}
