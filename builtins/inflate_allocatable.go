package builtins

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"sort"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"celadon.io/celadon/engine"
)

func init() { register(inflateAllocatable{}) }

// inflateAllocatable multiplies a node's status.allocatable cpu and memory
// (and optionally pods) by a ratio ≥ 1 when the node's status is written:
// the node side of overcommit, so that the scheduler places more requests on
// the node than it really has.
//
// It acts on UPDATE of nodes/status (the kubelet's status PATCHes reach
// admission as UPDATEs) and on CREATE of nodes (registration, which carries
// the status). An UPDATE of the node itself cannot change its status (the
// API server keeps the old one) and is skipped.
//
// # Where the real values are kept
//
// The status strategy of nodes (pkg/registry/core/node/strategy.go,
// nodeStatusStrategy.PrepareForUpdate) resets only spec from the stored
// node; metadata written with a status update is kept (the kubelet's own
// status patch relies on it for annotations), and the NodeRestriction
// admission plugin restricts a kubelet's labels and taints, not annotations.
// So the builtin records, in annotations written with the same status
// update:
//
//   - celadon.io/real-allocatable: the real values, e.g. {"cpu":"4","memory":"16264516Ki"}
//   - celadon.io/inflated-allocatable: the values it wrote, e.g. {"cpu":"6","memory":"19985837260"}
//
// and, with inflateCapacity, celadon.io/real-capacity and
// celadon.io/inflated-capacity.
//
// # Idempotence
//
// The kubelet recomputes the real values and, as they differ from the
// stored inflated ones, sends them in every status update (every
// nodeStatusUpdateFrequency, 10s by default, rather than every 5 minutes).
// Each write is inflated once: a value equal to the recorded inflated one is
// Celadon's own (a write that did not touch it, or a reinvocation), and its
// real value is the recorded one; any other value is a real value, which is
// inflated and recorded. A real value that happens to equal the previously
// inflated one cannot be told apart and stays (under-inflated, never
// over-inflated) until the real value changes.
type inflateAllocatable struct{}

// Annotations of inflateAllocatable, by status field.
const (
	inflateRealAllocatable     = "celadon.io/real-allocatable"
	inflateInflatedAllocatable = "celadon.io/inflated-allocatable"
	inflateRealCapacity        = "celadon.io/real-capacity"
	inflateInflatedCapacity    = "celadon.io/inflated-capacity"
)

// inflateMaxRatio bounds ratios: a larger one is most likely a percentage.
const inflateMaxRatio = 10

// inflateAllocatableArgs is inflateAllocatable's spec.with.
type inflateAllocatableArgs struct {
	// CPU, Memory and Pods are ratios in [1, 10]; absent: not inflated. At
	// least one is required.
	CPU    *float64 `json:"cpu"`
	Memory *float64 `json:"memory"`
	Pods   *float64 `json:"pods"`
	// InflateCapacity inflates status.capacity too. Default false.
	InflateCapacity bool `json:"inflateCapacity"`
}

// Name is the policy's spec.action.
func (inflateAllocatable) Name() string { return "inflateAllocatable" }

// Type is Mutating.
func (inflateAllocatable) Type() engine.ActionType { return engine.Mutating }

// inflateRatio is the ratio of one resource.
type inflateRatio struct {
	resource string
	ratio    *big.Rat
}

// inflateAllocatableAction is a compiled inflateAllocatable. It is
// immutable, hence safe for concurrent use.
type inflateAllocatableAction struct {
	ratios   []inflateRatio // in the order cpu, memory, pods
	capacity bool
}

// Compile checks spec.with.
func (inflateAllocatable) Compile(c *engine.CompileContext) (engine.Action, error) {
	if c.FailurePolicy() == engine.Fail {
		return nil, c.SpecError("failurePolicy", "inflateAllocatable must fail open: use Ignore (the default), so that a Celadon outage never stops kubelets from reporting node status")
	}
	var args inflateAllocatableArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	if args.CPU == nil && args.Memory == nil && args.Pods == nil {
		return nil, errors.New("with: at least one of cpu, memory or pods (a ratio ≥ 1) is required")
	}
	a := &inflateAllocatableAction{capacity: args.InflateCapacity}
	for _, r := range []struct {
		name string
		f    *float64
	}{{"cpu", args.CPU}, {"memory", args.Memory}, {"pods", args.Pods}} {
		if r.f == nil {
			continue
		}
		if !(*r.f >= 1 && *r.f <= inflateMaxRatio) {
			return nil, c.FieldError(r.name, "must be a ratio from 1 to %d, not %v", inflateMaxRatio, *r.f)
		}
		rat, ok := new(big.Rat).SetString(strconv.FormatFloat(*r.f, 'f', -1, 64))
		if !ok {
			return nil, c.FieldError(r.name, "%v is not a number", *r.f)
		}
		a.ratios = append(a.ratios, inflateRatio{resource: r.name, ratio: rat})
	}
	return a, nil
}

// inflateField is one status field inflated, with its annotations.
type inflateField struct {
	name           string // allocatable or capacity
	real, inflated string // annotation keys
}

var (
	inflateAllocatableField = inflateField{"allocatable", inflateRealAllocatable, inflateInflatedAllocatable}
	inflateCapacityField    = inflateField{"capacity", inflateRealCapacity, inflateInflatedCapacity}
)

// Run returns the operations that set the inflated values and the records.
func (a *inflateAllocatableAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	if ac.Request != nil {
		r, sub, op := ac.Request.Resource, ac.Request.SubResource, ac.Request.Operation
		switch {
		case r.Group != "" || r.Resource != "nodes":
			return skip(fmt.Sprintf("the request is for %s, not nodes/status", inflateResourceName(r.Group, r.Resource, sub))), nil
		case sub == "status" && op == admissionv1.Update, sub == "" && op == admissionv1.Create:
		case sub == "" && op == admissionv1.Update:
			return skip("an UPDATE of a node cannot change its status; match nodes/status"), nil
		default:
			return skip(fmt.Sprintf("nothing to inflate on %s of %s", op, inflateResourceName(r.Group, r.Resource, sub))), nil
		}
	}
	obj, why := objectOfKind(ac, "Node")
	if !obj.Exists() {
		return skip(why), nil
	}
	status := obj.Get("status")
	if !status.IsObject() {
		return skip("the node has no status"), nil
	}
	if !status.Get("allocatable").IsObject() {
		return skip("the node reports no status.allocatable"), nil
	}
	md := obj.Get("metadata")
	if !md.IsNull() && !md.IsObject() {
		return engine.Outcome{}, fmt.Errorf("metadata is a %s, not an object", goType(md))
	}
	annotations := md.Get("annotations")
	if !annotations.IsNull() && !annotations.IsObject() {
		return engine.Outcome{}, fmt.Errorf("metadata.annotations is a %s, not an object", goType(annotations))
	}
	oldStatus := ac.OldObject().Get("status")

	var (
		ops      []engine.JSONPatchOp
		setAnn   = map[string]string{} // annotation → new value
		delAnn   []string
		changed  []string
		kept     []string
		warnings []string
	)
	fields := []inflateField{inflateAllocatableField}
	if a.capacity {
		fields = append(fields, inflateCapacityField)
	} else {
		// Stop recording capacity once inflateCapacity is off; the kubelet
		// writes the real capacity back on its next status update.
		for _, k := range []string{inflateRealCapacity, inflateInflatedCapacity} {
			if annotations.Get(k).Exists() {
				delAnn = append(delAnn, k)
			}
		}
	}
	for _, f := range fields {
		values := status.Get(f.name)
		if !values.IsObject() {
			continue
		}
		oldValues := oldStatus.Get(f.name)
		realRec, inflRec, state := inflateReadRecord(annotations, f)
		if state == inflateRecordCorrupt {
			warnings = append(warnings, fmt.Sprintf("%s: %s or %s is not a valid record; inflating only the %s values this write changes", ac.Policy, f.real, f.inflated, f.name))
		}
		newReal := map[string]string{}
		newInfl := map[string]string{}
		resolved := true
		for _, r := range a.ratios {
			raw := values.Get(r.resource)
			if raw.IsNull() {
				continue
			}
			curText, cur, err := inflateQuantity(raw)
			if err != nil {
				return engine.Outcome{}, fmt.Errorf("status.%s.%s: %v", f.name, r.resource, err)
			}
			realText, real := curText, cur
			switch state {
			case inflateRecordOK:
				// A value equal to the one Celadon wrote is Celadon's own:
				// its real value is the recorded one. Anything else is a
				// real value, written by the kubelet.
				if it, ok := inflRec[r.resource]; ok && it.q.Cmp(cur) == 0 {
					if rt, ok := realRec[r.resource]; ok {
						realText, real = rt.text, rt.q
					}
				}
			case inflateRecordCorrupt:
				// Without a record, only a value this write changed is
				// known to be real.
				if old := oldValues.Get(r.resource); old.Exists() {
					if _, oq, err := inflateQuantity(old); err == nil && oq.Cmp(cur) == 0 {
						resolved = false
						kept = append(kept, fmt.Sprintf("%s %s %s (unknown real value)", f.name, r.resource, curText))
						continue
					}
				}
			}
			want, ok := inflateScale(r.resource, real, r.ratio)
			if !ok {
				return engine.Outcome{}, fmt.Errorf("status.%s.%s: %s × %s overflows", f.name, r.resource, realText, r.ratio.FloatString(3))
			}
			newReal[r.resource] = realText
			newInfl[r.resource] = want.String()
			if want.Cmp(cur) != 0 {
				ops = append(ops, engine.Op("replace", "/status/"+f.name+"/"+engine.EscapePointer(r.resource), want.String()))
				changed = append(changed, fmt.Sprintf("%s %s %s → %s", f.name, r.resource, realText, want.String()))
			} else {
				kept = append(kept, fmt.Sprintf("%s %s %s (real %s)", f.name, r.resource, curText, realText))
			}
		}
		if !resolved {
			// Keep the unreadable record: rewriting it without the
			// unresolved values would take them for real ones next time.
			continue
		}
		for key, m := range map[string]map[string]string{f.real: newReal, f.inflated: newInfl} {
			if len(m) == 0 {
				if annotations.Get(key).Exists() {
					delAnn = append(delAnn, key)
				}
				continue
			}
			b, err := json.Marshal(m)
			if err != nil {
				return engine.Outcome{}, err
			}
			if !inflateSameRecord(annotations.Get(key), m) {
				setAnn[key] = string(b)
			}
		}
	}
	if len(changed) == 0 && len(kept) == 0 {
		return skip("the node reports none of " + a.resourceNames()), nil
	}

	// Annotations: a whole map when there is none, else one key each.
	switch {
	case len(setAnn) == 0:
	case md.IsNull():
		ops = append(ops, engine.Op("add", "/metadata", map[string]any{"annotations": inflatePlain(setAnn)}))
	case annotations.IsNull():
		ops = append(ops, engine.Op("add", "/metadata/annotations", inflatePlain(setAnn)))
	default:
		for _, k := range slices.Sorted(maps.Keys(setAnn)) {
			op := "add"
			if annotations.Get(k).Exists() {
				op = "replace"
			}
			ops = append(ops, engine.Op(op, "/metadata/annotations/"+engine.EscapePointer(k), setAnn[k]))
		}
	}
	sort.Strings(delAnn)
	for _, k := range delAnn {
		ops = append(ops, engine.Op("remove", "/metadata/annotations/"+engine.EscapePointer(k), nil))
	}

	var parts []string
	if len(changed) > 0 {
		parts = append(parts, "inflated "+strings.Join(changed, ", "))
	}
	if len(kept) > 0 {
		parts = append(parts, "already inflated: "+strings.Join(kept, ", "))
	}
	return engine.Outcome{Patch: ops, Reason: strings.Join(parts, "; "), Warnings: warnings}, nil
}

func (a *inflateAllocatableAction) resourceNames() string {
	names := make([]string, len(a.ratios))
	for i, r := range a.ratios {
		names[i] = r.resource
	}
	return strings.Join(names, ", ")
}

// inflateScale returns floor(q × ratio): whole millicores for cpu, whole
// units (bytes, pods) otherwise, as a canonical quantity; false when it
// overflows.
func inflateScale(res string, q resource.Quantity, ratio *big.Rat) (resource.Quantity, bool) {
	var n int64
	if res == "cpu" {
		n = q.MilliValue()
	} else {
		n = q.Value()
	}
	x := new(big.Int).Mul(big.NewInt(n), ratio.Num())
	x.Div(x, ratio.Denom())
	if !x.IsInt64() {
		return resource.Quantity{}, false
	}
	switch res {
	case "cpu":
		return *resource.NewMilliQuantity(x.Int64(), resource.DecimalSI), true
	case "memory":
		return *resource.NewQuantity(x.Int64(), resource.BinarySI), true
	}
	return *resource.NewQuantity(x.Int64(), resource.DecimalSI), true
}

// inflateQuantity parses a status value: a quantity string (or a number).
func inflateQuantity(v engine.Value) (string, resource.Quantity, error) {
	s, ok := quantityValue(v)
	if !ok {
		return "", resource.Quantity{}, fmt.Errorf("%s is not a quantity", goType(v))
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return "", resource.Quantity{}, fmt.Errorf("%q is not a quantity", s)
	}
	if q.Sign() < 0 {
		return "", resource.Quantity{}, fmt.Errorf("%q is negative", s)
	}
	return s, q, nil
}

// inflateRecordState says what the annotations of a field hold.
type inflateRecordState int

const (
	inflateRecordNone    inflateRecordState = iota // neither annotation
	inflateRecordOK                                // both, readable
	inflateRecordCorrupt                           // one only, or unreadable
)

// inflateRecorded is a recorded value and its text.
type inflateRecorded struct {
	text string
	q    resource.Quantity
}

// inflateReadRecord reads the real and inflated records of a field.
func inflateReadRecord(annotations engine.Value, f inflateField) (real, inflated map[string]inflateRecorded, state inflateRecordState) {
	rawReal, rawInfl := annotations.Get(f.real), annotations.Get(f.inflated)
	hasReal, hasInfl := rawReal.Exists(), rawInfl.Exists()
	if !hasReal && !hasInfl {
		return nil, nil, inflateRecordNone
	}
	if !hasReal || !hasInfl {
		return nil, nil, inflateRecordCorrupt
	}
	real, ok1 := inflateParseRecord(rawReal)
	inflated, ok2 := inflateParseRecord(rawInfl)
	if !ok1 || !ok2 {
		return nil, nil, inflateRecordCorrupt
	}
	return real, inflated, inflateRecordOK
}

func inflateParseRecord(v engine.Value) (map[string]inflateRecorded, bool) {
	s, ok := v.Str()
	if !ok {
		return nil, false
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, false
	}
	out := make(map[string]inflateRecorded, len(m))
	for k, t := range m {
		q, err := resource.ParseQuantity(t)
		if err != nil {
			return nil, false
		}
		out[k] = inflateRecorded{text: t, q: q}
	}
	return out, true
}

// inflateSameRecord reports whether an annotation already holds m.
func inflateSameRecord(v engine.Value, m map[string]string) bool {
	s, ok := v.Str()
	if !ok {
		return false
	}
	var have map[string]string
	if json.Unmarshal([]byte(s), &have) != nil || len(have) != len(m) {
		return false
	}
	for k, t := range m {
		if have[k] != t {
			return false
		}
	}
	return true
}

func inflatePlain(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func inflateResourceName(group, res, sub string) string {
	s := res
	if group != "" {
		s = group + "/" + res
	}
	if sub != "" {
		s += "/" + sub
	}
	return s
}
