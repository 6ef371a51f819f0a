package engine

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// celDoc has a field for each kind of value the expressions below read.
const celDoc = `{
  "metadata": {"name": "web-0", "labels": {"app": "web", "tier": "front"},
    "annotations": {"a/b": "c~d", "esc\u00e9": "caf\u00e9", "empty": ""},
    "ownerReferences": [{"kind": "StatefulSet", "name": "web"}]},
  "spec": {"containers": [
      {"name": "app", "image": "nginx", "resources": {"limits": {"cpu": "1"}}},
      {"name": "sidecar", "image": "envoy", "ports": [{"containerPort": 80}]}],
    "nums": [3, 1, 2], "floats": [1.5, 2e3, -0.25], "big": 12345678901234567890,
    "flag": true, "off": false, "none": null, "empty": {}, "nothing": [],
    "mixed": [1, "a", null, true, {"k": "v"}, [1]], "quantity": "250m"}
}`

// celExpressions cover what policies do with an object: field access,
// presence, missing keys and indexes, macros, equality with literals and
// with itself, conversions, optionals and the apiserver's libraries.
var celExpressions = []string{
	`object`,
	`object.metadata.name`,
	`object.metadata.labels`,
	`has(object.metadata.labels)`,
	`has(object.metadata.nope)`,
	`object.metadata.nope`,
	`object.metadata.labels.app`,
	`object.metadata.annotations['a/b']`,
	`object.metadata.annotations['esc\u00e9']`,
	`object.spec.containers[0].name`,
	`object.spec.containers[1].ports[0].containerPort + 1`,
	`object.spec.containers[100]`,
	`object.spec.containers[-1]`,
	`object.spec.containers[dyn(1.0)].name`,
	`object.spec.containers[dyn(1u)].name`,
	`object.spec.containers[dyn(0.5)]`,
	`object.spec.containers['x']`,
	`object.metadata.labels[dyn(1)]`,
	`size(object.spec.containers)`,
	`object.spec.containers.size()`,
	`size(object.metadata.labels)`,
	`size(object.spec.empty) == 0 && size(object.spec.nothing) == 0`,
	`object.spec.containers.exists(c, c.name == 'app')`,
	`object.spec.containers.all(c, has(c.image))`,
	`object.spec.containers.map(c, c.name)`,
	`object.spec.containers.filter(c, c.name.startsWith('s'))`,
	`object.spec.containers.exists_one(c, has(c.ports))`,
	`object.metadata.labels.all(k, object.metadata.labels[k] != '')`,
	`object.metadata.labels.exists(k, k == 'tier')`,
	`size(object.metadata.labels.filter(k, k.startsWith('a')))`,
	`object.metadata.ownerReferences.exists(r, r.kind == 'StatefulSet')`,
	`'app' in object.metadata.labels`,
	`'nope' in object.metadata.labels`,
	`1 in object.spec.nums`,
	`'a' in object.spec.mixed`,
	`object.spec.containers[0] in object.spec.containers`,
	`object.metadata.labels == {'app': 'web', 'tier': 'front'}`,
	`{'app': 'web', 'tier': 'front'} == object.metadata.labels`,
	`object.metadata.labels == {'app': 'web'}`,
	`object.metadata.labels != {'app': 'web', 'tier': 'back'}`,
	`object == object`,
	`object.spec.containers == object.spec.containers`,
	`object.spec.nums == [3, 1, 2]`,
	`[3, 1, 2] == object.spec.nums`,
	`object.spec.nums == [3, 1]`,
	`object.spec.mixed == [dyn(1), dyn('a'), dyn(null), dyn(true), dyn({'k': 'v'}), dyn([1])]`,
	`object.spec.nums + [4]`,
	`[0] + object.spec.nums`,
	`object.spec.nums + object.spec.nums`,
	`object.spec.nums + []`,
	`object.spec.nums + object.spec.nums + [7]`,
	`(object.spec.nums + object.spec.nums)[4]`,
	`size(object.spec.nums + object.spec.containers)`,
	`7 in object.spec.nums + [7]`,
	`'x' in object.spec.nums + object.spec.mixed`,
	`object.spec.nums + [4] == [3, 1, 2, 4]`,
	`[3, 1, 2, 4] == object.spec.nums + [4]`,
	`object.spec.nums + object.spec.nums == object.spec.nums + object.spec.nums`,
	`(object.spec.containers + object.spec.containers).map(c, c.name)`,
	`(object.spec.nums + object.spec.mixed + object.spec.nums).filter(x, type(x) == int)`,
	`(object.spec.containers + object.spec.containers).exists(c, c.?resources.?limits.?cpu.orValue('') == '1')`,
	`type(object) == map`,
	`type(object.spec.containers) == list`,
	`type(object.spec.big)`,
	`type(object.spec.floats[1])`,
	`object.spec.floats[0] * 2.0`,
	`object.spec.big`,
	`object.spec.flag && !object.spec.off`,
	`object.spec.none == null`,
	`object.?metadata.?labels.?app.orValue('none')`,
	`object.?metadata.?labels.?nope.orValue('none')`,
	`object.?spec.?containers[?5].hasValue()`,
	`object.spec.containers[?0].?name.orValue('')`,
	`object.metadata.labels[?'app'].orValue('')`,
	`object.spec.containers.exists(c, c.?resources.?limits.?cpu.orValue('') == '1')`,
	`object.spec.containers[0].image.matches('^ng')`,
	`object.spec.nums.sum()`,
	`object.spec.nums.max()`,
	`object.spec.nums.isSorted()`,
	`object.spec.nums.indexOf(2)`,
	`quantity(object.spec.quantity).isLessThan(quantity('1'))`,
	`dyn(object.spec.containers[0]).name`,
	`object.spec.containers.map(c, c.name).join(',')`,
	`object.metadata.labels.app + '-' + object.metadata.name`,
	`string(object.spec.nums[0])`,
	`int(object.spec.floats[0])`,
	`object.spec.nums.map(n, n * 2)`,
	`object.spec.mixed[4].k`,
	`object.spec.mixed[5][0]`,
	`object.spec.empty.nope`,
	`object.metadata.name.nope`,
	`[object.metadata.labels].exists(m, m.app == 'web')`,
	`{'l': object.spec.nums}.l[2]`,
	`object.spec.containers.all(c, c.all(k, k != ''))`,
	// bigDoc: lookups through the index of a large object and list.
	`object.data['k0'] + object.data['k20'] + object.data['k99']`,
	`object.data.all(k, object.data[k].startsWith('v'))`,
	`object.data['nope']`,
	`'k50' in object.data && !('k100' in object.data)`,
	`size(object.data)`,
	`object.items[0] + object.items[17] + object.items[99]`,
	`object.items[100]`,
	`object.items == object.items && object.data == object.data`,
	`object.items.filter(i, i % 10 == 0)`,
	`object.items.map(i, object.items[99 - i]) == object.items.map(i, 99 - i)`,
}

// bigDoc has an object and a list larger than indexedSize.
func bigDoc() string {
	data, items := map[string]string{}, make([]int, 100)
	for i := range items {
		data[fmt.Sprintf("k%d", i)] = fmt.Sprintf("v%d", i)
		items[i] = i
	}
	b, _ := json.Marshal(map[string]any{"data": data, "items": items})
	return string(b)
}

// TestTapeCELMatchesDecoded checks that every expression gives the same
// result, or the same error, on the tape's CEL values as on the decoded
// object through cel-go's own adapter, which the engine used before.
func TestTapeCELMatchesDecoded(t *testing.T) {
	pod, err := os.ReadFile("testdata/pod.json")
	must(t, err)
	pe, errs := newPolicyEnv(nil, nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, doc := range []string{celDoc, string(pod), bigDoc()} {
		d, err := parseJSON([]byte(doc))
		must(t, err)
		for _, expr := range celExpressions {
			e, err := pe.compile("test", expr, nil)
			if err != nil {
				t.Fatalf("%s: %v", expr, err)
			}
			eval := func(object ref.Val) (any, error) {
				v, _, err := e.program.Eval(map[string]any{"object": object, "variables": emptyVariables})
				if err != nil {
					return nil, err
				}
				if v.Type() == types.TypeType {
					return v.(ref.Type).TypeName(), nil
				}
				return toNative(v)
			}
			got, gotErr := eval(d.celValue(0))
			want, wantErr := eval(types.DefaultTypeAdapter.NativeToValue(d.native(0)))
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
				t.Errorf("%s:\n got %#v, %v\nwant %#v, %v", expr, got, gotErr, want, wantErr)
			}
		}
	}
}

// TestValueMatchesPlain reads a parsed document and its decoded copy
// through Value and expects the same everywhere.
func TestValueMatchesPlain(t *testing.T) {
	for _, doc := range []string{celDoc, bigDoc()} {
		d, err := parseJSON([]byte(doc))
		must(t, err)
		checkValueMatchesPlain(t, d)
	}
}

func checkValueMatchesPlain(t *testing.T, d *jsonDoc) {
	t.Helper()
	checkValuesMatch(t, Value{doc: d, exists: true}, PlainValue(d.native(0)))
}

// checkValuesMatch reads a, a parsed document (maybe with an overlay), and
// b, its plain equivalent, and expects the same everywhere.
func checkValuesMatch(t *testing.T, parsed, plain Value) {
	t.Helper()
	var walk func(path string, a, b Value)
	walk = func(path string, a, b Value) {
		if a.Exists() != b.Exists() || a.IsNull() != b.IsNull() || a.IsObject() != b.IsObject() ||
			a.IsList() != b.IsList() || a.Len() != b.Len() || !reflect.DeepEqual(a.Interface(), b.Interface()) {
			t.Fatalf("%s: parsed %v, plain %v", path, a, b)
		}
		as, aok := a.Str()
		bs, bok := b.Str()
		if as != bs || aok != bok {
			t.Fatalf("%s: Str %q %v, plain %q %v", path, as, aok, bs, bok)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("%s: formatted %v, plain %v", path, a, b)
		}
		if a.Exists() {
			// What Decode reads: both ways, written out, the same values.
			var ad, bd any
			if a.Decode(&ad) != nil || b.Decode(&bd) != nil || !reflect.DeepEqual(ad, bd) {
				t.Fatalf("%s: decodes as %#v, plain %#v", path, ad, bd)
			}
			for way, v := range map[string]Value{"parsed": a, "plain": b} {
				text, err := v.jsonText()
				if err != nil {
					t.Fatalf("%s: %s written out: %v", path, way, err)
				}
				if back, err := parseJSON(text); err != nil || !reflect.DeepEqual(back.native(0), ad) {
					t.Fatalf("%s: %s written out as %q: %v", path, way, text, err)
				}
			}
		}
		if a.IsObject() {
			walk(path+".nope", a.Get("nope"), b.Get("nope"))
		}
		keys := 0
		a.Range(func(k string, e Value) {
			keys++
			walk(path+"."+k, e, b.Get(k))
		})
		b.Range(func(k string, _ Value) {
			if !a.Get(k).Exists() {
				t.Fatalf("%s: parsed has no %q", path, k)
			}
		})
		if keys != b.Len() && a.IsObject() {
			t.Fatalf("%s: %d members, plain %d", path, keys, b.Len())
		}
		ae, be := a.Elements(), b.Elements()
		if len(ae) != len(be) {
			t.Fatalf("%s: %d elements, plain %d", path, len(ae), len(be))
		}
		for i := range ae {
			walk(fmt.Sprintf("%s[%d]", path, i), ae[i], be[i])
		}
	}
	walk("object", parsed, plain)
	walk("absent", Value{}, PlainValue(nil).Get("x"))
}

func TestParseJSONFindsRepeatedKeys(t *testing.T) {
	// More keys than noteKey compares pairwise.
	many := `{"k0":0`
	for i := 1; i < 40; i++ {
		many += fmt.Sprintf(`,"k%d":%d`, i, i)
	}
	for doc, dup := range map[string]bool{
		`{"a":1,"b":{"a":2}}`:        false,
		`{"a":1,"b":2,"a":3}`:        true,
		`[{"x":1},{"x":2,"x":3}]`:    true,
		many + `}`:                   false,
		many + `,"k3":10}`:           true,
		many + `,"k40":40,"k40":41}`: true,
		// A large object inside a large one has a set of its own.
		many + `,"in":` + many + `,"zz":1},"zz":2}`:                                     false,
		many + `,"yy":0,"in":` + many + `},"yy":1}`:                                     true,
		`{"a\u0062":1,"ab":2}`:                                                          true,
		`{"o":{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k8":9}}`: true,
	} {
		d, err := parseJSON([]byte(doc))
		must(t, err)
		if d.dupKeys != dup {
			t.Errorf("%s: dupKeys %v, want %v", doc, d.dupKeys, dup)
		}
	}
	// The decoded object keeps the last value, as encoding/json does.
	w, err := newWorkingObject([]byte(`{"a":1,"a":2}`), nil)
	must(t, err)
	if got := w.Value().Get("a").Interface(); got != int64(2) {
		t.Errorf("a = %v, want 2", got)
	}
}

func TestCanDefer(t *testing.T) {
	d, err := parseJSON([]byte(celDoc))
	must(t, err)
	add := func(path string) JSONPatchOp { return Op("add", path, "x") }
	for _, c := range []struct {
		name string
		ops  []JSONPatchOp
		want bool
	}{
		{"a new key", []JSONPatchOp{add("/metadata/labels/new")}, true},
		{"an existing key", []JSONPatchOp{add("/metadata/labels/app")}, true},
		{"an escaped key", []JSONPatchOp{add("/metadata/annotations/a~1b")}, true},
		{"append", []JSONPatchOp{add("/spec/nums/-")}, true},
		{"insert", []JSONPatchOp{add("/spec/nums/0")}, true},
		{"insert at the end", []JSONPatchOp{add("/spec/nums/3")}, true},
		{"two containers", []JSONPatchOp{add("/spec/containers/0/env"), add("/spec/containers/1/env")}, true},
		{"into a list element", []JSONPatchOp{add("/spec/containers/1/ports/0/name")}, true},
		{"past the end", []JSONPatchOp{add("/spec/nums/4")}, false},
		{"negative index", []JSONPatchOp{add("/spec/nums/-1")}, false},
		{"not an index", []JSONPatchOp{add("/spec/nums/x")}, false},
		{"missing parent", []JSONPatchOp{add("/metadata/nope/x")}, false},
		{"into a scalar", []JSONPatchOp{add("/metadata/name/x")}, false},
		{"into null", []JSONPatchOp{add("/spec/none/x")}, false},
		{"missing element", []JSONPatchOp{add("/spec/containers/2/env")}, false},
		{"the root", []JSONPatchOp{add("")}, false},
		{"no leading slash", []JSONPatchOp{add("metadata")}, false},
		{"replace", []JSONPatchOp{Op("replace", "/metadata/name", "x")}, false},
		{"remove", []JSONPatchOp{Op("remove", "/metadata/name", nil)}, false},
		{"a typed value", []JSONPatchOp{Op("add", "/metadata/x", struct{ A int }{1})}, false},
		{"into what an earlier one added", []JSONPatchOp{add("/spec/containers/0/env"), add("/spec/containers/0/env/-")}, false},
		{"after an insert into the same list", []JSONPatchOp{add("/spec/containers/0"), add("/spec/containers/1/env")}, false},
		{"twice into one object", []JSONPatchOp{add("/metadata/labels/a"), add("/metadata/labels/b")}, false},
		{"an ancestor after", []JSONPatchOp{add("/metadata/labels/a"), add("/metadata/x")}, true},
	} {
		if got := canDefer(d, 0, c.ops); got != c.want {
			t.Errorf("%s: canDefer %v, want %v", c.name, got, c.want)
		}
		// What canDefer accepts must apply.
		if c.want {
			if err := applyPatch(d.native(0).(map[string]any), c.ops); err != nil {
				t.Errorf("%s: deferred, but does not apply: %v", c.name, err)
			}
		}
	}
}

// TestDeferredPatchIsReadThroughTheOverlay patches with deferral, then
// reads the object through Value and CEL without decoding it, and through
// asMap: all see the patch.
func TestDeferredPatchIsReadThroughTheOverlay(t *testing.T) {
	w, err := newWorkingObject([]byte(celDoc), nil)
	must(t, err)
	must(t, w.patch([]JSONPatchOp{Op("add", "/metadata/labels/new", "v")}))
	if len(w.pending) != 1 || w.doc == nil {
		t.Fatalf("the patch was not deferred: pending %v", w.pending)
	}
	if got, _ := w.Value().Get("metadata").Get("labels").Get("new").Str(); got != "v" {
		t.Errorf("Value reads new=%q", got)
	}
	labels := w.celValue().(interface{ Get(ref.Val) ref.Val }).Get(types.String("metadata"))
	if got := labels.(interface{ Get(ref.Val) ref.Val }).Get(types.String("labels")); got.Equal(types.DefaultTypeAdapter.NativeToValue(map[string]any{"app": "web", "tier": "front", "new": "v"})) != types.True {
		t.Errorf("CEL reads labels %v", got)
	}
	if w.doc == nil || w.err != nil {
		t.Fatalf("reading decoded: err %v", w.err)
	}
	// Replace, remove and a second operation into a changed container
	// are deferred too.
	must(t, w.patch([]JSONPatchOp{Op("replace", "/metadata/name", "web-1"), Op("remove", "/metadata/labels/app", nil), Op("add", "/metadata/labels/x", "y")}))
	if w.doc == nil {
		t.Fatal("replace and remove were not deferred")
	}
	if got, _ := w.Value().Get("metadata").Get("name").Str(); got != "web-1" {
		t.Errorf("Value reads name=%q", got)
	}
	want := map[string]any{"tier": "front", "new": "v", "x": "y"}
	if got := w.Value().Get("metadata").Get("labels").Interface(); !reflect.DeepEqual(got, want) {
		t.Errorf("Value reads labels %v", got)
	}
	if got := w.asMap()["metadata"].(map[string]any)["labels"]; w.err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("decoded labels %v, %v", got, w.err)
	}
	// A "test" applies at once, and a patch that does not apply is an error.
	w, err = newWorkingObject([]byte(celDoc), nil)
	must(t, err)
	must(t, w.patch([]JSONPatchOp{Op("test", "/metadata/name", "web-0")}))
	if w.doc != nil {
		t.Error("test was deferred")
	}
	if err := w.patch([]JSONPatchOp{Op("add", "/nope/x", 1)}); err == nil {
		t.Error("a patch into a missing parent applied")
	}
}

func TestTapeCELConversions(t *testing.T) {
	d, err := parseJSON([]byte(`{"m": {"k": "v"}, "l": [1]}`))
	must(t, err)
	m, l := d.celValue(2), d.celValue(d.next(2)+1)
	for _, c := range []struct {
		v    ref.Val
		to   ref.Type
		want ref.Val
	}{
		{m, types.MapType, m},
		{m, types.TypeType, types.MapType},
		{l, types.ListType, l},
		{l, types.TypeType, types.ListType},
	} {
		if got := c.v.ConvertToType(c.to); got != c.want {
			t.Errorf("%v to %v: %v", c.v, c.to, got)
		}
	}
	if got := m.ConvertToType(types.ListType); !types.IsError(got) {
		t.Errorf("a map converted to a list: %v", got)
	}
	if got := l.ConvertToType(types.StringType); !types.IsError(got) {
		t.Errorf("a list converted to a string: %v", got)
	}
}
