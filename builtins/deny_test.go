package builtins

import (
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"celadon.io/celadon/engine"
)

// protectedDeployment is a Deployment carrying the protection label.
const protectedDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
    celadon.io/protected: "true"
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
`

// denyPolicy is a policy refusing to DELETE protected Deployments, with
// body as the rest of its spec (action and on).
func denyPolicy(body string) string {
	return `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: protect
spec:
  match:
    resources: [apps/deployments]
    operations: [DELETE]
    conditions:
    - name: protected
      expression: oldObject.metadata.?labels[?"celadon.io/protected"].orValue("") == "true"
  action: deny
` + body
}

func TestDeny(t *testing.T) {
	unprotected := strings.Replace(protectedDeployment, `    celadon.io/protected: "true"`+"\n", "", 1)
	cases := []struct {
		name    string
		with    string // the rest of the policy's spec
		old     string // the Deployment being deleted
		state   engine.State
		allowed bool
		message string // denial message
		reason  string
		warning string
		audit   string
	}{
		{
			name:    "message",
			with:    "  with:\n    message: protected Deployments cannot be deleted\n",
			state:   engine.StateFail,
			message: "protected Deployments cannot be deleted",
			reason:  "protected Deployments cannot be deleted",
		},
		{
			name:    "a block-scalar message loses its trailing newline",
			with:    "  with:\n    message: |\n      protected Deployments cannot be deleted\n",
			state:   engine.StateFail,
			message: "protected Deployments cannot be deleted",
		},
		{
			name:    "condition false: not denied",
			with:    "  with:\n    message: protected\n",
			old:     unprotected,
			state:   engine.StateSkip,
			allowed: true,
			reason:  "condition protected is false",
		},
		{
			name:    "messageExpression reads oldObject on DELETE",
			with:    "  with:\n    messageExpression: '\"deployment \" + oldObject.metadata.name + \" is protected\"'\n",
			state:   engine.StateFail,
			message: "deployment web is protected",
			reason:  "deployment web is protected",
		},
		{
			name:    "messageExpression wins over message",
			with:    "  with:\n    message: protected\n    messageExpression: '\"deployment \" + oldObject.metadata.namespace + \"/\" + oldObject.metadata.name + \" is protected\"'\n",
			state:   engine.StateFail,
			message: "deployment shop/web is protected",
		},
		{
			name:    "messageExpression can read the request",
			with:    "  with:\n    messageExpression: 'request.userInfo.username + \" may not delete \" + request.name'\n",
			state:   engine.StateFail,
			message: "alice may not delete web",
		},
		{
			name:    "messageExpression fails at runtime: falls back to message",
			with:    "  with:\n    message: protected\n    messageExpression: 'oldObject.metadata.annotations[\"owner\"] + \" owns this\"'\n",
			state:   engine.StateFail,
			message: "protected",
			reason:  "protected (messageExpression failed: with.messageExpression: no such key: annotations)",
		},
		{
			name:    "messageExpression fails at runtime without message: error, failurePolicy Fail denies",
			with:    "  with:\n    messageExpression: 'oldObject.metadata.annotations[\"owner\"] + \" owns this\"'\n",
			state:   engine.StateError,
			message: `policy "protect" failed: with.messageExpression: no such key: annotations`,
			reason:  "with.messageExpression: no such key: annotations",
		},
		{
			name:    "messageExpression fails at runtime without message: error, failurePolicy Ignore admits",
			with:    "  with:\n    messageExpression: 'oldObject.metadata.annotations[\"owner\"]'\n  failurePolicy: Ignore\n",
			state:   engine.StateError,
			allowed: true,
			reason:  "with.messageExpression: no such key: annotations",
			warning: "Evaluation failed for Celadon policy 'protect' (failurePolicy Ignore): the request was admitted without it",
		},
		{
			name:    "messageExpression returns an empty string: message",
			with:    "  with:\n    message: protected\n    messageExpression: '\"  \"'\n",
			state:   engine.StateFail,
			message: "protected",
			reason:  "protected (messageExpression returned an empty string)",
		},
		{
			name:    "messageExpression returns an empty string, no message: still denied",
			with:    "  with:\n    messageExpression: oldObject.metadata.?annotations.owner.orValue(\"\")\n",
			state:   engine.StateFail,
			message: `denied by policy "protect"`,
		},
		{
			name:    "messageExpression of type dyn returning a string",
			with:    "  with:\n    messageExpression: oldObject.metadata.labels.app\n",
			state:   engine.StateFail,
			message: "web",
		},
		{
			name:    "enforcement Warn: allowed with a warning",
			with:    "  with:\n    messageExpression: '\"deployment \" + oldObject.metadata.name + \" is protected\"'\n  enforcement: Warn\n",
			state:   engine.StateWarn,
			allowed: true,
			warning: "protect: deployment web is protected",
		},
		{
			name:    "enforcement Audit: allowed with an audit annotation and a warning",
			with:    "  with:\n    message: protected Deployment deleted\n  enforcement: Audit\n",
			state:   engine.StateFail,
			allowed: true,
			audit:   "protected Deployment deleted",
			warning: "protect (audit): protected Deployment deleted",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := compilePolicies(t, denyPolicy(c.with))
			old := c.old
			if old == "" {
				old = protectedDeployment
			}
			d := evaluate(t, snap, admissionRequest(t, admissionv1.Delete, nil, yamlJSON(t, old)), engine.EvalOptions{})
			if len(d.Results) != 1 {
				t.Fatalf("results %+v", d.Results)
			}
			r := d.Results[0]
			if r.State != c.state || d.Allowed != c.allowed {
				t.Fatalf("state %s allowed %v (reason %q, message %q); want %s %v", r.State, d.Allowed, r.Reason, d.Message, c.state, c.allowed)
			}
			if d.Message != c.message {
				t.Errorf("message %q, want %q", d.Message, c.message)
			}
			if c.reason != "" && r.Reason != c.reason {
				t.Errorf("reason %q, want %q", r.Reason, c.reason)
			}
			checkWarnings(t, d, c.warning)
			if d.AuditAnnotations["protect"] != c.audit || (c.audit == "" && len(d.AuditAnnotations) > 0) {
				t.Errorf("audit annotations %v, want %q", d.AuditAnnotations, c.audit)
			}
			if len(d.Patch) != 0 {
				t.Errorf("deny patched: %v", d.Patch)
			}
		})
	}
}

// TestDenyForbidsAnOperation denies on CREATE from the new object, and
// lets other objects through.
func TestDenyForbidsAnOperation(t *testing.T) {
	snap := compilePolicies(t, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: no-host-network
spec:
  match:
    resources: [pods]
    operations: [CREATE, UPDATE]
    conditions:
    - expression: object.spec.?hostNetwork.orValue(false)
  action: deny
  with:
    messageExpression: '"pod " + object.metadata.name + " may not use the host network"'
`)
	pod := `apiVersion: v1
kind: Pod
metadata: {name: sniffer, namespace: default}
spec:
  hostNetwork: true
  containers: [{name: c, image: busybox}]
`
	d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil), engine.EvalOptions{})
	if d.Allowed || d.Message != "pod sniffer may not use the host network" {
		t.Fatalf("allowed %v message %q (%s)", d.Allowed, d.Message, statesOf(d))
	}
	ok := strings.Replace(pod, "hostNetwork: true", "hostNetwork: false", 1)
	d = evaluate(t, snap, admissionRequest(t, admissionv1.Create, yamlJSON(t, ok), nil), engine.EvalOptions{})
	if !d.Allowed || statesOf(d) != "no-host-network=skip" {
		t.Fatalf("allowed %v (%s)", d.Allowed, statesOf(d))
	}
	// The mutating phase does not run deny.
	d = evaluate(t, snap, admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil), engine.EvalOptions{Phase: engine.PhaseMutating})
	if !d.Allowed || len(d.Results) != 0 {
		t.Fatalf("mutating phase: allowed %v (%s)", d.Allowed, statesOf(d))
	}
}

// TestDenyLoadErrors checks that bad arguments are load errors at the line
// of the offending field.
func TestDenyLoadErrors(t *testing.T) {
	head := "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata:\n  name: x\nspec:\n  match:\n    resources: [pods]\n  action: deny\n" // 8 lines
	cases := []struct {
		name, with, want string
	}{
		{"no with at all", "", `p.yaml:8:3: policy "x": with: message or messageExpression is required`},
		{"empty with", "  with: {}\n", `p.yaml:9:3: policy "x": with: message or messageExpression is required`},
		{"empty message", "  with:\n    message: \"\"\n", `p.yaml:9:3: policy "x": with: message or messageExpression is required`},
		{"blank message", "  with:\n    message: \"  \"\n", `p.yaml:10:5: policy "x": with.message: is blank`},
		{"unknown field", "  with:\n    message: no\n    reason: because\n", `p.yaml:11:5: policy "x": with.reason: unknown field`},
		{"wrong type", "  with:\n    messageExpression: x\n    message: [a, b]\n", `p.yaml:11:5: policy "x": with.message: expected a string, got a list`},
		{"expression does not compile", "  with:\n    messageExpression: '\"deployment \" + oldObject.metadata.name +'\n", `p.yaml:10:66: policy "x": with.messageExpression: CEL: Syntax error`},
		{"expression is not a string", "  with:\n    messageExpression: 'size(oldObject.metadata.name)'\n", `p.yaml:10:25: policy "x": with.messageExpression: CEL: must evaluate to string, not int`},
		{"expression error on its third line", "  with:\n    message: m\n    messageExpression: |\n      \"deployment \" +\n      oldObject.metadata.name +\n      nosuchvar\n", `p.yaml:14:7: policy "x": with.messageExpression: CEL: undeclared reference to 'nosuchvar'`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkLoadError(t, compileErrors(t, head+c.with), c.want)
		})
	}
	// A blank message does not hide a broken messageExpression.
	checkLoadErrors(t, compileErrors(t, head+"  with:\n    message: \"  \"\n    messageExpression: 'size(oldObject.metadata.name)'\n"), []string{
		`p.yaml:10:5: policy "x": with.message: is blank`,
		`p.yaml:11:25: policy "x": with.messageExpression: CEL: must evaluate to string, not int`,
	})
}
