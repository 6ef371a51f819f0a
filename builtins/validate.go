package builtins

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	celconfig "k8s.io/apiserver/pkg/apis/cel"

	"celadon.io/celadon/engine"
)

func init() { register(validate{}) }

// validate runs a ValidatingAdmissionPolicy's validations and audit
// annotations, with its semantics, so that a VAP's spec can be pasted in.
// Unlike the API server, which reports the first failing validation, it
// reports them all; the denial's status reason, and so its code, is the
// first failing validation's, as the API server's.
type validate struct{}

// validateArgs is validate's spec.with: a VAP spec's two lists.
type validateArgs struct {
	Validations      []vapValidation      `json:"validations"`
	AuditAnnotations []vapAuditAnnotation `json:"auditAnnotations"`
}

// vapValidation is a VAP's spec.validations[].
type vapValidation struct {
	Expression        string `json:"expression"`
	Message           string `json:"message"`
	MessageExpression string `json:"messageExpression"`
	Reason            string `json:"reason"`
}

// vapAuditAnnotation is a VAP's spec.auditAnnotations[].
type vapAuditAnnotation struct {
	Key             string `json:"key"`
	ValueExpression string `json:"valueExpression"`
}

// maxAuditAnnotationValue is where the API server cuts a VAP's annotation.
const maxAuditAnnotationValue = 10 * 1024

type compiledValidation struct {
	expr, messageExpr *engine.Expression
	// message is the message to use when messageExpr gives none.
	message string
	reason  string
}

type compiledAnnotation struct {
	key  string
	expr *engine.Expression
}

// Name is the policy's spec.action.
func (validate) Name() string { return "validate" }

// Type is Validating: validate never changes the object.
func (validate) Type() engine.ActionType { return engine.Validating }

// Compile checks spec.with as the API server checks a VAP's spec.
func (validate) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args validateArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	if len(args.Validations) == 0 && len(args.AuditAnnotations) == 0 {
		return nil, fmt.Errorf("with: validations or auditAnnotations must contain at least one item")
	}
	a := &validateAction{ignore: c.FailurePolicy() == engine.Ignore}
	// Every error is reported, each located, not the first: the CEL
	// errors of every expression and the errors of every field.
	var errs []error
	for i, v := range args.Validations {
		field := fmt.Sprintf("validations[%d]", i)
		cv := compiledValidation{reason: "Invalid"}
		var err error
		if strings.TrimSpace(v.Expression) == "" {
			errs = append(errs, c.FieldError(field+".expression", "is required"))
		} else if cv.expr, err = c.CompileExpression(field+".expression", v.Expression, cel.BoolType); err != nil {
			errs = append(errs, err)
		}
		// A YAML block scalar ends with a newline: as the API server, which
		// trims it, but any other line break is refused.
		msg := strings.TrimSpace(v.Message)
		switch {
		case v.Message != "" && msg == "":
			errs = append(errs, c.FieldError(field+".message", "must be non-empty if specified"))
		case strings.ContainsAny(msg, "\r\n"):
			errs = append(errs, c.FieldError(field+".message", "must not contain line breaks"))
		}
		if v.MessageExpression != "" {
			if cv.messageExpr, err = c.CompileExpression(field+".messageExpression", v.MessageExpression, cel.StringType); err != nil {
				errs = append(errs, err)
			}
		}
		cv.message = msg
		if msg == "" {
			cv.message = "failed expression: " + strings.TrimSpace(v.Expression)
		}
		if v.Reason != "" {
			if _, ok := engine.DenialCode(metav1.StatusReason(v.Reason)); !ok {
				var reasons []string
				for _, r := range engine.DenialReasons {
					reasons = append(reasons, string(r.Reason))
				}
				errs = append(errs, c.FieldError(field+".reason", "must be one of %s, not %q", strings.Join(reasons, ", "), v.Reason))
			}
			cv.reason = v.Reason
		}
		a.validations = append(a.validations, cv)
	}
	seen := map[string]bool{}
	for i, an := range args.AuditAnnotations {
		field := fmt.Sprintf("auditAnnotations[%d]", i)
		// The API server keeps a webhook's annotation only when the key
		// is one qualified-name part; the engine prefixes it with the
		// policy's name and a dot.
		full := c.Policy + "." + an.Key
		switch {
		case an.Key == "":
			errs = append(errs, c.FieldError(field+".key", "is required"))
		case seen[an.Key]:
			errs = append(errs, c.FieldError(field+".key", "%q is given twice", an.Key))
		case strings.Contains(an.Key, "/"):
			errs = append(errs, c.FieldError(field+".key", "must not contain '/': it is recorded as %q", c.Policy+"."+an.Key))
		case len(validation.IsQualifiedName(full)) > 0:
			errs = append(errs, c.FieldError(field+".key", "%q, as recorded, must be a qualified name of at most 63 characters: %s", full, strings.Join(validation.IsQualifiedName(full), "; ")))
		}
		seen[an.Key] = true
		if strings.TrimSpace(an.ValueExpression) == "" {
			errs = append(errs, c.FieldError(field+".valueExpression", "is required"))
			continue
		}
		e, err := c.CompileExpression(field+".valueExpression", an.ValueExpression, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if t := e.OutputType(); !t.IsExactType(cel.StringType) && !t.IsExactType(cel.NullType) && !t.IsExactType(cel.DynType) {
			errs = append(errs, c.FieldError(field+".valueExpression", "must evaluate to string or null, not %s", t))
			continue
		}
		a.annotations = append(a.annotations, compiledAnnotation{key: an.Key, expr: e})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(a.validations) > 1 {
		// Most requests pass every validation: one program tells, rather
		// than one per validation.
		parts := make([]*engine.Expression, len(a.validations))
		for i, v := range a.validations {
			parts[i] = v.expr
		}
		if all, err := c.CompileConjunction("validations", parts); err == nil {
			a.all = all
		}
	}
	return a, nil
}

type validateAction struct {
	validations []compiledValidation
	// all is the validations' conjunction, when there are several.
	all         *engine.Expression
	annotations []compiledAnnotation
	// ignore is failurePolicy Ignore: as in the API server, an expression
	// that errors is then left out, and the others still decide.
	ignore bool
}

// Run evaluates every validation, then every audit annotation.
func (a *validateAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	var out engine.Outcome
	var messages, reasons, errs []string
	// fatal says an error must stop the policy, whatever failurePolicy.
	fatal := func(err error) bool {
		return errors.Is(err, engine.ErrCostBudgetExceeded) || ac.Err() != nil
	}
	validations := a.validations
	if a.all != nil && ac.Holds(a.all) {
		validations = nil
	}
	for i := range validations {
		v := &validations[i]
		res, err := ac.Eval(v.expr)
		if err != nil {
			if fatal(err) {
				return engine.Outcome{}, err
			}
			errs = append(errs, err.Error())
			continue
		}
		// As in the API server, anything but true fails (a dyn result).
		if res == true {
			continue
		}
		msg, err := v.messageOf(ac)
		if err != nil {
			return engine.Outcome{}, err
		}
		if len(messages) == 0 {
			out.StatusReason = metav1.StatusReason(v.reason)
		}
		messages = append(messages, msg)
		reasons = append(reasons, v.reason+": "+msg)
	}
	for _, an := range a.annotations {
		res, err := ac.Eval(an.expr)
		if err == nil {
			switch s := res.(type) {
			case nil:
				continue
			case string:
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				if out.AuditAnnotations == nil {
					out.AuditAnnotations = map[string]string{}
				}
				out.AuditAnnotations[an.key] = truncateUTF8(s, maxAuditAnnotationValue)
				continue
			default:
				err = fmt.Errorf("%s: must evaluate to string or null, not %T", an.key, res)
			}
		}
		if fatal(err) {
			return engine.Outcome{}, err
		}
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 && (!a.ignore || len(messages) == 0) {
		return engine.Outcome{}, errors.New(strings.Join(errs, "; "))
	}
	if len(messages) > 0 {
		out.Violation = strings.Join(messages, "; ")
		out.Reason = strings.Join(reasons, "; ")
		if len(errs) > 0 {
			out.Reason += " (ignored errors: " + strings.Join(errs, "; ") + ")"
		}
	}
	return out, nil
}

// messageOf returns a failing validation's message: messageExpression's,
// unless it errors or gives an empty, long or multi-line string, as the
// API server does. Only the cost budget running out is an error.
func (v *compiledValidation) messageOf(ac *engine.ActionContext) (string, error) {
	if v.messageExpr == nil {
		return v.message, nil
	}
	res, err := ac.Eval(v.messageExpr)
	if err != nil {
		if errors.Is(err, engine.ErrCostBudgetExceeded) || ac.Err() != nil {
			return "", err
		}
		return v.message, nil
	}
	s, _ := res.(string)
	s = strings.TrimSpace(s)
	if s == "" || len(s) > celconfig.MaxEvaluatedMessageExpressionSizeBytes || strings.ContainsAny(s, "\n") {
		return v.message, nil
	}
	return s, nil
}

// truncateUTF8 cuts s to at most n bytes, at a character boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
