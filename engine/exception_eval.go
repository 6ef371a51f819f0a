package engine

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/google/cel-go/common/types"
	"k8s.io/apimachinery/pkg/labels"
)

// appliedException is an exception that applied to a policy.
type appliedException struct {
	ex     *CompiledException
	policy string
}

// exceptionFor returns the exception that applies to policy p for the
// request, or nil: of the unexpired exceptions naming p that match the
// request, the one that expires last (never, best), the first in order
// among equals. It is recorded for the expiry warnings.
func (ev *evaluation) exceptionFor(ctx context.Context, p *CompiledPolicy) *CompiledException {
	var best *CompiledException
	for _, set := range ev.exceptions {
		for _, e := range set.For(p.Name()) {
			if e.Expired(ev.now) || (best != nil && !expiresLater(e, best)) {
				continue
			}
			if ev.exceptionMatches(ctx, e) {
				best = e
			}
		}
	}
	if best != nil {
		ev.applied = append(ev.applied, appliedException{ex: best, policy: p.Name()})
	}
	return best
}

// expiresLater reports whether a stops applying after b.
func expiresLater(a, b *CompiledException) bool {
	switch {
	case b.Expires.IsZero():
		return false
	case a.Expires.IsZero():
		return true
	}
	return a.Expires.After(b.Expires)
}

// exceptionMatches reports whether the exception's match selects the
// request. Anything it cannot tell (an unknown namespace, a condition that
// errors) is no match: the policy then applies.
func (ev *evaluation) exceptionMatches(ctx context.Context, e *CompiledException) bool {
	req := ev.req
	isNamespace := req.Resource.Group == "" && req.Resource.Resource == "namespaces"
	if e.Origin == FromExceptions && (isNamespace || req.Namespace == "") {
		// The exceptions directory reaches namespaced objects alone: not a
		// Namespace itself (its labels are what other policies' and
		// exceptions' namespaceSelectors read), not cluster-scoped ones.
		return false
	}
	ns := req.Namespace
	if isNamespace {
		ns = ev.objectName()
	}
	if e.namespaces != nil && !e.namespaces[ns] {
		return false
	}
	if e.ops != nil && !e.ops[string(req.Operation)] {
		return false
	}
	if len(e.rules) > 0 {
		found := false
		for _, r := range e.rules {
			if r.matches(req.Resource.Group, req.Resource.Resource, req.SubResource) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if len(e.names) > 0 {
		name, found := ev.objectName(), false
		for _, n := range e.names {
			if ok, _ := path.Match(n, name); ok && name != "" {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if e.nsSelector != nil {
		switch {
		case isNamespace:
			if !selectorMatchesEither(e.nsSelector, ev.object, ev.oldObject) {
				return false
			}
		case req.Namespace == "":
			// Cluster-scoped: not filtered, as for a policy.
		default:
			if ev.opts.Namespaces == nil {
				return false
			}
			n, err := ev.namespace(ctx)
			if err != nil || n == nil || !e.nsSelector.Matches(labels.Set(n.Labels)) {
				return false
			}
		}
	}
	if e.objSelector != nil && !selectorMatchesEither(e.objSelector, ev.object, ev.oldObject) {
		return false
	}
	if len(e.conditions) > 0 {
		a := &activation{eval: ev}
		for _, c := range e.conditions {
			v, err := ev.evalCharged(ctx, a, c, &ev.exBudget)
			if err != nil || v != types.True {
				return false
			}
		}
	}
	return true
}

// objectName is the name of the request's object: the request's, else the
// object's (or the old object's), else its generateName, for an object
// whose name the API server has not chosen yet.
func (ev *evaluation) objectName() string {
	if ev.req.Name != "" {
		return ev.req.Name
	}
	for _, field := range []string{"name", "generateName"} {
		for _, o := range []*workingObject{ev.object, ev.oldObject} {
			if v := o.Value(); v.Exists() {
				if s, ok := v.Get("metadata").Get(field).Str(); ok && s != "" {
					return s
				}
			}
		}
	}
	return ""
}

// expiryWarnings are the warnings for the requester about the exceptions
// that applied and expire within ExpiryWarningWindow, one per exception,
// naming the policies that apply again then.
func (ev *evaluation) expiryWarnings() []string {
	var order []*CompiledException
	policies := map[*CompiledException][]string{}
	for _, a := range ev.applied {
		e := a.ex
		if e.Expires.IsZero() || e.Expires.Sub(ev.now) > ExpiryWarningWindow {
			continue
		}
		if _, seen := policies[e]; !seen {
			order = append(order, e)
		}
		if ps := policies[e]; len(ps) == 0 || !slices.Contains(ps, a.policy) {
			policies[e] = append(ps, a.policy)
		}
	}
	out := make([]string, 0, len(order))
	for _, e := range order {
		ps := policies[e]
		then := "policy " + ps[0] + " applies again then"
		if len(ps) > 1 {
			then = "policies " + strings.Join(ps, ", ") + " apply again then"
		}
		out = append(out, fmt.Sprintf("Celadon exception %q (owner %s) expires %s (%s): %s",
			e.Name(), e.Owner(), ExpiresIn(e.Expires.Sub(ev.now)), e.Expires.UTC().Format(time.RFC3339), then))
	}
	return out
}

// ExpiresIn words the time left before an expiry: "in 3 days", "in 1 day",
// "in less than a day"; "already" when none is left.
func ExpiresIn(left time.Duration) string {
	switch n := int(left / (24 * time.Hour)); {
	case left <= 0:
		return "already"
	case n == 0:
		return "in less than a day"
	case n == 1:
		return "in 1 day"
	default:
		return fmt.Sprintf("in %d days", n)
	}
}

// oneLineReason keeps an exception's reason, which may be a YAML block, on
// one line in a policy's result.
func oneLineReason(s string) string { return strings.Join(strings.Fields(s), " ") }
