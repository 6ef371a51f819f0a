package engine

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// celValue returns node i as a CEL value. Objects and lists are views of
// the tape that read members as CEL asks for them. They behave as the
// values types.DefaultTypeAdapter makes of the decoded map[string]any and
// []any, which the tests check expression by expression; the operations
// no hot path uses (conversions) decode and delegate.
func (d *jsonDoc) celValue(i int32) ref.Val {
	switch n := d.nodes[i]; n.kind {
	case jsonObject:
		return d.wrap(i)
	case jsonList:
		return (*celList)(d.wrap(i))
	case jsonString, jsonEscapedString:
		return types.String(d.str(i))
	case jsonNumber:
		return types.DefaultTypeAdapter.NativeToValue(numberValue(d.text[n.a:n.b]))
	case jsonTrue:
		return types.True
	case jsonFalse:
		return types.False
	}
	return types.NullValue
}

// wrap returns the CEL value of object or list node i, reusing a recent one.
func (d *jsonDoc) wrap(i int32) *celObject {
	slot := &d.recent[int(i)%len(d.recent)]
	if w := *slot; w != nil && w.i == i {
		return w
	}
	if len(d.spare) == 0 {
		d.spare = make([]celObject, 16)
	}
	w := &d.spare[0]
	d.spare = d.spare[1:]
	*w = celObject{d: d, i: i}
	*slot = w
	return w
}

// decoded is the adapter's value of the decoded node, for the operations
// that delegate to it.
func (d *jsonDoc) decoded(i int32) ref.Val {
	return types.DefaultTypeAdapter.NativeToValue(d.native(i))
}

// celObject is a JSON object as a CEL map with string keys.
type celObject struct {
	d *jsonDoc
	i int32
}

var (
	_ traits.Mapper = (*celObject)(nil)
	_ traits.Lister = (*celList)(nil)
)

func (o *celObject) ConvertToNative(t reflect.Type) (any, error) {
	return o.d.decoded(o.i).ConvertToNative(t)
}

func (o *celObject) ConvertToType(t ref.Type) ref.Val { return convertContainer(o, types.MapType, t) }

// convertContainer is ConvertToType of cel-go's maps and lists: to their own
// type, or to the type of their type.
func convertContainer(v ref.Val, own *types.Type, t ref.Type) ref.Val {
	switch t {
	case own:
		return v
	case types.TypeType:
		return own
	}
	return types.NewErr("type conversion error from '%s' to '%s'", own, t)
}

// Equal is baseMap.Equal of cel-go.
func (o *celObject) Equal(other ref.Val) ref.Val {
	om, ok := other.(traits.Mapper)
	if !ok {
		return types.False
	}
	if o.Size() != om.Size() {
		return types.False
	}
	j := o.i + 1
	for range o.d.nodes[o.i].a {
		ov, found := om.Find(types.String(o.d.str(j)))
		if !found || types.Equal(o.d.celValue(j+1), ov) == types.False {
			return types.False
		}
		j = o.d.next(j + 1)
	}
	return types.True
}

func (o *celObject) Type() ref.Type { return types.MapType }

func (o *celObject) Value() any { return o.d.native(o.i) }

func (o *celObject) String() string { return fmt.Sprint(o.d.decoded(o.i)) }

func (o *celObject) IsZeroValue() bool { return o.d.nodes[o.i].a == 0 }

func (o *celObject) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return nil, false
	}
	j, ok := o.d.member(o.i, string(k))
	if !ok {
		return nil, false
	}
	return o.d.celValue(j), true
}

func (o *celObject) Contains(key ref.Val) ref.Val {
	_, found := o.Find(key)
	return types.Bool(found)
}

func (o *celObject) Get(key ref.Val) ref.Val {
	v, found := o.Find(key)
	if !found {
		return types.ValOrErr(v, "no such key: %v", key)
	}
	return v
}

func (o *celObject) Size() ref.Val { return types.Int(o.d.nodes[o.i].a) }

func (o *celObject) Iterator() traits.Iterator {
	return &tapeIterator{d: o.d, next: o.i + 1, left: o.d.nodes[o.i].a, keys: true}
}

// celList is a JSON list as a CEL list.
type celList celObject

func (l *celList) ConvertToNative(t reflect.Type) (any, error) {
	return l.d.decoded(l.i).ConvertToNative(t)
}

func (l *celList) ConvertToType(t ref.Type) ref.Val { return convertContainer(l, types.ListType, t) }

// Equal is baseList.Equal of cel-go.
func (l *celList) Equal(other ref.Val) ref.Val {
	ol, ok := other.(traits.Lister)
	if !ok {
		return types.False
	}
	if l.Size() != ol.Size() {
		return types.False
	}
	j := l.i + 1
	for k := range l.d.nodes[l.i].a {
		if types.Equal(l.d.celValue(j), ol.Get(types.Int(k))) == types.False {
			return types.False
		}
		j = l.d.next(j)
	}
	return types.True
}

func (l *celList) Type() ref.Type { return types.ListType }

func (l *celList) Value() any { return l.d.native(l.i) }

func (l *celList) String() string { return fmt.Sprint(l.d.decoded(l.i)) }

func (l *celList) IsZeroValue() bool { return l.d.nodes[l.i].a == 0 }

// Add is baseList.Add of cel-go, without decoding the list: the
// library's PSS policies concatenate a pod's container lists, then read
// many fields of a few containers.
func (l *celList) Add(other ref.Val) ref.Val {
	return concatLists(l, other)
}

// concatLists is cel-go's newConcatList, for a view of the tape first.
func concatLists(prev traits.Lister, other ref.Val) ref.Val {
	next, ok := other.(traits.Lister)
	if !ok {
		return types.MaybeNoSuchOverloadErr(other)
	}
	prevSize, nextSize := prev.Size().(types.Int), next.Size().(types.Int)
	if prevSize == 0 {
		return other
	}
	if nextSize == 0 {
		return prev.(ref.Val)
	}
	return &celConcat{prev: prev, next: next, size: prevSize + nextSize}
}

// celConcat is cel-go's concatList, whose first list is a view of the
// tape (or another celConcat): a concatenation that does not decode it.
type celConcat struct {
	prev, next traits.Lister
	size       types.Int
	value      any
}

var (
	_ ref.Val       = (*celConcat)(nil)
	_ traits.Lister = (*celConcat)(nil)
)

func (l *celConcat) Add(other ref.Val) ref.Val { return concatLists(l, other) }

func (l *celConcat) Contains(elem ref.Val) ref.Val {
	prev := l.prev.Contains(elem)
	if prev == types.True {
		return prev
	}
	next := l.next.Contains(elem)
	if next == types.True {
		return next
	}
	if types.IsUnknownOrError(prev) {
		return prev
	}
	return next
}

func (l *celConcat) ConvertToNative(t reflect.Type) (any, error) {
	return types.NewDynamicList(types.DefaultTypeAdapter, l.Value().([]any)).ConvertToNative(t)
}

func (l *celConcat) ConvertToType(t ref.Type) ref.Val {
	switch t {
	case types.ListType:
		return l
	case types.TypeType:
		return types.ListType
	}
	return types.NewErr("type conversion error from '%s' to '%s'", types.ListType, t)
}

func (l *celConcat) Equal(other ref.Val) ref.Val {
	ol, ok := other.(traits.Lister)
	if !ok || l.Size() != ol.Size() {
		return types.False
	}
	var maybeErr ref.Val
	for i := types.Int(0); i < l.size; i++ {
		eq := types.Equal(l.Get(i), ol.Get(i))
		if eq == types.False {
			return types.False
		}
		if maybeErr == nil && types.IsUnknownOrError(eq) {
			maybeErr = eq
		}
	}
	if maybeErr != nil {
		return maybeErr
	}
	return types.True
}

func (l *celConcat) Get(index ref.Val) ref.Val {
	ind, err := types.IndexOrError(index)
	if err != nil {
		return types.ValOrErr(index, "%v", err)
	}
	i := types.Int(ind)
	if prevSize := l.prev.Size().(types.Int); i < prevSize {
		return l.prev.Get(i)
	} else {
		return l.next.Get(i - prevSize)
	}
}

func (l *celConcat) IsZeroValue() bool { return l.size == 0 }

func (l *celConcat) Iterator() traits.Iterator {
	return &concatIterator{it: l.prev.Iterator(), next: l.next}
}

func (l *celConcat) Size() ref.Val { return l.size }

func (l *celConcat) String() string {
	var sb strings.Builder
	sb.WriteString("[")
	for i := types.Int(0); i < l.size; i++ {
		sb.WriteString(fmt.Sprintf("%v", l.Get(i)))
		if i != l.size-1 {
			sb.WriteString(", ")
		}
	}
	sb.WriteString("]")
	return sb.String()
}

func (l *celConcat) Type() ref.Type { return types.ListType }

func (l *celConcat) Value() any {
	if l.value == nil {
		merged := make([]any, 0, l.size)
		for it := l.Iterator(); it.HasNext() == types.True; {
			merged = append(merged, it.Next().Value())
		}
		l.value = merged
	}
	return l.value
}

// concatIterator walks the first list, then the second.
type concatIterator struct {
	it   traits.Iterator
	next traits.Lister // nil once it walks the second
}

func (c *concatIterator) HasNext() ref.Val {
	if c.it.HasNext() == types.True {
		return types.True
	}
	if c.next == nil {
		return types.False
	}
	c.it, c.next = c.next.Iterator(), nil
	return c.it.HasNext()
}

func (c *concatIterator) Next() ref.Val {
	if c.HasNext() != types.True {
		return nil
	}
	return c.it.Next()
}

func (c *concatIterator) ConvertToNative(reflect.Type) (any, error) {
	return nil, fmt.Errorf("type conversion on iterators not supported")
}

func (c *concatIterator) ConvertToType(ref.Type) ref.Val { return types.NewErr("no such overload") }

func (c *concatIterator) Equal(ref.Val) ref.Val { return types.NewErr("no such overload") }

func (c *concatIterator) Type() ref.Type { return types.IteratorType }

func (c *concatIterator) Value() any { return nil }

// Contains is baseList.Contains of cel-go.
func (l *celList) Contains(elem ref.Val) ref.Val {
	j := l.i + 1
	for range l.d.nodes[l.i].a {
		if b, ok := elem.Equal(l.d.celValue(j)).(types.Bool); ok && b == types.True {
			return types.True
		}
		j = l.d.next(j)
	}
	return types.False
}

// Get is baseList.Get of cel-go.
func (l *celList) Get(index ref.Val) ref.Val {
	k, err := types.IndexOrError(index)
	if err != nil {
		return types.ValOrErr(index, "%v", err)
	}
	j, ok := l.d.element(l.i, k)
	if !ok {
		return types.NewErr("index '%d' out of range in list size '%d'", k, l.Size())
	}
	return l.d.celValue(j)
}

func (l *celList) Size() ref.Val { return types.Int(l.d.nodes[l.i].a) }

func (l *celList) Iterator() traits.Iterator {
	return &tapeIterator{d: l.d, next: l.i + 1, left: l.d.nodes[l.i].a}
}

// tapeIterator walks the keys of an object or the elements of a list.
type tapeIterator struct {
	d    *jsonDoc
	next int32 // the next key or element node
	left int32
	keys bool
}

func (it *tapeIterator) HasNext() ref.Val { return types.Bool(it.left > 0) }

func (it *tapeIterator) Next() ref.Val {
	if it.left <= 0 {
		return nil
	}
	it.left--
	j := it.next
	if it.keys {
		it.next = it.d.next(j + 1)
		return types.String(it.d.str(j))
	}
	it.next = it.d.next(j)
	return it.d.celValue(j)
}

func (it *tapeIterator) ConvertToNative(reflect.Type) (any, error) {
	return nil, fmt.Errorf("type conversion on iterators not supported")
}

func (it *tapeIterator) ConvertToType(ref.Type) ref.Val {
	return types.NewErr("no such overload")
}

func (it *tapeIterator) Equal(ref.Val) ref.Val { return types.NewErr("no such overload") }

func (it *tapeIterator) Type() ref.Type { return types.IteratorType }

func (it *tapeIterator) Value() any { return nil }
