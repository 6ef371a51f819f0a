package engine

import "fmt"

// str returns the text of a string node.
func (d *jsonDoc) str(i int32) string {
	n := d.nodes[i]
	if n.kind == jsonEscapedString {
		return d.strs[n.a]
	}
	return d.text[n.a:n.b]
}

// next returns the index of the node after value i and its subtree.
func (d *jsonDoc) next(i int32) int32 {
	switch n := d.nodes[i]; n.kind {
	case jsonObject, jsonList:
		return n.b
	}
	return i + 1
}

// member returns the value node of key in object i.
func (d *jsonDoc) member(i int32, key string) (int32, bool) {
	n := d.nodes[i].a
	if n > indexedSize {
		idx := d.keyIndex[i]
		if idx == nil {
			idx = make(map[string]int32, n)
			j := i + 1
			for range n {
				idx[d.str(j)] = j + 1
				j = d.next(j + 1)
			}
			if d.keyIndex == nil {
				d.keyIndex = map[int32]map[string]int32{}
			}
			d.keyIndex[i] = idx
		}
		j, ok := idx[key]
		return j, ok
	}
	j := i + 1
	for range n {
		if d.str(j) == key {
			return j + 1, true
		}
		j = d.next(j + 1)
	}
	return 0, false
}

// element returns the value node of element k of list i.
func (d *jsonDoc) element(i int32, k int) (int32, bool) {
	n := d.nodes[i].a
	if k < 0 || k >= int(n) {
		return 0, false
	}
	if n > indexedSize {
		idx := d.elemIndex[i]
		if idx == nil {
			idx = make([]int32, n)
			j := i + 1
			for e := range idx {
				idx[e] = j
				j = d.next(j)
			}
			if d.elemIndex == nil {
				d.elemIndex = map[int32][]int32{}
			}
			d.elemIndex[i] = idx
		}
		return idx[k], true
	}
	j := i + 1
	for range k {
		j = d.next(j)
	}
	return j, true
}

// native builds the plain Go value of node i: map[string]any, []any,
// string, int64, float64, bool or nil.
func (d *jsonDoc) native(i int32) any {
	switch n := d.nodes[i]; n.kind {
	case jsonObject:
		m := make(map[string]any, n.a)
		j := i + 1
		for range n.a {
			m[d.str(j)] = d.native(j + 1)
			j = d.next(j + 1)
		}
		return m
	case jsonList:
		l := make([]any, n.a)
		j := i + 1
		for k := range l {
			l[k] = d.native(j)
			j = d.next(j)
		}
		return l
	case jsonString, jsonEscapedString:
		return d.str(i)
	case jsonNumber:
		return numberValue(d.text[n.a:n.b])
	case jsonTrue:
		return true
	case jsonFalse:
		return false
	}
	return nil
}

// Value is a read-only view of a JSON value: of the request's object as the
// API server sent it, parsed but not decoded into Go maps (with earlier
// policies' deferred patches laid over it), or of a plain Go value
// (map[string]any, []any, string, int64, float64, bool or nil) once the
// object has been decoded. Reading a few fields through a Value costs
// no allocation; Interface decodes, and Decode gives the caller a copy,
// typed or plain.
//
// The zero Value is absent: Get of a missing key yields it. Its methods
// return their zero results, except IsNull, which is true.
type Value struct {
	doc    *jsonDoc // nil: ov or else plain holds the value
	i      int32
	ov     *ovContainer // a container a deferred patch changed
	plain  any
	exists bool
}

// PlainValue returns a Value over a plain Go value as the engine's working
// object holds them.
func PlainValue(v any) Value { return Value{plain: v, exists: true} }

// Exists reports whether the value is present; a JSON null is present.
func (v Value) Exists() bool { return v.exists }

// IsNull reports whether the value is absent or JSON null.
func (v Value) IsNull() bool {
	if v.ov != nil {
		return false
	}
	if v.doc != nil {
		return v.doc.nodes[v.i].kind == jsonNull
	}
	return v.plain == nil
}

// IsObject reports whether the value is a JSON object.
func (v Value) IsObject() bool {
	if v.ov != nil {
		return !v.ov.list
	}
	if v.doc != nil {
		return v.doc.nodes[v.i].kind == jsonObject
	}
	_, ok := v.plain.(map[string]any)
	return ok
}

// IsList reports whether the value is a JSON list.
func (v Value) IsList() bool {
	if v.ov != nil {
		return v.ov.list
	}
	if v.doc != nil {
		return v.doc.nodes[v.i].kind == jsonList
	}
	_, ok := v.plain.([]any)
	return ok
}

// Str returns the value if it is a string.
func (v Value) Str() (string, bool) {
	if v.doc != nil {
		if k := v.doc.nodes[v.i].kind; k == jsonString || k == jsonEscapedString {
			return v.doc.str(v.i), true
		}
		return "", false
	}
	s, ok := v.plain.(string)
	return s, ok
}

// Get returns the member key of an object; absent if there is none or v is
// not an object.
func (v Value) Get(key string) Value {
	if v.ov != nil {
		if !v.ov.list {
			if n, ok := v.ov.get(key); ok {
				return n.value(v.ov.doc)
			}
		}
		return Value{}
	}
	if v.doc != nil {
		if v.doc.nodes[v.i].kind == jsonObject {
			if j, ok := v.doc.member(v.i, key); ok {
				return Value{doc: v.doc, i: j, exists: true}
			}
		}
		return Value{}
	}
	m, _ := v.plain.(map[string]any)
	e, ok := m[key]
	return Value{plain: e, exists: ok}
}

// Len returns the number of members of an object or elements of a list;
// 0 for anything else.
func (v Value) Len() int {
	if v.ov != nil {
		return v.ov.length()
	}
	if v.doc != nil {
		if k := v.doc.nodes[v.i].kind; k == jsonObject || k == jsonList {
			return int(v.doc.nodes[v.i].a)
		}
		return 0
	}
	switch p := v.plain.(type) {
	case map[string]any:
		return len(p)
	case []any:
		return len(p)
	}
	return 0
}

// Range calls fn for each member of an object: in document order for a
// parsed one (then the members a deferred patch added), in map order for a
// decoded one.
func (v Value) Range(fn func(key string, e Value)) {
	if v.ov != nil {
		if !v.ov.list {
			v.ov.rangeMembers(func(key string, n ovNode) { fn(key, n.value(v.ov.doc)) })
		}
		return
	}
	if v.doc != nil {
		n := v.doc.nodes[v.i]
		if n.kind != jsonObject {
			return
		}
		j := v.i + 1
		for range n.a {
			fn(v.doc.str(j), Value{doc: v.doc, i: j + 1, exists: true})
			j = v.doc.next(j + 1)
		}
		return
	}
	m, _ := v.plain.(map[string]any)
	for k, e := range m {
		fn(k, PlainValue(e))
	}
}

// Elements returns the elements of a list; nil if v is not a list.
func (v Value) Elements() []Value {
	if v.ov != nil {
		if !v.ov.list {
			return nil
		}
		out := make([]Value, len(v.ov.elems))
		for k, n := range v.ov.elems {
			out[k] = n.value(v.ov.doc)
		}
		return out
	}
	if v.doc != nil {
		n := v.doc.nodes[v.i]
		if n.kind != jsonList {
			return nil
		}
		out := make([]Value, n.a)
		j := v.i + 1
		for k := range out {
			out[k] = Value{doc: v.doc, i: j, exists: true}
			j = v.doc.next(j)
		}
		return out
	}
	l, _ := v.plain.([]any)
	if l == nil {
		return nil
	}
	out := make([]Value, len(l))
	for k, e := range l {
		out[k] = PlainValue(e)
	}
	return out
}

// Interface returns the value as plain Go values (nil when absent), for
// reading. For a parsed object that decodes it, a new map each call; for a
// decoded one it is the engine's own: use Decode for a copy to change.
func (v Value) Interface() any {
	if v.ov != nil {
		return v.ov.native(false)
	}
	if v.doc != nil {
		return v.doc.native(v.i)
	}
	return v.plain
}

// Format shows the value as %v would show its Interface.
func (v Value) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), v.Interface())
}
