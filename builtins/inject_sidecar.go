package builtins

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/google/cel-go/cel"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/source"
)

func init() { register(injectSidecar{}) }

// injectSidecar adds containers, init containers and volumes from templates
// to pods on CREATE, and mounts volumes into the pod's own containers.
//
// Templates are checked at load by strict decoding into corev1.Container,
// corev1.Volume and corev1.VolumeMount, but emitted as the JSON the user
// wrote (no zero-value fields), with ${{ expr }} templates replaced by the
// value of their CEL expression for the pod being admitted.
//
// Injection is idempotent by name: a container or volume already in the pod
// under the same name, equal on every field its template sets and adding
// none that changes what runs (sidecarContainerDiff), is left alone; one
// that differs is a conflict (onConflict). A mount is identified by its
// container and mountPath.
type injectSidecar struct{}

// injectSidecarArgs is injectSidecar's spec.with.
type injectSidecarArgs struct {
	// Containers are sidecars: added to spec.containers, or with
	// NativeSidecar to spec.initContainers with restartPolicy: Always.
	Containers []json.RawMessage `json:"containers"`
	// InitContainers are added to spec.initContainers; one with
	// restartPolicy: Always is a native sidecar (Kubernetes ≥ 1.29).
	InitContainers []json.RawMessage `json:"initContainers"`
	// Volumes are added to spec.volumes.
	Volumes []json.RawMessage `json:"volumes"`
	// VolumeMounts mount volumes into the pod's own containers.
	VolumeMounts []sidecarMountArgs `json:"volumeMounts"`
	// NativeSidecar injects Containers as native sidecars.
	NativeSidecar bool `json:"nativeSidecar"`
	// InitContainerPlacement is "last" (default) or "first".
	InitContainerPlacement string `json:"initContainerPlacement"`
	// OnConflict is "skip" (default) or "fail".
	OnConflict string `json:"onConflict"`
}

// sidecarMountArgs is one entry of with.volumeMounts.
type sidecarMountArgs struct {
	// Containers names the pod's containers to mount into (spec.containers
	// or spec.initContainers). Absent: every entry of spec.containers other
	// than the sidecars this policy injects.
	Containers []string `json:"containers"`
	// Mount is a corev1.VolumeMount.
	Mount json.RawMessage `json:"mount"`
}

// Values of injectSidecarArgs.InitContainerPlacement and OnConflict.
const (
	sidecarPlaceFirst   = "first"
	sidecarPlaceLast    = "last"
	sidecarConflictSkip = "skip"
	sidecarConflictFail = "fail"
)

// Name is the policy's spec.action.
func (injectSidecar) Name() string { return "injectSidecar" }

// Type is Mutating.
func (injectSidecar) Type() engine.ActionType { return engine.Mutating }

// TemplateOptIn: a sidecar added to a controller's pod template (with
// spec.autogen: true) is in every pod, which the policy then finds equal
// and leaves alone; but a ${{ }} template reading the pod's name or
// annotations reads the controller's template there, so a policy written
// for pods is not extended to templates unless it asks.
func (injectSidecar) TemplateOptIn() bool { return true }

// sidecarItem is one compiled container, volume or mount template.
type sidecarItem struct {
	name  string       // the container's or volume's name; the mount's volume
	value *sidecarTmpl // the JSON to emit
	// For mounts:
	mountPath  string          // literal mountPath; "" when templated
	containers []string        // as listed; nil: the app containers
	inList     map[string]bool // containers as a set
}

// injectSidecarAction is a compiled injectSidecar. It is immutable, hence
// safe for concurrent use.
type injectSidecarAction struct {
	containers []*sidecarItem // sidecars, in spec.containers or (native) spec.initContainers
	inits      []*sidecarItem // init containers, then native sidecars: the order injected
	volumes    []*sidecarItem
	mounts     []*sidecarItem
	native     bool
	first      bool
	fail       bool
	sidecars   map[string]bool // names of every container template
	volNames   map[string]bool
}

// Compile checks spec.with, validates the templates and compiles their
// ${{ }} expressions.
func (injectSidecar) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args injectSidecarArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	if len(args.Containers)+len(args.InitContainers)+len(args.Volumes)+len(args.VolumeMounts) == 0 {
		return nil, errors.New("with: at least one of containers, initContainers, volumes or volumeMounts is required")
	}
	a := &injectSidecarAction{native: args.NativeSidecar, sidecars: map[string]bool{}, volNames: map[string]bool{}}
	switch args.InitContainerPlacement {
	case "", sidecarPlaceLast:
	case sidecarPlaceFirst:
		a.first = true
	default:
		return nil, c.FieldError("initContainerPlacement", "must be %s or %s, not %q", sidecarPlaceFirst, sidecarPlaceLast, args.InitContainerPlacement)
	}
	switch args.OnConflict {
	case "", sidecarConflictSkip:
	case sidecarConflictFail:
		a.fail = true
	default:
		return nil, c.FieldError("onConflict", "must be %s or %s, not %q", sidecarConflictSkip, sidecarConflictFail, args.OnConflict)
	}
	if args.NativeSidecar && len(args.Containers) == 0 {
		return nil, c.FieldError("nativeSidecar", "applies to with.containers, which is empty; an init container with restartPolicy: Always in with.initContainers is a native sidecar")
	}

	var natives []*sidecarItem
	for _, list := range []struct {
		field string
		raws  []json.RawMessage
		init  bool
	}{{"containers", args.Containers, false}, {"initContainers", args.InitContainers, true}} {
		for i, raw := range list.raws {
			field := fmt.Sprintf("%s[%d]", list.field, i)
			var ctr corev1.Container
			plain, err := sidecarDecode(c, field, raw, &ctr)
			if err != nil {
				return nil, err
			}
			if err := sidecarCheckName(c, field, ctr.Name, "container"); err != nil {
				return nil, err
			}
			if a.sidecars[ctr.Name] {
				return nil, c.FieldError(field+".name", "container %q is defined twice", ctr.Name)
			}
			a.sidecars[ctr.Name] = true
			if strings.TrimSpace(ctr.Image) == "" {
				return nil, c.FieldError(field+".image", "is required")
			}
			if !list.init && args.NativeSidecar {
				if ctr.RestartPolicy != nil && *ctr.RestartPolicy != corev1.ContainerRestartPolicyAlways {
					return nil, c.FieldError(field+".restartPolicy", "must be Always (or absent) with nativeSidecar: true, not %q", *ctr.RestartPolicy)
				}
				plain["restartPolicy"] = string(corev1.ContainerRestartPolicyAlways)
			}
			t, err := sidecarCompile(c, field, plain)
			if err != nil {
				return nil, err
			}
			item := &sidecarItem{name: ctr.Name, value: t}
			switch {
			case list.init:
				a.inits = append(a.inits, item)
			case args.NativeSidecar:
				natives = append(natives, item)
			default:
				a.containers = append(a.containers, item)
			}
		}
	}
	// Injected init steps run before the injected native sidecars start:
	// a sidecar that must run during them is listed in initContainers.
	a.inits = append(a.inits, natives...)

	for i, raw := range args.Volumes {
		field := fmt.Sprintf("volumes[%d]", i)
		var vol corev1.Volume
		plain, err := sidecarDecode(c, field, raw, &vol)
		if err != nil {
			return nil, err
		}
		if err := sidecarCheckName(c, field, vol.Name, "volume"); err != nil {
			return nil, err
		}
		if a.volNames[vol.Name] {
			return nil, c.FieldError(field+".name", "volume %q is defined twice", vol.Name)
		}
		a.volNames[vol.Name] = true
		if sources := sidecarVolumeSources(&vol); len(sources) != 1 {
			if len(sources) == 0 {
				return nil, c.FieldError(field, "volume %q has no source; give exactly one, e.g. emptyDir: {}", vol.Name)
			}
			return nil, c.FieldError(field, "volume %q has %d sources (%s); give exactly one", vol.Name, len(sources), strings.Join(sources, ", "))
		}
		t, err := sidecarCompile(c, field, plain)
		if err != nil {
			return nil, err
		}
		a.volumes = append(a.volumes, &sidecarItem{name: vol.Name, value: t})
	}

	for i, m := range args.VolumeMounts {
		field := fmt.Sprintf("volumeMounts[%d]", i)
		if len(m.Mount) == 0 || string(m.Mount) == "null" {
			return nil, c.FieldError(field+".mount", "is required: {name, mountPath, ...} as in a container's volumeMounts")
		}
		var vm corev1.VolumeMount
		plain, err := sidecarDecode(c, field+".mount", m.Mount, &vm)
		if err != nil {
			return nil, err
		}
		if err := sidecarCheckName(c, field+".mount", vm.Name, "volume"); err != nil {
			return nil, err
		}
		if vm.MountPath == "" {
			return nil, c.FieldError(field+".mount.mountPath", "is required")
		}
		item := &sidecarItem{name: vm.Name}
		if !strings.Contains(vm.MountPath, "${{") {
			item.mountPath = vm.MountPath
		}
		if m.Containers != nil {
			if len(m.Containers) == 0 {
				return nil, c.FieldError(field+".containers", "is empty; omit it to mount into every app container")
			}
			item.inList = map[string]bool{}
			for j, n := range m.Containers {
				f := fmt.Sprintf("%s.containers[%d]", field, j)
				if msgs := validation.IsDNS1123Label(n); len(msgs) > 0 {
					return nil, c.FieldError(f, "%q is not a valid container name: %s", n, strings.Join(msgs, "; "))
				}
				if item.inList[n] {
					return nil, c.FieldError(f, "container %q is listed twice", n)
				}
				if a.sidecars[n] {
					return nil, c.FieldError(f, "container %q is injected by this policy: give the mount in its template", n)
				}
				item.inList[n] = true
			}
			item.containers = m.Containers
		}
		// Two mounts at one path in one container are invalid in Kubernetes.
		for j, prev := range a.mounts {
			if item.mountPath != "" && prev.mountPath == item.mountPath && sidecarOverlap(prev, item) {
				return nil, c.FieldError(field+".mount.mountPath", "%q is also the mountPath of volumeMounts[%d] in the same container", item.mountPath, j)
			}
		}
		if item.value, err = sidecarCompile(c, field+".mount", plain); err != nil {
			return nil, err
		}
		a.mounts = append(a.mounts, item)
	}
	return a, nil
}

// sidecarDecode strictly decodes one template into its typed form, to
// validate it, and returns it as plain JSON for emission.
func sidecarDecode(c *engine.CompileContext, field string, raw json.RawMessage, typed any) (map[string]any, error) {
	if err := c.DecodeField(field, raw, typed); err != nil {
		var errs source.FieldErrors
		if strings.Contains(string(raw), "${{") && errors.As(err, &errs) {
			for _, e := range errs {
				if e.Msg != source.UnknownField && e.Msg != source.DuplicateField && !strings.HasPrefix(e.Msg, "expected an object") {
					e.Msg += " (${{ }} templates are allowed in string fields only: not in quantities, numbers or booleans)"
				}
			}
		}
		return nil, err
	}
	v, err := engine.ToJSONValue(raw)
	if err != nil {
		return nil, c.FieldError(field, "%v", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, c.FieldError(field, "expected an object")
	}
	return m, nil
}

// sidecarCheckName checks the name of a container or volume template: a
// literal DNS-1123 label, since injection is idempotent by name.
func sidecarCheckName(c *engine.CompileContext, field, name, what string) error {
	switch {
	case name == "":
		return c.FieldError(field+".name", "is required")
	case strings.Contains(name, "${{"):
		return c.FieldError(field+".name", "cannot be templated: the %s is found by name, which must not vary from pod to pod", what)
	}
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		return c.FieldError(field+".name", "%q is not a valid %s name: %s", name, what, strings.Join(msgs, "; "))
	}
	return nil
}

// sidecarVolumeSources names the sources a volume sets.
func sidecarVolumeSources(v *corev1.Volume) []string {
	var out []string
	rv := reflect.ValueOf(v.VolumeSource)
	rt := rv.Type()
	for i := range rv.NumField() {
		if f := rv.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			out = append(out, name)
		}
	}
	return out
}

// sidecarOverlap reports whether two mounts may target the same container.
// A mount for every app container may meet any named container.
func sidecarOverlap(a, b *sidecarItem) bool {
	if a.inList == nil || b.inList == nil {
		return true
	}
	for n := range a.inList {
		if b.inList[n] {
			return true
		}
	}
	return false
}

// sidecarTmpl is a template value: plain JSON, with ${{ expr }} in strings.
// Exactly one of its forms is set.
type sidecarTmpl struct {
	lit   any                     // no templates inside: copied at render
	parts []sidecarPart           // a templated string
	obj   map[string]*sidecarTmpl // an object with templates inside
	arr   []*sidecarTmpl          // a list with templates inside
}

// sidecarPart is a literal run or an expression of a templated string.
type sidecarPart struct {
	lit  string
	expr *engine.Expression
}

// sidecarCompile compiles the ${{ }} expressions in v, found at field.
func sidecarCompile(c *engine.CompileContext, field string, v any) (*sidecarTmpl, error) {
	switch v := v.(type) {
	case string:
		parts, templated, err := sidecarParse(v)
		if err != nil {
			return nil, c.FieldError(field, "%v", err)
		}
		if !templated {
			if len(parts) == 0 {
				return &sidecarTmpl{lit: ""}, nil
			}
			return &sidecarTmpl{lit: parts[0].lit}, nil
		}
		out := make([]sidecarPart, len(parts))
		for i, p := range parts {
			out[i].lit = p.lit
			if p.src != "" {
				e, err := c.CompileExpression(field, p.src, cel.StringType)
				if err != nil {
					return nil, err
				}
				out[i].expr = e
			}
		}
		return &sidecarTmpl{parts: out}, nil
	case map[string]any:
		obj := make(map[string]*sidecarTmpl, len(v))
		templated := false
		for _, k := range slices.Sorted(maps.Keys(v)) { // the first error found is stable
			t, err := sidecarCompile(c, field+"."+k, v[k])
			if err != nil {
				return nil, err
			}
			obj[k] = t
			templated = templated || t.lit == nil
		}
		if !templated {
			return &sidecarTmpl{lit: sidecarLit(obj)}, nil
		}
		return &sidecarTmpl{obj: obj}, nil
	case []any:
		arr := make([]*sidecarTmpl, len(v))
		templated := false
		for i, e := range v {
			t, err := sidecarCompile(c, field+"["+strconv.Itoa(i)+"]", e)
			if err != nil {
				return nil, err
			}
			arr[i] = t
			templated = templated || t.lit == nil
		}
		if !templated {
			lits := make([]any, len(arr))
			for i, t := range arr {
				lits[i] = sidecarUnNull(t.lit)
			}
			return &sidecarTmpl{lit: lits}, nil
		}
		return &sidecarTmpl{arr: arr}, nil
	case nil:
		return &sidecarTmpl{lit: sidecarNull{}}, nil
	}
	return &sidecarTmpl{lit: v}, nil
}

// sidecarNull stands for a JSON null in a template, so that lit == nil
// can mean "templated".
type sidecarNull struct{}

func sidecarUnNull(v any) any {
	if _, ok := v.(sidecarNull); ok {
		return nil
	}
	return v
}

func sidecarLit(obj map[string]*sidecarTmpl) map[string]any {
	m := make(map[string]any, len(obj))
	for k, t := range obj {
		m[k] = sidecarUnNull(t.lit)
	}
	return m
}

// sidecarPartSrc is a parsed part of a templated string.
type sidecarPartSrc struct {
	lit string
	src string // the expression; "" for a literal
}

// sidecarParse splits s into literal runs and ${{ expr }} expressions.
// "$${{" is a literal "${{". A string without expressions is one literal.
func sidecarParse(s string) (parts []sidecarPartSrc, templated bool, err error) {
	var lit strings.Builder
	for p := 0; p < len(s); {
		switch {
		case strings.HasPrefix(s[p:], "$${{"):
			lit.WriteString("${{")
			p += 4
		case strings.HasPrefix(s[p:], "${{"):
			end := strings.Index(s[p+3:], "}}")
			if end < 0 {
				return nil, false, fmt.Errorf("%q has no closing }}", s[p:])
			}
			expr := strings.TrimSpace(s[p+3 : p+3+end])
			if expr == "" {
				return nil, false, errors.New("${{ }} holds no expression")
			}
			if lit.Len() > 0 {
				parts = append(parts, sidecarPartSrc{lit: lit.String()})
				lit.Reset()
			}
			parts = append(parts, sidecarPartSrc{src: expr})
			templated = true
			p += 3 + end + 2
		default:
			lit.WriteByte(s[p])
			p++
		}
	}
	if lit.Len() > 0 || len(parts) == 0 {
		parts = append(parts, sidecarPartSrc{lit: lit.String()})
	}
	return parts, templated, nil
}

// render returns a fresh plain JSON value for one request.
func (t *sidecarTmpl) render(ac *engine.ActionContext) (any, error) {
	switch {
	case t.lit != nil:
		return sidecarCopy(sidecarUnNull(t.lit)), nil
	case t.parts != nil:
		var b strings.Builder
		for _, p := range t.parts {
			if p.expr == nil {
				b.WriteString(p.lit)
				continue
			}
			s, err := ac.EvalString(p.expr)
			if err != nil {
				return nil, err
			}
			b.WriteString(s)
		}
		return b.String(), nil
	case t.obj != nil:
		m := make(map[string]any, len(t.obj))
		for k, e := range t.obj {
			v, err := e.render(ac)
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		return m, nil
	}
	out := make([]any, len(t.arr))
	for i, e := range t.arr {
		v, err := e.render(ac)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func sidecarCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = sidecarCopy(e)
		}
		return m
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = sidecarCopy(e)
		}
		return out
	}
	return v
}

// sidecarContainer is a container of the pod being admitted.
type sidecarContainer struct {
	list  string // "containers" or "initContainers"
	index int
	obj   engine.Value
}

// Run returns the operations that add what the pod lacks. The patched pod
// holds every item, so a second run returns none.
func (a *injectSidecarAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	obj, why := podOnCreate(ac, "containers can only be added")
	if !obj.Exists() {
		return skip(why), nil
	}
	spec := obj.Get("spec")
	if !spec.IsObject() {
		return skip("the pod has no spec"), nil
	}
	// The pod's lists that are present, each item an object.
	lists := map[string][]engine.Value{}
	for _, l := range []string{"containers", "initContainers", "volumes"} {
		raw := spec.Get(l)
		if raw.IsNull() {
			continue
		}
		if !raw.IsList() {
			return engine.Outcome{}, fmt.Errorf("spec.%s is a %s, not a list", l, goType(raw))
		}
		items := raw.Elements()
		for i, item := range items {
			if !item.IsObject() {
				return engine.Outcome{}, fmt.Errorf("spec.%s[%d] is a %s, not an object", l, i, goType(item))
			}
		}
		lists[l] = items
	}
	has := func(l string) bool { _, ok := lists[l]; return ok }
	byName := map[string]sidecarContainer{}
	for _, l := range []string{"containers", "initContainers"} {
		for i, item := range lists[l] {
			if n, _ := item.Get("name").Str(); n != "" {
				if _, dup := byName[n]; !dup {
					byName[n] = sidecarContainer{list: l, index: i, obj: item}
				}
			}
		}
	}
	volumes := map[string]engine.Value{}
	for _, item := range lists["volumes"] {
		if n, _ := item.Get("name").Str(); n != "" {
			if _, dup := volumes[n]; !dup {
				volumes[n] = item
			}
		}
	}

	var (
		conflicts, added, present []string
		addVolumes                []any
		addContainers, addInits   []any
		addedInitNames            []string
	)
	checkContainer := func(item *sidecarItem, target string) (any, bool, error) {
		v, err := item.value.render(ac)
		if err != nil {
			return nil, false, err
		}
		have, ok := byName[item.name]
		if !ok {
			return v, true, nil
		}
		what := "container " + item.name
		if target == "initContainers" {
			what = "init container " + item.name
		}
		switch {
		case have.list != target:
			conflicts = append(conflicts, fmt.Sprintf("%s: the pod has a container of that name in spec.%s", what, have.list))
		default:
			if path := sidecarContainerDiff(v, have.obj.Interface()); path != "" {
				conflicts = append(conflicts, fmt.Sprintf("%s: the pod's differs from the template in %s", what, path))
			} else {
				present = append(present, what)
			}
		}
		return nil, false, nil
	}
	sidecarTarget := "containers"
	if a.native {
		sidecarTarget = "initContainers"
	}
	for _, item := range a.containers {
		v, add, err := checkContainer(item, sidecarTarget)
		if err != nil {
			return engine.Outcome{}, err
		}
		if add {
			addContainers = append(addContainers, v)
			added = append(added, "container "+item.name)
		}
	}
	for _, item := range a.inits {
		v, add, err := checkContainer(item, "initContainers")
		if err != nil {
			return engine.Outcome{}, err
		}
		if add {
			addInits = append(addInits, v)
			addedInitNames = append(addedInitNames, item.name)
		}
	}
	if len(addedInitNames) > 0 {
		place := sidecarPlaceLast
		if a.first {
			place = sidecarPlaceFirst
		}
		added = append(added, fmt.Sprintf("init container %s (%s)", strings.Join(addedInitNames, ", "), place))
	}
	for _, item := range a.volumes {
		v, err := item.value.render(ac)
		if err != nil {
			return engine.Outcome{}, err
		}
		have, ok := volumes[item.name]
		switch {
		case !ok:
			addVolumes = append(addVolumes, v)
			added = append(added, "volume "+item.name)
		default:
			if path := sidecarVolumeDiff(v, have.Interface()); path != "" {
				conflicts = append(conflicts, fmt.Sprintf("volume %s: the pod's differs from the template in %s", item.name, path))
			} else {
				present = append(present, "volume "+item.name)
			}
		}
	}

	// Mounts into the pod's own containers, by container index.
	type mountOp struct {
		c     sidecarContainer
		value any
	}
	var mountOps []mountOp
	var missing []string
	for _, item := range a.mounts {
		v, err := item.value.render(ac)
		if err != nil {
			return engine.Outcome{}, err
		}
		m, ok := v.(map[string]any)
		if !ok {
			return engine.Outcome{}, fmt.Errorf("volumeMounts: rendered a %T, not an object", v)
		}
		mountPath, _ := m["mountPath"].(string)
		if _, ok := volumes[item.name]; !ok && !a.volNames[item.name] {
			return engine.Outcome{}, fmt.Errorf("volume %q, mounted at %s, is neither in the pod nor in with.volumes", item.name, mountPath)
		}
		var targets []sidecarContainer
		if item.containers == nil {
			for i, c := range lists["containers"] {
				if n, _ := c.Get("name").Str(); !a.sidecars[n] {
					targets = append(targets, sidecarContainer{list: "containers", index: i, obj: c})
				}
			}
		} else {
			for _, n := range item.containers {
				if c, ok := byName[n]; ok {
					targets = append(targets, c)
				} else {
					missing = append(missing, n)
				}
			}
		}
		var into, already []string
		for _, t := range targets {
			cname, _ := t.obj.Get("name").Str()
			mounts := t.obj.Get("volumeMounts")
			if !mounts.IsNull() && !mounts.IsList() {
				return engine.Outcome{}, fmt.Errorf("spec.%s[%d].volumeMounts is a %s, not a list", t.list, t.index, goType(mounts))
			}
			var have engine.Value // absent: no mount at mountPath
			for _, e := range mounts.Elements() {
				if p, ok := e.Get("mountPath").Str(); ok && p == mountPath {
					have = e
					break
				}
			}
			switch {
			case !have.Exists():
				mountOps = append(mountOps, mountOp{c: t, value: sidecarCopy(m)})
				into = append(into, cname)
			default:
				if path := sidecarMountDiff(m, have.Interface()); path != "" {
					conflicts = append(conflicts, fmt.Sprintf("mount at %s in container %s: the pod's differs from the template in %s", mountPath, cname, path))
				} else {
					already = append(already, cname)
				}
			}
		}
		if len(into) > 0 {
			added = append(added, fmt.Sprintf("mount %s at %s in %s", item.name, mountPath, strings.Join(into, ", ")))
		}
		if len(already) > 0 {
			present = append(present, fmt.Sprintf("mount %s at %s in %s", item.name, mountPath, strings.Join(already, ", ")))
		}
	}

	if len(conflicts) > 0 {
		msg := "nothing injected: " + strings.Join(conflicts, "; ")
		if a.fail {
			return engine.Outcome{}, errors.New(msg)
		}
		return engine.Outcome{Skipped: true, Reason: msg, Warnings: []string{ac.Policy + ": " + msg}}, nil
	}

	// Volumes, then mounts (at the indices the containers have now), then
	// containers, then init containers, whose insertion at the front would
	// shift the indices of the pod's own.
	var ops []engine.JSONPatchOp
	ops = sidecarAppend(ops, "/spec/volumes", has("volumes"), addVolumes)
	created := map[string]bool{}
	for _, m := range mountOps {
		base := fmt.Sprintf("/spec/%s/%d/volumeMounts", m.c.list, m.c.index)
		if m.c.obj.Get("volumeMounts").IsNull() && !created[base] {
			ops = append(ops, engine.Op("add", base, []any{m.value}))
			created[base] = true
			continue
		}
		ops = append(ops, engine.Op("add", base+"/-", m.value))
	}
	ops = sidecarAppend(ops, "/spec/containers", has("containers"), addContainers)
	switch {
	case !a.first || !has("initContainers"):
		ops = sidecarAppend(ops, "/spec/initContainers", has("initContainers"), addInits)
	default:
		for i, v := range addInits {
			ops = append(ops, engine.Op("add", "/spec/initContainers/"+strconv.Itoa(i), v))
		}
	}

	var parts []string
	switch {
	case len(added) > 0:
		parts = append(parts, "injected "+strings.Join(added, ", "))
		if len(present) > 0 {
			parts = append(parts, "already present: "+strings.Join(present, ", "))
		}
	case len(present) > 0:
		parts = append(parts, "already injected: "+strings.Join(present, ", "))
	default:
		parts = append(parts, "nothing to inject")
	}
	if len(missing) > 0 {
		parts = append(parts, "no container named "+strings.Join(missing, ", "))
	}
	return engine.Outcome{Patch: ops, Reason: strings.Join(parts, "; ")}, nil
}

// sidecarAppend appends values to the list at path, creating it if absent.
func sidecarAppend(ops []engine.JSONPatchOp, path string, exists bool, values []any) []engine.JSONPatchOp {
	if len(values) == 0 {
		return ops
	}
	if !exists {
		return append(ops, engine.Op("add", path, values))
	}
	for _, v := range values {
		ops = append(ops, engine.Op("add", path+"/-", v))
	}
	return ops
}

// sidecarDiff compares want, a rendered template, with have, what the pod
// holds, on the fields want sets only: fields want omits may hold anything,
// such as the API server's defaults, and a list of objects (env, ports,
// volumeMounts) may hold more items than want's, which must appear in it in
// their order. Quantities compare by value. It returns the paths of the
// differences, joined, or "" when there are none.
func sidecarDiff(want, have any) string {
	var out []string
	sidecarDiffs(want, have, "", false, &out)
	return strings.Join(out, ", ")
}

// sidecarRunFields are the container fields that change what a container
// runs, or whether it keeps running. A pod's container that sets one its
// template leaves unset is not the template's sidecar: else a pod could
// declare a mandatory sidecar itself, with command: [sleep, infinity], and
// have it pass as injected. The API server defaults none of them. What it
// does default (imagePullPolicy, terminationMessagePath), what other
// admission plugins add (requests from a LimitRange, the service account
// token's mount) and what adds to the sidecar without changing what it runs
// (ports, variables of other names) stay allowed.
var sidecarRunFields = []string{"args", "command", "envFrom", "lifecycle", "livenessProbe", "restartPolicy", "restartPolicyRules", "securityContext", "startupProbe", "workingDir"}

// sidecarMountFields change what a mount shows of its volume.
var sidecarMountFields = []string{"subPath", "subPathExpr"}

// sidecarVolumeDefaults are the fields of a volume source the API server
// defaults, with their defaults: present in a pod as stored though the
// template omits them. Any other field a template's source omits changes
// what the volume holds, and is a conflict.
var sidecarVolumeDefaults = map[string]any{
	"configMap.defaultMode":   int64(0o644),
	"secret.defaultMode":      int64(0o644),
	"projected.defaultMode":   int64(0o644),
	"downwardAPI.defaultMode": int64(0o644),
	"hostPath.type":           "",
	"iscsi.iscsiInterface":    "default",
	"rbd.pool":                "rbd",
	"rbd.user":                "admin",
	"rbd.keyring":             "/etc/ceph/keyring",
	"azureDisk.cachingMode":   "ReadWrite",
	"azureDisk.fsType":        "ext4",
	"azureDisk.readOnly":      false,
	"azureDisk.kind":          "Shared",
	"scaleIO.storageMode":     "ThinProvisioned",
	"scaleIO.fsType":          "xfs",
}

// sidecarContainerDiff is sidecarDiff for a container: have must also set
// no run field (sidecarRunFields) the template leaves unset, no mount of a
// template's mountPath may add a subPath, and no variable of the
// template's env may be set again (the last of a name wins).
func sidecarContainerDiff(want, have any) string {
	var out []string
	sidecarDiffs(want, have, "", false, &out)
	w, _ := want.(map[string]any)
	h, ok := have.(map[string]any)
	if !ok {
		return strings.Join(out, ", ") // reported as "every field"
	}
	out = append(out, sidecarAdded(w, h, "", sidecarRunFields)...)
	if !sidecarReported(out, "env") {
		wenv, _ := w["env"].([]any)
		henv, _ := h["env"].([]any)
		byName := map[string]any{}
		for _, e := range wenv {
			if n, ok := sidecarField(e, "name"); ok {
				byName[n] = e
			}
		}
		for i, e := range henv {
			n, _ := sidecarField(e, "name")
			if tw, ok := byName[n]; ok {
				var d []string
				if sidecarDiffs(tw, e, "", false, &d); len(d) > 0 {
					out = append(out, fmt.Sprintf("env[%d] (sets %s again)", i, n))
				}
			}
		}
	}
	if !sidecarReported(out, "volumeMounts") {
		wm, _ := w["volumeMounts"].([]any)
		hm, _ := h["volumeMounts"].([]any)
		for _, tm := range wm {
			p, ok := sidecarField(tm, "mountPath")
			if !ok {
				continue
			}
			for i, m := range hm {
				if hp, _ := sidecarField(m, "mountPath"); hp == p {
					tmo, _ := tm.(map[string]any)
					mo, _ := m.(map[string]any)
					out = append(out, sidecarAdded(tmo, mo, fmt.Sprintf("volumeMounts[%d].", i), sidecarMountFields)...)
				}
			}
		}
	}
	return strings.Join(out, ", ")
}

// sidecarMountDiff is sidecarDiff for a mount into the pod's containers:
// have must also add no subPath.
func sidecarMountDiff(want, have any) string {
	var out []string
	sidecarDiffs(want, have, "", false, &out)
	w, _ := want.(map[string]any)
	if h, ok := have.(map[string]any); ok {
		out = append(out, sidecarAdded(w, h, "", sidecarMountFields)...)
	}
	return strings.Join(out, ", ")
}

// sidecarVolumeDiff is sidecarDiff for a volume: its source must hold no
// field the template's omits (the API server's defaults aside), and none
// of its lists (projected sources, items) more items than the template's.
func sidecarVolumeDiff(want, have any) string {
	var out []string
	sidecarDiffs(want, have, "", false, &out)
	w, _ := want.(map[string]any)
	h, ok := have.(map[string]any)
	if !ok {
		return strings.Join(out, ", ")
	}
	for _, src := range slices.Sorted(maps.Keys(w)) {
		ws, _ := w[src].(map[string]any)
		hs, ok := h[src].(map[string]any)
		if src == "name" || ws == nil || !ok {
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(hs)) {
			if _, set := ws[k]; set || hs[k] == nil {
				continue
			}
			if d, ok := sidecarVolumeDefaults[src+"."+k]; ok && sidecarScalarEqual(d, hs[k]) {
				continue
			}
			out = append(out, src+"."+k+" (not in the template)")
		}
		sidecarLonger(ws, hs, src, &out)
	}
	return strings.Join(out, ", ")
}

// sidecarLonger reports the lists under want that have holds with more
// items, where no difference is reported yet.
func sidecarLonger(want, have map[string]any, path string, out *[]string) {
	for _, k := range slices.Sorted(maps.Keys(want)) {
		p := path + "." + k
		switch w := want[k].(type) {
		case []any:
			if h, ok := have[k].([]any); ok && len(h) > len(w) && !sidecarReported(*out, p) {
				*out = append(*out, p+" (more items than the template's)")
			}
		case map[string]any:
			if h, ok := have[k].(map[string]any); ok {
				sidecarLonger(w, h, p, out)
			}
		}
	}
}

// sidecarAdded names the fields of fields that have sets and want does not
// (a null in want already asks for the field's absence).
func sidecarAdded(want, have map[string]any, prefix string, fields []string) []string {
	var out []string
	for _, f := range fields {
		if _, set := want[f]; !set && have[f] != nil {
			out = append(out, prefix+f+" (not in the template)")
		}
	}
	return out
}

// sidecarReported reports whether a difference at path, or under it, is in
// out already.
func sidecarReported(out []string, path string) bool {
	for _, p := range out {
		if p == path || strings.HasPrefix(p, path+".") || strings.HasPrefix(p, path+"[") || strings.HasPrefix(p, path+" ") {
			return true
		}
	}
	return false
}

// sidecarField returns a string field of v, an object.
func sidecarField(v any, field string) (string, bool) {
	m, _ := v.(map[string]any)
	s, ok := m[field].(string)
	return s, ok
}

func sidecarDiffs(want, have any, path string, quantity bool, out *[]string) {
	differ := func() {
		if path == "" {
			path = "every field"
		}
		*out = append(*out, path)
	}
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			differ()
			return
		}
		for _, k := range slices.Sorted(maps.Keys(w)) {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if w[k] == nil {
				if h[k] != nil {
					*out = append(*out, p)
				}
				continue
			}
			// The values of limits and requests, sizeLimit and divisor are
			// quantities.
			if wm, ok := w[k].(map[string]any); ok && (k == "limits" || k == "requests") {
				hm, _ := h[k].(map[string]any)
				for _, rk := range slices.Sorted(maps.Keys(wm)) {
					sidecarDiffs(wm[rk], hm[rk], p+"."+rk, true, out)
				}
				continue
			}
			sidecarDiffs(w[k], h[k], p, k == "sizeLimit" || k == "divisor", out)
		}
	case []any:
		h, ok := have.([]any)
		if !ok {
			differ()
			return
		}
		if sidecarObjects(w) && sidecarSubsequence(w, h, quantity) {
			return
		}
		if len(h) != len(w) {
			differ()
			return
		}
		for i := range w {
			sidecarDiffs(w[i], h[i], path+"["+strconv.Itoa(i)+"]", quantity, out)
		}
	default:
		if quantity {
			wq, ok1 := sidecarQuantity(want)
			hq, ok2 := sidecarQuantity(have)
			if ok1 && ok2 && wq.Cmp(hq) == 0 {
				return
			}
		}
		if !sidecarScalarEqual(want, have) {
			differ()
		}
	}
}

// sidecarObjects reports whether list holds objects only, such as env,
// ports or volumeMounts (not args or command).
func sidecarObjects(list []any) bool {
	for _, e := range list {
		if _, ok := e.(map[string]any); !ok {
			return false
		}
	}
	return len(list) > 0
}

// sidecarSubsequence reports whether every item of want matches an item of
// have, in order, have holding others between or after them: an injected
// sidecar whose env another policy extended (a reinvocation) still is the
// one the template describes. Leftmost matching finds a match if any exists.
func sidecarSubsequence(want, have []any, quantity bool) bool {
	j := 0
	for _, w := range want {
		for ; j < len(have); j++ {
			var diffs []string
			if sidecarDiffs(w, have[j], "", quantity, &diffs); len(diffs) == 0 {
				break
			}
		}
		if j == len(have) {
			return false
		}
		j++
	}
	return true
}

func sidecarScalarEqual(a, b any) bool {
	af, aNum := sidecarNumber(a)
	bf, bNum := sidecarNumber(b)
	if aNum || bNum {
		return aNum && bNum && af == bf
	}
	return a == b
}

func sidecarNumber(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case int:
		return float64(n), true
	}
	return 0, false
}

func sidecarQuantity(v any) (resource.Quantity, bool) {
	var s string
	switch n := v.(type) {
	case string:
		s = n
	case int64:
		s = strconv.FormatInt(n, 10)
	case float64:
		s = strconv.FormatFloat(n, 'f', -1, 64)
	default:
		return resource.Quantity{}, false
	}
	q, err := resource.ParseQuantity(s)
	return q, err == nil
}
