package engine

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
)

// Pod-controller autogen: a policy on pods also applies to the pod
// templates of the workload controllers. A validating policy rejects a
// Deployment whose pods it would reject, instead of its ReplicaSet failing
// to create pods later with nobody watching; a mutating policy changes the
// template, so that the controller's spec shows what its pods will run and
// the policies after it judge that. The policy's compiled programs are not
// rewritten: on a controller's request they run with object and oldObject
// bound to the pod built from the template, and a mutating policy's
// operations on that pod are moved to the template's path
// (templatePatch).

// PodOnly is implemented by builtins that need a real pod (an ordinal, a
// node, a pod's own name) and must not run on a controller's pod template.
// Their policies are never autogen'd.
type PodOnly interface {
	PodOnly() bool
}

// TemplateOptIn is implemented by mutating builtins that can run on a pod
// template but whose policies were written for pods: they render values
// from the pod (its name, its annotations), which a template may lack or
// hold differently. Their policies reach the templates only with
// spec.autogen: true, so that an existing policy does not start patching,
// or failing, every Deployment on upgrade.
type TemplateOptIn interface {
	TemplateOptIn() bool
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
	if po, ok := b.(PodOnly); ok && po.PodOnly() {
		return fmt.Sprintf("builtin %q needs a real pod, not a controller's pod template", b.Name())
	}
	return ""
}

// setAutogen extends a compiled pod policy, validating or mutating, to the
// pod controllers, unless it opted out, its builtin needs a real pod, or
// it already names the controller's resource itself.
func (p *CompiledPolicy) setAutogen() {
	if p.Err != nil || (p.Type != Validating && p.Type != Mutating) || p.builtin == nil {
		return
	}
	a := p.Policy.Spec.Autogen
	if a != nil && !*a {
		return
	}
	if o, ok := p.builtin.(TemplateOptIn); ok && o.TemplateOptIn() && a == nil {
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

// templateOf returns the template at path (e.g. spec.template) in obj.
func templateOf(obj Value, path string) Value {
	for _, f := range strings.Split(path, ".") {
		obj = obj.Get(f)
	}
	return obj
}

// templateMeta are the members of a pod's metadata that a pod template
// carries to its pods: the controllers copy these from the template
// (GetPodFromTemplate in Kubernetes' controller utilities) and set the
// others themselves (name, namespace, owner references...).
var templateMeta = map[string]bool{"labels": true, "annotations": true, "finalizers": true}

// templatePatch moves a mutating policy's operations on the pod view of a
// controller's template to the template's path in the controller:
// /metadata/... to /<template>/metadata/..., /spec/... to
// /<template>/spec/.... An operation on what a template does not carry to
// its pods (the pod's name, namespace or owner references, its status,
// apiVersion or kind) is left out and returned in dropped, as "op path":
// the policy, which matches pods too, still makes it on each pod.
// metaExists says whether the template has a metadata object; when it has
// none, one is added before the first operation inside it, as the pod view
// always has one.
func templatePatch(ops []jsonpatch.JsonPatchOperation, template string, metaExists bool) (out []jsonpatch.JsonPatchOperation, dropped []string) {
	prefix := "/" + strings.ReplaceAll(template, ".", "/")
	drop := func(op jsonpatch.JsonPatchOperation) { dropped = append(dropped, op.Operation+" "+op.Path) }
	for _, op := range ops {
		segs, err := splitPointer(op.Path)
		if err != nil || len(segs) == 0 {
			drop(op)
			continue
		}
		switch {
		case segs[0] == "spec":
			out = append(out, Op(op.Operation, prefix+op.Path, op.Value))
		case segs[0] == "metadata" && len(segs) == 1:
			// The whole metadata: what the template carries of it.
			v, err := ToJSONValue(op.Value)
			m, ok := v.(map[string]any)
			if err != nil || !ok || (op.Operation != "add" && op.Operation != "replace") {
				drop(op)
				continue
			}
			kept := map[string]any{}
			for k, e := range m {
				if templateMeta[k] {
					kept[k] = e
				} else {
					dropped = append(dropped, op.Operation+" "+op.Path+"/"+EscapePointer(k))
				}
			}
			// add sets the member whether or not the template has one.
			out = append(out, Op("add", prefix+"/metadata", kept))
			metaExists = true
		case segs[0] == "metadata" && templateMeta[segs[1]]:
			if !metaExists {
				out = append(out, Op("add", prefix+"/metadata", map[string]any{}))
				metaExists = true
			}
			out = append(out, Op(op.Operation, prefix+op.Path, op.Value))
		default:
			drop(op)
		}
	}
	return out, dropped
}

// templateDropWarning tells the requester that a policy's changes to a
// pod's own fields were left out of a controller's pod template.
func templateDropWarning(obj *workingObject, rule *AutogenRule, name, policy string, dropped []string) string {
	kind, _ := obj.Value().Get("kind").Str()
	if kind == "" {
		kind = rule.Resource
	}
	return fmt.Sprintf("Celadon policy '%s' changes what a pod template does not carry (%s): left out of %s %q pod template (%s), made on its pods",
		policy, strings.Join(dropped, ", "), kind, name, rule.Template)
}
