package controllers

// Narrowing of the generated webhooks: an objectSelector and a
// namespaceSelector that every policy of a webhook implies, and one
// matchCondition, the OR of each policy's own match, so that a request no
// policy can match never leaves the API server. The pushed-down parts only
// decide whether the call happens; Celadon still evaluates everything.

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	"k8s.io/apiserver/pkg/cel/environment"

	"celadon.io/celadon/engine"
)

// MatchConditionName names the one matchCondition of a generated webhook.
const MatchConditionName = "celadon.io/a-policy-can-match"

// MaxMatchConditionShares bounds the policies' matches one matchCondition
// ORs. CEL's type checker takes time quadratic in the terms of an OR, and
// the API server checks the expression every time it loads the
// configuration: measured here, 1,000 terms took 2.2 s of CPU to check,
// 300 took 0.26 s and 100 took 0.04 s.
const MaxMatchConditionShares = 100

// PolicyPushdown says what the API server checks for one policy of a
// generated webhook before it calls Celadon.
type PolicyPushdown struct {
	Policy string `json:"policy"`
	// Webhook is the generated webhook serving the policy.
	Webhook string `json:"webhook"`
	// Expression is the policy's share of the webhook's matchCondition,
	// "true" when the webhook is called for every request its rules and
	// selectors let through.
	Expression string `json:"expression"`
	// Conditions is true when the policy's conditions are part of
	// Expression, or it has none.
	Conditions bool `json:"conditions"`
	// Reason says what was not pushed down and why, "" when all was.
	Reason string `json:"reason,omitempty"`
	// Autogen lists the pod controllers ("apps/deployments") the policy
	// also applies to, through their pod templates. On them only the
	// resource and operation are pushed down: the API server cannot build
	// the pod that the conditions and objectSelector read.
	Autogen []string `json:"autogen,omitempty"`
}

// Pushdown returns, for each policy of snap and each webhook serving it,
// what the API server checks before it calls Celadon, in the order of the
// policies then of the webhooks.
func Pushdown(snap *engine.Snapshot) ([]PolicyPushdown, error) {
	sets, err := webhookSets(snap)
	if err != nil {
		return nil, err
	}
	var out []PolicyPushdown
	for _, k := range webhookKeys {
		if s := sets[k]; s != nil {
			out = append(out, s.narrow(webhookName(k.t, k.fp)).pushdown...)
		}
	}
	order := map[string]int{}
	for i, p := range snap.Policies {
		order[p.Name()] = i
	}
	sort.SliceStable(out, func(i, j int) bool { return order[out[i].Policy] < order[out[j].Policy] })
	return out, nil
}

// narrowing is what a webhook's policies let the API server check.
type narrowing struct {
	objectSelector *metav1.LabelSelector
	// namespaceRequirements are ANDed with the excluded namespaces.
	namespaceRequirements []metav1.LabelSelectorRequirement
	matchConditions       []admissionregistrationv1.MatchCondition
	pushdown              []PolicyPushdown
}

// namespaceSelector is the webhook's namespaceSelector: the policies'
// common requirements and the exclusion of excluded.
func (n narrowing) namespaceSelector(excluded []string) *metav1.LabelSelector {
	reqs := slices.Clone(n.namespaceRequirements)
	reqs = append(reqs, metav1.LabelSelectorRequirement{
		Key:      NamespaceNameLabel,
		Operator: metav1.LabelSelectorOpNotIn,
		Values:   slices.Clone(excluded),
	})
	return &metav1.LabelSelector{MatchExpressions: reqs}
}

// narrow computes the narrowing of the webhook named name serving the
// set's policies.
func (s *ruleSet) narrow(name string) narrowing {
	var n narrowing
	// A policy on pod templates selects the template's labels, which an
	// objectSelector on the controller cannot read.
	objCommon := commonRequirements(s.policies, func(p *engine.CompiledPolicy) *metav1.LabelSelector {
		if len(p.Autogen()) > 0 {
			return nil
		}
		return p.Policy.Spec.Match.ObjectSelector
	})
	nsCommon := commonRequirements(s.policies, func(p *engine.CompiledPolicy) *metav1.LabelSelector { return p.Policy.Spec.Match.NamespaceSelector })
	// The API server never matches an object that cannot have labels (a
	// CONNECT's options) against an objectSelector, while the engine reads
	// it as having none: keep the selector in CEL for those.
	if len(objCommon) > 0 && !s.connect {
		n.objectSelector = &metav1.LabelSelector{MatchExpressions: objCommon}
	} else {
		objCommon = nil
	}
	n.namespaceRequirements = nsCommon

	var shares []string
	always, narrows := false, false
	for _, p := range s.policies {
		pd, narrowing := s.share(p, objCommon, nsCommon)
		pd.Webhook = name
		n.pushdown = append(n.pushdown, pd)
		shares = append(shares, pd.Expression)
		always = always || pd.Expression == "true"
		narrows = narrows || narrowing
	}
	// Shares of resources and operations only add up to the rules.
	if always || !narrows {
		return n
	}
	slices.Sort(shares)
	shares = slices.Compact(shares)
	if len(shares) > MaxMatchConditionShares {
		for i := range n.pushdown {
			n.pushdown[i].Expression, n.pushdown[i].Conditions = "true", false
			n.pushdown[i].Reason = fmt.Sprintf("the webhook serves %d distinct policy matches, more than the %d one matchCondition ORs, so it has none", len(shares), MaxMatchConditionShares)
		}
		return n
	}
	expr := "(" + strings.Join(shares, ") || (") + ")"
	if len(shares) == 1 {
		expr = shares[0]
	}
	if err := checkMatchCondition(expr); err != nil {
		for i := range n.pushdown {
			n.pushdown[i].Expression, n.pushdown[i].Conditions = "true", false
			n.pushdown[i].Reason = "the webhook's matchCondition does not compile in the API server's environment, so it has none: " + err.Error()
		}
		return n
	}
	n.matchConditions = []admissionregistrationv1.MatchCondition{{Name: MatchConditionName, Expression: expr}}
	return n
}

// share is one policy's share of its webhook's matchCondition: the
// resources and operations its rules do not already imply, its object
// selector's requirements that the webhook's does not carry, and its
// conditions, when the API server can evaluate them. narrows is true when
// the share checks more than resources and operations.
func (s *ruleSet) share(p *engine.CompiledPolicy, objCommon, nsCommon []metav1.LabelSelectorRequirement) (pd PolicyPushdown, narrows bool) {
	pd = PolicyPushdown{Policy: p.Name(), Conditions: true}
	var parts []string
	if !s.resourcesCoveredBy(p) {
		parts = append(parts, resourcesCEL(p.Resources()))
	}
	if ops := p.Operations(); !s.operationsCoveredBy(ops) {
		parts = append(parts, "request.operation in "+celStrings(ops))
	}
	ruleParts := len(parts)
	if p.Err == nil {
		if reqs := without(requirementsOf(p.Policy.Spec.Match.ObjectSelector), objCommon); len(reqs) > 0 {
			parts = append(parts, objectLabelsCEL(reqs))
		}
	}

	conds, err := p.ConditionsExpression()
	nsGuard := p.Err == nil && len(without(requirementsOf(p.Policy.Spec.Match.NamespaceSelector), nsCommon)) > 0
	switch {
	case err != nil:
		pd.Conditions, pd.Reason = false, "conditions not pushed down: "+err.Error()
	case conds == "":
	case nsGuard && p.Policy.Spec.FailurePolicy == engine.Fail:
		// The engine evaluates conditions only where the namespaceSelector
		// matches; an error elsewhere would fail requests it never sees.
		pd.Conditions, pd.Reason = false, "conditions not pushed down: its namespaceSelector, which the webhook cannot carry, must guard them, and an error would fail requests outside it (failurePolicy Fail)"
	default:
		parts = append(parts, conds)
	}
	switch len(parts) {
	case 0:
		pd.Expression = "true"
	case 1:
		pd.Expression = parts[0]
	default:
		pd.Expression = "(" + strings.Join(parts, ") && (") + ")"
	}
	narrows = len(parts) > ruleParts
	if ag := p.Autogen(); len(ag) > 0 {
		// On a pod controller the conditions and the object selector read
		// the pod template, which the API server cannot build: the share
		// checks the resource and operation only there.
		rules := make([]engine.ResourceRule, len(ag))
		for i, r := range ag {
			rules[i] = r.ResourceRule
		}
		ctl := "(" + resourcesCEL(rules) + ") && request.operation in " + celStrings(p.AutogenOperations())
		if pd.Expression != "true" {
			pd.Expression = "(" + pd.Expression + ") || (" + ctl + ")"
		}
		for _, r := range ag {
			pd.Autogen = append(pd.Autogen, r.Group+"/"+r.Resource)
		}
	}
	return pd, narrows
}

// resourcesCoveredBy reports whether the policy matches every resource the
// webhook's rules send, so that its share need not check.
func (s *ruleSet) resourcesCoveredBy(p *engine.CompiledPolicy) bool {
	rules := p.Resources()
	for r := range s.ops {
		if !slices.ContainsFunc(rules, func(a engine.ResourceRule) bool { return covers(a, r) }) {
			return false
		}
	}
	return true
}

// operationsCoveredBy reports whether ops holds every operation the
// webhook's rules send.
func (s *ruleSet) operationsCoveredBy(ops []string) bool {
	var have, want opSet
	for _, op := range ops {
		have |= opBit(op)
	}
	for _, o := range s.ops {
		want |= o
	}
	return want&^have == 0
}

// resourcesCEL matches request.resource and subResource as the engine's
// resource rules do. The API server leaves an empty subResource out of
// request, so that reading it errors.
func resourcesCEL(rules []engine.ResourceRule) string {
	var alts []string
	for _, r := range rules {
		var c []string
		if r.Group != "*" {
			c = append(c, "request.resource.group == "+celString(r.Group))
		}
		if r.Resource != "*" {
			c = append(c, "request.resource.resource == "+celString(r.Resource))
		}
		switch {
		case r.Subresource == "*" && r.Resource == "*":
		case r.Subresource == "*":
			c = append(c, "request.?subResource.orValue('') != ''")
		default:
			c = append(c, "request.?subResource.orValue('') == "+celString(r.Subresource))
		}
		if len(c) == 0 {
			return "true"
		}
		alts = append(alts, strings.Join(c, " && "))
	}
	sort.Strings(alts)
	if len(alts) == 1 {
		return alts[0]
	}
	return "(" + strings.Join(alts, ") || (") + ")"
}

// objectLabelsCEL matches the labels of the object or the old object
// against reqs, as an objectSelector does (and the engine's): a null object
// does not match.
func objectLabelsCEL(reqs []metav1.LabelSelectorRequirement) string {
	one := func(v string) string {
		l := v + ".?metadata.?labels.orValue({})"
		c := []string{v + " != null"}
		for _, r := range reqs {
			k := celString(r.Key)
			switch r.Operator {
			case metav1.LabelSelectorOpIn:
				c = append(c, k+" in "+l+" && "+l+"["+k+"] in "+celStrings(r.Values))
			case metav1.LabelSelectorOpNotIn:
				c = append(c, "!("+k+" in "+l+" && "+l+"["+k+"] in "+celStrings(r.Values)+")")
			case metav1.LabelSelectorOpExists:
				c = append(c, k+" in "+l)
			case metav1.LabelSelectorOpDoesNotExist:
				c = append(c, "!("+k+" in "+l+")")
			}
		}
		return "(" + strings.Join(c, " && ") + ")"
	}
	return one("object") + " || " + one("oldObject")
}

// requirementsOf returns a selector's requirements, matchLabels as In,
// each with sorted values, sorted; nil for a selector that does not parse
// (the policy then did not compile).
func requirementsOf(sel *metav1.LabelSelector) []metav1.LabelSelectorRequirement {
	if sel == nil {
		return nil
	}
	parsed, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil
	}
	reqs, _ := parsed.Requirements()
	out := make([]metav1.LabelSelectorRequirement, 0, len(reqs))
	for _, r := range reqs {
		out = append(out, requirement(r))
	}
	return out
}

// selectorOperators maps a parsed requirement's operator back to a
// LabelSelector's: matchLabels parse as Equals.
var selectorOperators = map[selection.Operator]metav1.LabelSelectorOperator{
	selection.In: metav1.LabelSelectorOpIn, selection.Equals: metav1.LabelSelectorOpIn, selection.DoubleEquals: metav1.LabelSelectorOpIn,
	selection.NotIn: metav1.LabelSelectorOpNotIn, selection.NotEquals: metav1.LabelSelectorOpNotIn,
	selection.Exists: metav1.LabelSelectorOpExists, selection.DoesNotExist: metav1.LabelSelectorOpDoesNotExist,
}

func requirement(r labels.Requirement) metav1.LabelSelectorRequirement {
	out := metav1.LabelSelectorRequirement{Key: r.Key(), Operator: selectorOperators[r.Operator()]}
	if vals := r.ValuesUnsorted(); len(vals) > 0 {
		out.Values = slices.Sorted(slices.Values(vals))
	}
	return out
}

func requirementKey(r metav1.LabelSelectorRequirement) string {
	return r.Key + "\x00" + string(r.Operator) + "\x00" + strings.Join(r.Values, "\x00")
}

// commonRequirements returns the requirements every policy's selector has,
// sorted: a selector of them is implied by each policy's.
func commonRequirements(ps []*engine.CompiledPolicy, sel func(*engine.CompiledPolicy) *metav1.LabelSelector) []metav1.LabelSelectorRequirement {
	var common []metav1.LabelSelectorRequirement
	for i, p := range ps {
		reqs := requirementsOf(sel(p))
		if p.Err != nil {
			reqs = nil
		}
		if i == 0 {
			common = reqs
			continue
		}
		common = slices.DeleteFunc(common, func(c metav1.LabelSelectorRequirement) bool {
			return !slices.ContainsFunc(reqs, func(r metav1.LabelSelectorRequirement) bool { return requirementKey(r) == requirementKey(c) })
		})
	}
	return common
}

// without returns the requirements of reqs not in drop.
func without(reqs, drop []metav1.LabelSelectorRequirement) []metav1.LabelSelectorRequirement {
	return slices.DeleteFunc(reqs, func(r metav1.LabelSelectorRequirement) bool {
		return slices.ContainsFunc(drop, func(d metav1.LabelSelectorRequirement) bool { return requirementKey(r) == requirementKey(d) })
	})
}

// celString quotes s as a CEL string literal.
func celString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\r", `\r`).Replace(s) + "'"
}

func celStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = celString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// The API server's compiler for webhook matchConditions, built once: its
// environment at the library's default compatibility version, with the
// variables it declares for them.
var apiServerCompiler = sync.OnceValue(func() cel.Compiler {
	return cel.NewCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
})

// checkMatchCondition compiles expr as the API server does when it
// validates a new matchCondition.
func checkMatchCondition(expr string) error {
	res := apiServerCompiler().CompileCELExpression(
		&matchconditions.MatchCondition{Name: MatchConditionName, Expression: expr},
		cel.OptionalVariableDeclarations{HasAuthorizer: true},
		environment.NewExpressions)
	if res.Error != nil {
		return fmt.Errorf("%s", res.Error.Detail)
	}
	return nil
}
