package builtins

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"celadon.io/celadon/engine"
)

func init() { register(scaleRequests{}) }

// scaleRequests lowers the cpu and memory requests of a pod's containers by
// a ratio, on CREATE: the pod side of overcommit. Limits are untouched. The
// original requests are recorded in an annotation, whose presence stops a
// second scaling.
type scaleRequests struct{}

// scaleRequestsAnnotation records the requests before scaling, as JSON
// {container: {cpu, memory}}, for the containers and resources changed.
const scaleRequestsAnnotation = "celadon.io/original-requests"

// scaleRequestsArgs is scaleRequests' spec.with.
type scaleRequestsArgs struct {
	// CPU and Memory are ratios in (0, 1]; absent: not scaled. At least one.
	CPU    *float64 `json:"cpu"`
	Memory *float64 `json:"memory"`
	// Minimum floors the scaled requests (never above the original request).
	Minimum *scaleRequestsMinimum `json:"minimum"`
	// Containers names the containers to scale; absent: all.
	Containers []string `json:"containers"`
	// InitContainers also scales spec.initContainers (native sidecars too).
	InitContainers bool `json:"initContainers"`
	// MemoryUnit rounds scaled memory down to a multiple of Ki, Mi or Gi;
	// absent: whole bytes.
	MemoryUnit string `json:"memoryUnit"`
	// AllowGuaranteed scales pods of the Guaranteed QoS class too, which
	// makes them Burstable.
	AllowGuaranteed bool `json:"allowGuaranteed"`
}

// scaleRequestsMinimum is with.minimum: quantities, as strings or numbers.
type scaleRequestsMinimum struct {
	CPU    any `json:"cpu"`
	Memory any `json:"memory"`
}

// Name is the policy's spec.action.
func (scaleRequests) Name() string { return "scaleRequests" }

// Type is Mutating.
func (scaleRequests) Type() engine.ActionType { return engine.Mutating }

// PodOnly implements engine.PodOnly: on a controller's pod template the
// annotation recording the original requests would be copied to every pod,
// which would then never be scaled itself; and once on the template it
// would stop the scaling of requests changed by a later UPDATE, in the
// template and in its pods alike.
func (scaleRequests) PodOnly() bool { return true }

// scaleRequestsAction is a compiled scaleRequests. It is immutable, hence
// safe for concurrent use.
type scaleRequestsAction struct {
	cpu, memory       *big.Rat // nil: not scaled
	minCPU, minMemory *resource.Quantity
	unit              int64 // memory rounding, in bytes
	containers        map[string]bool
	containerNames    []string
	initContainers    bool
	allowGuaranteed   bool
}

// Compile checks spec.with.
func (scaleRequests) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args scaleRequestsArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	a := &scaleRequestsAction{initContainers: args.InitContainers, allowGuaranteed: args.AllowGuaranteed, unit: 1}
	if args.CPU == nil && args.Memory == nil {
		return nil, errors.New("with: cpu or memory (a ratio in (0, 1]) is required")
	}
	var err error
	if a.cpu, err = scaleRequestsRatio(c, "cpu", args.CPU); err != nil {
		return nil, err
	}
	if a.memory, err = scaleRequestsRatio(c, "memory", args.Memory); err != nil {
		return nil, err
	}
	if m := args.Minimum; m != nil {
		if m.CPU != nil {
			if a.cpu == nil {
				return nil, c.FieldError("minimum.cpu", "applies only when cpu is scaled: set cpu")
			}
			if a.minCPU, err = scaleRequestsQuantity(c, "minimum.cpu", m.CPU); err != nil {
				return nil, err
			}
			if q := *a.minCPU; q.MilliValue() == 0 || resource.NewMilliQuantity(q.MilliValue(), resource.DecimalSI).Cmp(q) != 0 {
				return nil, c.FieldError("minimum.cpu", "%s is not a positive whole number of millicores", q.String())
			}
		}
		if m.Memory != nil {
			if a.memory == nil {
				return nil, c.FieldError("minimum.memory", "applies only when memory is scaled: set memory")
			}
			if a.minMemory, err = scaleRequestsQuantity(c, "minimum.memory", m.Memory); err != nil {
				return nil, err
			}
			if q := *a.minMemory; q.Value() == 0 || resource.NewQuantity(q.Value(), resource.BinarySI).Cmp(q) != 0 {
				return nil, c.FieldError("minimum.memory", "%s is not a positive whole number of bytes", q.String())
			}
		}
	}
	switch args.MemoryUnit {
	case "":
	case "Ki", "Mi", "Gi":
		if a.memory == nil {
			return nil, c.FieldError("memoryUnit", "applies only when memory is scaled: set memory")
		}
		a.unit = map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[args.MemoryUnit]
	default:
		return nil, c.FieldError("memoryUnit", "must be Ki, Mi or Gi (absent: whole bytes), not %q", args.MemoryUnit)
	}
	if a.containers, err = containerSet(c, args.Containers, "omit it to scale every container"); err != nil {
		return nil, err
	}
	a.containerNames = args.Containers
	return a, nil
}

// scaleRequestsRatio checks a ratio in (0, 1] and returns it exactly as
// written: 0.7 is 7/10, not the nearest float64.
func scaleRequestsRatio(c *engine.CompileContext, field string, f *float64) (*big.Rat, error) {
	if f == nil {
		return nil, nil
	}
	if !(*f > 0 && *f <= 1) {
		return nil, c.FieldError(field, "must be a ratio in (0, 1], not %v", *f)
	}
	r, ok := new(big.Rat).SetString(strconv.FormatFloat(*f, 'f', -1, 64))
	if !ok {
		return nil, c.FieldError(field, "%v is not a number", *f)
	}
	return r, nil
}

// scaleRequestsQuantity reads a quantity written as a string or a number.
func scaleRequestsQuantity(c *engine.CompileContext, field string, v any) (*resource.Quantity, error) {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	case int64:
		s = strconv.FormatInt(v, 10)
	case json.Number:
		s = v.String()
	default:
		return nil, c.FieldError(field, "expected a quantity such as 10m or 16Mi, got %T", v)
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return nil, c.FieldError(field, "%q is not a quantity: %v", s, err)
	}
	if q.Sign() <= 0 {
		return nil, c.FieldError(field, "must be positive, not %s", s)
	}
	return &q, nil
}

// scaleRequestsResources are the resources scaled, in the order reported.
var scaleRequestsResources = []string{"cpu", "memory"}

// Run returns the operations that lower the requests and record the
// originals; with the record present, a second run changes nothing.
func (a *scaleRequestsAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	obj, why := podOnCreate(ac, "requests can only be scaled")
	if !obj.Exists() {
		return skip(why), nil
	}
	md := obj.Get("metadata")
	if !md.IsNull() && !md.IsObject() {
		return engine.Outcome{}, fmt.Errorf("metadata is a %s, not an object", goType(md))
	}
	annotations := md.Get("annotations")
	if !annotations.IsNull() && !annotations.IsObject() {
		return engine.Outcome{}, fmt.Errorf("metadata.annotations is a %s, not an object", goType(annotations))
	}
	if annotations.Get(scaleRequestsAnnotation).Exists() {
		return skip("requests already scaled: the pod has the annotation " + scaleRequestsAnnotation), nil
	}
	spec := obj.Get("spec")
	if !spec.IsObject() {
		return skip("the pod has no spec"), nil
	}
	if r := spec.Get("resources"); r.IsObject() && r.Len() > 0 {
		// Pod-level requests, when set, are what the scheduler counts.
		return skip("the pod sets pod-level resources (spec.resources); its container requests are not what the scheduler counts"), nil
	}

	var all []scaleRequestsContainer
	for _, list := range []string{"containers", "initContainers"} {
		items := spec.Get(list)
		if items.IsNull() {
			continue
		}
		if !items.IsList() {
			return engine.Outcome{}, fmt.Errorf("spec.%s is a %s, not a list", list, goType(items))
		}
		for i, item := range items.Elements() {
			if !item.IsObject() {
				return engine.Outcome{}, fmt.Errorf("spec.%s[%d] is a %s, not an object", list, i, goType(item))
			}
			ctr, err := scaleRequestsRead(list, i, item)
			if err != nil {
				return engine.Outcome{}, err
			}
			all = append(all, ctr)
		}
	}
	if len(all) == 0 {
		return skip("the pod has no containers"), nil
	}
	if !a.allowGuaranteed && scaleRequestsGuaranteed(all) {
		return skip("the pod is of the Guaranteed QoS class, which lower requests would make Burstable; allowGuaranteed: true scales it anyway"), nil
	}

	var (
		ops      []engine.JSONPatchOp
		original = map[string]map[string]string{}
		changes  []string
		seen     []string
		left     []string // requests too large to scale
	)
	for _, ctr := range all {
		if ctr.list == "initContainers" && !a.initContainers {
			continue
		}
		if a.containers != nil && !a.containers[ctr.name] {
			continue
		}
		seen = append(seen, ctr.who())
		newReqs := map[string]string{}
		var what []string
		for _, res := range scaleRequestsResources {
			req, ok := ctr.requests[res]
			if !ok {
				continue
			}
			if max := scaleRequestsMax[res]; req.q.Cmp(max) > 0 {
				left = append(left, fmt.Sprintf("%s: %s request %s left as it is: above %s, the largest %s request that can be scaled", ctr.who(), res, req.raw, max.String(), res))
				continue
			}
			var scaled resource.Quantity
			if res == "cpu" {
				if a.cpu == nil {
					continue
				}
				scaled = a.scaleCPU(req.q)
			} else {
				if a.memory == nil {
					continue
				}
				scaled = a.scaleMemory(req.q)
			}
			// Never raise a request (a minimum above it), never above the limit.
			if scaled.Cmp(req.q) >= 0 {
				continue
			}
			if lim, ok := ctr.limits[res]; ok && scaled.Cmp(lim) > 0 {
				scaled = lim
			}
			newReqs[res] = scaled.String()
			if original[ctr.name] == nil {
				original[ctr.name] = map[string]string{}
			}
			original[ctr.name][res] = req.raw
			what = append(what, fmt.Sprintf("%s %s → %s", res, req.raw, newReqs[res]))
		}
		if len(newReqs) == 0 {
			continue
		}
		changes = append(changes, fmt.Sprintf("%s (%s)", ctr.who(), strings.Join(what, ", ")))
		base := fmt.Sprintf("/spec/%s/%d/resources", ctr.list, ctr.index)
		switch {
		case ctr.rawRequests.IsNull():
			// Requests defaulted from the limits, in a pod the API server
			// has not defaulted (celadon eval).
			ops = append(ops, engine.Op("add", base+"/requests", scaleRequestsPlain(newReqs)))
		default:
			for _, res := range scaleRequestsResources {
				if v, ok := newReqs[res]; ok {
					op := "replace"
					if !ctr.rawRequests.Get(res).Exists() {
						op = "add"
					}
					ops = append(ops, engine.Op(op, base+"/requests/"+res, v))
				}
			}
		}
	}
	if len(seen) == 0 {
		if a.containers != nil {
			return skip("the pod has no container named " + strings.Join(a.containerNames, ", ")), nil
		}
		return skip("the pod has no containers to scale"), nil
	}
	var warnings []string
	for _, l := range left {
		warnings = append(warnings, ac.Policy+": "+l)
	}
	if len(ops) == 0 {
		if len(left) > 0 {
			return engine.Outcome{Reason: "requests unchanged: " + strings.Join(left, "; "), Warnings: warnings}, nil
		}
		return engine.Outcome{Reason: "requests unchanged in " + strings.Join(seen, ", ") + ": none set, or already at the minimum"}, nil
	}
	record, err := json.Marshal(original)
	if err != nil {
		return engine.Outcome{}, err
	}
	switch {
	case md.IsNull():
		ops = append(ops, engine.Op("add", "/metadata", map[string]any{"annotations": map[string]any{scaleRequestsAnnotation: string(record)}}))
	case annotations.IsNull():
		ops = append(ops, engine.Op("add", "/metadata/annotations", map[string]any{scaleRequestsAnnotation: string(record)}))
	default:
		ops = append(ops, engine.Op("add", "/metadata/annotations/"+engine.EscapePointer(scaleRequestsAnnotation), string(record)))
	}
	reason := "scaled requests of " + strings.Join(changes, "; ")
	if len(left) > 0 {
		reason += "; " + strings.Join(left, "; ")
	}
	return engine.Outcome{Patch: ops, Reason: reason, Warnings: warnings}, nil
}

// scaleRequestsMax are the largest requests scaled: cpu is scaled in
// millicores and memory in bytes, as int64s, which a larger quantity would
// overflow (9223372036854776 cores once wrapped around to 1m). Such a
// request is left as it is, with a warning: it cannot be what the pod
// needs, and lowering it to a guess would hide that.
var scaleRequestsMax = map[string]resource.Quantity{
	"cpu":    *resource.NewMilliQuantity(math.MaxInt64, resource.DecimalSI),
	"memory": *resource.NewQuantity(math.MaxInt64, resource.BinarySI),
}

// scaleCPU scales millicores, rounding down, to at least 1m and the minimum.
func (a *scaleRequestsAction) scaleCPU(q resource.Quantity) resource.Quantity {
	m := scaleRequestsFloor(q.MilliValue(), a.cpu)
	m = max(m, 1)
	if a.minCPU != nil {
		m = max(m, a.minCPU.MilliValue())
	}
	return *resource.NewMilliQuantity(m, resource.DecimalSI)
}

// scaleMemory scales bytes, rounding down to the unit, to at least one
// unit and the minimum.
func (a *scaleRequestsAction) scaleMemory(q resource.Quantity) resource.Quantity {
	b := scaleRequestsFloor(q.Value(), a.memory)
	b = max(b/a.unit*a.unit, a.unit)
	if a.minMemory != nil {
		b = max(b, a.minMemory.Value())
	}
	return *resource.NewQuantity(b, resource.BinarySI)
}

// scaleRequestsFloor returns floor(n × r) for r in (0, 1], exactly.
func scaleRequestsFloor(n int64, r *big.Rat) int64 {
	x := new(big.Int).Mul(big.NewInt(n), r.Num())
	x.Div(x, r.Denom()) // Euclidean: the floor, as the denominator is positive
	return x.Int64()
}

// scaleRequestsPlain converts requests to plain JSON values.
func scaleRequestsPlain(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// scaleRequestsQty is a parsed request or limit and its text.
type scaleRequestsQty struct {
	q   resource.Quantity
	raw string
}

// scaleRequestsContainer is the resources of one container of the pod.
type scaleRequestsContainer struct {
	list, name string
	index      int
	// rawRequests is resources.requests as the pod has it: absent or null
	// when there is none, else an object.
	rawRequests engine.Value
	// requests holds the cpu and memory requests, defaulted from the limits
	// as the API server does; limits the cpu and memory limits.
	requests map[string]scaleRequestsQty
	limits   map[string]resource.Quantity
}

func (c scaleRequestsContainer) who() string {
	if c.list == "initContainers" {
		return c.name + " (init)"
	}
	return c.name
}

// scaleRequestsRead reads the cpu and memory requests and limits of a
// container, an object.
func scaleRequestsRead(list string, i int, c engine.Value) (scaleRequestsContainer, error) {
	ctr := scaleRequestsContainer{list: list, index: i, requests: map[string]scaleRequestsQty{}, limits: map[string]resource.Quantity{}}
	ctr.name, _ = c.Get("name").Str()
	where := fmt.Sprintf("spec.%s[%d].resources", list, i)
	resources := c.Get("resources")
	if !resources.IsNull() && !resources.IsObject() {
		return ctr, fmt.Errorf("%s is a %s, not an object", where, goType(resources))
	}
	read := func(field string) (engine.Value, map[string]scaleRequestsQty, error) {
		rm := resources.Get(field)
		if rm.IsNull() {
			return rm, nil, nil
		}
		if !rm.IsObject() {
			return rm, nil, fmt.Errorf("%s.%s is a %s, not an object", where, field, goType(rm))
		}
		out := map[string]scaleRequestsQty{}
		for _, res := range scaleRequestsResources {
			v := rm.Get(res)
			if v.IsNull() {
				continue
			}
			s, ok := quantityValue(v)
			if !ok {
				return rm, nil, fmt.Errorf("%s.%s.%s is a %s, not a quantity", where, field, res, goType(v))
			}
			q, err := resource.ParseQuantity(s)
			if err != nil {
				return rm, nil, fmt.Errorf("%s.%s.%s: %q is not a quantity", where, field, res, s)
			}
			out[res] = scaleRequestsQty{q: q, raw: s}
		}
		return rm, out, nil
	}
	rawReqs, reqs, err := read("requests")
	if err != nil {
		return ctr, err
	}
	_, lims, err := read("limits")
	if err != nil {
		return ctr, err
	}
	ctr.rawRequests = rawReqs
	for res, l := range lims {
		ctr.limits[res] = l.q
		if _, ok := reqs[res]; !ok {
			if reqs == nil {
				reqs = map[string]scaleRequestsQty{}
			}
			reqs[res] = l // the API server defaults a missing request to the limit
		}
	}
	for res, r := range reqs {
		ctr.requests[res] = r
	}
	return ctr, nil
}

// scaleRequestsGuaranteed computes the pod's QoS class as the kubelet does
// (k8s.io/kubernetes/pkg/apis/core/v1/helper/qos.ComputePodQOS): Guaranteed
// when every container, init containers included, has cpu and memory limits
// and the summed requests equal the summed limits.
func scaleRequestsGuaranteed(all []scaleRequestsContainer) bool {
	requests := map[string]*resource.Quantity{}
	limits := map[string]*resource.Quantity{}
	add := func(sum map[string]*resource.Quantity, res string, q resource.Quantity) {
		if q.Sign() <= 0 {
			return
		}
		if sum[res] == nil {
			c := q.DeepCopy()
			sum[res] = &c
			return
		}
		sum[res].Add(q)
	}
	guaranteed := true
	for _, c := range all {
		for res, r := range c.requests {
			add(requests, res, r.q)
		}
		found := 0
		for res, l := range c.limits {
			if l.Sign() > 0 {
				found++
			}
			add(limits, res, l)
		}
		if found < len(scaleRequestsResources) {
			guaranteed = false
		}
	}
	if !guaranteed || len(requests) != len(limits) {
		return false
	}
	for res, r := range requests {
		if l, ok := limits[res]; !ok || l.Cmp(*r) != 0 {
			return false
		}
	}
	return true
}
