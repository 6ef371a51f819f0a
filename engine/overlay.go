package engine

import (
	"fmt"
	"reflect"
	"strconv"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"gomodules.xyz/jsonpatch/v2"
)

// An overlay is the parsed object with the deferred patch operations laid
// over it, read as applying them to the decoded object would give, without
// decoding it: the containers an operation changed are overlay containers,
// the rest is read from the tape, and what an operation added from its
// value (a copy). It exists because a policy that reads the object after
// another one's deferred patch (an objectSelector, a condition, a builtin)
// used to decode the whole object into maps.
//
// An overlay is built in one go from all the pending operations and never
// changed after, so that Values and CEL values taken from it stay valid.

type ovKind uint8

const (
	ovTape    ovKind = iota // tape node i, unchanged
	ovPlain                 // plain, the overlay's copy of an operation's value
	ovChanged               // c, an object or list of the tape with changes
)

// ovNode is one value of the patched object.
type ovNode struct {
	kind  ovKind
	i     int32
	plain any
	c     *ovContainer
}

// ovContainer is an object or a list of the tape that operations changed.
// An object keeps the tape's members and lists what changed; a list holds
// all its elements, so that inserts and removals shift them.
type ovContainer struct {
	doc  *jsonDoc
	list bool
	i    int32 // the object's tape node
	// members are an object's members that were replaced, added (not
	// inTape) or removed, in the order of the first change.
	members []ovMember
	size    int // an object's number of members
	elems   []ovNode
}

type ovMember struct {
	key     string
	val     ovNode
	inTape  bool
	removed bool
}

// buildOverlay lays ops over the value at tape node root, which must be an
// object. It fails where applyPatch would fail, and on "test", which the
// engine then applies to the decoded object, with its error.
func buildOverlay(d *jsonDoc, root int32, ops []jsonpatch.JsonPatchOperation) (*ovContainer, bool) {
	n := ovNode{kind: ovTape, i: root}
	if d.nodes[root].kind != jsonObject {
		return nil, false
	}
	for _, op := range ops {
		if !n.apply(d, op) {
			return nil, false
		}
	}
	if n.kind != ovChanged {
		n.open(d)
	}
	return n.c, true
}

// apply applies one operation as applyOp does to the decoded object.
func (n *ovNode) apply(d *jsonDoc, op jsonpatch.JsonPatchOperation) bool {
	switch op.Operation {
	case "add", "replace", "remove":
	default:
		return false
	}
	segs, err := splitPointer(op.Path)
	if err != nil || len(segs) == 0 {
		return false
	}
	value, err := ToJSONValue(op.Value)
	if err != nil {
		return false
	}
	node := n
	for k, s := range segs {
		if node.kind == ovPlain {
			return node.applyPlain(op.Operation, segs[k:], value)
		}
		if !node.open(d) {
			return false
		}
		if k == len(segs)-1 {
			return node.c.change(op.Operation, s, value)
		}
		if node = node.c.child(s); node == nil {
			return false
		}
	}
	return false // not reached: segs is not empty
}

// applyPlain applies an operation inside a value an earlier one added: to
// the overlay's own copy, with applyOp itself.
func (n *ovNode) applyPlain(op string, rest []string, value any) bool {
	path := "/"
	for _, s := range rest {
		path += "/" + EscapePointer(s)
	}
	wrap := map[string]any{"": n.plain}
	if applyOp(wrap, Op(op, path, value)) != nil {
		return false
	}
	n.plain = wrap[""]
	return true
}

// open makes a tape object or list a container that can change; false for
// anything else.
func (n *ovNode) open(d *jsonDoc) bool {
	switch n.kind {
	case ovChanged:
		return true
	case ovPlain:
		return false
	}
	switch t := d.nodes[n.i]; t.kind {
	case jsonObject:
		n.c = &ovContainer{doc: d, i: n.i, size: int(t.a)}
	case jsonList:
		elems := make([]ovNode, t.a, t.a+1)
		j := n.i + 1
		for k := range elems {
			elems[k] = ovNode{kind: ovTape, i: j}
			j = d.next(j)
		}
		n.c = &ovContainer{doc: d, list: true, elems: elems}
	default:
		return false
	}
	n.kind = ovChanged
	return true
}

// find returns the index in members of key; -1 if it has not changed.
func (c *ovContainer) find(key string) int {
	for k := range c.members {
		if c.members[k].key == key {
			return k
		}
	}
	return -1
}

// child returns the member or element s, to change it; nil if there is none.
func (c *ovContainer) child(s string) *ovNode {
	if c.list {
		k, err := strconv.Atoi(s)
		if err != nil || k < 0 || k >= len(c.elems) {
			return nil
		}
		return &c.elems[k]
	}
	if k := c.find(s); k >= 0 {
		if c.members[k].removed {
			return nil
		}
		return &c.members[k].val
	}
	j, ok := c.doc.member(c.i, s)
	if !ok {
		return nil
	}
	c.members = append(c.members, ovMember{key: s, val: ovNode{kind: ovTape, i: j}, inTape: true})
	return &c.members[len(c.members)-1].val
}

// change applies an operation on the member or element last of c.
func (c *ovContainer) change(op, last string, value any) bool {
	v := ovNode{kind: ovPlain, plain: deepCopyJSON(value)}
	if c.list {
		if last == "-" {
			if op != "add" {
				return false
			}
			c.elems = append(c.elems, v)
			return true
		}
		k, err := strconv.Atoi(last)
		if err != nil || k < 0 || k > len(c.elems) || (k == len(c.elems) && op != "add") {
			return false
		}
		switch op {
		case "add":
			c.elems = append(c.elems, ovNode{})
			copy(c.elems[k+1:], c.elems[k:])
			c.elems[k] = v
		case "replace":
			c.elems[k] = v
		case "remove":
			c.elems = append(c.elems[:k], c.elems[k+1:]...)
		}
		return true
	}
	k := c.find(last)
	var exists bool
	if k >= 0 {
		exists = !c.members[k].removed
	} else {
		_, exists = c.doc.member(c.i, last)
	}
	switch {
	case op == "remove" && !exists, op == "replace" && !exists:
		return false
	case op == "remove" && k >= 0 && !c.members[k].inTape:
		c.members = append(c.members[:k], c.members[k+1:]...)
	case op == "remove" && k >= 0:
		c.members[k].val, c.members[k].removed = ovNode{}, true
	case op == "remove":
		c.members = append(c.members, ovMember{key: last, inTape: true, removed: true})
	case k >= 0:
		c.members[k].val, c.members[k].removed = v, false
	default:
		c.members = append(c.members, ovMember{key: last, val: v, inTape: exists})
	}
	switch {
	case op == "remove":
		c.size--
	case op == "add" && !exists:
		c.size++
	}
	return true
}

// value is the node as a Value.
func (n ovNode) value(d *jsonDoc) Value {
	switch n.kind {
	case ovTape:
		return Value{doc: d, i: n.i, exists: true}
	case ovPlain:
		return PlainValue(n.plain)
	}
	return Value{ov: n.c, exists: true}
}

// get returns an object's member.
func (c *ovContainer) get(key string) (ovNode, bool) {
	if k := c.find(key); k >= 0 {
		m := &c.members[k]
		return m.val, !m.removed
	}
	j, ok := c.doc.member(c.i, key)
	return ovNode{kind: ovTape, i: j}, ok
}

// rangeMembers calls fn for each member of an object: the tape's in order,
// then the added ones.
func (c *ovContainer) rangeMembers(fn func(key string, n ovNode)) {
	d := c.doc
	j := c.i + 1
	for range d.nodes[c.i].a {
		key := d.str(j)
		if k := c.find(key); k >= 0 {
			if m := &c.members[k]; !m.removed {
				fn(key, m.val)
			}
		} else {
			fn(key, ovNode{kind: ovTape, i: j + 1})
		}
		j = d.next(j + 1)
	}
	for k := range c.members {
		if m := &c.members[k]; !m.inTape {
			fn(m.key, m.val)
		}
	}
}

func (c *ovContainer) length() int {
	if c.list {
		return len(c.elems)
	}
	return c.size
}

// native builds the plain Go value; with owned false, what operations
// added may be the overlay's own.
func (n ovNode) native(d *jsonDoc, owned bool) any {
	switch n.kind {
	case ovTape:
		return d.native(n.i)
	case ovPlain:
		if owned {
			return deepCopyJSON(n.plain)
		}
		return n.plain
	}
	return n.c.native(owned)
}

func (c *ovContainer) native(owned bool) any {
	if c.list {
		l := make([]any, len(c.elems))
		for k := range c.elems {
			l[k] = c.elems[k].native(c.doc, owned)
		}
		return l
	}
	m := make(map[string]any, c.size)
	c.rangeMembers(func(key string, n ovNode) { m[key] = n.native(c.doc, owned) })
	return m
}

// appendJSON appends the JSON text of the container.
func (c *ovContainer) appendJSON(b []byte) ([]byte, error) {
	var err error
	add := func(n ovNode) {
		if err != nil {
			return
		}
		switch n.kind {
		case ovTape:
			b = c.doc.appendJSON(b, n.i)
		case ovPlain:
			b, err = appendPlainJSON(b, n.plain)
		default:
			b, err = n.c.appendJSON(b)
		}
	}
	if c.list {
		b = append(b, '[')
		for k := range c.elems {
			if k > 0 {
				b = append(b, ',')
			}
			add(c.elems[k])
		}
		return append(b, ']'), err
	}
	b = append(b, '{')
	first := true
	c.rangeMembers(func(key string, n ovNode) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(appendJSONString(b, key), ':')
		add(n)
	})
	return append(b, '}'), err
}

// celValue returns the node as a CEL value.
func (n ovNode) celValue(d *jsonDoc) ref.Val {
	switch n.kind {
	case ovTape:
		return d.celValue(n.i)
	case ovPlain:
		return types.DefaultTypeAdapter.NativeToValue(n.plain)
	}
	return n.c.celValue()
}

func (c *ovContainer) celValue() ref.Val {
	if c.list {
		return &ovCelList{c}
	}
	return &ovCelObject{c}
}

func (c *ovContainer) decoded() ref.Val {
	return types.DefaultTypeAdapter.NativeToValue(c.native(false))
}

// ovCelObject is an overlay object as a CEL map, as celObject is a tape's.
type ovCelObject struct{ c *ovContainer }

// ovCelList is an overlay list as a CEL list, as celList is a tape's.
type ovCelList struct{ c *ovContainer }

var (
	_ traits.Mapper = (*ovCelObject)(nil)
	_ traits.Lister = (*ovCelList)(nil)
)

func (o *ovCelObject) ConvertToNative(t reflect.Type) (any, error) {
	return o.c.decoded().ConvertToNative(t)
}

func (o *ovCelObject) ConvertToType(t ref.Type) ref.Val { return convertContainer(o, types.MapType, t) }

// Equal is baseMap.Equal of cel-go.
func (o *ovCelObject) Equal(other ref.Val) ref.Val {
	om, ok := other.(traits.Mapper)
	if !ok {
		return types.False
	}
	if o.Size() != om.Size() {
		return types.False
	}
	eq := types.True
	o.c.rangeMembers(func(key string, n ovNode) {
		if eq == types.False {
			return
		}
		ov, found := om.Find(types.String(key))
		if !found || types.Equal(n.celValue(o.c.doc), ov) == types.False {
			eq = types.False
		}
	})
	return eq
}

func (o *ovCelObject) Type() ref.Type { return types.MapType }

func (o *ovCelObject) Value() any { return o.c.native(true) }

func (o *ovCelObject) String() string { return fmt.Sprint(o.c.decoded()) }

func (o *ovCelObject) IsZeroValue() bool { return o.c.size == 0 }

func (o *ovCelObject) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return nil, false
	}
	n, ok := o.c.get(string(k))
	if !ok {
		return nil, false
	}
	return n.celValue(o.c.doc), true
}

func (o *ovCelObject) Contains(key ref.Val) ref.Val {
	_, found := o.Find(key)
	return types.Bool(found)
}

func (o *ovCelObject) Get(key ref.Val) ref.Val {
	v, found := o.Find(key)
	if !found {
		return types.ValOrErr(v, "no such key: %v", key)
	}
	return v
}

func (o *ovCelObject) Size() ref.Val { return types.Int(o.c.size) }

func (o *ovCelObject) Iterator() traits.Iterator {
	keys := make([]ref.Val, 0, o.c.size)
	o.c.rangeMembers(func(key string, _ ovNode) { keys = append(keys, types.String(key)) })
	return &ovIterator{n: len(keys), at: func(k int) ref.Val { return keys[k] }}
}

func (l *ovCelList) ConvertToNative(t reflect.Type) (any, error) {
	return l.c.decoded().ConvertToNative(t)
}

func (l *ovCelList) ConvertToType(t ref.Type) ref.Val { return convertContainer(l, types.ListType, t) }

// Equal is baseList.Equal of cel-go.
func (l *ovCelList) Equal(other ref.Val) ref.Val {
	ol, ok := other.(traits.Lister)
	if !ok {
		return types.False
	}
	if l.Size() != ol.Size() {
		return types.False
	}
	for k := range l.c.elems {
		if types.Equal(l.c.elems[k].celValue(l.c.doc), ol.Get(types.Int(k))) == types.False {
			return types.False
		}
	}
	return types.True
}

func (l *ovCelList) Type() ref.Type { return types.ListType }

func (l *ovCelList) Value() any { return l.c.native(true) }

func (l *ovCelList) String() string { return fmt.Sprint(l.c.decoded()) }

func (l *ovCelList) IsZeroValue() bool { return len(l.c.elems) == 0 }

func (l *ovCelList) Add(other ref.Val) ref.Val {
	return l.c.decoded().(traits.Adder).Add(other)
}

// Contains is baseList.Contains of cel-go.
func (l *ovCelList) Contains(elem ref.Val) ref.Val {
	for k := range l.c.elems {
		if b, ok := elem.Equal(l.c.elems[k].celValue(l.c.doc)).(types.Bool); ok && b == types.True {
			return types.True
		}
	}
	return types.False
}

// Get is baseList.Get of cel-go.
func (l *ovCelList) Get(index ref.Val) ref.Val {
	k, err := types.IndexOrError(index)
	if err != nil {
		return types.ValOrErr(index, "%v", err)
	}
	if k < 0 || k >= len(l.c.elems) {
		return types.NewErr("index '%d' out of range in list size '%d'", k, l.Size())
	}
	return l.c.elems[k].celValue(l.c.doc)
}

func (l *ovCelList) Size() ref.Val { return types.Int(len(l.c.elems)) }

func (l *ovCelList) Iterator() traits.Iterator {
	return &ovIterator{n: len(l.c.elems), at: func(k int) ref.Val { return l.c.elems[k].celValue(l.c.doc) }}
}

// ovIterator walks n values.
type ovIterator struct {
	n, next int
	at      func(int) ref.Val
}

func (it *ovIterator) HasNext() ref.Val { return types.Bool(it.next < it.n) }

func (it *ovIterator) Next() ref.Val {
	if it.next >= it.n {
		return nil
	}
	it.next++
	return it.at(it.next - 1)
}

func (it *ovIterator) ConvertToNative(reflect.Type) (any, error) {
	return nil, fmt.Errorf("type conversion on iterators not supported")
}

func (it *ovIterator) ConvertToType(ref.Type) ref.Val { return types.NewErr("no such overload") }

func (it *ovIterator) Equal(ref.Val) ref.Val { return types.NewErr("no such overload") }

func (it *ovIterator) Type() ref.Type { return types.IteratorType }

func (it *ovIterator) Value() any { return nil }
