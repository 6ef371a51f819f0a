package engine

import (
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// APIVersion and Kind identify a Celadon policy document.
const (
	APIVersion = "celadon.io/v1alpha1"
	Kind       = "Policy"
)

// Policy is one policy document as written by users. Its field names are the
// public contract; see the README's policy reference.
type Policy struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   PolicyMetadata `json:"metadata"`
	Spec       PolicySpec     `json:"spec"`
}

// PolicyMetadata names a policy. Name is required and unique across the set.
type PolicyMetadata struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// PolicySpec says which requests a policy applies to and what it does.
type PolicySpec struct {
	// Match selects requests. Resources is required.
	Match Match `json:"match"`
	// Variables are named CEL expressions, evaluated lazily and at most once per
	// request, visible to conditions and templated arguments as variables.<name>.
	Variables []Variable `json:"variables,omitempty"`
	// Action is the name of a registered builtin.
	Action string `json:"action"`
	// With holds the builtin's own arguments, checked when the policy loads.
	With json.RawMessage `json:"with,omitempty"`
	// FailurePolicy says what a CEL or builtin error does. Defaults to Fail for
	// validating builtins and Ignore for mutating ones.
	FailurePolicy FailurePolicy `json:"failurePolicy,omitempty"`
	// Enforcement applies to validating builtins only. Defaults to Deny.
	Enforcement Enforcement `json:"enforcement,omitempty"`
	// TimeoutSeconds, 1 to 30, shortens the API server's wait for the webhook
	// serving this policy: a generated webhook takes the smallest of its
	// policies' timeouts. Unset: the configurations' default (5 s).
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`
	// Autogen false keeps a pod policy, validating or mutating, off the pod
	// templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs
	// and CronJobs. Unset or true: it applies to them too (autogen.go),
	// unless its builtin needs a real pod (PodOnly), where true is an error.
	// Builtins that render values from the pod (TemplateOptIn: injectSidecar,
	// consulLifecycle) reach the templates only with true.
	Autogen *bool `json:"autogen,omitempty"`
}

// Match selects the requests a policy applies to. All parts must match.
type Match struct {
	// Resources lists "resource" for the core group, "group/resource"
	// otherwise, with an optional "/subresource" suffix ("pods/status",
	// "apps/deployments/scale"), or "*" for every resource. A two-segment entry
	// is group/resource when its first segment contains a dot or is one of the
	// built-in undotted groups (apps, batch, autoscaling, policy, extensions);
	// otherwise it is resource/subresource.
	Resources []string `json:"resources"`
	// Operations lists CREATE, UPDATE, DELETE, CONNECT or "*". Defaults to "*".
	Operations []string `json:"operations,omitempty"`
	// NamespaceSelector matches the labels of the request's namespace. For a
	// Namespace object it matches the object's own labels; other cluster-scoped
	// objects always match. Empty or absent matches everything.
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// ObjectSelector matches the labels of the object or of the old object
	// (the old object's for DELETE, where there is no new one). Empty or absent
	// matches everything.
	ObjectSelector *metav1.LabelSelector `json:"objectSelector,omitempty"`
	// Conditions are CEL expressions returning bool; all must be true.
	Conditions []Condition `json:"conditions,omitempty"`
}

// Condition is a named CEL boolean expression.
type Condition struct {
	Name       string `json:"name,omitempty"`
	Expression string `json:"expression"`
}

// Variable is a named CEL expression reusable as variables.<name>.
type Variable struct {
	Name       string `json:"name"`
	Expression string `json:"expression"`
}

// FailurePolicy says whether an error during evaluation rejects (Fail) or
// admits (Ignore) the request.
type FailurePolicy string

// FailurePolicy values.
const (
	Fail   FailurePolicy = "Fail"
	Ignore FailurePolicy = "Ignore"
)

// Enforcement says what a validating violation does: Deny rejects the
// request, Warn admits it with a warning, Audit admits it with an audit
// annotation and a warning marked "(audit)".
type Enforcement string

// Enforcement values.
const (
	Deny  Enforcement = "Deny"
	Warn  Enforcement = "Warn"
	Audit Enforcement = "Audit"
)

func (f FailurePolicy) validate() error {
	switch f {
	case "", Fail, Ignore:
		return nil
	}
	return fmt.Errorf("failurePolicy must be Fail or Ignore, not %q", string(f))
}

func (e Enforcement) validate() error {
	switch e {
	case "", Deny, Warn, Audit:
		return nil
	}
	return fmt.Errorf("enforcement must be Deny, Warn or Audit, not %q", string(e))
}
