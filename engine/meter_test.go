package engine

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
)

// meterCorpus is a pod-like object for TestMeterChargesAsCELGo.
const meterCorpus = `{
  "kind": "Pod", "metadata": {"name": "web-0", "labels": {"app": "web", "tier": "front"},
    "annotations": {"a": "x", "container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}},
  "spec": {
    "containers": [
      {"name": "app", "image": "registry.example.com/app:1.2", "ports": [{"containerPort": 80}, {"containerPort": 443, "hostPort": 443}],
       "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}},
       "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
      {"name": "log-shipper", "image": "fluent:latest", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "two"}]}
    ],
    "initContainers": [{"name": "migrate", "image": "app:1.2", "securityContext": {"runAsUser": 0}}],
    "volumes": [{"name": "data", "emptyDir": {}}, {"name": "host", "hostPath": {"path": "/var"}}],
    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}, "sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]},
    "nodeSelector": {"zone": "a"}, "hostNetwork": false, "priority": 10, "ratio": 0.5
  }
}`

// meterExpressions exercise each kind of step cel-go's tracker charges:
// attributes and their qualifiers, has(), ternaries, calls whose cost
// depends on their arguments, literals the optimizer folds or not, regexes,
// comprehensions, and the Kubernetes and extension libraries.
var meterExpressions = []string{
	`object.metadata.name`,
	`object.metadata.name == 'web-0'`,
	`object.metadata.name != object.metadata.labels.app`,
	`object.spec.containers[0].image`,
	`object.spec.containers[size(object.spec.containers) - 1].name`,
	`object.metadata.labels['app'] + '-' + object.metadata.labels.tier`,
	`has(object.spec.hostNetwork) && !object.spec.hostNetwork`,
	`has(object.spec.nodeName)`,
	`object.?spec.?securityContext.?runAsNonRoot.orValue(false)`,
	`object.spec.?hostPID.orValue(false) || object.spec.?hostIPC.orValue(false)`,
	`object.spec.?os.?name.orValue('') == 'windows'`,
	`object.spec.?securityContext.?seccompProfile.hasValue()`,
	`object.spec.?securityContext.seccompProfile.type.optMap(t, t + '!').orValue('')`,
	`optional.of(object.metadata.name).or(optional.none()).value()`,
	`object.spec.priority > 5 ? object.metadata.name : object.metadata.labels.app`,
	`(object.spec.priority > 5 ? object.spec.containers : object.spec.initContainers)[0].name`,
	`object.spec.priority > 5 ? 'high' : 'low'`,
	`object.metadata.labels.app in ['web', 'api', 'db']`,
	`!(object.metadata.labels.app in ['web', 'api'])`,
	`object.metadata.labels.app in [string(object.metadata.name), 'web']`,
	`'app' in object.metadata.labels`,
	`[object.metadata.name, object.metadata.labels.app]`,
	`{'name': object.metadata.name, 'n': dyn(1)}`,
	`size(['a', 'b', 'c']) == 3`,
	`['a', 'b'] + [object.metadata.name]`,
	`object.spec.containers[0].image.startsWith('registry.example.com/')`,
	`object.spec.containers[0].image.endsWith(':latest')`,
	`object.spec.containers[0].image.contains('app')`,
	`object.spec.containers[0].image.matches('^[a-z.]+/[a-z]+:[0-9.]+$')`,
	`object.spec.containers[0].image.matches(object.metadata.labels.app)`,
	`object.metadata.name < object.metadata.labels.app`,
	`string(object.spec.priority) + string(1)`,
	`int('42') + object.spec.priority`,
	`double(object.spec.priority) * object.spec.ratio`,
	`type(object.metadata.name) == string`,
	`dyn(object.spec).?volumes.orValue([]).exists(v, has(v.hostPath))`,
	`object.spec.containers.all(c, c.image.contains(':'))`,
	`object.spec.containers.exists_one(c, c.name == 'app')`,
	`object.spec.containers.map(c, c.name).join(', ')`,
	`object.spec.containers.filter(c, !c.?securityContext.?allowPrivilegeEscalation.orValue(true)).map(c, '"' + c.name + '"')`,
	`object.spec.containers.map(c, c.?ports.orValue([]).map(p, p.containerPort)).flatten()`,
	`object.spec.containers.all(c, c.?securityContext.?capabilities.?add.orValue([]).all(x, x in ['NET_BIND_SERVICE', 'CHOWN']))`,
	`(object.spec.initContainers + object.spec.containers).map(c, c.name).sort()`,
	`object.spec.containers.map(c, c.name).distinct().size()`,
	`object.metadata.labels.all(k, v, k.size() + v.size() > 2)`,
	`object.metadata.annotations.filter(k, k.startsWith('container.apparmor.security.beta.kubernetes.io/') && object.metadata.annotations[k] == 'runtime/default')`,
	`object.metadata.labels.transformList(k, v, k + '=' + v).sort().join(',')`,
	`object.metadata.name.lowerAscii().upperAscii().replace('WEB', 'api')`,
	`object.metadata.name.split('-')[1]`,
	`object.metadata.name.substring(1, 3) + string(object.metadata.name.indexOf('b'))`,
	`object.spec.containers[0].image.find('[0-9]+')`,
	`object.spec.containers[0].image.findAll('[a-z]+').size()`,
	`quantity(object.spec.containers[0].resources.requests.memory).isLessThan(quantity('1Gi'))`,
	`quantity(object.spec.containers[0].resources.limits.memory).asInteger() > 0`,
	`url('https://' + object.spec.containers[0].image).getHost()`,
	`isIP('10.0.0.1') && ip('10.0.0.1').family() == 4 && cidr('10.0.0.0/8').containsIP(ip('10.1.2.3'))`,
	`sets.contains(['a', 'b', string(object.metadata.name)], ['web-0'])`,
	`sets.intersects(object.spec.containers.map(c, c.name), ['app', 'x']) && sets.equivalent(['a', 'b'], ['b', 'a'])`,
	`lists.range(3).reverse().slice(0, 2)`,
	`[3, 1, 2].sort()`,
	`[dyn([1]), dyn([dyn(2), dyn([3])])].flatten(2)`,
	`object.spec.containers.map(c, c.name).isSorted()`,
	`[1, 2, 3].sum() + [1, 2].max()`,
	`'%s has %d containers'.format([object.metadata.name, size(object.spec.containers)])`,
	`timestamp('2026-01-01T00:00:00Z') + duration('1h') > timestamp('2026-01-01T00:30:00Z')`,
	`object.spec.containers.map(c, object.spec.volumes.map(v, c.name + v.name)).flatten().size()`,
	`object.kind + ' ' + object.metadata.name + ' must have the label' + (size(object.spec.containers) == 1 ? ' ' : 's ') + object.spec.containers.map(c, c.name).join(', ')`,
	`(size(object.spec.containers) == 1 ? ' ' : 's ')`,
	`'x' + (size(object.spec.containers) == 1 ? ' ' : 's ')`,
	`object.kind + ' '`,
	`object.spec.containers.map(c, c.name).join(', ')`,
	`'a' + object.spec.containers.map(c, c.name).join(', ')`,
	`object.kind + ' ' + object.metadata.missing + ' must' + (size(object.spec.containers) == 1 ? ' ' : 's ') + object.spec.containers.map(c, c.name).join(', ')`,
	`object.kind + ' ' + object.metadata.missing`,
	`object.metadata.missing + ' '`,
	`(object.metadata.missing + ' ') + 'x'`,
	`object.metadata.missing`,
	`object.spec.containers[5]`,
	`1 / (object.spec.priority - 10)`,
	// Paths read from the tape in one go: present and absent fields,
	// optional steps through values that are not objects, alternatives
	// that are evaluated or not, a leading dot past a comprehension's
	// variable, and paths from comprehension variables.
	`object.spec.?nodeSelector.?zone.orValue(object.metadata.name)`,
	`object.spec.?nodeSelector.?region.orValue(object.metadata.name)`,
	`object.spec.nodeSelector.?region.orValue(object.metadata.labels.app + '!')`,
	`object.spec.?priority.?x.hasValue() || object.spec.?priority.?x.orValue(1) == 1`,
	`object.metadata.?name.?first.orValue('none')`,
	`object.spec.?containers.?name.hasValue()`,
	`object.spec.securityContext.?sysctls.hasValue() && !object.spec.securityContext.?seLinuxOptions.hasValue()`,
	`object.spec.nodeSelector.region`,
	`object.spec.priority.x == 1`,
	`object.spec.?nodeSelector.zone`,
	`[dyn(1)].exists(object, .object.spec.nodeSelector.zone == 'a' && object == 1)`,
	`[dyn(1)].exists(x, .object.spec.nodeSelector.zone == 'a')`,
	`.object.spec.nodeSelector.zone == 'a'`,
	`object.spec.containers.map(c, c.?securityContext.?capabilities.?drop.orValue(['none'])[0])`,
	`object.spec.containers.filter(c, c.?securityContext.?runAsUser.hasValue()).map(c, c.name)`,
	`object.spec.initContainers.map(c, c.securityContext.runAsUser + 1)`,
}

// meterChargesMore are the expressions the meter charges more than cel-go,
// by at most so much:
// in a comprehension whose variable hides a variable of the same name, a
// leading dot (.object) reads the outer one, and cel-go's tracker, which
// looks for its state in the activation it reads from, finds none there
// and charges the attribute's qualifiers nothing. The meter charges them.
var meterChargesMore = map[string]uint64{
	`[dyn(1)].exists(object, .object.spec.nodeSelector.zone == 'a' && object == 1)`: 3,
}

// TestMeterChargesAsCELGo evaluates each expression both ways, on a tape
// object and on a decoded one: a program planned with the meter, and one
// of the API server's environment with cel-go's cost tracking. Results and
// costs must be the same.
func TestMeterChargesAsCELGo(t *testing.T) {
	doc, err := parseJSON([]byte(meterCorpus))
	if err != nil {
		t.Fatal(err)
	}
	var decoded map[string]any
	if err := json.Unmarshal([]byte(meterCorpus), &decoded); err != nil {
		t.Fatal(err)
	}
	// And as a mutating policy leaves it: patches laid over the tape.
	patched, err := newWorkingObject([]byte(meterCorpus), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := patched.patch([]JSONPatchOp{
		Op("add", "/metadata/labels/extra", "x"),
		Op("add", "/spec/containers/1/securityContext", map[string]any{"runAsUser": int64(5), "capabilities": map[string]any{"drop": []any{"ALL"}}}),
		Op("replace", "/spec/nodeSelector/zone", "b"),
	}); err != nil || patched.doc == nil || len(patched.pending) != 3 {
		t.Fatalf("patching the tape object: %v", err)
	}
	if _, ok := patched.celValue().(*ovCelObject); !ok {
		t.Fatalf("the patched object is a %T, not an overlay", patched.celValue())
	}
	cases := meterCases(t)
	for name, obj := range map[string]ref.Val{"tape": doc.celValue(0), "decoded": types.DefaultTypeAdapter.NativeToValue(decoded), "patched": patched.celValue()} {
		checkMeter(t, cases, name, obj)
	}
}

// FuzzMeterChargesAsCELGo is TestMeterChargesAsCELGo's check on arbitrary
// documents read from the tape: missing fields, values that are not maps
// where a path goes on, lists for objects. (Not decoded ones: a
// comprehension over a map that stops early costs what Go's map order
// makes it, different from one run to the next.)
func FuzzMeterChargesAsCELGo(f *testing.F) {
	cases := meterCases(f)
	f.Add([]byte(meterCorpus))
	f.Add([]byte(`{"metadata": {"name": 5, "labels": []}, "spec": {"containers": [{"securityContext": "x"}, 7], "nodeSelector": {"zone": {}}}}`))
	f.Add([]byte(`{"spec": {"securityContext": {"seccompProfile": null}, "priority": {"x": 1}, "containers": {"name": "app"}}}`))
	f.Add([]byte(`[{"spec": {}}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := parseJSON(data)
		if err != nil {
			return
		}
		checkMeter(t, cases, "tape", doc.celValue(0))
	})
}

// meterCase is one of meterExpressions, planned with cel-go's tracking in
// the API server's environment and with the meter.
type meterCase struct {
	expr             string
	tracked, metered cel.Program
}

func meterCases(tb testing.TB) []meterCase {
	shared, penv := meterEnvs(tb)
	var cases []meterCase
	for _, expr := range meterExpressions {
		ast, iss := shared.Compile(expr)
		if iss.Err() != nil {
			tb.Fatalf("%s: %v", expr, iss.Err())
		}
		tracked, err := shared.Program(ast)
		if err != nil {
			tb.Fatal(err)
		}
		metered, err := meteredProgram(penv, ast)
		if err != nil {
			tb.Fatalf("%s: %v", expr, err)
		}
		cases = append(cases, meterCase{expr, tracked, metered})
	}
	return cases
}

// checkMeter evaluates every case on obj both ways: the same result or
// error, and the same cost but for meterChargesMore and where cel-go's
// tracker fails.
func checkMeter(t *testing.T, cases []meterCase, name string, obj ref.Val) {
	t.Helper()
	for _, c := range cases {
		act, _ := interpreter.NewActivation(map[string]any{"object": obj, "oldObject": types.NullValue})
		want, det, wantErr := c.tracked.ContextEval(context.Background(), act)
		m := newMeter(context.Background(), act)
		got, _, gotErr := c.metered.Eval(m)
		cost := m.cost
		m.release()
		if wantErr != nil && strings.HasPrefix(wantErr.Error(), "internal error:") {
			// cel-go's tracker panicked (its lists extension's trackers
			// take an error argument for a list): the meter reports the
			// error the tracker was given.
			if gotErr == nil {
				t.Errorf("%s on the %s object: %v, want an error (cel-go's: %v)", c.expr, name, got, wantErr)
			}
			continue
		}
		if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() || wantErr == nil && want.Equal(got) != types.True {
			t.Errorf("%s on the %s object: %v %v, want %v %v", c.expr, name, got, gotErr, want, wantErr)
		}
		if tracked := det.ActualCost(); tracked == nil || cost < *tracked || cost > *tracked+meterChargesMore[c.expr] ||
			meterChargesMore[c.expr] == 0 && cost != *tracked {
			t.Errorf("%s on the %s object: cost %d, want %d", c.expr, name, cost, *det.ActualCost())
		}
	}
}

// TestMeterStopsAtTheLimit: past the per-call limit an evaluation stops
// with cel-go's error, and a cancelled context interrupts a comprehension.
func TestMeterStopsAtTheLimit(t *testing.T) {
	shared, penv := meterEnvs(t)
	ast, iss := shared.Compile(`lists.range(2000).all(i, lists.range(2000).all(j, i + j >= 0))`)
	if iss.Err() != nil {
		t.Fatal(iss.Err())
	}
	prog, err := meteredProgram(penv, ast)
	if err != nil {
		t.Fatal(err)
	}
	act, _ := interpreter.NewActivation(map[string]any{})
	m := newMeter(context.Background(), act)
	_, _, err = prog.Eval(m)
	if err == nil || !strings.Contains(err.Error(), "actual cost limit exceeded") {
		t.Errorf("err %v, want the cost limit exceeded", err)
	}
	if m.cost <= PerCallCostLimit {
		t.Errorf("stopped at cost %d, not past the limit %d", m.cost, PerCallCostLimit)
	}
	m.release()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m = newMeter(ctx, act)
	m.limit = 1 << 62
	_, _, err = prog.Eval(m)
	steps := m.steps
	m.release()
	if err == nil || !strings.Contains(err.Error(), "operation interrupted") {
		t.Errorf("err %v, want the evaluation interrupted", err)
	}
	if steps > 200 {
		t.Errorf("interrupted after %d steps, want at most 200", steps)
	}
}

// meterEnvs returns the environment expressions are checked in and the one
// metered programs are planned in.
func meterEnvs(t testing.TB) (shared, programs *cel.Env) {
	t.Helper()
	_, shared, err := sharedEnvs()
	if err != nil {
		t.Fatal(err)
	}
	programs, err = programEnv()
	if err != nil {
		t.Fatal(err)
	}
	return shared, programs
}

// TestFixedUnaryCostsAreFixed: every call of one argument the meter
// charges one without looking at its argument costs one, by callCost,
// whatever the argument.
func TestFixedUnaryCostsAreFixed(t *testing.T) {
	_, penv := meterEnvs(t)
	doc, err := parseJSON([]byte(meterCorpus))
	if err != nil {
		t.Fatal(err)
	}
	args := []ref.Val{
		types.String(""), types.String(strings.Repeat("x", 1000)), types.Int(7), types.True, types.NullValue,
		types.DefaultTypeAdapter.NativeToValue([]any{"a", "b", "c"}), doc.celValue(0), types.OptionalNone,
		types.OptionalOf(types.String(strings.Repeat("y", 500))), types.Bytes("abc"),
	}
	fixed := 0
	for _, fn := range penv.Functions() {
		for _, o := range fn.OverloadDecls() {
			if len(o.ArgTypes()) != 1 || !unaryCostIsFixed(fn.Name(), o.ID(), extensionTrackers[o.ID()]) {
				continue
			}
			fixed++
			for _, a := range args {
				if c := callCost(fn.Name(), o.ID(), extensionTrackers[o.ID()], []ref.Val{a}, a); c != 1 {
					t.Errorf("%s (%s) of %v costs %d, not one", fn.Name(), o.ID(), a.Type(), c)
				}
			}
		}
	}
	if fixed < 20 {
		t.Errorf("%d overloads of one argument cost one whatever it is; want !_, size, hasValue and more", fixed)
	}
	t.Logf("%d overloads", fixed)
}

// TestMeterTakesOverOrValue: the meter plans orValue itself, reading
// cel-go's operands; were cel-go to rename them, field paths would still
// be read but each orValue would make an optional again.
func TestMeterTakesOverOrValue(t *testing.T) {
	shared, penv := meterEnvs(t)
	ast, iss := shared.Compile(`object.spec.?nodeSelector.?zone.orValue('none')`)
	if iss.Err() != nil {
		t.Fatal(iss.Err())
	}
	var planned []string
	_, err := penv.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CustomDecoratorV2(func(i interpreter.InterpretableV2) (interpreter.InterpretableV2, error) {
		d, err := meterDecorator(i)
		if s, ok := d.(*meterStep); ok {
			planned = append(planned, typeName(s.InterpretableV2))
		}
		return d, err
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(planned, "*engine.meterOrValue") {
		t.Errorf("orValue planned as %v, not the meter's", planned)
	}
}
