package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// t0 is the tests' "now".
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func exceptionYAML(name, body string) string {
	return fmt.Sprintf("apiVersion: celadon.io/v1alpha1\nkind: PolicyException\nmetadata:\n  name: %s\nspec:\n%s", name, body)
}

// counted is a validating builtin that counts its runs and always
// violates: an excepted request must never run it.
type counted struct{ runs *atomic.Int32 }

func (counted) Name() string     { return "counted" }
func (counted) Type() ActionType { return Validating }
func (c counted) Compile(*CompileContext) (Action, error) {
	return ActionFunc(func(*ActionContext) (Outcome, error) {
		c.runs.Add(1)
		return Outcome{Violation: "counted says no"}, nil
	}), nil
}

// exceptionFixture compiles the shared policies with the exceptions of
// the policy directory given.
func exceptionFixture(t *testing.T, runs *atomic.Int32, exceptions ...string) *Snapshot {
	t.Helper()
	reg := testRegistry()
	reg.Register(counted{runs: runs})
	docs := append([]string{
		policyYAML("no-latest", "  match: {resources: ['*']}\n  action: counted\n"),
		policyYAML("no-root", "  match: {resources: [pods, 'pods/*']}\n  action: violate\n  with: {message: root}\n"),
		policyYAML("team-label", "  match: {resources: [pods]}\n  action: setLabel\n  with: {key: team, value: blue}\n"),
	}, exceptions...)
	snap, err := Compile([]File{{Name: "policies.yaml", Data: []byte(strings.Join(docs, "\n---\n"))}}, Options{Registry: reg})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return snap
}

func resultOf(d *Decision, policy string) PolicyResult {
	for _, r := range d.Results {
		if r.Policy == policy {
			return r
		}
	}
	return PolicyResult{}
}

func TestExceptionSkipsBeforeTheAction(t *testing.T) {
	var runs atomic.Int32
	snap := exceptionFixture(t, &runs, exceptionYAML("legacy", "  policies: [no-latest, team-label]\n  match: {namespaces: [default]}\n  reason: |\n    the legacy app\n    is being rewritten\n  owner: team-a\n"))
	d := evaluate(t, snap, podRequest(t, admissionv1.Create, pod("web-0", nil), nil), EvalOptions{})
	if got := states(d); got != "team-label=skip,no-latest=skip,no-root=fail" {
		t.Fatalf("states %s", got)
	}
	r := resultOf(d, "no-latest")
	if r.Exception != "legacy" || r.Reason != `excepted by exception "legacy" (owner team-a): the legacy app is being rewritten` {
		t.Errorf("result %+v", r)
	}
	if runs.Load() != 0 {
		t.Errorf("the excepted policy's action ran %d times", runs.Load())
	}
	if len(d.Patch) != 0 || resultOf(d, "team-label").Exception != "legacy" {
		t.Errorf("the excepted mutation was applied: %v", d.Patch)
	}
	if d.Allowed || d.Message != "root" {
		t.Errorf("the policy not excepted should still deny: %v %q", d.Allowed, d.Message)
	}
	// Elsewhere, nothing is excepted.
	req := podRequest(t, admissionv1.Create, pod("web-0", nil), nil)
	req.Namespace = "prod"
	d = evaluate(t, snap, req, EvalOptions{})
	if got := states(d); got != "team-label=pass,no-latest=fail,no-root=fail" || runs.Load() != 1 {
		t.Fatalf("states %s, runs %d", got, runs.Load())
	}
}

func TestExceptionPolicyGlobs(t *testing.T) {
	var runs atomic.Int32
	snap := exceptionFixture(t, &runs, exceptionYAML("globs", "  policies: ['no-*']\n  match: {}\n  reason: r\n  owner: o\n"))
	d := evaluate(t, snap, podRequest(t, admissionv1.Create, pod("web-0", nil), nil), EvalOptions{})
	if got := states(d); got != "team-label=pass,no-latest=skip,no-root=skip" {
		t.Fatalf("states %s", got)
	}
	e := snap.Exceptions.Exception("globs")
	for policy, want := range map[string]bool{"no-latest": true, "no-": true, "no": false, "team-label": false, "xno-latest": false} {
		if got := e.Excepts(policy); got != want {
			t.Errorf("Excepts(%q) = %v", policy, got)
		}
	}
}

// TestExceptionMatchFields checks each field of spec.match: a request it
// selects is excepted, one it does not is not.
func TestExceptionMatchFields(t *testing.T) {
	nss := namespaces{"default": {"env": "dev"}, "prod": {"env": "prod"}}
	type req = *admissionv1.AdmissionRequest
	podIn := func(ns, name string, labels map[string]string) req {
		r := podRequest(t, admissionv1.Create, pod(name, labels), nil)
		r.Namespace, r.Name = ns, name
		return r
	}
	cases := []struct {
		name, match string
		yes, no     req
	}{
		{"namespaces", "namespaces: [prod, staging]", podIn("prod", "a", nil), podIn("default", "a", nil)},
		{"namespaceSelector", "namespaceSelector: {matchLabels: {env: dev}}", podIn("default", "a", nil), podIn("prod", "a", nil)},
		{"namespaceSelector of an unknown namespace", "namespaceSelector: {matchExpressions: [{key: env, operator: DoesNotExist}]}", podIn("staging", "a", nil), podIn("ghost", "a", nil)},
		{"objectSelector", "objectSelector: {matchLabels: {legacy: 'true'}}", podIn("default", "a", map[string]string{"legacy": "true"}), podIn("default", "a", nil)},
		{"names", "names: [web-0, 'db-*']", podIn("default", "db-1", nil), podIn("default", "web-1", nil)},
		{"resources", "resources: [services, pods]", podIn("default", "a", nil), func() req {
			r := podIn("default", "a", nil)
			r.Resource.Resource = "pods"
			r.SubResource = "status"
			return r
		}()},
		{"operations", "operations: [UPDATE]", func() req {
			r := podIn("default", "a", nil)
			r.Operation, r.OldObject = admissionv1.Update, r.Object
			return r
		}(), podIn("default", "a", nil)},
		{"conditions on object and request", "conditions:\n    - {name: ci, expression: 'request.userInfo.username == \"alice\" && object.metadata.name == \"a\"'}", podIn("default", "a", nil), podIn("default", "b", nil)},
		{"conditions on namespaceObject", "conditions: [{expression: 'namespaceObject.metadata.labels.env == \"prod\"'}]", podIn("prod", "a", nil), podIn("default", "a", nil)},
		{"conditions on oldObject", "conditions: [{expression: 'oldObject != null && has(oldObject.metadata.labels)'}]", func() req {
			r := podRequest(t, admissionv1.Delete, nil, pod("a", map[string]string{"x": "y"}))
			return r
		}(), podIn("default", "a", nil)},
		{"a condition that errors is no match", "conditions: [{expression: 'object.metadata.labels.missing == \"x\"'}]", podIn("default", "a", map[string]string{"missing": "x"}), podIn("default", "a", nil)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var runs atomic.Int32
			snap := exceptionFixture(t, &runs, exceptionYAML("x", "  policies: [no-root]\n  match:\n    "+c.match+"\n  reason: r\n  owner: o\n"))
			nss := nss
			if c.name == "namespaceSelector of an unknown namespace" {
				nss = namespaces{"staging": nil}
			}
			if r := resultOf(evaluate(t, snap, c.yes, EvalOptions{Namespaces: nss}), "no-root"); r.State != StateSkip || r.Exception != "x" {
				t.Errorf("should be excepted: %+v", r)
			}
			if r := resultOf(evaluate(t, snap, c.no, EvalOptions{Namespaces: nss}), "no-root"); r.State != StateFail || r.Exception != "" {
				t.Errorf("should not be excepted: %+v", r)
			}
		})
	}
}

func TestExceptionNamesMatchGenerateName(t *testing.T) {
	var runs atomic.Int32
	snap := exceptionFixture(t, &runs, exceptionYAML("x", "  policies: [no-root]\n  match: {names: ['web-*']}\n  reason: r\n  owner: o\n"))
	obj := pod("", nil)
	md := obj["metadata"].(map[string]any)
	delete(md, "name")
	md["generateName"] = "web-7d9f8c6b5-"
	req := podRequest(t, admissionv1.Create, obj, nil)
	req.Name = ""
	if r := resultOf(evaluate(t, snap, req, EvalOptions{}), "no-root"); r.Exception != "x" {
		t.Errorf("a Deployment's pod is named by its generateName: %+v", r)
	}
	md["generateName"] = "api-"
	req = podRequest(t, admissionv1.Create, obj, nil)
	req.Name = ""
	if r := resultOf(evaluate(t, snap, req, EvalOptions{}), "no-root"); r.Exception != "" {
		t.Errorf("api-… is not web-*: %+v", r)
	}
}

// TestExceptionExceptsErrors: a policy whose selectors or conditions error
// is excepted as its action would be; an unexcepted one still errors.
func TestExceptionExceptsErrors(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("ns", "  match:\n    resources: [pods]\n    namespaceSelector: {matchLabels: {a: b}}\n  action: violate\n  with: {message: m}\n"),
		policyYAML("cond", "  match:\n    resources: [pods]\n    conditions: [{expression: 'object.metadata.labels.nope == \"x\"'}]\n  action: violate\n  with: {message: m}\n"),
		exceptionYAML("x", "  policies: ['*']\n  match: {names: [web-0]}\n  reason: r\n  owner: o\n"),
	)
	d := evaluate(t, snap, podRequest(t, admissionv1.Create, pod("web-0", nil), nil), EvalOptions{})
	if got := states(d); got != "ns=skip,cond=skip" || !d.Allowed {
		t.Fatalf("states %s: %+v", got, d.Results)
	}
	req := podRequest(t, admissionv1.Create, pod("web-1", nil), nil)
	req.Name = "web-1"
	if got := states(evaluate(t, snap, req, EvalOptions{})); got != "ns=error,cond=error" {
		t.Fatalf("states %s", got)
	}
}

// TestExceptionExpiry: an exception stops applying at its expiry, on the
// same set, with no reload.
func TestExceptionExpiry(t *testing.T) {
	var runs atomic.Int32
	expires := t0.Add(72 * time.Hour)
	snap := exceptionFixture(t, &runs, exceptionYAML("x", "  policies: [no-root]\n  match: {}\n  reason: r\n  owner: team-a\n  expires: "+expires.Format(time.RFC3339)+"\n"))
	req := podRequest(t, admissionv1.Create, pod("web-0", nil), nil)
	for _, c := range []struct {
		now  time.Time
		want State
	}{
		{expires.Add(-time.Nanosecond), StateSkip},
		{expires, StateFail},
		{expires.Add(time.Hour), StateFail},
	} {
		if got := resultOf(evaluate(t, snap, req, EvalOptions{Now: at(c.now)}), "no-root").State; got != c.want {
			t.Errorf("at %s: %s, want %s", c.now, got, c.want)
		}
	}
}

func TestExceptionExpiryWarnings(t *testing.T) {
	var runs atomic.Int32
	expires := t0.Add(7 * 24 * time.Hour)
	snap := exceptionFixture(t, &runs, exceptionYAML("x", "  policies: [no-root, no-latest]\n  match: {namespaces: [default]}\n  reason: r\n  owner: team-a@example.com\n  expires: "+expires.Format(time.RFC3339)+"\n"))
	req := podRequest(t, admissionv1.Create, pod("web-0", nil), nil)
	for _, c := range []struct {
		now  time.Time
		want string
	}{
		{expires.Add(-7*24*time.Hour - time.Second), ""},
		{expires.Add(-7 * 24 * time.Hour), "in 7 days"},
		{expires.Add(-(2*24 + 12) * time.Hour), "in 2 days"},
		{expires.Add(-25 * time.Hour), "in 1 day"},
		{expires.Add(-3 * time.Hour), "in less than a day"},
	} {
		d := evaluate(t, snap, req, EvalOptions{Now: at(c.now)})
		if c.want == "" {
			if len(d.Warnings) != 0 {
				t.Errorf("at %s: warnings %q, want none", c.now, d.Warnings)
			}
			continue
		}
		want := `Celadon exception "x" (owner team-a@example.com) expires ` + c.want + ` (2026-03-08T12:00:00Z): policies no-latest, no-root apply again then`
		if len(d.Warnings) != 1 || d.Warnings[0] != want {
			t.Errorf("at %s: warnings %q\nwant %q", c.now, d.Warnings, want)
		}
	}
	// No warning when the exception does not apply.
	other := podRequest(t, admissionv1.Create, pod("web-0", nil), nil)
	other.Namespace = "prod"
	if d := evaluate(t, snap, other, EvalOptions{Now: at(t0)}); len(d.Warnings) != 0 {
		t.Errorf("warnings for a request no policy matched: %q", d.Warnings)
	}
}

// TestExceptionLastToExpireWins: of two matching exceptions, the one that
// lasts is reported, so the requester is not warned of an end that does
// not come.
func TestExceptionLastToExpireWins(t *testing.T) {
	var runs atomic.Int32
	snap := exceptionFixture(t, &runs,
		exceptionYAML("short", "  policies: [no-root]\n  match: {}\n  reason: r\n  owner: o\n  expires: "+t0.Add(48*time.Hour).Format(time.RFC3339)+"\n"),
		exceptionYAML("forever", "  policies: [no-root]\n  match: {}\n  reason: r\n  owner: o\n"),
		exceptionYAML("long", "  policies: [no-root]\n  match: {}\n  reason: r\n  owner: o\n  expires: "+t0.Add(480*time.Hour).Format(time.RFC3339)+"\n"),
	)
	d := evaluate(t, snap, podRequest(t, admissionv1.Create, pod("web-0", nil), nil), EvalOptions{Now: at(t0)})
	if r := resultOf(d, "no-root"); r.Exception != "forever" || len(d.Warnings) != 0 {
		t.Errorf("result %+v, warnings %q", r, d.Warnings)
	}
}

// TestExceptionConditionsHaveTheirOwnBudget: an expensive exception cannot
// spend the budget the policies need.
func TestExceptionConditionsHaveTheirOwnBudget(t *testing.T) {
	var runs atomic.Int32
	without := exceptionFixture(t, &runs)
	with := exceptionFixture(t, &runs, exceptionYAML("costly", "  policies: ['*']\n  match:\n    conditions: [{expression: '[1,2,3,4,5,6,7,8,9,10].all(x, [1,2,3,4,5,6,7,8,9,10].all(y, x*y < 0))'}]\n  reason: r\n  owner: o\n"))
	req := podRequest(t, admissionv1.Create, pod("web-0", nil), nil)
	a, b := evaluate(t, without, req, EvalOptions{}), evaluate(t, with, req, EvalOptions{})
	if states(a) != states(b) || a.CostRemaining != b.CostRemaining {
		t.Errorf("without the exception: %s, cost left %d; with it: %s, %d", states(a), a.CostRemaining, states(b), b.CostRemaining)
	}
}

func TestExceptionsOfTheOptions(t *testing.T) {
	var runs atomic.Int32
	snap := exceptionFixture(t, &runs)
	set, err := CompileExceptions([]File{{Name: "ex.yaml", Data: []byte(exceptionYAML("team", "  policies: [no-root]\n  match: {namespaces: [default]}\n  reason: r\n  owner: o\n  expires: "+t0.Add(time.Hour).Format(time.RFC3339)+"\n"))}}, ExceptionOptions{Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	d := evaluate(t, snap, podRequest(t, admissionv1.Create, pod("web-0", nil), nil), EvalOptions{Exceptions: set, Now: at(t0)})
	if r := resultOf(d, "no-root"); r.Exception != "team" {
		t.Errorf("result %+v", r)
	}
	if len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "expires in less than a day") {
		t.Errorf("warnings %q", d.Warnings)
	}
}

// compileExceptionsErr compiles an exceptions directory's file and returns
// its errors, one per line.
func compileExceptionsErr(t *testing.T, f File) string {
	t.Helper()
	_, err := CompileExceptions([]File{f}, ExceptionOptions{Now: t0})
	if err == nil {
		return ""
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("not an ErrorList: %v", err)
	}
	var lines []string
	for _, e := range list {
		lines = append(lines, e.Error())
	}
	return strings.Join(lines, "\n")
}

// TestExceptionsDirectoryRules tries, as a team with edit on the
// exceptions directory, to except more than its namespaces.
func TestExceptionsDirectoryRules(t *testing.T) {
	good := "  policies: [no-root]\n  match:\n    namespaces: [team-a]\n  reason: r\n  owner: team-a\n  expires: 2026-03-31T00:00:00Z\n"
	cases := []struct {
		name, file, ns, body, want string
	}{
		{"the good one", "ex.yaml", "", good, ""},
		{"no namespaces: the whole cluster", "ex.yaml", "", strings.Replace(good, "    namespaces: [team-a]\n", "    names: ['*']\n", 1),
			`ex.yaml:7:3: exception "x": match.namespaces: required in the exceptions directory, where an exception matches only in the namespaces it lists: list the namespaces it applies to`},
		{"a glob for namespaces", "ex.yaml", "", strings.Replace(good, "[team-a]", "['*']", 1),
			`ex.yaml:8:18: exception "x": match.namespaces[0]: "*" is not a namespace name`},
		{"a glob for policies", "ex.yaml", "", strings.Replace(good, "[no-root]", "['*']", 1),
			`ex.yaml:6:14: exception "x": policies[0]: "*" is a glob: an exception of the exceptions directory names its policies one by one, so that it never excepts a policy added later`},
		{"no expiry", "ex.yaml", "", strings.Replace(good, "  expires: 2026-03-31T00:00:00Z\n", "", 1),
			`ex.yaml:5:1: exception "x": expires: required in the exceptions directory: an RFC 3339 timestamp at most 90 days ahead`},
		{"an expiry far ahead", "ex.yaml", "", strings.Replace(good, "2026-03-31", "9999-12-31", 1),
			`ex.yaml:11:3: exception "x": expires: 9999-12-31T00:00:00Z is more than 90 days after now (2026-03-01T12:00:00Z), the limit of the exceptions directory: renew the exception nearer the time instead`},
		{"a malformed expiry", "ex.yaml", "", strings.Replace(good, "2026-03-31T00:00:00Z", "31/03/2026", 1),
			`ex.yaml:11:3: exception "x": expires: "31/03/2026" is not an RFC 3339 timestamp`},
		{"a date without a time", "ex.yaml", "", strings.Replace(good, "2026-03-31T00:00:00Z", "2026-03-31", 1),
			`ex.yaml:11:3: exception "x": expires: "2026-03-31" is not an RFC 3339 timestamp`},
		{"another team's namespace from a team's directory", "team-a/ex.yaml", "team-a", strings.Replace(good, "[team-a]", "[team-a, team-b]", 1),
			`team-a/ex.yaml:8:26: exception "x": match.namespaces[1]: namespace "team-b": the exceptions of team-a/ match in namespace "team-a" only, which the directory is named after`},
		{"a second namespaces key, past a reviewer's eye", "ex.yaml", "", strings.Replace(good, "  reason: r\n", "    namespaces: [kube-system]\n  reason: r\n", 1),
			`ex.yaml:9:5: exception "x": spec.match.namespaces: duplicate field`},
		{"an owner that forges a second warning line", "ex.yaml", "", strings.Replace(good, "owner: team-a", "owner: \"team-a\\nWarning: all clear\"", 1),
			`ex.yaml:10:3: exception "x": owner: one line without control characters: it is shown in warnings`},
		{"no reason, no owner", "ex.yaml", "", strings.Replace(strings.Replace(good, "  reason: r\n", "", 1), "owner: team-a", "owner: ' '", 1),
			"ex.yaml:5:1: exception \"x\": reason: required: why the policies do not apply here\nex.yaml:9:3: exception \"x\": owner: required: who answers for the exception (a team, an email)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := compileExceptionsErr(t, File{Name: c.file, Namespace: c.ns, Data: []byte(exceptionYAML("x", c.body))})
			if c.want == "" && got != "" || !strings.HasPrefix(got, c.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", got, c.want)
			}
		})
	}
	t.Run("a policy in the exceptions directory", func(t *testing.T) {
		got := compileExceptionsErr(t, File{Name: "ex.yaml", Data: []byte(policyYAML("sneaky", "  match: {resources: [pods]}\n  action: violate\n"))})
		if want := `ex.yaml:2:1: policy "sneaky": the exceptions directory holds PolicyException documents only: a Policy goes in the policy directory`; got != want {
			t.Errorf("got %s\nwant %s", got, want)
		}
	})
	t.Run("Display quotes the line", func(t *testing.T) {
		_, err := CompileExceptions([]File{{Name: "ex.yaml", Data: []byte(exceptionYAML("x", strings.Replace(good, "2026-03-31T00:00:00Z", "soon", 1)))}}, ExceptionOptions{Now: t0})
		var list ErrorList
		if !errors.As(err, &list) || !strings.HasSuffix(list[0].Display(), "\n |   expires: soon\n | ..^") {
			t.Errorf("display:\n%v", err)
		}
	})
}

// TestExceptionsDirectoryMatchesItsNamespacesOnly: even an exception that
// selects everything else matches namespaced objects of its namespaces
// alone, never the Namespace itself nor cluster-scoped objects; the same
// exception in the policy directory does.
func TestExceptionsDirectoryMatchesItsNamespacesOnly(t *testing.T) {
	body := "  policies: [guard]\n  match:\n    namespaces: [team-a]\n    names: ['*']\n  reason: r\n  owner: o\n  expires: 2026-03-31T00:00:00Z\n"
	snap := mustCompile(t,
		policyYAML("guard", "  match: {resources: ['*']}\n  action: violate\n  with: {message: guarded}\n"),
	)
	trusted := mustCompile(t,
		policyYAML("guard", "  match: {resources: ['*']}\n  action: violate\n  with: {message: guarded}\n"),
		exceptionYAML("x", body),
	)
	set, err := CompileExceptions([]File{{Name: "ex.yaml", Data: []byte(exceptionYAML("x", body))}}, ExceptionOptions{Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	nsObj := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "team-a"}}
	requests := []struct {
		name            string
		req             *admissionv1.AdmissionRequest
		team, policyDir bool
	}{
		{"a pod in team-a", podRequest(t, admissionv1.Create, pod("web-0", nil), nil), true, true},
		{"a pod in team-b", func() *admissionv1.AdmissionRequest {
			r := podRequest(t, admissionv1.Create, pod("web-0", nil), nil)
			r.Namespace = "team-b"
			return r
		}(), false, false},
		{"the Namespace team-a, relabelled", &admissionv1.AdmissionRequest{Operation: admissionv1.Update, Name: "team-a", Namespace: "team-a",
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "namespaces"}, Object: raw(t, nsObj), OldObject: raw(t, nsObj)}, false, true},
		{"a Node", &admissionv1.AdmissionRequest{Operation: admissionv1.Update, Name: "team-a",
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "nodes"}, Object: raw(t, map[string]any{"metadata": map[string]any{"name": "team-a"}})}, false, false},
	}
	for _, c := range requests {
		if c.req.Namespace == "default" {
			c.req.Namespace = "team-a"
		}
		got := resultOf(evaluate(t, snap, c.req, EvalOptions{Exceptions: set, Now: at(t0)}), "guard").Exception != ""
		if got != c.team {
			t.Errorf("%s: excepted from the exceptions directory: %v, want %v", c.name, got, c.team)
		}
		got = resultOf(evaluate(t, trusted, c.req, EvalOptions{Now: at(t0)}), "guard").Exception != ""
		if got != c.policyDir {
			t.Errorf("%s: excepted from the policy directory: %v, want %v", c.name, got, c.policyDir)
		}
	}
}

func TestExceptionsInThePolicyDirectory(t *testing.T) {
	data := policyYAML("p", "  match: {resources: [pods]}\n  action: violate\n") + "\n---\n" +
		exceptionYAML("x", "  policies: [p]\n  match:\n    namespaces: [Bad_NS]\n  reason: r\n  owner: o\n  expires: tomorrow\n")
	_, err := Compile([]File{{Name: "policies.yaml", Data: []byte(data)}}, Options{Registry: testRegistry()})
	want := "policies.yaml:20:3: exception \"x\": expires: \"tomorrow\" is not an RFC 3339 timestamp, a date with a time and a zone such as 2026-03-31T00:00:00Z\n" +
		" |   expires: tomorrow\n | ..^"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `policies.yaml:17:18: exception "x": match.namespaces[0]: "Bad_NS" is not a namespace name`) {
		t.Fatalf("errors:\n%v\nwant among them:\n%s", err, want)
	}
	// The policy directory may except with globs, without namespaces and
	// without expiry.
	snap := mustCompile(t, policyYAML("p", "  match: {resources: [pods]}\n  action: violate\n"), exceptionYAML("x", "  policies: ['*']\n  match: {}\n  reason: r\n  owner: o\n"))
	if len(snap.Exceptions.Exceptions) != 1 || snap.Exceptions.Exceptions[0].Origin != FromPolicies || snap.Exceptions.Exceptions[0].Line != 10 {
		t.Errorf("exceptions %+v", snap.Exceptions.Exceptions)
	}
	// Unknown fields and duplicate names are errors.
	_, err = Compile([]File{{Name: "policies.yaml", Data: []byte(data[:strings.Index(data, "---")] + "---\n" +
		exceptionYAML("x", "  policies: [p]\n  match: {namespace: [a]}\n  reason: r\n  owner: o\n") + "\n---\n" +
		exceptionYAML("y", "  policies: [p]\n  reason: r\n  owner: o\n") + "\n---\n" +
		exceptionYAML("y", "  policies: [p]\n  reason: r\n  owner: o\n"))}}, Options{Registry: testRegistry()})
	if err == nil || !strings.Contains(err.Error(), "policies.yaml:16:11: exception \"x\": spec.match.namespace: unknown field") ||
		!strings.Contains(err.Error(), "policies.yaml:34:3: exception \"y\": duplicate exception name, first defined at policies.yaml:21") {
		t.Errorf("errors:\n%v", err)
	}
}

func TestReadExceptionFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("platform.yaml", "a")
	write("team-b/ex.yaml", "b")
	write("team-a/ex.yaml", "c")
	write("team-a/..data/ex.yaml", "hidden")
	write("team-a/notes.txt", "skipped")
	files, err := ReadExceptionFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		rel, _ := filepath.Rel(dir, f.Name)
		got = append(got, rel+"@"+f.Namespace+"="+string(f.Data))
	}
	if want := "platform.yaml@=a team-a/ex.yaml@team-a=c team-b/ex.yaml@team-b=b"; strings.Join(got, " ") != want {
		t.Errorf("files %q, want %q", strings.Join(got, " "), want)
	}
	if dirs := ExceptionDirs(dir); len(dirs) != 3 || dirs[1] != filepath.Join(dir, "team-a") {
		t.Errorf("dirs %q", dirs)
	}
	// The same file in another namespace's directory is other content.
	moved := []File{files[0], {Name: files[1].Name, Data: files[1].Data, Namespace: "team-b"}, files[2]}
	if Hash(files) == Hash(moved) {
		t.Error("moving a file to another namespace's directory keeps the hash")
	}
	write("Team_C/ex.yaml", "d")
	if _, err := ReadExceptionFiles(dir); err == nil || !strings.Contains(err.Error(), `"Team_C" is not a namespace name`) {
		t.Errorf("err %v", err)
	}
}

// TestExceptionStore: a broken exceptions directory keeps the last good
// set, says why once, and recovers; the limit on expiry follows the clock.
func TestExceptionStore(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ex.yaml")
	write := func(data string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := NewExceptionStore(dir, ExceptionOptions{})
	now := t0
	s.now = func() time.Time { return now }
	var failures []*LoadFailure
	s.SubscribeFailures(func(f *LoadFailure) { failures = append(failures, f) })
	if cur := s.Current(); cur == nil || len(cur.Exceptions) != 0 {
		t.Fatalf("before any load: %+v", cur)
	}
	if changed, err := s.Load(); err != nil || !changed || len(s.Current().Exceptions) != 0 {
		t.Fatalf("an empty directory: changed %v, err %v", changed, err)
	}
	good := exceptionYAML("x", "  policies: [p]\n  match: {namespaces: [a]}\n  reason: r\n  owner: o\n  expires: 2026-04-01T00:00:00Z\n")
	write(good)
	if changed, err := s.Load(); err != nil || !changed || s.Current().Exception("x") == nil {
		t.Fatalf("good: changed %v, err %v", changed, err)
	}
	write(good + "  bogus: 1\n")
	for range 2 {
		if changed, err := s.Load(); err == nil || changed {
			t.Fatalf("broken: changed %v, err %v", changed, err)
		}
	}
	if len(failures) != 1 || s.Failure() == nil || s.Current().Exception("x") == nil {
		t.Fatalf("failures %v; the last good set should stay", failures)
	}
	far := strings.Replace(good, "2026-04-01", "2026-07-01", 1)
	write(far)
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "more than 90 days after now") {
		t.Fatalf("far: %v", err)
	}
	now = now.Add(61 * 24 * time.Hour) // the same content, two months later
	if changed, err := s.Load(); err != nil || !changed || s.Failure() != nil || failures[len(failures)-1] != nil {
		t.Fatalf("two months later: changed %v, err %v", changed, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil || s.Current().Exception("x") == nil {
		t.Fatalf("a directory gone: err %v, the last good set should stay", err)
	}
}
