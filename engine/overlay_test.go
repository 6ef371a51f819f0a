package engine

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// overlayKeys are the keys of random documents: short, so that paths and
// expressions hit them, and some that need escaping or look like indexes.
var overlayKeys = []string{"a", "b", "c", "a/b", "~", "-", "0"}

func randomJSON(r *rand.Rand, depth int) any {
	switch k := r.IntN(10); {
	case k < 3 && depth > 0:
		m := map[string]any{}
		for range r.IntN(5) {
			m[overlayKeys[r.IntN(len(overlayKeys))]] = randomJSON(r, depth-1)
		}
		return m
	case k < 5 && depth > 0:
		l := make([]any, r.IntN(5))
		for i := range l {
			l[i] = randomJSON(r, depth-1)
		}
		return l
	case k == 5:
		return int64(r.IntN(5))
	case k == 6:
		return float64(r.IntN(5)) + 0.5 // not integral: it stays a float64 written out
	case k == 7:
		return r.IntN(2) == 0
	case k == 8:
		return nil
	}
	return overlayKeys[r.IntN(len(overlayKeys))]
}

// randomOp is an operation on doc: mostly at a path that exists or whose
// parent does, sometimes one that does not apply.
func randomOp(r *rand.Rand, doc map[string]any) JSONPatchOp {
	var path string
	var cur any = doc
	for {
		stop := r.IntN(3) == 0
		switch c := cur.(type) {
		case map[string]any:
			keys := slices.Sorted(func(yield func(string) bool) {
				for k := range c {
					if !yield(k) {
						return
					}
				}
			})
			if !stop && len(keys) > 0 {
				k := keys[r.IntN(len(keys))]
				path, cur = path+"/"+EscapePointer(k), c[k]
				continue
			}
			if len(keys) > 0 && r.IntN(2) == 0 {
				path += "/" + EscapePointer(keys[r.IntN(len(keys))])
			} else {
				path += "/" + EscapePointer(overlayKeys[r.IntN(len(overlayKeys))])
			}
		case []any:
			if !stop && len(c) > 0 {
				k := r.IntN(len(c))
				path, cur = path+"/"+strconv.Itoa(k), c[k]
				continue
			}
			if r.IntN(4) == 0 {
				path += "/-"
			} else {
				path += "/" + strconv.Itoa(r.IntN(len(c)+3)-1)
			}
		default:
			path += "/" + overlayKeys[r.IntN(len(overlayKeys))]
		}
		break
	}
	switch k := r.IntN(20); {
	case k == 0:
		return Op("add", path[1:], "no leading slash")
	case k == 1:
		return Op("test", path, randomJSON(r, 1))
	case k == 2:
		return Op("add", path, struct {
			A int `json:"a"`
		}{r.IntN(3)})
	case k < 6:
		return Op("remove", path, nil)
	case k < 10:
		return Op("replace", path, randomJSON(r, 2))
	}
	return Op("add", path, randomJSON(r, 2))
}

// overlayExpressions read the object as CEL with oldObject, the same
// object decoded and patched: equality and membership both ways, sizes,
// lookups and macros over what random documents hold.
var overlayExpressions = []string{
	`object`,
	`object == oldObject`,
	`oldObject == object`,
	`size(object)`,
	`object.all(k, k in oldObject && object[k] == oldObject[k])`,
	`oldObject.all(k, k in object && oldObject[k] == object[k])`,
	`has(object.a) && has(object.b)`,
	`object.a`,
	`object.a.b`,
	`object.a[0]`,
	`object.b[1].c`,
	`object.c[2][0]`,
	`object['a/b']`,
	`object['~']['-']`,
	`size(object.a)`,
	`object.a + [1]`,
	`[object.b] == [oldObject.b]`,
	`object.c in [oldObject.c]`,
	`oldObject.c in [object.c]`,
	`object.a.exists(e, e == 1)`,
	`object.b.all(e, type(e) != map || size(e) >= 0)`,
	`type(object.a)`,
	`object.?a.?b.orValue('none')`,
	`object.?c[?1].orValue('none')`,
	`dyn(object.b).c`,
	`object.a == object.a && object.c == object.c`,
	`1 in object.a || 'a' in object.c`,
	`object.b == null || object.b == 1`,
	`object.a[-1]`,
	`object.c[dyn(1.0)]`,
}

var overlayEnv = sync.OnceValues(func() (*policyEnv, error) {
	pe, errs := newPolicyEnv(nil, nil)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return pe, nil
})

// overlayPrograms are overlayExpressions compiled, once: fuzzing calls
// checkOverlay many times.
var overlayPrograms = sync.OnceValues(func() ([]*Expression, error) {
	pe, err := overlayEnv()
	if err != nil {
		return nil, err
	}
	out := make([]*Expression, len(overlayExpressions))
	for i, expr := range overlayExpressions {
		if out[i], err = pe.compile("test", expr, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
})

// checkOverlay patches a random document with random batches of
// operations, deferred, and after each expects every read through the
// overlay (Value, Decode, the JSON text, CEL) to give what the decoded
// object with the patch applied gives, and the same errors.
func checkOverlay(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed>>32))
	doc, _ := randomJSON(r, 4).(map[string]any)
	if doc == nil {
		doc = map[string]any{"a": randomJSON(r, 3), "b": randomJSON(r, 3), "c": randomJSON(r, 3)}
	}
	raw, err := json.Marshal(doc)
	must(t, err)
	w, err := newWorkingObject(raw, nil)
	must(t, err)
	want := w.doc.native(0).(map[string]any)
	programs, err := overlayPrograms()
	must(t, err)
	for step := range 6 {
		ops := make([]JSONPatchOp, 1+r.IntN(3))
		for i := range ops {
			// Operations of a batch are drawn from the document before it:
			// later ones may not apply after the earlier.
			ops[i] = randomOp(r, want)
		}
		gotErr, wantErr := w.patch(ops), applyPatch(want, ops)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("seed %d step %d: %v: error %v, applied: %v", seed, step, ops, gotErr, wantErr)
		}
		if wantErr != nil {
			return
		}
		tested := slices.ContainsFunc(w.pending, func(op JSONPatchOp) bool { return op.Operation == "test" })
		if w.doc == nil && !tested {
			t.Fatalf("seed %d step %d: %v was not deferred", seed, step, ops)
		}
		checkValuesMatch(t, w.Value(), PlainValue(want))
		for i, e := range programs {
			expr := overlayExpressions[i]
			eval := func(object, oldObject ref.Val) (any, error) {
				v, _, err := e.program.Eval(map[string]any{"object": object, "oldObject": oldObject, "variables": emptyVariables})
				if err != nil {
					return nil, err
				}
				if v.Type() == types.TypeType {
					return v.(ref.Type).TypeName(), nil
				}
				return toNative(v)
			}
			plain := types.DefaultTypeAdapter.NativeToValue(want)
			got, gotErr := eval(w.celValue(), plain)
			exp, expErr := eval(plain, plain)
			if fmt.Sprint(gotErr) != fmt.Sprint(expErr) || !reflect.DeepEqual(got, exp) {
				t.Fatalf("seed %d step %d: %s after %v:\n got %#v, %v\nwant %#v, %v", seed, step, expr, w.pending, got, gotErr, exp, expErr)
			}
		}
		if w.doc == nil {
			return
		}
	}
	// Decoding at last gives the same object.
	if got := w.asMap(); w.err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("seed %d: decoded %v, %v\nwant %v", seed, got, w.err, want)
	}
}

// TestOverlayCELMatchesPatched runs the expressions of
// TestTapeCELMatchesDecoded on documents with a deferred patch that
// changes what they read.
func TestOverlayCELMatchesPatched(t *testing.T) {
	pod, err := os.ReadFile("testdata/pod.json")
	must(t, err)
	pe, err := overlayEnv()
	must(t, err)
	ops := []JSONPatchOp{
		Op("add", "/metadata/labels/new", "v"),
		Op("replace", "/metadata/name", "web-9"),
		Op("add", "/spec/containers/0", map[string]any{"name": "first", "image": "docker.io/x", "ports": []any{}}),
		Op("add", "/spec/containers/2/resources", map[string]any{"limits": map[string]any{"cpu": "2"}}),
		Op("add", "/spec/containers/2/resources/requests", map[string]any{"cpu": "1"}),
		Op("remove", "/spec/nums/1", nil),
		Op("add", "/spec/nums/-", int64(7)),
		Op("add", "/spec/floats/0", 0.5),
		Op("replace", "/spec/flag", false),
		Op("remove", "/spec/none", nil),
		Op("add", "/spec/empty/k", "v"),
		Op("add", "/spec/nothing/0", map[string]any{"k": []any{int64(1)}}),
		Op("add", "/spec/nothing/0/k/-", int64(2)),
		Op("add", "/data/k100", "v100"),
		Op("remove", "/data/k20", nil),
		Op("replace", "/items/17", int64(-17)),
		Op("add", "/items/0", int64(100)),
	}
	for _, doc := range []string{celDoc, string(pod), bigDoc()} {
		w, err := newWorkingObject([]byte(doc), nil)
		must(t, err)
		want := w.doc.native(0).(map[string]any)
		// Only the operations that apply to this document.
		for _, op := range ops {
			if applyPatch(deepCopyJSON(want).(map[string]any), []JSONPatchOp{op}) == nil {
				must(t, applyPatch(want, []JSONPatchOp{op}))
				must(t, w.patch([]JSONPatchOp{op}))
			}
		}
		if len(w.pending) < 3 || w.doc == nil {
			t.Fatalf("%d operations deferred", len(w.pending))
		}
		for _, expr := range celExpressions {
			e, err := pe.compile("test", expr, nil)
			must(t, err)
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
			got, gotErr := eval(w.celValue())
			exp, expErr := eval(types.DefaultTypeAdapter.NativeToValue(want))
			if fmt.Sprint(gotErr) != fmt.Sprint(expErr) || !reflect.DeepEqual(got, exp) {
				t.Errorf("%s:\n got %#v, %v\nwant %#v, %v", expr, got, gotErr, exp, expErr)
			}
		}
		checkValuesMatch(t, w.Value(), PlainValue(want))
		if w.doc == nil {
			t.Error("reading decoded the object")
		}
	}
}

func TestOverlayMatchesPatched(t *testing.T) {
	for seed := range uint64(400) {
		checkOverlay(t, seed)
	}
}

func FuzzOverlay(f *testing.F) {
	for _, seed := range []uint64{1, 2, 3, 1 << 40} {
		f.Add(seed)
	}
	f.Fuzz(checkOverlay)
}
