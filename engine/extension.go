package engine

import (
	"context"
	"sort"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
)

// Extension points for builtins that need more than "object in, patch or
// denial out". Each is an optional interface on a Builtin; the server finds
// them by type assertion and drives them generically, so that a builtin is
// one file: the server never names one.

// SideEffectClass says what a builtin changes outside the admitted object
// while it runs at admission, as the webhook configurations' sideEffects
// field does.
type SideEffectClass string

// SideEffectClass values.
const (
	// SideEffectsNone: the builtin changes nothing but the object. The
	// default.
	SideEffectsNone SideEffectClass = "None"
	// SideEffectsNoneOnDryRun: the builtin may change other systems, but
	// never when the request is a dry run (ActionContext.DryRun).
	SideEffectsNoneOnDryRun SideEffectClass = "NoneOnDryRun"
)

// SideEffecter is implemented by builtins that act on other systems during
// admission. The webhook configurations serving their policies declare the
// class, so that the API server knows what a dry run may cause.
type SideEffecter interface {
	SideEffects() SideEffectClass
}

// SideEffectsOf returns the side-effect class of a builtin.
func SideEffectsOf(b Builtin) SideEffectClass {
	if s, ok := b.(SideEffecter); ok && s.SideEffects() != "" {
		return s.SideEffects()
	}
	return SideEffectsNone
}

// Access is one permission a builtin needs on the API server, as an RBAC
// rule. The install's RBAC is generated from these, and so is the test that
// checks it.
type Access struct {
	// APIGroups, Resources, ResourceNames and Verbs are the RBAC rule's.
	APIGroups, Resources, ResourceNames, Verbs []string
	// Why says what the builtin does with it; it becomes the rule's
	// comment.
	Why string
	// Optional rules are needed only by some arguments of the builtin; they
	// are written commented out, for the operator to grant.
	Optional bool
}

// Accessor is implemented by builtins that read or write the cluster.
// Rules that only a controller uses (ControllerBuiltin) are listed too.
type Accessor interface {
	Access() []Access
}

// AccessOf returns the permissions a builtin declares; nil for none.
func AccessOf(b Builtin) []Access {
	if a, ok := b.(Accessor); ok {
		return a.Access()
	}
	return nil
}

// Controller is a builtin's reconciler, run beside admission on the elected
// leader (see ControllerBuiltin).
type Controller interface {
	// Start runs until ctx is done. An error is logged and Start is called
	// again after a pause: a controller never stops the server.
	Start(ctx context.Context) error
}

// StatusReporter is implemented by Controllers that report their state in
// the server's /status, under their builtin's name.
type StatusReporter interface {
	Status() any
}

// ControllerBuiltin is implemented by builtins whose policies need work
// beside admission, e.g. objects created once a namespace exists. The server
// starts one Controller per such builtin, under leader election, once a
// served policy uses the builtin, and keeps it running after.
type ControllerBuiltin interface {
	NewController(ControllerContext) (Controller, error)
}

// ControllerContext is what a builtin's controller gets from the server.
type ControllerContext struct {
	// Config reaches the API server with the server's credentials.
	Config *rest.Config
	// Policies is the served set; Subscribe hears of each new one.
	Policies *Store
	// Namespaces and Cluster are the server's caches, as requests see them.
	Namespaces NamespaceGetter
	Cluster    ObjectGetter
	// Namespace is Celadon's own namespace; "" when unknown.
	Namespace string
	// ExcludedNamespaces are those no webhook is called for: a controller
	// must not act in them, or it would do there what admission never
	// could.
	ExcludedNamespaces []string
	// SourceNamespaces are the namespaces besides Namespace that a
	// controller may copy objects from (createSecret's from.namespace), as
	// the operator allowed at install time.
	SourceNamespaces []string
	// Events records Kubernetes Events.
	Events events.EventRecorder
	// Metrics registers the controller's metrics.
	Metrics prometheus.Registerer
	Log     logr.Logger
}

// UsesBuiltin reports whether a compiled policy of the snapshot dispatches
// to the named builtin.
func (s *Snapshot) UsesBuiltin(name string) bool {
	for _, p := range s.Policies {
		if p.Policy.Spec.Action == name && p.Err == nil {
			return true
		}
	}
	return false
}

// Builtins returns the builtins the snapshot's compiled policies use, in
// name order.
func (s *Snapshot) Builtins() []Builtin {
	seen := map[string]Builtin{}
	for _, p := range s.Policies {
		if p.builtin != nil && p.Err == nil {
			seen[p.builtin.Name()] = p.builtin
		}
	}
	out := make([]Builtin, 0, len(seen))
	for _, b := range seen {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Builtin returns the builtin the policy dispatches to; nil when it is
// unknown.
func (p *CompiledPolicy) Builtin() Builtin { return p.builtin }

// Effect is a side effect a policy planned for its caller to carry out,
// e.g. a Secret to create once the namespace exists. Builtins return them
// in Outcome.Effects when EvalOptions.PlanEffects asks.
type Effect struct {
	// Policy is the planning policy's name.
	Policy string
	// Value is the builtin's own description of the effect.
	Value any
}
