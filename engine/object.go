package engine

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"gomodules.xyz/jsonpatch/v2"
)

// workingObject is the request's object (or old object) as the policies see
// it. It starts as the parsed document, which CEL and Value read without
// decoding. Patches that apply are deferred (pending), and reads see them
// laid over the document (overlay.go); the object is decoded into plain Go
// maps only for Decision.Object, or for a patch the overlay does not take
// (a "test", or one that does not apply, to report its error).
type workingObject struct {
	doc     *jsonDoc // the parsed object while it is not decoded
	root    int32    // the object's node in doc
	pending []jsonpatch.JsonPatchOperation
	// ov is pending laid over doc, built on first read after a patch.
	ov      *ovContainer
	decoded map[string]any // the decoded object; nil while doc is set
	// err is a deferred patch that failed to apply after all. canDefer
	// rules that out; it is kept so that it cannot pass silently.
	err error
}

// newWorkingObject parses an object. raw may be empty (no object) or
// "null"; obj is used when raw is empty, as RawExtension allows.
func newWorkingObject(raw []byte, obj any) (*workingObject, error) {
	if len(raw) == 0 && obj != nil {
		var err error
		if raw, err = json.Marshal(obj); err != nil {
			return nil, err
		}
	}
	if len(raw) == 0 {
		return &workingObject{}, nil
	}
	d, err := parseJSON(raw)
	if err != nil {
		return nil, err
	}
	return parsedObject(d, 0)
}

// parsedObject is the object at node root of a parsed document: the
// request's own, or a subtree of the whole review's (ParseReview).
func parsedObject(d *jsonDoc, root int32) (*workingObject, error) {
	if root < 0 {
		return &workingObject{}, nil
	}
	switch d.nodes[root].kind {
	case jsonNull:
		return &workingObject{}, nil
	case jsonObject:
	default:
		return nil, fmt.Errorf("not a JSON object")
	}
	if d.dupKeys {
		// Only the decoded map says which of the repeated keys counts.
		return &workingObject{decoded: d.native(root).(map[string]any)}, nil
	}
	return &workingObject{doc: d, root: root}, nil
}

// asMap returns the object decoded, with deferred patches applied; nil
// when there is no object. Only the engine sees these maps: builtins read
// the object through Value.
func (w *workingObject) asMap() map[string]any {
	if w.doc != nil {
		w.decoded = w.doc.native(w.root).(map[string]any)
		w.doc = nil
		if err := applyPatch(w.decoded, w.pending); err != nil && w.err == nil {
			w.err = fmt.Errorf("a deferred patch did not apply: %w", err)
		}
		w.pending, w.ov = nil, nil
	}
	return w.decoded
}

// overlay returns the pending patch laid over the document; nil when there
// is none, or when it does not apply after all.
func (w *workingObject) overlay() *ovContainer {
	if w.doc == nil || len(w.pending) == 0 {
		return nil
	}
	if w.ov == nil {
		w.ov, _ = buildOverlay(w.doc, w.root, w.pending)
	}
	return w.ov
}

// parsed returns the document while it can be read as it is: parsed and
// not patched.
func (w *workingObject) parsed() *jsonDoc {
	if len(w.pending) > 0 {
		return nil
	}
	return w.doc
}

// Value returns the object for reading; absent when there is none.
func (w *workingObject) Value() Value {
	if d := w.parsed(); d != nil {
		return Value{doc: d, i: w.root, exists: true}
	}
	if c := w.overlay(); c != nil {
		return Value{ov: c, exists: true}
	}
	if m := w.asMap(); m != nil {
		return PlainValue(m)
	}
	return Value{}
}

// celValue returns the object for CEL: null when there is none.
func (w *workingObject) celValue() ref.Val {
	if d := w.parsed(); d != nil {
		return d.celValue(w.root)
	}
	if c := w.overlay(); c != nil {
		return c.celValue()
	}
	if m := w.asMap(); m != nil {
		return types.DefaultTypeAdapter.NativeToValue(m)
	}
	return types.NullValue
}

// patch defers ops when they apply, and else applies them to the decoded
// object, which gives the error.
func (w *workingObject) patch(ops []jsonpatch.JsonPatchOperation) error {
	if w.doc != nil {
		all := append(w.pending[:len(w.pending):len(w.pending)], ops...)
		// canDefer is the cheap check: the overlay is built only if
		// something reads the object.
		if canDefer(w.doc, w.root, all) {
			w.pending, w.ov = all, nil
			return nil
		}
		if c, ok := buildOverlay(w.doc, w.root, all); ok {
			w.pending, w.ov = all, c
			return nil
		}
	}
	return applyPatch(w.asMap(), ops)
}

// canDefer reports whether applyPatch would surely succeed on the document
// with ops, without building the overlay. It accepts only "add" operations of plain values whose parent
// exists in the document, and no operation into a container that an
// earlier one changed: then each parent exists when its turn comes, as it
// did in the document. Anything else is applied at once.
func canDefer(d *jsonDoc, root int32, ops []jsonpatch.JsonPatchOperation) bool {
	changed := make([][]string, 0, len(ops)) // each earlier operation's parent
	for _, op := range ops {
		if op.Operation != "add" || !isPlain(op.Value) {
			return false
		}
		segs, err := splitPointer(op.Path)
		if err != nil || len(segs) == 0 {
			return false
		}
		for _, c := range changed {
			if len(c) <= len(segs) && slices.Equal(c, segs[:len(c)]) {
				return false
			}
		}
		parent, last := segs[:len(segs)-1], segs[len(segs)-1]
		i := root
		for _, s := range parent {
			var ok bool
			switch d.nodes[i].kind {
			case jsonObject:
				i, ok = d.member(i, s)
			case jsonList:
				var k int
				if k, err = strconv.Atoi(s); err == nil {
					i, ok = d.element(i, k)
				}
			}
			if !ok {
				return false
			}
		}
		switch d.nodes[i].kind {
		case jsonObject:
		case jsonList:
			if k, err := strconv.Atoi(last); last != "-" && (err != nil || k < 0 || k > int(d.nodes[i].a)) {
				return false
			}
		default:
			return false
		}
		changed = append(changed, parent)
	}
	return true
}
