package builtins

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"

	"celadon.io/celadon/engine"
)

func init() { register(deny{}) }

// deny reports every request its policy matches as a violation; the policy's
// conditions say what is forbidden and its enforcement whether that denies,
// warns or audits.
type deny struct{}

// denyArgs is deny's spec.with. At least one field is required.
type denyArgs struct {
	// Message is the violation message, and the fallback when
	// MessageExpression fails or yields an empty string.
	Message string `json:"message"`
	// MessageExpression is a CEL expression returning the message, so it can
	// name the object (oldObject on DELETE).
	MessageExpression string `json:"messageExpression"`
}

// Name is the policy's spec.action.
func (deny) Name() string { return "deny" }

// Type is Validating: deny never changes the object.
func (deny) Type() engine.ActionType { return engine.Validating }

// Compile checks spec.with and compiles messageExpression.
func (deny) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args denyArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	// A YAML block scalar ends with a newline the client need not see.
	message := strings.TrimSpace(args.Message)
	if args.Message == "" && args.MessageExpression == "" {
		return nil, fmt.Errorf("with: message or messageExpression is required")
	}
	// Every error at once: a blank message and a broken messageExpression.
	var errs []error
	if args.Message != "" && message == "" {
		errs = append(errs, c.FieldError("message", "is blank"))
	}
	var expr *engine.Expression
	if args.MessageExpression != "" {
		var err error
		if expr, err = c.CompileExpression("messageExpression", args.MessageExpression, cel.StringType); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return engine.ActionFunc(func(ac *engine.ActionContext) (engine.Outcome, error) {
		if expr == nil {
			return engine.Outcome{Violation: message}, nil
		}
		msg, err := ac.EvalString(expr)
		if err != nil {
			// As in ValidatingAdmissionPolicy, a broken message must not turn
			// a denial into an error (which failurePolicy Ignore would admit).
			if message == "" {
				return engine.Outcome{}, err
			}
			return engine.Outcome{Violation: message, Reason: fmt.Sprintf("%s (messageExpression failed: %v)", message, err)}, nil
		}
		// An empty violation means "no violation" to the engine: never
		// return one.
		if msg = strings.TrimSpace(msg); msg == "" {
			msg = message
			if msg == "" {
				msg = fmt.Sprintf("denied by policy %q", ac.Policy)
			}
			return engine.Outcome{Violation: msg, Reason: msg + " (messageExpression returned an empty string)"}, nil
		}
		return engine.Outcome{Violation: msg}, nil
	}), nil
}
