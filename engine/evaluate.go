package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apiserver/pkg/cel/common"
)

// Phase selects which policies a call to Evaluate runs.
type Phase int

// Phase values.
const (
	// PhaseAll runs mutating policies, then validating ones on the mutated
	// object, as the API server's admission chain does. Used by eval.
	PhaseAll Phase = iota
	// PhaseMutating runs mutating policies only (/mutate).
	PhaseMutating
	// PhaseValidating runs validating policies only (/validate).
	PhaseValidating
)

// Includes reports whether the phase runs policies of builtin type t. A
// policy whose builtin is unknown (type 0) runs in every phase, so that its
// compile error surfaces under its failurePolicy.
func (ph Phase) Includes(t ActionType) bool {
	if t == 0 {
		return true
	}
	switch ph {
	case PhaseMutating:
		return t == Mutating
	case PhaseValidating:
		return t == Validating
	}
	return true
}

// State is the explicit outcome of one policy for one request.
type State string

// State values.
const (
	// StatePass: the policy matched and its action succeeded: it mutated, or
	// found nothing to change, or found no violation.
	StatePass State = "pass"
	// StateFail: a validating policy found a violation (denied, or audited
	// under enforcement Audit).
	StateFail State = "fail"
	// StateWarn: a violation under enforcement Warn.
	StateWarn State = "warn"
	// StateError: a CEL or builtin error; failurePolicy decided.
	StateError State = "error"
	// StateSkip: selectors or conditions did not match, the action did
	// not apply to this object, or an exception applied
	// (PolicyResult.Exception).
	StateSkip State = "skip"
)

// PolicyResult is one policy's result for one request.
type PolicyResult struct {
	Policy      string      `json:"policy"`
	Action      string      `json:"action"`
	State       State       `json:"state"`
	Reason      string      `json:"reason,omitempty"`
	Enforcement Enforcement `json:"enforcement,omitempty"`
	Patch       int         `json:"patchOperations,omitempty"`
	Panicked    bool        `json:"panicked,omitempty"`
	// Exception names the exception that turned the result into skip:
	// the policy matched, and its action did not run.
	Exception string        `json:"exception,omitempty"`
	Duration  time.Duration `json:"-"`
}

// Decision is the engine's answer to one admission request.
type Decision struct {
	// Allowed is false when a policy denied the request.
	Allowed bool
	// Message is the denial message: every denying policy's message, joined.
	// An errored policy's reason appears with its URLs and addresses
	// redacted (RedactAddresses); its Result keeps them.
	Message string
	// StatusReason is the status reason of the first denying policy, in
	// dispatch order (Outcome.StatusReason): empty, Forbidden, for an
	// errored policy or a builtin that sets none.
	StatusReason metav1.StatusReason
	// Results lists every candidate policy's result, in dispatch order.
	Results []PolicyResult
	// Patch composes every mutating policy's operations in order. Empty when
	// nothing changes or the request is denied.
	Patch []jsonpatch.JsonPatchOperation
	// Warnings are returned to the client.
	Warnings []string
	// AuditAnnotations are recorded in the API server's audit log.
	AuditAnnotations map[string]string
	// CostRemaining is what is left of the request's CEL cost budget.
	CostRemaining int64
	// Effects are the side effects planned by the policies that passed,
	// in dispatch order, when EvalOptions.PlanEffects asked for them.
	Effects []Effect

	object *workingObject
}

// PatchJSON returns the composed patch as JSON: "[]" when there is none.
func (d *Decision) PatchJSON() ([]byte, error) {
	if len(d.Patch) == 0 {
		return []byte("[]"), nil
	}
	return json.Marshal(d.Patch)
}

// Object returns the object with Patch applied; nil when there is none or no
// policy looked at it. It decodes the object on first use: the webhook never
// calls it.
func (d *Decision) Object() (map[string]any, error) {
	if d.object == nil {
		return nil, nil
	}
	m := d.object.asMap()
	return m, d.object.err
}

// EvalOptions configure one call to Evaluate.
type EvalOptions struct {
	// Phase selects mutating, validating or all policies. Default PhaseAll.
	Phase Phase
	// Namespaces resolves the request's namespace for namespaceSelector and
	// namespaceObject. Nil: both see no namespace, and a policy with a
	// namespaceSelector errors on namespaced requests.
	Namespaces NamespaceGetter
	// Cluster serves lookups of other objects to builtins. Optional.
	Cluster ObjectGetter
	// CostBudget is the request's CEL cost budget. Default DefaultCostBudget.
	CostBudget int64
	// FailurePolicy, when set, runs only the policies with that
	// failurePolicy: the generated webhook configurations register one
	// webhook per failurePolicy, each served by its own path.
	FailurePolicy FailurePolicy
	// PlanEffects asks builtins for the side effects they plan, returned
	// in Decision.Effects, rather than only describing them.
	PlanEffects bool
	// Exceptions are those of the exceptions directory, checked after the
	// snapshot's own. Optional.
	Exceptions *ExceptionSet
	// Now is the clock exceptions' expiry is read from, once per request.
	// Default time.Now.
	Now func() time.Time
}

// Evaluate runs the snapshot's policies on one admission request. It returns
// an error only when the request itself is unusable (nil, or an object that
// is not valid JSON); policy errors become results under failurePolicy.
// The context's deadline bounds the whole evaluation.
func (s *Snapshot) Evaluate(ctx context.Context, req *admissionv1.AdmissionRequest, opts EvalOptions) (*Decision, error) {
	if req == nil {
		return nil, errors.New("admission review has no request")
	}
	d := &Decision{Allowed: true}
	candidates := s.Candidates(req.Resource.Group, req.Resource.Resource, req.SubResource, string(req.Operation))
	if len(candidates) == 0 {
		d.CostRemaining = budgetOf(opts)
		return d, nil
	}
	ev, err := newEvaluation(ctx, req, opts, s.Exceptions)
	if err != nil {
		return nil, err
	}
	var denials []string
	// deny adds a denial; the first sets the decision's status reason.
	deny := func(message string, reason metav1.StatusReason) {
		if len(denials) == 0 {
			d.StatusReason = reason
		}
		denials = append(denials, message)
	}
	// judge turns one policy's result into the decision's denials, warnings
	// and audit annotations.
	judge := func(p *CompiledPolicy, res PolicyResult, out Outcome) {
		switch res.State {
		case StateError:
			if p.Policy.Spec.FailurePolicy == Fail {
				// The reason may wrap a client error naming the API
				// server's URL: not for the requester (redact.go).
				deny(fmt.Sprintf("policy %q failed: %s", p.Name(), RedactAddresses(res.Reason)), "")
			} else {
				d.Warnings = append(d.Warnings, ignoredErrorWarning(p.Name()))
			}
		case StateFail:
			if p.Policy.Spec.Enforcement == Audit {
				if d.AuditAnnotations == nil {
					d.AuditAnnotations = map[string]string{}
				}
				d.AuditAnnotations[p.Name()] = out.Violation
				// The annotation reaches whoever reads the audit log; the
				// warning tells the requester too, who would otherwise not
				// learn of a violation until the policy starts denying.
				d.Warnings = append(d.Warnings, auditWarning(p.Name(), out.Violation))
			} else {
				deny(out.Violation, out.StatusReason)
			}
		case StateWarn:
			d.Warnings = append(d.Warnings, warnWarning(p.Name(), out.Violation))
		}
	}
	// run evaluates one policy and applies its patch to the working object.
	// An exception that applies makes it a skip before its action runs.
	run := func(p *CompiledPolicy) (PolicyResult, Outcome) {
		start := time.Now()
		res, out := ev.run(ctx, p)
		d.Warnings = append(d.Warnings, out.Warnings...)
		if len(out.AuditAnnotations) > 0 && (res.State == StatePass || res.State == StateFail || res.State == StateWarn) {
			if d.AuditAnnotations == nil {
				d.AuditAnnotations = map[string]string{}
			}
			for k, v := range out.AuditAnnotations {
				d.AuditAnnotations[p.Name()+"."+k] = v
			}
		}
		if res.State == StatePass && len(out.Patch) > 0 {
			if err := ev.object.patch(out.Patch); err != nil {
				res.State, res.Reason = StateError, fmt.Sprintf("builtin produced a patch that does not apply: %v", err)
			} else {
				d.Patch = append(d.Patch, out.Patch...)
				res.Patch = len(out.Patch)
				ev.objectChanged()
			}
		}
		if opts.PlanEffects {
			d.setEffects(p.Name(), res.State, out.Effects)
		}
		res.Duration = time.Since(start)
		return res, out
	}
	selected := func(p *CompiledPolicy) bool {
		return opts.FailurePolicy == "" || p.Policy.Spec.FailurePolicy == opts.FailurePolicy
	}

	// Mutations first, then validations on the mutated object, as the API
	// server's admission chain runs them. A policy whose builtin is unknown
	// runs once, in the first phase that is run.
	type ran struct {
		p      *CompiledPolicy
		result int // index in d.Results
	}
	var mutators []ran
	lastChange := -1 // index in mutators of the last policy that patched
	if opts.Phase != PhaseValidating {
		for _, p := range candidates {
			if (p.Type != Mutating && p.Type != 0) || !selected(p) {
				continue
			}
			res, out := run(p)
			if res.Patch > 0 {
				lastChange = len(mutators)
			}
			mutators = append(mutators, ran{p, len(d.Results)})
			judge(p, res, out)
			d.Results = append(d.Results, res)
		}
		// Reinvocation, as with reinvocationPolicy IfNeeded: the policies
		// that ran before the last change see the final object once more,
		// so that a sidecar added late still gets what earlier policies add.
		for _, m := range mutators[:max(lastChange, 0)] {
			prev, p := &d.Results[m.result], m.p
			if prev.State == StateError {
				continue
			}
			res, out := run(p)
			switch {
			case res.State == StateError:
				*prev = res
				judge(p, res, out)
			case res.Patch > 0:
				prev.State = StatePass
				prev.Patch += res.Patch
				prev.Reason = strings.TrimPrefix(prev.Reason+"; reinvoked: "+res.Reason, "; ")
			}
		}
	}
	if opts.Phase != PhaseMutating {
		for _, p := range candidates {
			if (p.Type != Validating && !(p.Type == 0 && opts.Phase == PhaseValidating)) || !selected(p) {
				continue
			}
			res, out := run(p)
			judge(p, res, out)
			d.Results = append(d.Results, res)
		}
	}
	if len(denials) > 0 {
		d.Allowed = false
		d.Message = strings.Join(denials, "; ")
		d.Patch = nil
	}
	d.Warnings = append(d.Warnings, ev.expiryWarnings()...)
	kept := d.Warnings[:0]
	for _, w := range d.Warnings {
		if w = warningText(w); w != "" {
			kept = append(kept, w)
		}
	}
	d.Warnings = dedupe(kept) // a reinvoked policy may warn twice
	if ev.object.err != nil {
		return nil, ev.object.err
	}
	d.object = ev.object
	d.CostRemaining = ev.budget
	return d, nil
}

// warnWarning is the warning of a violation under enforcement Warn, as
// kubectl shows it: "Warning: <policy>: <violation>".
func warnWarning(policy, violation string) string { return policy + ": " + violation }

// auditWarning is the warning of a violation under enforcement Audit:
// worded as Warn's, and saying that the policy only audits, so that the
// requester neither mistakes it for a Warn policy nor ignores it.
func auditWarning(policy, violation string) string { return policy + " (audit): " + violation }

// ignoredErrorWarning is the warning sent when a policy errors under
// failurePolicy Ignore: without it the client could not tell a request the
// policy admitted from one it never looked at. It is worded as the API
// server's warning for a ValidatingAdmissionPolicy ("Validation failed for
// ValidatingAdmissionPolicy '%s' with binding '%s': %s") and names the
// policy only: the error may hold internal addresses (an agent's, an
// endpoint's URL) and is in the webhook's logs, metrics and results.
func ignoredErrorWarning(policy string) string {
	return fmt.Sprintf("Evaluation failed for Celadon policy '%s' (failurePolicy Ignore): the request was admitted without it", policy)
}

// setEffects replaces the effects a policy planned: a reinvoked policy's
// last run counts, and a run that did not pass plans nothing.
func (d *Decision) setEffects(policy string, state State, effects []any) {
	d.Effects = slices.DeleteFunc(d.Effects, func(e Effect) bool { return e.Policy == policy })
	if state != StatePass {
		return
	}
	for _, e := range effects {
		d.Effects = append(d.Effects, Effect{Policy: policy, Value: e})
	}
}

// dedupe drops repeated strings, keeping the first of each in order.
func dedupe(list []string) []string {
	if len(list) < 2 {
		return list
	}
	seen := make(map[string]bool, len(list))
	out := list[:0]
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func budgetOf(opts EvalOptions) int64 {
	if opts.CostBudget > 0 {
		return opts.CostBudget
	}
	return DefaultCostBudget
}

// evaluation is the state of one request's evaluation.
type evaluation struct {
	// ctx bounds lookups made while resolving CEL variables.
	ctx       context.Context
	req       *admissionv1.AdmissionRequest
	opts      EvalOptions
	budget    int64
	object    *workingObject
	oldObject *workingObject

	// now is the request's time, for exceptions' expiry.
	now time.Time
	// exceptions are the snapshot's and the options' sets, in that order.
	exceptions [2]*ExceptionSet
	// exBudget is the cost budget of exceptions' conditions, apart from
	// the policies': an exception cannot spend what policies need.
	exBudget int64
	// applied are the exceptions that applied, with the policy each
	// excepted, in order.
	applied []appliedException

	objVal, oldObjVal, reqVal, nsVal ref.Val
	// pods are the pod views of controller templates, by template path.
	pods map[string]podViewPair

	ns       *corev1.Namespace
	nsErr    error
	nsLooked bool
}

func newEvaluation(ctx context.Context, req *admissionv1.AdmissionRequest, opts EvalOptions, exceptions *ExceptionSet) (*evaluation, error) {
	ev := &evaluation{ctx: ctx, req: req, opts: opts, budget: budgetOf(opts), exBudget: budgetOf(opts)}
	ev.exceptions = [2]*ExceptionSet{exceptions, opts.Exceptions}
	if opts.Now != nil {
		ev.now = opts.Now()
	} else {
		ev.now = time.Now()
	}
	var err error
	if doc, obj, old, ok := parsedObjects(ctx, req); ok {
		// The review was parsed whole: its objects are subtrees of it.
		if ev.object, err = parsedObject(doc, obj); err != nil {
			return nil, fmt.Errorf("request.object: %w", err)
		}
		if ev.oldObject, err = parsedObject(doc, old); err != nil {
			return nil, fmt.Errorf("request.oldObject: %w", err)
		}
		return ev, nil
	}
	if ev.object, err = newWorkingObject(req.Object.Raw, req.Object.Object); err != nil {
		return nil, fmt.Errorf("request.object: %w", err)
	}
	if ev.oldObject, err = newWorkingObject(req.OldObject.Raw, req.OldObject.Object); err != nil {
		return nil, fmt.Errorf("request.oldObject: %w", err)
	}
	return ev, nil
}

func (ev *evaluation) objectChanged() { ev.objVal, ev.pods = nil, nil }

// setObjects binds object and oldObject, for CEL and builtins alike.
func (ev *evaluation) setObjects(obj, old *workingObject) {
	if ev.object != obj {
		ev.object, ev.objVal = obj, nil
	}
	if ev.oldObject != old {
		ev.oldObject, ev.oldObjVal = old, nil
	}
}

// podViews returns the pods of the request's controller templates at
// rule's path, built once per request and template path, and whether the
// two are the same.
func (ev *evaluation) podViews(rule *AutogenRule) (obj, old *workingObject, same, ok bool, err error) {
	if v, found := ev.pods[rule.Template]; found {
		return v.obj, v.old, v.same, true, nil
	}
	obj, raw, ok, err := podView(ev.object, rule.Template, ev.req.Namespace)
	if err != nil || !ok {
		return nil, nil, false, false, err
	}
	old, oldRaw, ok, err := podView(ev.oldObject, rule.Template, ev.req.Namespace)
	if err != nil {
		return nil, nil, false, false, err
	}
	if !ok {
		old, oldRaw = &workingObject{}, nil // an old object without a template: as if none
	}
	if ev.pods == nil {
		ev.pods = map[string]podViewPair{}
	}
	v := podViewPair{obj, old, raw != nil && bytes.Equal(raw, oldRaw)}
	ev.pods[rule.Template] = v
	return v.obj, v.old, v.same, true, nil
}

// podViewPair is the pod views of a request's object and old object.
type podViewPair struct {
	obj, old *workingObject
	same     bool
}

func (ev *evaluation) objectVal() ref.Val {
	if ev.objVal == nil {
		ev.objVal = ev.object.celValue()
	}
	return ev.objVal
}

func (ev *evaluation) oldObjectVal() ref.Val {
	if ev.oldObjVal == nil {
		ev.oldObjVal = ev.oldObject.celValue()
	}
	return ev.oldObjVal
}

func (ev *evaluation) requestVal() ref.Val {
	if ev.reqVal == nil {
		ev.reqVal = &requestValue{req: ev.req}
	}
	return ev.reqVal
}

func (ev *evaluation) namespaceVal() ref.Val {
	if ev.nsVal == nil {
		ns, _ := ev.namespace(ev.ctx)
		if ns == nil {
			ev.nsVal = types.NullValue
		} else {
			ev.nsVal = common.SchemalessTypedToVal(ns)
		}
	}
	return ev.nsVal
}

// namespace returns the request's namespace: nil for cluster-scoped
// requests or when no NamespaceGetter was given.
func (ev *evaluation) namespace(ctx context.Context) (*corev1.Namespace, error) {
	if !ev.nsLooked {
		ev.nsLooked = true
		if ev.req.Namespace != "" && ev.opts.Namespaces != nil {
			ev.ns, ev.nsErr = ev.opts.Namespaces.GetNamespace(ctx, ev.req.Namespace)
		}
	}
	return ev.ns, ev.nsErr
}

// evalVal evaluates an expression, charging its cost to the budget.
func (ev *evaluation) evalVal(ctx context.Context, a *activation, e *Expression) (ref.Val, error) {
	return ev.evalCharged(ctx, a, e, &ev.budget)
}

// evalCharged evaluates an expression, charging its cost to budget.
func (ev *evaluation) evalCharged(ctx context.Context, a interpreter.Activation, e *Expression, budget *int64) (ref.Val, error) {
	val, _, err := ev.evalCosting(ctx, a, e, budget)
	return val, err
}

// evalCosting is evalCharged, which also returns the expression's own
// cost: without that of the variables it evaluated, charged apart.
func (ev *evaluation) evalCosting(ctx context.Context, a interpreter.Activation, e *Expression, budget *int64) (ref.Val, int64, error) {
	if *budget <= 0 {
		return nil, 0, ErrCostBudgetExceeded
	}
	var val ref.Val
	var cost int64
	var err error
	if e.metered {
		m := newMeter(ctx, a)
		val, _, err = e.program.Eval(m)
		cost = int64(min(m.cost, uint64(1)<<62))
		*budget -= cost
		m.release()
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", err, context.Cause(ctx))
		}
	} else {
		var details *cel.EvalDetails
		val, details, err = e.program.ContextEval(ctx, a)
		if details != nil && details.ActualCost() != nil {
			cost = int64(min(*details.ActualCost(), uint64(1)<<62))
			*budget -= cost
		}
	}
	if err != nil {
		return nil, cost, fmt.Errorf("%s: %v", exprName(e), err)
	}
	if *budget < 0 {
		return nil, cost, ErrCostBudgetExceeded
	}
	return val, cost, nil
}

func exprName(e *Expression) string {
	if e.name != "" {
		return e.name
	}
	return strings.TrimPrefix(e.field, "spec.")
}

func (ev *evaluation) evalNative(ctx context.Context, a *activation, e *Expression) (any, error) {
	v, err := ev.evalVal(ctx, a, e)
	if err != nil {
		return nil, err
	}
	out, err := toNative(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", exprName(e), err)
	}
	return out, nil
}

// run evaluates one policy: selectors, conditions, then its action.
func (ev *evaluation) run(ctx context.Context, p *CompiledPolicy) (res PolicyResult, out Outcome) {
	res = PolicyResult{Policy: p.Name(), Action: p.Policy.Spec.Action, Enforcement: p.Policy.Spec.Enforcement}
	fail := func(format string, args ...any) (PolicyResult, Outcome) {
		res.State, res.Reason = StateError, fmt.Sprintf(format, args...)
		return res, Outcome{}
	}
	if err := ctx.Err(); err != nil {
		return fail("not evaluated: %v", err)
	}
	if p.Err != nil {
		return fail("policy did not compile: %v", p.Err)
	}
	// On a pod controller the policy sees the pod of its template; the
	// exceptions still see the request's own object.
	var tmpl *AutogenRule
	var podObj, podOld *workingObject
	realObj, realOld := ev.object, ev.oldObject
	if tmpl = p.autogenFor(ev.req.Resource.Group, ev.req.Resource.Resource, ev.req.SubResource); tmpl != nil {
		var same, ok bool
		var err error
		podObj, podOld, same, ok, err = ev.podViews(tmpl)
		if err != nil {
			return fail("pod template %s: %v", tmpl.Template, err)
		}
		if !ok {
			res.State, res.Reason = StateSkip, fmt.Sprintf("the object has no pod template at %s", tmpl.Template)
			return res, Outcome{}
		}
		// An UPDATE that leaves the template alone (a scale, a label on
		// the controller) creates no pod the policy has not seen: judging
		// it would only stop the controllers from scaling old workloads.
		if same {
			res.State, res.Reason = StateSkip, fmt.Sprintf("the pod template (%s) is unchanged", tmpl.Template)
			return res, Outcome{}
		}
		ev.setObjects(podObj, podOld)
		defer ev.setObjects(realObj, realOld)
	}
	// excepted makes the result a skip when an exception applies.
	excepted := func() bool {
		if tmpl != nil {
			ev.setObjects(realObj, realOld)
			defer ev.setObjects(podObj, podOld)
		}
		ex := ev.exceptionFor(ctx, p)
		if ex == nil {
			return false
		}
		res.State, res.Exception = StateSkip, ex.Name()
		res.Reason = fmt.Sprintf("excepted by exception %q (owner %s): %s", ex.Name(), ex.Owner(), oneLineReason(ex.Exception.Spec.Reason))
		return true
	}
	// failMatch is fail, unless an exception applies: an error in the
	// policy's own selectors or conditions is excepted as its action's
	// would be.
	failMatch := func(format string, args ...any) (PolicyResult, Outcome) {
		if excepted() {
			return res, Outcome{}
		}
		return fail(format, args...)
	}
	if ok, reason, err := ev.selectorsMatch(ctx, p); err != nil {
		return failMatch("%v", err)
	} else if !ok {
		res.State, res.Reason = StateSkip, reason
		return res, Outcome{}
	}
	a := &activation{eval: ev}
	a.vars = p.env.variablesFor(ctx, a)
	for _, c := range p.conditions {
		v, err := ev.evalVal(ctx, a, c)
		if err != nil {
			return failMatch("%v", err)
		}
		if v != types.True {
			if _, isBool := v.(types.Bool); !isBool {
				return failMatch("condition %s returned %s, not a bool", c.name, v.Type())
			}
			res.State, res.Reason = StateSkip, fmt.Sprintf("condition %s is false", c.name)
			return res, Outcome{}
		}
	}
	// The policy matches. An exception is checked before the action runs,
	// so that an excepted request has none of its side effects.
	if excepted() {
		return res, Outcome{}
	}
	ac := &ActionContext{
		Context:     ctx,
		Request:     ev.req,
		object:      ev.object,
		oldObject:   ev.oldObject,
		Cluster:     ev.opts.Cluster,
		DryRun:      ev.req.DryRun != nil && *ev.req.DryRun,
		Policy:      p.Name(),
		PlanEffects: ev.opts.PlanEffects,
		eval:        ev,
		act:         a,
		env:         p.env,
	}
	if tmpl != nil {
		ac.template = tmpl.Template
	}
	ac.Namespace, _ = ev.namespace(ctx)
	out, err := runAction(p.action, ac)
	if err != nil {
		var pe *panicError
		res.Panicked = errors.As(err, &pe)
		res2, _ := fail("%v", err)
		return res2, Outcome{Warnings: out.Warnings}
	}
	if tmpl != nil {
		ev.setObjects(realObj, realOld)
		if p.Type == Mutating {
			// The operations on the pod view go to the template in the
			// controller; the pod's own fields stay the pods'.
			if len(out.Patch) > 0 {
				metaExists := templateOf(realObj.Value(), tmpl.Template).Get("metadata").IsObject()
				var dropped []string
				out.Patch, dropped = templatePatch(out.Patch, tmpl.Template, metaExists)
				if len(dropped) > 0 {
					out.Warnings = append(out.Warnings, templateDropWarning(realObj, tmpl, ev.objectName(), p.Name(), dropped))
				}
			}
			if out.Reason != "" {
				out.Reason = fmt.Sprintf("pod template (%s): %s", tmpl.Template, out.Reason)
			}
		} else {
			out.Patch = nil
		}
		if out.Violation != "" {
			out.Violation = templateViolation(realObj, tmpl, ev.objectName(), out.Violation)
		}
	}
	res.Reason = out.Reason
	switch {
	case out.Skipped:
		res.State = StateSkip
		out.Patch, out.Violation = nil, ""
	case p.Type == Validating && out.Violation != "":
		res.State = StateFail
		if p.Policy.Spec.Enforcement == Warn {
			res.State = StateWarn
		}
		if res.Reason == "" {
			res.Reason = out.Violation
		}
	default:
		res.State = StatePass
	}
	return res, out
}

type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("builtin panicked: %v", e.value) }

// runAction runs an action, turning a panic into an error so that the
// policy's failurePolicy decides and the server keeps serving.
func runAction(a Action, ac *ActionContext) (out Outcome, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{value: r, stack: debug.Stack()}
		}
	}()
	return a.Run(ac)
}

func (ev *evaluation) selectorsMatch(ctx context.Context, p *CompiledPolicy) (bool, string, error) {
	if p.nsSelector != nil {
		var set labels.Set
		switch {
		case ev.req.Resource.Group == "" && ev.req.Resource.Resource == "namespaces" && ev.req.SubResource == "":
			if !selectorMatchesEither(p.nsSelector, ev.object, ev.oldObject) {
				return false, "namespaceSelector does not match the namespace's labels", nil
			}
		case ev.req.Namespace == "":
			// Cluster-scoped objects are not filtered by namespaceSelector,
			// as with admission webhooks.
		default:
			if ev.opts.Namespaces == nil {
				return false, "", fmt.Errorf("namespaceSelector: labels of namespace %q are unknown", ev.req.Namespace)
			}
			ns, err := ev.namespace(ctx)
			if err != nil {
				return false, "", fmt.Errorf("namespaceSelector: namespace %q: %v", ev.req.Namespace, err)
			}
			set = ns.Labels
			if !p.nsSelector.Matches(set) {
				return false, fmt.Sprintf("namespaceSelector does not match namespace %q", ev.req.Namespace), nil
			}
		}
	}
	if p.objSelector != nil && !selectorMatchesEither(p.objSelector, ev.object, ev.oldObject) {
		return false, "objectSelector does not match the object's labels", nil
	}
	return true, "", nil
}

// selectorMatchesEither matches the labels of the object or the old object,
// as admission webhooks' objectSelector does.
func selectorMatchesEither(s labels.Selector, obj, old *workingObject) bool {
	for _, o := range []*workingObject{obj, old} {
		if v := o.Value(); v.Exists() && s.Matches(labels.Set(labelsOf(v))) {
			return true
		}
	}
	return false
}

func labelsOf(obj Value) map[string]string {
	raw := obj.Get("metadata").Get("labels")
	out := make(map[string]string, raw.Len())
	raw.Range(func(k string, v Value) {
		if s, ok := v.Str(); ok {
			out[k] = s
		}
	})
	return out
}
