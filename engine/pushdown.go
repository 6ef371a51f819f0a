package engine

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
)

// Variables the API server binds when it evaluates a webhook's
// matchConditions to null or not at all: an expression reading them cannot
// be evaluated before the call.
var notPushable = map[string]string{
	"namespaceObject": "reads namespaceObject, which the API server does not bind for webhooks",
	"variables":       "reads variables that cannot be inlined",
}

// ConditionsExpression returns the policy's conditions as one CEL
// expression with the same outcome as the engine's evaluation of them, for
// the API server to evaluate before it calls the webhook (matchConditions):
// true when all are true, false as soon as one is false, an error as soon
// as one errors, in order. Variables are inlined (cel.bind when a variable is
// read more than once, so that it is still evaluated at most once).
//
// It returns "" for a policy without conditions, and an error saying why
// when the conditions cannot be evaluated outside Celadon: they read
// namespaceObject, they return dyn rather than bool (the API server wants
// a bool, and the engine errors on anything else), or the policy did not
// compile.
func (p *CompiledPolicy) ConditionsExpression() (string, error) {
	if p.Err != nil {
		return "", errors.New("the policy did not compile")
	}
	if len(p.conditions) == 0 {
		return "", nil
	}
	env, err := trackingEnv(p.env.env)
	if err != nil {
		return "", err
	}
	inline, err := p.inlineVariables(env)
	if err != nil {
		return "", err
	}
	opt, err := cel.NewStaticOptimizer(cel.NewInliningOptimizer(inline...))
	if err != nil {
		return "", err
	}
	texts := make([]string, len(p.conditions))
	for i, c := range p.conditions {
		checked, iss := env.Compile(c.source)
		if iss.Err() != nil {
			return "", fmt.Errorf("condition %s: %v", c.name, iss.Err())
		}
		if !checked.OutputType().IsExactType(cel.BoolType) {
			return "", fmt.Errorf("condition %s returns %s, not bool", c.name, checked.OutputType())
		}
		if len(inline) > 0 {
			if checked, iss = opt.Optimize(env, checked); iss.Err() != nil {
				return "", fmt.Errorf("condition %s: inlining variables: %v", c.name, iss.Err())
			}
		}
		if why := readsUnbound(checked); why != "" {
			return "", fmt.Errorf("condition %s %s", c.name, why)
		}
		if texts[i], err = cel.AstToString(checked); err != nil {
			return "", fmt.Errorf("condition %s: %v", c.name, err)
		}
	}
	// c1 ? (c2 ? c3 : false) : false: CEL's && is commutative over errors
	// (false && error is false), while the engine stops at the first error.
	out := "(" + texts[len(texts)-1] + ")"
	for i := len(texts) - 2; i >= 0; i-- {
		out = "(" + texts[i] + ") ? " + out + " : false"
		if i > 0 {
			out = "(" + out + ")"
		}
	}
	if len(texts) == 1 {
		out = texts[0]
	}
	return out, nil
}

// sharedTrackingEnv is the shared policy environment extended to keep
// macro calls, which printing a compiled expression back needs. Extending
// costs milliseconds, and most policies declare no variables and share it.
var sharedTrackingEnv = sync.OnceValues(func() (*cel.Env, error) {
	_, shared, err := sharedEnvs()
	if err != nil {
		return nil, err
	}
	return shared.Extend(cel.EnableMacroCallTracking())
})

func trackingEnv(env *cel.Env) (*cel.Env, error) {
	if _, shared, _ := sharedEnvs(); env == shared {
		return sharedTrackingEnv()
	}
	return env.Extend(cel.EnableMacroCallTracking())
}

// inlineVariables returns the policy's variables as inline definitions,
// each with the ones before it already inlined, compiled in env.
func (p *CompiledPolicy) inlineVariables(env *cel.Env) ([]*cel.InlineVariable, error) {
	var out []*cel.InlineVariable
	for _, v := range p.env.variables {
		checked, iss := env.Compile(v.source)
		if iss.Err() != nil {
			return nil, fmt.Errorf("variable %s: %v", v.name, iss.Err())
		}
		if len(out) > 0 {
			opt, err := cel.NewStaticOptimizer(cel.NewInliningOptimizer(out...))
			if err != nil {
				return nil, err
			}
			if checked, iss = opt.Optimize(env, checked); iss.Err() != nil {
				return nil, fmt.Errorf("variable %s: inlining variables: %v", v.name, iss.Err())
			}
		}
		out = append(out, cel.NewInlineVariableWithAlias("variables."+v.name, "celadonVariable_"+v.name, checked))
	}
	return out, nil
}

// readsUnbound says which variable of notPushable the expression reads, or
// "" when none.
func readsUnbound(a *cel.Ast) string {
	var why []string
	ast.MatchDescendants(ast.NavigateAST(a.NativeRep()), func(e ast.NavigableExpr) bool {
		if e.Kind() == ast.IdentKind {
			if w, ok := notPushable[e.AsIdent()]; ok {
				why = append(why, w)
			}
		}
		return false
	})
	if len(why) == 0 {
		return ""
	}
	return strings.Join(why, "; ")
}
