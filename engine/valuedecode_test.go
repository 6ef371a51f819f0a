package engine

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "sigs.k8s.io/json"
)

// valueBothWays returns the value at path (keys, or list positions as
// ints) of doc, read from the tape and from its decoded maps.
func valueBothWays(t *testing.T, doc string, path ...any) (tape, plain Value) {
	t.Helper()
	d, err := parseJSON([]byte(doc))
	must(t, err)
	tape, plain = Value{doc: d, exists: true}, PlainValue(d.native(0))
	for _, p := range path {
		switch p := p.(type) {
		case string:
			tape, plain = tape.Get(p), plain.Get(p)
		case int:
			tape, plain = tape.Elements()[p], plain.Elements()[p]
		}
	}
	return tape, plain
}

func readPod(t testing.TB) []byte {
	t.Helper()
	indented, err := os.ReadFile("testdata/pod.json")
	must(t, err)
	var compact bytes.Buffer
	must(t, json.Compact(&compact, indented))
	return compact.Bytes()
}

func TestValueDecodeTyped(t *testing.T) {
	pod := readPod(t)
	var want corev1.Pod
	must(t, kjson.UnmarshalCaseSensitivePreserveInts(pod, &want))
	if len(want.Spec.Containers) != 2 || want.Spec.Containers[0].Resources.Requests.Cpu().MilliValue() != 500 {
		t.Fatalf("the reference decode is not the pod expected: %+v", want.Spec)
	}
	for _, way := range []string{"tape", "plain"} {
		tape, plain := valueBothWays(t, string(pod))
		v := map[string]Value{"tape": tape, "plain": plain}[way]
		var got corev1.Pod
		must(t, v.Decode(&got))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the pod decodes as\n%+v\nwant\n%+v", way, got, want)
		}
		// A part of the object: written out from the tape, not sliced.
		var c corev1.Container
		must(t, v.Get("spec").Get("containers").Elements()[0].Decode(&c))
		if !reflect.DeepEqual(c, want.Spec.Containers[0]) {
			t.Errorf("%s: the container decodes as\n%+v\nwant\n%+v", way, c, want.Spec.Containers[0])
		}
		var q resource.Quantity
		must(t, v.Get("spec").Get("containers").Elements()[0].Get("resources").Get("limits").Get("memory").Decode(&q))
		if q.String() != "1Gi" {
			t.Errorf("%s: the memory limit decodes as %s", way, q.String())
		}
	}
}

func TestValueDecodePlain(t *testing.T) {
	for _, path := range [][]any{nil, {"metadata"}, {"metadata", "annotations"}, {"spec", "mixed"}, {"spec", "big"}, {"spec", "floats", 0}, {"spec", "empty"}, {"spec", "nothing"}} {
		tape, plain := valueBothWays(t, celDoc, path...)
		want := tape.Interface()
		for way, v := range map[string]Value{"tape": tape, "plain": plain} {
			var got any
			must(t, v.Decode(&got))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%v, %s: decodes as %#v, want %#v", path, way, got, want)
			}
			switch want := want.(type) {
			case map[string]any:
				var m map[string]any
				must(t, v.Decode(&m))
				if !reflect.DeepEqual(m, want) {
					t.Errorf("%v, %s: decodes as the map %#v, want %#v", path, way, m, want)
				}
			case []any:
				var l []any
				must(t, v.Decode(&l))
				if !reflect.DeepEqual(l, want) {
					t.Errorf("%v, %s: decodes as the list %#v, want %#v", path, way, l, want)
				}
			}
		}
	}
	// The escaped strings and the numbers of the reference decoder.
	tape, plain := valueBothWays(t, celDoc)
	for way, v := range map[string]Value{"tape": tape, "plain": plain} {
		var m map[string]any
		must(t, v.Decode(&m))
		annotations := m["metadata"].(map[string]any)["annotations"].(map[string]any)
		spec := m["spec"].(map[string]any)
		if annotations["escé"] != "café" || spec["big"] != 12345678901234567890.0 || spec["nums"].([]any)[0] != int64(3) {
			t.Errorf("%s: decodes as %v", way, m)
		}
	}
}

// TestValueDecodeCopies changes what Decode gave and reads the value
// again: the object is not the builtin's to change.
func TestValueDecodeCopies(t *testing.T) {
	tape, plain := valueBothWays(t, celDoc)
	for way, v := range map[string]Value{"tape": tape, "plain": plain} {
		var m map[string]any
		must(t, v.Decode(&m))
		m["metadata"].(map[string]any)["labels"].(map[string]any)["app"] = "changed"
		m["spec"].(map[string]any)["nums"].([]any)[0] = "changed"
		var a any
		must(t, v.Get("spec").Get("containers").Decode(&a))
		a.([]any)[0].(map[string]any)["name"] = "changed"
		if s, _ := v.Get("metadata").Get("labels").Get("app").Str(); s != "web" {
			t.Errorf("%s: the label is now %q", way, s)
		}
		if n := v.Get("spec").Get("nums").Elements()[0].Interface(); n != int64(3) {
			t.Errorf("%s: the number is now %v", way, n)
		}
		if s, _ := v.Get("spec").Get("containers").Elements()[0].Get("name").Str(); s != "app" {
			t.Errorf("%s: the container is now %q", way, s)
		}
	}
}

func TestValueDecodeAbsentAndNull(t *testing.T) {
	tape, plain := valueBothWays(t, celDoc, "spec")
	for way, v := range map[string]Value{"tape": tape, "plain": plain, "zero": {}} {
		pod := corev1.Pod{Spec: corev1.PodSpec{Hostname: "kept"}}
		err := v.Get("nope").Decode(&pod)
		if err == nil || !strings.Contains(err.Error(), "absent") || pod.Spec.Hostname != "kept" {
			t.Errorf("%s: decoding an absent value: %v, %+v", way, err, pod.Spec)
		}
		if way == "zero" {
			continue
		}
		// null is JSON's: it empties a map, a list or an any, and leaves a
		// struct as it was.
		m, l, a := map[string]any{"k": "v"}, []any{1}, any("x")
		none := v.Get("none")
		must(t, none.Decode(&m))
		must(t, none.Decode(&l))
		must(t, none.Decode(&a))
		must(t, none.Decode(&pod))
		if m != nil || l != nil || a != nil || pod.Spec.Hostname != "kept" {
			t.Errorf("%s: null decodes as %v, %v, %v, %+v", way, m, l, a, pod.Spec)
		}
	}
}

func TestValueDecodeErrors(t *testing.T) {
	// The quantity is apart: the decoder stops at the first error a type's
	// own UnmarshalJSON returns, where it goes on after a type mismatch.
	const doc = `{"kind": "Pod", "spec": {"containers": [{"name": "app", "ports": [{"containerPort": "80"}]}],
		"hostname": 7, "volumes": {}}, "list": [1], "str": "x", "limits": {"cpu": "lots"},
		"ports": [{"containerPort": 80.5}, {"containerPort": 99999999999}]}`
	for _, c := range []struct {
		path []any
		dst  any
		want string
	}{
		{nil, &corev1.Pod{}, "cannot decode into *v1.Pod: spec.containers[0].ports[0].containerPort: expected a number, got a string"},
		{[]any{"spec", "hostname"}, new(string), "cannot decode into *string: expected a string, got a number"},
		{[]any{"spec", "containers", 0, "ports"}, &[]corev1.ContainerPort{}, "cannot decode into *[]v1.ContainerPort: [0].containerPort: expected a number, got a string"},
		{[]any{"spec", "volumes"}, &[]corev1.Volume{}, "cannot decode into *[]v1.Volume: expected a list, got an object"},
		{[]any{"str"}, &corev1.Pod{}, "cannot decode into *v1.Pod: expected an object, got a string"},
		{[]any{"list"}, new(map[string]any), "cannot decode into *map[string]interface {}: expected an object, got a list"},
		{[]any{"spec"}, new([]any), "cannot decode into *[]interface {}: expected a list, got an object"},
		{[]any{"str"}, new(map[string]any), "cannot decode into *map[string]interface {}: expected an object, got a string"},
		{[]any{"limits", "cpu"}, &resource.Quantity{}, "cannot decode into *resource.Quantity: quantities must match"},
		{[]any{"ports", 0}, &corev1.ContainerPort{}, "cannot decode into *v1.ContainerPort: containerPort: expected an integer, got 80.5"},
		{[]any{"ports", 1}, &corev1.ContainerPort{}, "cannot decode into *v1.ContainerPort: containerPort: expected an integer, got 99999999999"},
		{nil, corev1.Pod{}, "cannot decode into v1.Pod: Unmarshal(non-pointer v1.Pod)"},
	} {
		tape, plain := valueBothWays(t, doc, c.path...)
		for way, v := range map[string]Value{"tape": tape, "plain": plain} {
			if err := v.Decode(c.dst); err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("%v into %T, %s: error %v, want %q", c.path, c.dst, way, err, c.want)
			}
		}
	}
}

// TestAppendJSON writes out every subtree of documents with escapes,
// numbers of every form and empty containers, and parses the text back.
func TestAppendJSON(t *testing.T) {
	docs := []string{celDoc, string(readPod(t)), `"\u0000\u001f\"\\\/\b\f\n\r\t é😀"`, "\"bad\xffutf8\"",
		`{"esc\"aped\\": ["\u00e9", -0, 1e3, 1.5E-7, 12345678901234567890, true, false, null, {}, []]}`}
	for _, doc := range docs {
		d, err := parseJSON([]byte(doc))
		must(t, err)
		for i := int32(0); i < int32(len(d.nodes)); i++ {
			text := d.appendJSON(nil, i)
			back, err := parseJSON(text)
			if err != nil {
				t.Fatalf("node %d of %.40q: %q does not parse: %v", i, doc, text, err)
			}
			if !reflect.DeepEqual(back.native(0), d.native(i)) {
				t.Fatalf("node %d of %.40q: %q reads %#v, want %#v", i, doc, text, back.native(0), d.native(i))
			}
		}
	}
}

// TestAppendPlainJSON checks that plain values written out read back as
// themselves, floats staying floats, and that other values are written as
// json.Marshal writes them.
func TestAppendPlainJSON(t *testing.T) {
	d, err := parseJSON([]byte(celDoc))
	must(t, err)
	for _, v := range []any{
		d.native(0), "\u0000\"\\<&> é", int64(-1) << 63, true, false, nil,
		1e21, 1e20, 1e-6, 1e-7, 0.1, -0.0, 2.0, 123456789.0, 2.5e-300, []any{}, map[string]any{},
	} {
		text, err := appendPlainJSON(nil, v)
		must(t, err)
		back, err := parseJSON(text)
		if err != nil || !reflect.DeepEqual(back.native(0), v) {
			t.Errorf("%#v: wrote %s, which reads back as %#v (%v)", v, text, back.native(0), err)
		}
	}
	typed := []any{[]string{"a"}, struct{ A int }{1}}
	text, err := appendPlainJSON(nil, typed)
	must(t, err)
	if want, _ := json.Marshal(typed); !bytes.Equal(text, want) {
		t.Errorf("typed values written as %s, want %s", text, want)
	}
}

// BenchmarkValueDecode measures the ways Decode fills a typed pod and a
// map, against the alternatives it does not take: writing out the whole
// tape rather than reusing its text, json.Marshal for a plain Value, and
// the unstructured converter, which is faster but wraps numbers too large
// for their field where JSON decoding fails, and names no field in errors.
func BenchmarkValueDecode(b *testing.B) {
	pod := readPod(b)
	d, err := parseJSON(pod)
	if err != nil {
		b.Fatal(err)
	}
	tape, plain := Value{doc: d, exists: true}, PlainValue(d.native(0))
	bench := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	bench("pod/tape", func() error { var p corev1.Pod; return tape.Decode(&p) })
	bench("pod/tape-written-out", func() error {
		var p corev1.Pod
		return kjson.UnmarshalCaseSensitivePreserveInts(d.appendJSON(nil, 0), &p)
	})
	bench("pod/plain", func() error { var p corev1.Pod; return plain.Decode(&p) })
	bench("pod/plain-json.Marshal", func() error {
		var p corev1.Pod
		text, err := json.Marshal(plain.Interface())
		if err != nil {
			return err
		}
		return kjson.UnmarshalCaseSensitivePreserveInts(text, &p)
	})
	bench("pod/plain-unstructured-converter", func() error {
		var p corev1.Pod
		return runtime.DefaultUnstructuredConverter.FromUnstructured(plain.Interface().(map[string]any), &p)
	})
	container := tape.Get("spec").Get("containers").Elements()[0]
	bench("container/tape", func() error { var c corev1.Container; return container.Decode(&c) })
	bench("map/tape", func() error { var m map[string]any; return tape.Decode(&m) })
	bench("map/tape-via-text", func() error { var m map[string]any; return kjson.UnmarshalCaseSensitivePreserveInts(pod, &m) })
	bench("map/plain", func() error { var m map[string]any; return plain.Decode(&m) })
}
