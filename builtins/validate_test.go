package builtins

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"celadon.io/celadon/engine"
)

// validateDeployment is the Deployment the validate tests admit.
const validateDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 7
  template:
    spec:
      containers:
      - {name: web, image: docker.io/nginx:1.27}
`

// validatePolicy is a policy named p running validate on Deployment
// CREATEs, with body as the rest of its spec (with, variables, ...).
func validatePolicy(body string) string {
	return "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata:\n  name: p\nspec:\n  match:\n    resources: [apps/deployments]\n    operations: [CREATE]\n  action: validate\n" + body
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		state   engine.State
		allowed bool
		message string // denial message
		reason  string // the result's reason
		// status is the decision's status reason: Invalid when unset and
		// the policy fails, none when it errors.
		status  metav1.StatusReason
		warning string
		audit   map[string]string
	}{
		{
			name:    "every validation holds",
			body:    "  with:\n    validations:\n    - expression: object.spec.replicas > 0\n    - expression: object.metadata.name == 'web'\n",
			state:   engine.StatePass,
			allowed: true,
		},
		{
			name: "every failing validation is reported, in order, with its reason in the result",
			body: `  with:
    validations:
    - expression: object.spec.replicas <= 5
      message: at most 5 replicas
    - expression: object.metadata.name == 'web'
      message: never shown
    - expression: object.spec.template.spec.containers.all(c, c.image.startsWith('registry.example.com/'))
      message: images must come from registry.example.com
      reason: Forbidden
`,
			state:   engine.StateFail,
			message: "at most 5 replicas; images must come from registry.example.com",
			reason:  "Invalid: at most 5 replicas; Forbidden: images must come from registry.example.com",
		},
		{
			name: "the first failing validation's reason is the denial's",
			body: `  with:
    validations:
    - expression: object.metadata.name == 'web'
      reason: Unauthorized
    - expression: object.spec.template.spec.containers.all(c, c.image.startsWith('registry.example.com/'))
      message: images must come from registry.example.com
      reason: RequestEntityTooLarge
    - expression: object.spec.replicas <= 5
      message: at most 5 replicas
      reason: Forbidden
`,
			state:   engine.StateFail,
			message: "images must come from registry.example.com; at most 5 replicas",
			status:  metav1.StatusReasonRequestEntityTooLarge,
		},
		{
			name:    "messageExpression wins over message",
			body:    "  with:\n    validations:\n    - expression: object.spec.replicas <= 5\n      message: too many replicas\n      messageExpression: \"'replicas: ' + string(object.spec.replicas) + ' > 5'\"\n",
			state:   engine.StateFail,
			message: "replicas: 7 > 5",
		},
		{
			name:    "messageExpression errors: message",
			body:    "  with:\n    validations:\n    - expression: object.spec.replicas <= 5\n      message: too many replicas\n      messageExpression: object.metadata.annotations.owner\n",
			state:   engine.StateFail,
			message: "too many replicas",
		},
		{
			name:    "messageExpression blank: message",
			body:    "  with:\n    validations:\n    - expression: object.spec.replicas <= 5\n      message: too many replicas\n      messageExpression: \"'  '\"\n",
			state:   engine.StateFail,
			message: "too many replicas",
		},
		{
			name:    "messageExpression multi-line: message",
			body:    "  with:\n    validations:\n    - expression: object.spec.replicas <= 5\n      message: too many replicas\n      messageExpression: \"'too\\\\nmany'\"\n",
			state:   engine.StateFail,
			message: "too many replicas",
		},
		{
			name:    "no message: the API server's default",
			body:    "  with:\n    validations:\n    - expression: \"object.spec.replicas <= 5 \"\n      messageExpression: \"''\"\n",
			state:   engine.StateFail,
			message: "failed expression: object.spec.replicas <= 5",
		},
		{
			name:    "a dyn result other than true fails, as in the API server",
			body:    "  with:\n    validations:\n    - expression: dyn(object.metadata.labels.app)\n      message: not true\n",
			state:   engine.StateFail,
			message: "not true",
		},
		{
			name:    "policy variables",
			body:    "  variables:\n  - name: max\n    expression: \"5\"\n  with:\n    validations:\n    - expression: object.spec.replicas <= variables.max\n      messageExpression: \"'at most ' + string(variables.max)\"\n",
			state:   engine.StateFail,
			message: "at most 5",
		},
		{
			name:    "an expression errors, failurePolicy Fail: denied with the error",
			body:    "  with:\n    validations:\n    - expression: object.metadata.annotations.owner == 'x'\n    - expression: object.spec.replicas <= 5\n",
			state:   engine.StateError,
			message: `policy "p" failed: with.validations[0].expression: no such key: annotations`,
			reason:  "with.validations[0].expression: no such key: annotations",
		},
		{
			name:    "an expression errors, failurePolicy Ignore: the others still deny",
			body:    "  failurePolicy: Ignore\n  with:\n    validations:\n    - expression: object.metadata.annotations.owner == 'x'\n    - expression: object.spec.replicas <= 5\n      message: at most 5 replicas\n",
			state:   engine.StateFail,
			message: "at most 5 replicas",
			reason:  "Invalid: at most 5 replicas (ignored errors: with.validations[0].expression: no such key: annotations)",
		},
		{
			name:    "an expression errors, failurePolicy Ignore, nothing else fails: admitted",
			body:    "  failurePolicy: Ignore\n  with:\n    validations:\n    - expression: object.metadata.annotations.owner == 'x'\n    - expression: object.spec.replicas > 5\n",
			state:   engine.StateError,
			allowed: true,
			reason:  "with.validations[0].expression: no such key: annotations",
			warning: "Evaluation failed for Celadon policy 'p' (failurePolicy Ignore): the request was admitted without it",
		},
		{
			name:    "enforcement Warn",
			body:    "  enforcement: Warn\n  with:\n    validations:\n    - {expression: object.spec.replicas <= 5, message: at most 5}\n    - {expression: object.spec.replicas <= 6, message: at most 6}\n",
			state:   engine.StateWarn,
			allowed: true,
			warning: "p: at most 5; at most 6",
		},
		{
			name: "audit annotations, recorded whether or not a validation fails; null and blank values are not",
			body: `  with:
    validations:
    - expression: object.spec.replicas <= 5
      message: at most 5 replicas
    auditAnnotations:
    - key: replicas
      valueExpression: "'replicas: ' + string(object.spec.replicas)"
    - key: owner
      valueExpression: "has(object.metadata.annotations) ? dyn(object.metadata.annotations.owner) : null"
    - key: blank
      valueExpression: "' '"
`,
			state:   engine.StateFail,
			message: "at most 5 replicas",
			audit:   map[string]string{"p.replicas": "replicas: 7"},
		},
		{
			name:    "audit annotations alone",
			body:    "  with:\n    auditAnnotations:\n    - {key: image, valueExpression: \"object.spec.template.spec.containers[0].image\"}\n",
			state:   engine.StatePass,
			allowed: true,
			audit:   map[string]string{"p.image": "docker.io/nginx:1.27"},
		},
		{
			name:    "an audit annotation errors, failurePolicy Fail",
			body:    "  with:\n    auditAnnotations:\n    - {key: owner, valueExpression: object.metadata.annotations.owner}\n",
			state:   engine.StateError,
			message: `policy "p" failed: with.auditAnnotations[0].valueExpression: no such key: annotations`,
		},
		{
			name:    "an audit annotation of type dyn that is no string",
			body:    "  with:\n    auditAnnotations:\n    - {key: replicas, valueExpression: object.spec.replicas}\n",
			state:   engine.StateError,
			message: `policy "p" failed: replicas: must evaluate to string or null, not int64`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := compilePolicies(t, validatePolicy(c.body))
			req := admissionRequest(t, admissionv1.Create, yamlJSON(t, validateDeployment), nil)
			d := evaluate(t, snap, req, engine.EvalOptions{})
			r := d.Results[0]
			if r.State != c.state || d.Allowed != c.allowed {
				t.Fatalf("state %s, allowed %v (%s); want %s, %v", r.State, d.Allowed, r.Reason, c.state, c.allowed)
			}
			if d.Message != c.message {
				t.Errorf("message %q, want %q", d.Message, c.message)
			}
			if c.reason != "" && r.Reason != c.reason {
				t.Errorf("reason %q, want %q", r.Reason, c.reason)
			}
			wantStatus := c.status
			if wantStatus == "" && c.state == engine.StateFail {
				wantStatus = metav1.StatusReasonInvalid
			}
			if d.StatusReason != wantStatus {
				t.Errorf("status reason %q, want %q", d.StatusReason, wantStatus)
			}
			checkWarnings(t, d, c.warning)
			if fmt.Sprint(d.AuditAnnotations) != fmt.Sprint(c.audit) {
				t.Errorf("audit annotations %v, want %v", d.AuditAnnotations, c.audit)
			}
		})
	}
}

// TestValidateLongValues: a messageExpression over the API server's 5 KB
// gives way to message; an audit annotation is cut at 10 KiB, never
// inside a character.
func TestValidateLongValues(t *testing.T) {
	long := strings.Repeat("é", 3000) // 6000 bytes
	snap := compilePolicies(t, validatePolicy(fmt.Sprintf("  with:\n    validations:\n    - expression: 'false'\n      message: short\n      messageExpression: \"'%s'\"\n    auditAnnotations:\n    - key: long\n      valueExpression: \"'x%s%s'\"\n", long, long, long)))
	req := admissionRequest(t, admissionv1.Create, yamlJSON(t, validateDeployment), nil)
	d := evaluate(t, snap, req, engine.EvalOptions{})
	if d.Message != "short" {
		t.Errorf("message %.40q…, want short", d.Message)
	}
	if v := d.AuditAnnotations["p.long"]; len(v) != 10*1024-1 || !utf8.ValidString(v) {
		t.Errorf("annotation of %d bytes (valid UTF-8: %v), want 10239", len(v), utf8.ValidString(v))
	}
}

// TestValidateCostBudget: a messageExpression that exhausts the request's
// budget is an error, as in the API server, not a fallback to message.
func TestValidateCostBudget(t *testing.T) {
	snap := compilePolicies(t, validatePolicy("  with:\n    validations:\n    - expression: object.spec.replicas <= 5\n      message: at most 5\n      messageExpression: \"'x'\"\n"))
	req := admissionRequest(t, admissionv1.Create, yamlJSON(t, validateDeployment), nil)
	d := evaluate(t, snap, req, engine.EvalOptions{CostBudget: 2})
	if r := d.Results[0]; r.State != engine.StateError || !strings.Contains(r.Reason, "budget") {
		t.Fatalf("state %s (%s), want an error on the budget", r.State, r.Reason)
	}
}

// TestValidateLoadErrors checks that bad arguments are load errors at the
// line of the offending field, as the API server refuses such a VAP.
func TestValidateLoadErrors(t *testing.T) {
	head := validatePolicy("") // 9 lines
	cases := []struct {
		name, with, want string
	}{
		{"nothing to do", "  with: {}\n", `p.yaml:10:3: policy "p": with: validations or auditAnnotations must contain at least one item`},
		{"no expression", "  with:\n    validations:\n    - message: m\n", `p.yaml:12:7: policy "p": with.validations[0].expression: is required`},
		{"expression is not a bool", "  with:\n    validations:\n    - expression: object.spec.replicas + 1\n", `p.yaml:12:19: policy "p": with.validations[0].expression: CEL: must evaluate to bool, not int`},
		{"expression does not compile", "  with:\n    validations:\n    - expression: 'true'\n    - expression: object.spec.replicas <\n", `p.yaml:13:41: policy "p": with.validations[1].expression: CEL: Syntax error`},
		{"messageExpression is not a string", "  with:\n    validations:\n    - expression: 'true'\n      messageExpression: object.spec.replicas + 1\n", `p.yaml:13:26: policy "p": with.validations[0].messageExpression: CEL: must evaluate to string, not int`},
		{"blank message", "  with:\n    validations:\n    - expression: 'true'\n      message: ' '\n", `p.yaml:13:7: policy "p": with.validations[0].message: must be non-empty if specified`},
		{"multi-line message", "  with:\n    validations:\n    - expression: 'true'\n      message: \"a\\nb\"\n", `p.yaml:13:7: policy "p": with.validations[0].message: must not contain line breaks`},
		{"unknown reason", "  with:\n    validations:\n    - expression: 'true'\n      reason: NotFound\n", `p.yaml:13:7: policy "p": with.validations[0].reason: must be one of Unauthorized, Forbidden, Invalid, RequestEntityTooLarge, not "NotFound"`},
		{"unknown field", "  with:\n    validations:\n    - expression: 'true'\n      messageExpresion: x\n", `p.yaml:13:7: policy "p": with.validations[0].messageExpresion: unknown field`},
		{"no key", "  with:\n    auditAnnotations:\n    - valueExpression: \"'x'\"\n", `p.yaml:12:7: policy "p": with.auditAnnotations[0].key: is required`},
		{"key twice", "  with:\n    auditAnnotations:\n    - {key: a, valueExpression: \"'x'\"}\n    - {key: a, valueExpression: \"'y'\"}\n", `p.yaml:13:8: policy "p": with.auditAnnotations[1].key: "a" is given twice`},
		{"key with a slash", "  with:\n    auditAnnotations:\n    - {key: a/b, valueExpression: \"'x'\"}\n", `p.yaml:12:8: policy "p": with.auditAnnotations[0].key: must not contain '/'`},
		{"key too long", "  with:\n    auditAnnotations:\n    - {key: " + strings.Repeat("k", 62) + ", valueExpression: \"'x'\"}\n", `p.yaml:12:8: policy "p": with.auditAnnotations[0].key: "p.kkk`},
		{"key not a name", "  with:\n    auditAnnotations:\n    - {key: a b, valueExpression: \"'x'\"}\n", `p.yaml:12:8: policy "p": with.auditAnnotations[0].key: "p.a b", as recorded, must be a qualified name`},
		{"valueExpression is not a string", "  with:\n    auditAnnotations:\n    - {key: a, valueExpression: object.spec.replicas > 1}\n", `p.yaml:12:16: policy "p": with.auditAnnotations[0].valueExpression: must evaluate to string or null, not bool`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkLoadError(t, compileErrors(t, head+c.with), c.want)
		})
	}
}

// TestValidateEveryLoadError: a policy with several bad fields and
// expressions reports every one, each at its own line, in order: a field
// error does not drop the CEL errors before or after it.
func TestValidateEveryLoadError(t *testing.T) {
	src := validatePolicy(`  with:
    validations:
    - expression: object.spec.replicas + 1
      reason: NotFound
    - message: m
    - expression: 'true'
      message: ' '
      messageExpression: object.spec.replicas
    auditAnnotations:
    - {key: a/b, valueExpression: "'x'"}
    - {key: c, valueExpression: object.spec.replicas > 1}
    - {key: d, valueExpression: 'object.spec.'}
`)
	want := []string{
		`p.yaml:12:19: policy "p": with.validations[0].expression: CEL: must evaluate to bool, not int`,
		`p.yaml:13:7: policy "p": with.validations[0].reason: must be one of`,
		`p.yaml:14:7: policy "p": with.validations[1].expression: is required`,
		`p.yaml:16:7: policy "p": with.validations[2].message: must be non-empty if specified`,
		`p.yaml:17:26: policy "p": with.validations[2].messageExpression: CEL: must evaluate to string, not int`,
		`p.yaml:19:8: policy "p": with.auditAnnotations[0].key: must not contain '/'`,
		`p.yaml:20:16: policy "p": with.auditAnnotations[1].valueExpression: must evaluate to string or null, not bool`,
		`p.yaml:21:`,
	}
	checkLoadErrors(t, compileErrors(t, src), want)
}

// TestValidateShortcutCostsTheSame: validate first tries all validations
// as one program; passing or not, the request's budget is charged what
// the validations cost one by one (here: as three one-validation policies).
func TestValidateShortcutCostsTheSame(t *testing.T) {
	exprs := []string{"object.spec.replicas > 0", "object.metadata.name.startsWith('we')", "object.spec.template.spec.containers.all(c, c.image.contains(':'))"}
	one := "  with:\n    validations:\n"
	var apart []string
	for i, e := range exprs {
		one += "    - expression: \"" + e + "\"\n"
		apart = append(apart, strings.Replace(validatePolicy("  with:\n    validations:\n    - expression: \""+e+"\"\n"), "name: p", fmt.Sprintf("name: p%d", i), 1))
	}
	for _, replicas := range []string{"7", "0"} {
		obj := yamlJSON(t, strings.Replace(validateDeployment, "replicas: 7", "replicas: "+replicas, 1))
		req := admissionRequest(t, admissionv1.Create, obj, nil)
		together := evaluate(t, compilePolicies(t, validatePolicy(one)), req, engine.EvalOptions{})
		separately := evaluate(t, compilePolicies(t, strings.Join(apart, "---\n")), req, engine.EvalOptions{})
		if together.Allowed != (replicas == "7") || together.Allowed != separately.Allowed {
			t.Fatalf("replicas %s: allowed %v, apart %v", replicas, together.Allowed, separately.Allowed)
		}
		if together.CostRemaining != separately.CostRemaining || together.CostRemaining == engine.DefaultCostBudget {
			t.Errorf("replicas %s: %d of the budget left, %d with the validations apart", replicas, together.CostRemaining, separately.CostRemaining)
		}
	}
}
