package engine

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"unsafe"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/decls"
	"github.com/google/cel-go/common/overloads"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/interpreter"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/library"
)

// A CEL program's cost is charged by a meter: the same steps and the same
// call costs as cel-go's CostTracker (interpreter/runtimecost.go) with the
// Kubernetes estimator, so a limit means what it means in the API server.
// The tracker allocates at each call and converts every qualified value to
// CEL; it was two thirds of a Pod CREATE through the Pod Security policies
// (BENCHMARKS.md, "Metering CEL"). TestMeterChargesAsCELGo compares the two.

// meterPrograms is off only in tests that compare with cel-go's tracker.
var meterPrograms = true

// programEnvs are the environments programs are planned in: an
// environment's declarations without cel-go's cost tracking, which the
// Kubernetes base environment turns on for every program.
var programEnvs struct {
	once sync.Once
	env  *cel.Env
	err  error
}

// programEnv returns the environment metered programs are planned in. The
// shared environment has every function; a policy's variables and types
// are not needed to run its programs, whose variables are resolved by name.
func programEnv() (*cel.Env, error) {
	programEnvs.once.Do(func() {
		_, shared, err := sharedEnvs()
		if err != nil {
			programEnvs.err = err
			return
		}
		fns := make([]*decls.FunctionDecl, 0, len(shared.Functions()))
		for _, f := range shared.Functions() {
			fns = append(fns, f)
		}
		programEnvs.env, programEnvs.err = cel.NewCustomEnv(
			cel.OptionalTypes(), // for its or/orValue decorator; first, as it registers a type
			cel.FunctionDecls(fns...),
			cel.VariableDecls(shared.Variables()...),
			cel.CustomTypeProvider(shared.CELTypeProvider()),
			cel.CustomTypeAdapter(shared.CELTypeAdapter()),
		)
	})
	return programEnvs.env, programEnvs.err
}

// meteredProgram plans a checked expression with a meter.
func meteredProgram(env *cel.Env, ast *cel.Ast) (cel.Program, error) {
	return env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CustomDecoratorV2(meterDecorator))
}

// meter is the root activation of one metered evaluation: its cost so far,
// the values of the steps that calls take as arguments, and the context
// it checks for interruption.
type meter struct {
	interpreter.Activation
	cost, limit uint64
	done        <-chan struct{}
	steps       uint
	stack       []meterVal
	args        []ref.Val
}

type meterVal struct {
	val ref.Val
	id  int64
}

var meterPool = sync.Pool{New: func() any { return &meter{stack: make([]meterVal, 0, 16), args: make([]ref.Val, 0, 4)} }}

func newMeter(ctx context.Context, a interpreter.Activation) *meter {
	m := meterPool.Get().(*meter)
	m.Activation, m.done, m.limit = a, ctx.Done(), PerCallCostLimit
	return m
}

func (m *meter) release() {
	clear(m.stack)
	clear(m.args)
	m.Activation, m.done, m.cost, m.steps, m.stack, m.args = nil, nil, 0, 0, m.stack[:0], m.args[:0]
	meterPool.Put(m)
}

// meterOf finds the meter of an evaluation from any of its activations:
// a comprehension's are children of the root's.
func meterOf(a interpreter.Activation) *meter {
	for a != nil {
		switch v := a.(type) {
		case *meter:
			return v
		case *interpreter.ExecutionFrame:
			a = v.Activation
		default:
			a = a.Parent()
		}
	}
	return nil
}

// charge adds c, cancels past the limit as cel-go does, and every
// celconfig.CheckFrequency steps checks the context: comprehensions are
// interrupted here, not by cel-go, whose check would need the context.
func (m *meter) charge(c uint64) {
	m.cost += c
	if m.cost < c {
		m.cost = math.MaxUint64
	}
	if m.cost > m.limit {
		panic(interpreter.EvalCancelledError{Cause: interpreter.CostLimitExceeded, Message: "operation cancelled: actual cost limit exceeded"})
	}
	m.steps++
	if m.steps%celconfig.CheckFrequency == 0 && m.done != nil {
		select {
		case <-m.done:
			panic(interpreter.EvalCancelledError{Cause: interpreter.ContextCancelled, Message: "operation interrupted"})
		default:
		}
	}
}

// meterDecorator wraps each planned step so that it charges what cel-go's
// tracker charges for it. It runs before cel-go's own optimizations, so it
// leaves alone the steps those fold into constants or set lookups, which
// the tracker charges nothing, and applies the regex one itself.
func meterDecorator(i interpreter.InterpretableV2) (interpreter.InterpretableV2, error) {
	if typeName(i) == "*cel.evalOptionalOrValue" {
		if o, ok := newMeterOrValue(i); ok {
			return &meterStep{InterpretableV2: o}, nil
		}
	}
	switch n := i.(type) {
	case *meterAttr, *meterCall, *meterStep, interpreter.InterpretableConst:
		return i, nil
	case interpreter.InterpretableAttribute:
		return newMeterAttr(n), nil
	case interpreter.InterpretableCall:
		return meterCallOf(n)
	case interpreter.InterpretableConstructor:
		if foldsToConstant(n) {
			return i, nil
		}
		cost := uint64(40) // common.StructCreateBaseCost
		switch n.Type() {
		case types.ListType:
			cost = 10 // common.ListCreateBaseCost
		case types.MapType:
			cost = 30 // common.MapCreateBaseCost
		}
		return &meterStep{InterpretableV2: n, cost: cost}, nil
	}
	return &meterStep{InterpretableV2: i}, nil
}

// attrCost is what the tracker charges an attribute: one, nothing for a
// conditional (its branches are charged) or for has() (Kubernetes turns
// off the presence test's cost).
func attrCost(a interpreter.InterpretableAttribute) uint64 {
	if typeName(a) == "*interpreter.evalTestOnly" || typeName(a.Attr()) == "*interpreter.conditionalAttribute" {
		return 0
	}
	return 1
}

// foldsToConstant says whether cel-go's optimizer makes a constant of a
// list or map literal: when all its parts are constants.
func foldsToConstant(c interpreter.InterpretableConstructor) bool {
	switch typeName(c) {
	case "*interpreter.evalList", "*interpreter.evalMap":
	default:
		return false
	}
	vals := c.InitVals()
	if c.Type() == types.MapType && vals == nil {
		return false
	}
	for _, v := range vals {
		if _, ok := v.(interpreter.InterpretableConst); !ok {
			return false
		}
	}
	return true
}

// meterCallOf wraps a call, unless the optimizer will make a set lookup or
// a constant of it; a regex match against a constant pattern is compiled
// here, as the optimizer would have.
func meterCallOf(call interpreter.InterpretableCall) (interpreter.InterpretableV2, error) {
	args := call.Args()
	switch {
	case call.OverloadID() == overloads.InList && becomesSetLookup(args[1]):
		return call, nil
	case overloads.IsTypeConversionFunction(call.Function()) && len(args) == 1 && isConst(args[0]):
		return call, nil
	}
	var inner interpreter.InterpretableV2 = call
	for _, o := range regexOptimizations {
		if call.Function() != o.Function || len(args) <= o.RegexIndex {
			continue
		}
		if pattern, ok := constString(args[o.RegexIndex]); ok {
			optimized, err := o.Factory(call, pattern)
			if err != nil {
				return nil, err
			}
			inner = optimized
		}
	}
	mc := &meterCall{meterStep: meterStep{InterpretableV2: inner}, function: call.Function(), overload: call.OverloadID(), tracker: extensionTrackers[call.OverloadID()]}
	if len(args) == 1 && unaryCostIsFixed(mc.function, mc.overload, mc.tracker) {
		mc.fixed = true
		if mc.function == "hasValue" {
			mc.hasValueOf, _ = args[0].(*meterAttr)
		}
		return mc, nil
	}
	for _, a := range args {
		ref := meterArg{id: a.ID()}
		switch n := a.(type) {
		case interpreter.InterpretableConst:
			ref.val = n.Value()
		case interface{ keepValue() }:
			n.keepValue()
		default:
			// A set lookup the optimizer made: a bool.
			ref.val = types.False
		}
		mc.args = append(mc.args, ref)
	}
	return mc, nil
}

// typeName is the name of x's type, as %T prints it, without formatting:
// the meter tells some of cel-go's unexported steps by it.
func typeName(x any) string {
	if x == nil {
		return "<nil>"
	}
	return reflect.TypeOf(x).String()
}

// regexOptimizations compile constant patterns once, as cel-go's and the
// Kubernetes regex library's program options do in the API server's
// environment: the meter's decorator runs before them and hides the calls.
var regexOptimizations = []*interpreter.RegexOptimization{
	interpreter.MatchesRegexOptimization, library.FindRegexOptimization, library.FindAllRegexOptimization,
}

func isConst(i interpreter.InterpretableV2) bool {
	_, ok := i.(interpreter.InterpretableConst)
	return ok
}

func constString(i interpreter.InterpretableV2) (string, bool) {
	c, ok := i.(interpreter.InterpretableConst)
	if !ok {
		return "", false
	}
	s, ok := c.Value().(types.String)
	return string(s), ok
}

// becomesSetLookup says whether the optimizer turns `x in list` into a set
// lookup: a constant list of primitives other than bytes.
func becomesSetLookup(list interpreter.InterpretableV2) bool {
	c, ok := list.(interpreter.InterpretableConst)
	if !ok {
		return false
	}
	l, ok := c.Value().(traits.Lister)
	if !ok {
		return false
	}
	for it := l.Iterator(); it.HasNext() == types.True; {
		e := it.Next()
		if !types.IsPrimitiveType(e) || e.Type() == types.BytesType {
			return false
		}
	}
	return true
}

// meterStep charges a fixed cost for a step and, when the step is a call's
// argument, keeps its value for the call.
type meterStep struct {
	interpreter.InterpretableV2
	cost uint64
	push bool
}

func (s *meterStep) Exec(f *interpreter.ExecutionFrame) ref.Val {
	if s.cost == 0 && !s.push {
		return s.InterpretableV2.Exec(f)
	}
	m := meterOf(f)
	if m == nil {
		return s.InterpretableV2.Exec(f)
	}
	return m.step(f, s.InterpretableV2, s.push, s.cost)
}

// step runs a wrapped step and charges it cost.
func (m *meter) step(f *interpreter.ExecutionFrame, inner interpreter.InterpretableV2, push bool, cost uint64) ref.Val {
	mark := len(m.stack)
	v := inner.Exec(f)
	m.end(mark, inner.ID(), v, push, cost)
	return v
}

// end closes a step begun at stack height mark: it drops what the step's
// own steps kept, keeps its value v when a call takes it (push), and
// charges cost.
func (m *meter) end(mark int, id int64, v ref.Val, push bool, cost uint64) {
	m.stack = m.stack[:mark]
	if push {
		m.stack = append(m.stack, meterVal{v, id})
	}
	m.charge(cost)
}

func (s *meterStep) keepValue() { s.push = true }

func (s *meterStep) Eval(a interpreter.Activation) ref.Val { return s.Exec(interpreter.AsFrame(a)) }

// meterCall charges a call what the tracker charges it for its arguments'
// values, which its argument steps keep on the meter's stack.
type meterCall struct {
	meterStep
	function, overload string
	tracker            extensionTracker
	args               []meterArg
	// fixed is set for a call of one argument that costs one whatever
	// the argument: its argument is not kept.
	fixed bool
	// hasValueOf is the attribute x of x.hasValue(): when it is an
	// optional field path, its presence is the call's value.
	hasValueOf *meterAttr
}

// unaryCostIsFixed says whether a call of one argument costs one whatever
// the argument: it has no extension tracker, and callCost charges it one
// for short and long strings and lists (what cel-go's tracker and the
// Kubernetes estimator price, they price by size).
func unaryCostIsFixed(function, overload string, tracker extensionTracker) bool {
	if tracker != noTracker {
		return false
	}
	key := function + "\x00" + overload
	if fixed, ok := fixedUnaryCosts.Load(key); ok {
		return fixed.(bool)
	}
	fixed := true
	for _, probe := range unaryCostProbes {
		if callCost(function, overload, tracker, []ref.Val{probe}, probe) != 1 {
			fixed = false
		}
	}
	fixedUnaryCosts.Store(key, fixed)
	return fixed
}

// fixedUnaryCosts are unaryCostIsFixed's answers, by function and overload.
var fixedUnaryCosts sync.Map

var unaryCostProbes = []ref.Val{
	types.String(""), types.String(strings.Repeat("x", 100)),
	types.NewStringList(types.DefaultTypeAdapter, nil), types.NewStringList(types.DefaultTypeAdapter, make([]string, 100)),
}

// meterArg is an argument of a call: a step's id, or a constant's value.
type meterArg struct {
	id  int64
	val ref.Val
}

func (c *meterCall) Exec(f *interpreter.ExecutionFrame) ref.Val {
	m := meterOf(f)
	if m == nil {
		return c.InterpretableV2.Exec(f)
	}
	mark := len(m.stack)
	if c.hasValueOf != nil {
		if _, present, ok := c.hasValueOf.readOptional(f, m); ok {
			v := types.Bool(present)
			m.end(mark, c.ID(), v, c.push, 1)
			return v
		}
	}
	v := c.InterpretableV2.Exec(f)
	if c.fixed {
		m.end(mark, c.ID(), v, c.push, 1)
		return v
	}
	var cost uint64
	if args, found := m.argsOf(c.args, mark); found {
		cost = callCost(c.function, c.overload, c.tracker, args, v)
	}
	m.end(mark, c.ID(), v, c.push, cost)
	return v
}

func (c *meterCall) Eval(a interpreter.Activation) ref.Val { return c.Exec(interpreter.AsFrame(a)) }

// argsOf collects a call's argument values from the stack above mark; as
// the tracker, it finds nothing if one is missing. A call evaluates its
// arguments in order and stops at an error, so a constant after an error
// was not evaluated either.
func (m *meter) argsOf(args []meterArg, mark int) ([]ref.Val, bool) {
	m.args = m.args[:0]
	for i, a := range args {
		if i > 0 && types.IsError(m.args[i-1]) {
			return nil, false
		}
		v := a.val
		if v == nil {
			for i := len(m.stack) - 1; i >= mark; i-- {
				if m.stack[i].id == a.id {
					v = m.stack[i].val
					break
				}
			}
			if v == nil {
				return nil, false
			}
		}
		m.args = append(m.args, v)
	}
	return m.args, true
}

// meterAttr charges an attribute and each qualifier it applies.
type meterAttr struct {
	interpreter.InterpretableAttribute
	cost uint64
	push bool
	// path is set while the attribute is a variable qualified by field
	// names only (object.spec.?x), which is read in one go.
	path *fieldPath
}

// fieldPath is a variable and the field names selected from it, each
// optional (.?) or not.
type fieldPath struct {
	attr     interpreter.NamespacedAttribute
	variable string
	keys     []string
	celKeys  []ref.Val
	optional []bool
}

func newMeterAttr(n interpreter.InterpretableAttribute) *meterAttr {
	a := &meterAttr{InterpretableAttribute: n, cost: attrCost(n)}
	if typeName(n) != "*interpreter.evalAttr" {
		return a
	}
	ns, ok := n.Attr().(interpreter.NamespacedAttribute)
	if !ok || typeName(ns) != "*interpreter.absoluteAttribute" || len(ns.CandidateVariableNames()) != 1 || len(ns.Qualifiers()) != 0 {
		return a
	}
	// A leading dot (.name) skips the comprehensions' variables.
	if reflect.ValueOf(ns).Elem().FieldByName("disambiguateNames").Bool() {
		return a
	}
	a.path = &fieldPath{attr: ns, variable: ns.CandidateVariableNames()[0]}
	return a
}

// read reads the path as cel-go's qualifiers would, from maps: the tape's
// objects directly, other maps through Find. ok is false when some step
// needs cel-go: a missing field, which is an error, a value that is not a
// map, or an error. present is false when an optional step (.?) found
// nothing; optional says there is one, and so that the attribute's value
// is an optional. n is the qualifiers applied.
func (p *fieldPath) read(f *interpreter.ExecutionFrame) (v ref.Val, present, optional bool, n uint64, ok bool) {
	if len(p.attr.Qualifiers()) != len(p.keys) {
		return nil, false, false, 0, false
	}
	root, found := f.ResolveName(p.variable)
	if !found {
		return nil, false, false, 0, false
	}
	if v, ok = root.(ref.Val); !ok {
		return nil, false, false, 0, false
	}
	for i, key := range p.keys {
		optional = optional || p.optional[i]
		var next ref.Val
		switch o := v.(type) {
		case *celObject:
			if j, ok := o.d.member(o.i, key); ok {
				next = o.d.celValue(j)
			}
		case *lazyVariables:
			next, _ = o.find(key)
		case traits.Mapper:
			if val, found := o.Find(p.celKeys[i]); found || val != nil && types.IsError(val) {
				next = val
			}
		default:
			return nil, false, false, 0, false
		}
		switch {
		case next == nil && optional:
			return nil, false, true, uint64(i), true
		case next == nil || types.IsError(next):
			return nil, false, false, 0, false
		}
		v = next
	}
	return v, true, optional, uint64(len(p.keys)), true
}

// readOptional charges and reads an optional path without making an
// optional of its value, for orValue and hasValue.
func (a *meterAttr) readOptional(f *interpreter.ExecutionFrame, m *meter) (v ref.Val, present, ok bool) {
	if a.path == nil {
		return nil, false, false
	}
	v, present, optional, n, ok := a.path.read(f)
	if !ok || !optional {
		return nil, false, false
	}
	m.charge(a.cost + n)
	return v, present, true
}

func (a *meterAttr) AddQualifier(q interpreter.Qualifier) (interpreter.Attribute, error) {
	cost := uint64(1)
	if inner, ok := q.(*meterAttr); ok {
		// Charged when it qualifies, as the tracker does.
		q, cost = inner.InterpretableAttribute, inner.cost
	}
	var w interpreter.Qualifier
	if c, ok := q.(interpreter.ConstantQualifier); ok {
		cq := &meterConstQual{meterQual: meterQual{Qualifier: q, cost: 1}}
		if key, ok := c.Value().(types.String); ok {
			switch typeName(q) {
			case "*interpreter.stringQualifier":
				cq.key, cq.isKey = string(key), true
				if a.path != nil {
					a.path.keys = append(a.path.keys, cq.key)
					a.path.celKeys = append(a.path.celKeys, key)
					a.path.optional = append(a.path.optional, q.IsOptional())
				}
			case "*interpreter.testOnlyQualifier": // has()
				cq.key, cq.isKey, cq.isTest = string(key), true, true
			}
		}
		w = cq
	} else {
		w = &meterQual{Qualifier: q, cost: cost}
	}
	if cq, ok := w.(*meterConstQual); !ok || !cq.isKey || cq.isTest {
		a.path = nil
	}
	_, err := a.InterpretableAttribute.AddQualifier(w)
	return a, err
}

func (a *meterAttr) Exec(f *interpreter.ExecutionFrame) ref.Val {
	m := meterOf(f)
	if m == nil {
		return a.InterpretableAttribute.Exec(f)
	}
	if a.path != nil {
		if v, present, optional, n, ok := a.path.read(f); ok {
			switch {
			case !present:
				v = types.OptionalNone
			case optional:
				v = types.OptionalOf(v)
			}
			m.end(len(m.stack), a.InterpretableAttribute.ID(), v, a.push, a.cost+n)
			return v
		}
	}
	return m.step(f, a.InterpretableAttribute, a.push, a.cost)
}

func (a *meterAttr) keepValue() { a.push = true }

func (a *meterAttr) Eval(vars interpreter.Activation) ref.Val {
	return a.Exec(interpreter.AsFrame(vars))
}

// meterConstQual is a constant qualifier (a field name, an index), charged
// one once it applies, which still says its value to cel-go. A field of a
// tape object is looked up directly: cel-go's string qualifier would get
// there through two adapters and the map interface, at each step of every
// field read.
type meterConstQual struct {
	meterQual
	key           string
	isKey, isTest bool // a field name; in has(), whose qualify says presence
}

func (q *meterConstQual) Qualify(vars interpreter.Activation, obj any) (any, error) {
	if o, ok := obj.(*celObject); ok && q.isKey {
		j, found := o.d.member(o.i, q.key)
		if q.isTest {
			q.charge(vars)
			return found, nil
		}
		if found {
			q.charge(vars)
			return o.d.celValue(j), nil
		}
	}
	return q.meterQual.Qualify(vars, obj)
}

func (q *meterConstQual) QualifyIfPresent(vars interpreter.Activation, obj any, presenceOnly bool) (any, bool, error) {
	o, ok := obj.(*celObject)
	if !ok || !q.isKey {
		return q.meterQual.QualifyIfPresent(vars, obj, presenceOnly)
	}
	j, found := o.d.member(o.i, q.key)
	if !found {
		if presenceOnly {
			q.charge(vars)
		}
		return nil, false, nil
	}
	q.charge(vars)
	return o.d.celValue(j), true, nil
}

var _ interpreter.ConstantQualifier = (*meterConstQual)(nil)

func (q *meterConstQual) Value() ref.Val {
	return q.Qualifier.(interpreter.ConstantQualifier).Value()
}

// QualifierValueEquals is the constant's, for cel-go's attribute patterns.
func (q *meterConstQual) QualifierValueEquals(value any) bool {
	e, ok := q.Qualifier.(interface{ QualifierValueEquals(any) bool })
	return ok && e.QualifierValueEquals(value)
}

// meterQual charges a qualifier once it applies: an index expression or
// an attribute what the tracker charges it, a constant one.
type meterQual struct {
	interpreter.Qualifier
	cost uint64
}

func (q *meterQual) Qualify(vars interpreter.Activation, obj any) (any, error) {
	out, err := q.Qualifier.Qualify(vars, obj)
	q.charge(vars)
	return out, err
}

func (q *meterQual) QualifyIfPresent(vars interpreter.Activation, obj any, presenceOnly bool) (any, bool, error) {
	out, present, err := q.Qualifier.QualifyIfPresent(vars, obj, presenceOnly)
	if present || presenceOnly {
		q.charge(vars)
	}
	return out, present, err
}

func (q *meterQual) charge(vars interpreter.Activation) {
	if m := meterOf(vars); m != nil {
		m.charge(q.cost)
	}
}

var costEstimator = &library.CostEstimator{}

// extensionTracker is which overload tracker of cel-go's extensions
// charges a call, found once when the call is planned.
type extensionTracker int8

const (
	noTracker extensionTracker = iota
	listOutputTracker
	listDistinctTracker
	listFlattenTracker
	listSortTracker
	listSortByTracker
	setsTracker
	setsEquivalentTracker
)

// extensionTrackers are the overload trackers cel-go's sets and lists
// (version 3) extensions add; its strings extension adds some from
// version 5, Kubernetes declares version 2.
var extensionTrackers = func() map[string]extensionTracker {
	m := map[string]extensionTracker{
		"list_slice": listOutputTracker, "lists_range": listOutputTracker, "list_reverse": listOutputTracker,
		"list_distinct": listDistinctTracker,
		"list_flatten":  listFlattenTracker, "list_flatten_int": listFlattenTracker,
		"list_sets_contains_list": setsTracker, "list_sets_intersects_list": setsTracker,
		"list_sets_equivalent_list": setsEquivalentTracker,
	}
	for _, t := range []*cel.Type{cel.IntType, cel.UintType, cel.DoubleType, cel.BoolType, cel.DurationType, cel.TimestampType, cel.StringType, cel.BytesType} {
		m[fmt.Sprintf("list_%s_sort", t.TypeName())] = listSortTracker
		m[fmt.Sprintf("list_%s_sortByAssociatedKeys", t.TypeName())] = listSortByTracker
	}
	return m
}()

// callCost is CostTracker.costCall: the overload trackers of cel-go's
// extensions, then the Kubernetes estimator, then cel-go's defaults.
func callCost(function, overload string, tracker extensionTracker, args []ref.Val, result ref.Val) uint64 {
	switch tracker {
	case listOutputTracker:
		return allocatingListCost(1, actualSize(result))
	case listDistinctTracker, listSortTracker:
		return selfCompareCost(args[0])
	case listSortByTracker:
		return selfCompareCost(args[1])
	case listFlattenTracker:
		depth := 1.0
		if len(args) == 2 {
			depth = float64(args[1].(types.Int))
		}
		return allocatingListCost(depth, actualSize(args[0]))
	case setsTracker:
		return safeAdd(1, uint64(float64(actualSize(args[0])*actualSize(args[1]))))
	case setsEquivalentTracker:
		return safeAdd(1, uint64(float64(actualSize(args[0])*actualSize(args[1]))*2))
	}
	// The estimator charges an equality of its own types one; its answer
	// for any other is nil, after allocating.
	if overload != overloads.Equals || !isPlainValue(args[0]) {
		if c := costEstimator.CallCost(function, overload, args, result); c != nil {
			return *c
		}
	}
	const traversal = 0.1 // common.StringTraversalCostFactor
	switch overload {
	case overloads.StartsWithString, overloads.EndsWithString:
		return uint64(math.Ceil(float64(actualSize(args[1])) * traversal))
	case overloads.StringToBytes, overloads.BytesToString, overloads.ExtQuoteString, overloads.ExtFormatString:
		return uint64(math.Ceil(float64(actualSize(args[0])) * traversal))
	case overloads.InList:
		return actualSize(args[1])
	case overloads.LessString, overloads.GreaterString, overloads.LessEqualsString, overloads.GreaterEqualsString,
		overloads.LessBytes, overloads.GreaterBytes, overloads.LessEqualsBytes, overloads.GreaterEqualsBytes,
		overloads.Equals, overloads.NotEquals:
		return uint64(math.Ceil(float64(min(actualSize(args[0]), actualSize(args[1]))) * traversal))
	case overloads.AddString, overloads.AddBytes:
		return uint64(math.Ceil(float64(actualSize(args[0])+actualSize(args[1])) * traversal))
	case overloads.Matches, overloads.MatchesString:
		str := uint64(math.Ceil((1.0 + float64(actualSize(args[0]))) * traversal))
		re := uint64(math.Ceil(float64(actualSize(args[1])) * 0.25)) // common.RegexStringLengthCostFactor
		return safeMul(str, re)
	case overloads.ContainsString:
		return safeMul(uint64(math.Ceil(float64(actualSize(args[0]))*traversal)), uint64(math.Ceil(float64(actualSize(args[1]))*traversal)))
	}
	return 1
}

// isPlainValue says whether v is of a type of cel-go's or the tape's, none
// of which the Kubernetes estimator prices.
func isPlainValue(v ref.Val) bool {
	switch v.(type) {
	case types.String, types.Int, types.Uint, types.Double, types.Bool, types.Null, types.Bytes, *celObject, *celList, *types.Optional:
		return true
	}
	return false
}

func selfCompareCost(v ref.Val) uint64 {
	l, ok := v.(traits.Lister)
	if !ok {
		return allocatingListCost(2, 0)
	}
	sz := actualSize(l)
	factor := 2.0
	if sz == 0 {
		return allocatingListCost(factor, 0)
	}
	if e := l.Get(types.IntZero); e.Type() == types.StringType || e.Type() == types.BytesType {
		factor += 0.1
	}
	return allocatingListCost(factor, safeMul(sz, sz))
}

func allocatingListCost(factor float64, size uint64) uint64 {
	if factor < 0 {
		factor = 1
	}
	return safeAdd(safeAdd(uint64(float64(size)*factor), 1), 10)
}

func actualSize(v ref.Val) uint64 {
	if sz, ok := v.(traits.Sizer); ok {
		return uint64(sz.Size().(types.Int))
	}
	if opt, ok := v.(*types.Optional); ok && opt.HasValue() {
		return actualSize(opt.GetValue())
	}
	return 1
}

func safeAdd(x, y uint64) uint64 {
	if x > math.MaxUint64-y {
		return math.MaxUint64
	}
	return x + y
}

func safeMul(x, y uint64) uint64 {
	if y != 0 && x > math.MaxUint64/y {
		return math.MaxUint64
	}
	return x * y
}

// meterOrValue is cel-go's evalOptionalOrValue (x.orValue(y)), which the
// tracker charges nothing. When x is an optional path on the tape, its
// value or y is taken without making an optional of it.
type meterOrValue struct {
	id       int64
	lhs, rhs interpreter.InterpretableV2
	attr     *meterAttr // lhs, when it is an attribute
}

// newMeterOrValue takes an evalOptionalOrValue's operands, which cel-go
// does not export; ok is false if it no longer has them.
func newMeterOrValue(i interpreter.InterpretableV2) (o *meterOrValue, ok bool) {
	operand := func(name string) interpreter.InterpretableV2 {
		f := reflect.ValueOf(i).Elem().FieldByName(name)
		if !f.IsValid() || f.Type() != reflect.TypeFor[interpreter.InterpretableV2]() {
			return nil
		}
		return *(*interpreter.InterpretableV2)(unsafe.Pointer(f.UnsafeAddr()))
	}
	o = &meterOrValue{id: i.ID(), lhs: operand("lhs"), rhs: operand("rhs")}
	if o.lhs == nil || o.rhs == nil {
		return nil, false
	}
	o.attr, _ = o.lhs.(*meterAttr)
	return o, true
}

func (o *meterOrValue) ID() int64 { return o.id }

func (o *meterOrValue) Exec(f *interpreter.ExecutionFrame) ref.Val {
	if o.attr != nil {
		if m := meterOf(f); m != nil {
			if v, present, ok := o.attr.readOptional(f, m); ok {
				if present {
					return v
				}
				return o.rhs.Exec(f)
			}
		}
	}
	switch v := o.lhs.Exec(f).(type) {
	case *types.Err, *types.Unknown:
		return v
	case *types.Optional:
		if v.HasValue() {
			return v.GetValue()
		}
		return o.rhs.Exec(f)
	}
	return types.NoSuchOverloadErr()
}

func (o *meterOrValue) Eval(a interpreter.Activation) ref.Val { return o.Exec(interpreter.AsFrame(a)) }
