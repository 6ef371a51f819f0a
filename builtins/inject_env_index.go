package builtins

import (
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"celadon.io/celadon/engine"
)

func init() { register(injectEnvIndex{}) }

// injectEnvIndex gives each pod of a StatefulSet its ordinal as an
// environment variable, so an application can tell its replicas apart
// without parsing its hostname.
type injectEnvIndex struct{}

// injectEnvIndexArgs is injectEnvIndex's spec.with. Every field is optional.
type injectEnvIndexArgs struct {
	// Name is the variable's name. Empty or absent: INDEX.
	Name string `json:"name"`
	// Containers names the containers to inject into, looked up in every
	// list injected into. Absent: all of them.
	Containers []string `json:"containers"`
	// InitContainers also injects into spec.initContainers, native sidecars
	// (restartPolicy: Always) included. Default false.
	InitContainers bool `json:"initContainers"`
	// Overwrite replaces the variable where a container already sets it to
	// something else. Default false: the container's own value wins.
	Overwrite bool `json:"overwrite"`
	// ValueFrom is "literal" (default): value is the ordinal; or
	// "podIndexLabel": a fieldRef to the pod-index label, so the value is
	// read by the kubelet rather than frozen into the spec.
	ValueFrom string `json:"valueFrom"`
}

// injectEnvIndexArgs.ValueFrom values.
const (
	envIndexLiteral       = "literal"
	envIndexPodIndexLabel = "podIndexLabel"
)

// envIndexFieldPath is the downward-API path of the pod-index label.
var envIndexFieldPath = "metadata.labels['" + appsv1.PodIndexLabel + "']"

// Name is the policy's spec.action.
func (injectEnvIndex) Name() string { return "injectEnvIndex" }

// Type is Mutating.
func (injectEnvIndex) Type() engine.ActionType { return engine.Mutating }

// PodOnly implements engine.PodOnly: the ordinal is a pod's, not its
// template's.
func (injectEnvIndex) PodOnly() bool { return true }

// Compile checks spec.with and applies its defaults.
func (injectEnvIndex) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args injectEnvIndexArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	a := &injectEnvIndexAction{name: args.Name, initContainers: args.InitContainers, overwrite: args.Overwrite}
	if a.name == "" {
		a.name = "INDEX"
	}
	// The portable rule, not the relaxed one of Kubernetes 1.34: a shell must
	// be able to read the variable.
	if msgs := validation.IsEnvVarName(a.name); len(msgs) > 0 {
		return nil, c.FieldError("name", "%q is not a valid environment variable name: %s", a.name, strings.Join(msgs, "; "))
	}
	var err error
	if a.containers, err = containerSet(c, args.Containers, "omit it to inject into every container"); err != nil {
		return nil, err
	}
	a.containerNames = args.Containers
	switch args.ValueFrom {
	case "", envIndexLiteral:
	case envIndexPodIndexLabel:
		a.fromLabel = true
	default:
		return nil, c.FieldError("valueFrom", "must be %s or %s, not %q", envIndexLiteral, envIndexPodIndexLabel, args.ValueFrom)
	}
	return a, nil
}

// injectEnvIndexAction is a compiled injectEnvIndex. It is immutable, hence
// safe for concurrent use.
type injectEnvIndexAction struct {
	name           string
	containers     map[string]bool // nil: every container
	containerNames []string        // as listed, for messages
	initContainers bool
	overwrite      bool
	fromLabel      bool
}

// Run returns the ops that set the variable where it is missing (or differs,
// with overwrite), so a second run on the patched pod returns none.
func (a *injectEnvIndexAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	obj, why := podOnCreate(ac, "env can only be set")
	if !obj.Exists() {
		return skip(why), nil
	}
	md := obj.Get("metadata")
	if !envIndexOwnedByStatefulSet(md) {
		return skip("the pod is not owned by a StatefulSet"), nil
	}

	// The label is what the StatefulSet controller meant; the name is a
	// fallback for clusters older than 1.28.
	podName, _ := md.Get("name").Str()
	label := md.Get("labels").Get(appsv1.PodIndexLabel)
	var ordinal string
	switch {
	case label.Exists():
		s, ok := label.Str()
		if !ok {
			return a.skipWarn(ac, fmt.Sprintf("the label %s=%v is not a string", appsv1.PodIndexLabel, label))
		}
		if !envIndexIsOrdinal(s) {
			return a.skipWarn(ac, fmt.Sprintf("the label %s=%q is not a non-negative integer", appsv1.PodIndexLabel, s))
		}
		ordinal = s
	case a.fromLabel:
		return a.skipWarn(ac, fmt.Sprintf("valueFrom podIndexLabel needs the label %s, which StatefulSets set from Kubernetes 1.28, and pod %q does not have it", appsv1.PodIndexLabel, podName))
	default:
		i := strings.LastIndexByte(podName, '-')
		if i < 0 || !envIndexIsOrdinal(podName[i+1:]) {
			return a.skipWarn(ac, fmt.Sprintf("pod name %q does not end in -<ordinal> and the label %s is not set", podName, appsv1.PodIndexLabel))
		}
		ordinal = podName[i+1:]
	}

	spec := obj.Get("spec")
	if !spec.IsObject() {
		return skip("the pod has no spec"), nil
	}
	lists := []string{"containers"}
	if a.initContainers {
		lists = append(lists, "initContainers")
	}
	var (
		ops                          []engine.JSONPatchOp
		added, replaced, kept, equal []string
		seen                         int
	)
	for _, list := range lists {
		raw := spec.Get(list)
		if raw.IsNull() {
			continue
		}
		if !raw.IsList() {
			return engine.Outcome{}, fmt.Errorf("spec.%s is a %s, not a list", list, goType(raw))
		}
		for i, c := range raw.Elements() {
			if !c.IsObject() {
				return engine.Outcome{}, fmt.Errorf("spec.%s[%d] is a %s, not an object", list, i, goType(c))
			}
			cname, _ := c.Get("name").Str()
			if a.containers != nil && !a.containers[cname] {
				continue
			}
			seen++
			who := cname
			if list == "initContainers" {
				who += " (init)"
			}
			base := fmt.Sprintf("/spec/%s/%d/env", list, i)
			env := c.Get("env")
			if env.IsNull() {
				ops = append(ops, engine.Op("add", base, []any{a.entry(ordinal)}))
				added = append(added, who)
				continue
			}
			if !env.IsList() {
				return engine.Outcome{}, fmt.Errorf("spec.%s[%d].env is a %s, not a list", list, i, goType(env))
			}
			entries := env.Elements()
			// With duplicate names the last entry wins, in Kubernetes too.
			j := -1
			for k, e := range entries {
				if name, ok := e.Get("name").Str(); ok && name == a.name {
					j = k
				}
			}
			switch {
			case j < 0:
				ops = append(ops, engine.Op("add", base+"/-", a.entry(ordinal)))
				added = append(added, who)
			case a.matches(entries[j], ordinal):
				equal = append(equal, who)
			case a.overwrite:
				ops = append(ops, engine.Op("replace", base+"/"+strconv.Itoa(j), a.entry(ordinal)))
				replaced = append(replaced, who)
			default:
				kept = append(kept, who)
			}
		}
	}
	if seen == 0 {
		if a.containers != nil {
			return skip("the pod has no container named " + strings.Join(a.containerNames, ", ")), nil
		}
		return skip("the pod has no containers"), nil
	}

	var parts []string
	for _, p := range []struct {
		what  string
		names []string
	}{
		{"set in", added},
		{"replaced in", replaced},
		{"already set in", equal},
		{"kept the pod's own value in", kept},
	} {
		if len(p.names) > 0 {
			parts = append(parts, p.what+" containers "+strings.Join(p.names, ", "))
		}
	}
	return engine.Outcome{Patch: ops, Reason: a.describe(ordinal) + " " + strings.Join(parts, "; ")}, nil
}

// entry is the env entry to inject: a fresh value each call, since the
// engine may keep what it is given.
func (a *injectEnvIndexAction) entry(ordinal string) map[string]any {
	if a.fromLabel {
		// apiVersion is what the API server defaults it to: without it, the
		// stored entry would differ from ours and overwrite would never settle.
		return map[string]any{"name": a.name, "valueFrom": map[string]any{
			"fieldRef": map[string]any{"apiVersion": "v1", "fieldPath": envIndexFieldPath},
		}}
	}
	return map[string]any{"name": a.name, "value": ordinal}
}

// matches reports whether an existing env entry, an object, already
// yields what entry would, up to API-server defaulting.
func (a *injectEnvIndexAction) matches(e engine.Value, ordinal string) bool {
	value, _ := e.Get("value").Str()
	vf, sources := e.Get("valueFrom"), 0
	if vf.IsObject() {
		sources = vf.Len()
	}
	if !a.fromLabel {
		return value == ordinal && sources == 0
	}
	if value != "" || sources != 1 {
		return false
	}
	ref := vf.Get("fieldRef")
	if path, _ := ref.Get("fieldPath").Str(); !ref.IsObject() || path != envIndexFieldPath {
		return false
	}
	defaulted := true
	ref.Range(func(k string, v engine.Value) {
		s, isString := v.Str()
		switch {
		case k == "fieldPath":
		case k == "apiVersion" && (v.IsNull() || isString && (s == "" || s == "v1")):
		default:
			defaulted = false
		}
	})
	return defaulted
}

// describe starts the reason: the variable and its value.
func (a *injectEnvIndexAction) describe(ordinal string) string {
	if a.fromLabel {
		return fmt.Sprintf("%s from label %s (%s)", a.name, appsv1.PodIndexLabel, ordinal)
	}
	return a.name + "=" + ordinal
}

// skipWarn skips the pod and warns the client: the policy meant to inject
// into it and could not.
func (a *injectEnvIndexAction) skipWarn(ac *engine.ActionContext, why string) (engine.Outcome, error) {
	msg := a.name + " not injected: " + why
	return engine.Outcome{Skipped: true, Reason: msg, Warnings: []string{ac.Policy + ": " + msg}}, nil
}

// envIndexOwnedByStatefulSet reports whether metadata has an owner reference of kind
// StatefulSet, of any API group, so look-alikes such as OpenKruise's count.
func envIndexOwnedByStatefulSet(md engine.Value) bool {
	for _, ref := range md.Get("ownerReferences").Elements() {
		if kind, _ := ref.Get("kind").Str(); kind == "StatefulSet" {
			return true
		}
	}
	return false
}

// envIndexIsOrdinal reports whether s is a StatefulSet ordinal as the controller
// writes it: a canonical decimal int32 (no sign, no leading zeros).
func envIndexIsOrdinal(s string) bool {
	n, err := strconv.ParseInt(s, 10, 32)
	return err == nil && n >= 0 && strconv.FormatInt(n, 10) == s
}
