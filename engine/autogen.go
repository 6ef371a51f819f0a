package engine

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Pod-controller autogen: a validating policy on pods also applies to the
// pod templates of the workload controllers, so that a Deployment whose
// pods would be rejected is rejected itself, instead of its ReplicaSet
// failing to create pods later with nobody watching. The policy's compiled
// programs are not rewritten: on a controller's request they run with
// object and oldObject bound to the pod built from the template.

// PodOnly is implemented by builtins that need a real pod (an ordinal, a
// node, a pod's own name) and must not run on a controller's pod template.
// Their policies are never autogen'd.
type PodOnly interface {
	PodOnly() bool
}

// AutogenRule is one controller resource a pod policy was extended to, and
// where the pod template sits in its object.
type AutogenRule struct {
	ResourceRule
	// Template is the template's path in the object, e.g. spec.template.
	Template string
}

// podControllers are the controllers whose pod templates autogen reaches.
var podControllers = []AutogenRule{
	{ResourceRule{Group: "apps", Resource: "deployments"}, "spec.template"},
	{ResourceRule{Group: "apps", Resource: "statefulsets"}, "spec.template"},
	{ResourceRule{Group: "apps", Resource: "daemonsets"}, "spec.template"},
	{ResourceRule{Group: "apps", Resource: "replicasets"}, "spec.template"},
	{ResourceRule{Group: "batch", Resource: "jobs"}, "spec.template"},
	{ResourceRule{Group: "batch", Resource: "cronjobs"}, "spec.jobTemplate.spec.template"},
}

// autogenOperations are the operations that can change a template: DELETE
// and CONNECT carry none to check.
var autogenOperations = []string{"CREATE", "UPDATE"}

// Autogen returns the controller resources the policy was extended to;
// nil when it was not.
func (p *CompiledPolicy) Autogen() []AutogenRule { return slices.Clone(p.autogen) }

// AutogenOperations returns the operations the policy matches on its
// autogen'd controllers, sorted.
func (p *CompiledPolicy) AutogenOperations() []string {
	if len(p.autogen) == 0 {
		return nil
	}
	var out []string
	for _, op := range autogenOperations {
		if p.ops[op] {
			out = append(out, op)
		}
	}
	return out
}

// autogenError is why spec.autogen: true cannot be honoured; "" when it
// can.
func autogenError(b Builtin) string {
	switch {
	case b == nil:
		return ""
	case b.Type() == Mutating:
		return fmt.Sprintf("autogen applies to validating policies; %q mutates, and mutations of pod templates are not supported yet", b.Name())
	}
	if po, ok := b.(PodOnly); ok && po.PodOnly() {
		return fmt.Sprintf("builtin %q needs a real pod, not a controller's pod template", b.Name())
	}
	return ""
}

// setAutogen extends a compiled validating pod policy to the pod
// controllers, unless it opted out, its builtin needs a real pod, or it
// already names the controller's resource itself.
func (p *CompiledPolicy) setAutogen() {
	if p.Err != nil || p.Type != Validating || p.builtin == nil {
		return
	}
	if a := p.Policy.Spec.Autogen; a != nil && !*a {
		return
	}
	if po, ok := p.builtin.(PodOnly); ok && po.PodOnly() {
		return
	}
	if !p.ops["CREATE"] && !p.ops["UPDATE"] {
		return
	}
	pods := false
	for _, r := range p.rules {
		if r.Group == "" && r.Resource == "pods" && r.Subresource == "" {
			pods = true
		}
	}
	if !pods {
		return
	}
	for _, c := range podControllers {
		if slices.ContainsFunc(p.rules, func(r resourceRule) bool {
			return r.matches(c.Group, c.Resource, c.Subresource)
		}) {
			continue // the policy sees the controller as itself
		}
		p.autogen = append(p.autogen, c)
	}
}

// autogenFor returns the autogen rule of a request's resource; nil when
// the policy matches it as itself.
func (p *CompiledPolicy) autogenFor(group, resource, sub string) *AutogenRule {
	for i, c := range p.autogen {
		if c.Group == group && c.Resource == resource && c.Subresource == sub {
			return &p.autogen[i]
		}
	}
	return nil
}

// podView is the pod a controller's template describes, as the policy
// sees it: apiVersion v1, kind Pod, the template's metadata with the
// request's namespace (and the controller's name), and its spec. It is
// absent when the object is, and ok is false when the object has no
// template. raw is the view's JSON, equal for equal templates (json sorts
// map keys).
func podView(obj *workingObject, template, namespace string) (w *workingObject, raw []byte, ok bool, err error) {
	v := obj.Value()
	if !v.Exists() {
		return &workingObject{}, nil, true, nil
	}
	for _, f := range strings.Split(template, ".") {
		v = v.Get(f)
	}
	if !v.IsObject() {
		return nil, nil, false, nil
	}
	meta, _ := v.Get("metadata").Interface().(map[string]any)
	m := map[string]any{}
	for k, e := range meta {
		m[k] = e
	}
	if namespace != "" {
		m["namespace"] = namespace
	}
	// The pods' names are generated later; the controller's stands in, so
	// that a message naming object.metadata.name names something.
	if _, ok := m["name"]; !ok {
		if name, ok := obj.Value().Get("metadata").Get("name").Str(); ok {
			m["name"] = name
		}
	}
	pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": m}
	if spec := v.Get("spec"); spec.Exists() {
		pod["spec"] = spec.Interface()
	}
	if raw, err = json.Marshal(pod); err != nil {
		return nil, nil, false, err
	}
	w, err = newWorkingObject(raw, nil)
	return w, raw, err == nil, err
}

// templateViolation says whose pod template a violation is about.
func templateViolation(obj *workingObject, rule *AutogenRule, name, violation string) string {
	kind, _ := obj.Value().Get("kind").Str()
	if kind == "" {
		kind = rule.Resource
	}
	return fmt.Sprintf("%s %q pod template (%s): %s", kind, name, rule.Template, violation)
}
