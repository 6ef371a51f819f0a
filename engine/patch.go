package engine

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "sigs.k8s.io/json"
)

var emptyRaw = runtime.RawExtension{}

// Op returns a JSON-patch operation. Builtins build their patches with it.
func Op(op, path string, value any) jsonpatch.JsonPatchOperation {
	return jsonpatch.JsonPatchOperation{Operation: op, Path: path, Value: value}
}

var (
	pointerEscaper   = strings.NewReplacer("~", "~0", "/", "~1")
	pointerUnescaper = strings.NewReplacer("~1", "/", "~0", "~")
)

// EscapePointer escapes one JSON-pointer segment (RFC 6901): "~" and "/".
func EscapePointer(segment string) string {
	if !strings.ContainsAny(segment, "~/") {
		return segment
	}
	return pointerEscaper.Replace(segment)
}

// ToJSONValue converts a Go value (a typed struct such as corev1.Container,
// or plain values) to plain JSON values: map[string]any, []any, string,
// int64, float64, bool or nil, as the engine's working object holds them.
func ToJSONValue(v any) (any, error) {
	if isPlain(v) {
		return v, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func deepCopyJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = deepCopyJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopyJSON(e)
		}
		return out
	}
	return v
}

func isPlain(v any) bool {
	switch v := v.(type) {
	case nil, string, int64, float64, bool:
		return true
	case map[string]any:
		for _, e := range v {
			if !isPlain(e) {
				return false
			}
		}
		return true
	case []any:
		for _, e := range v {
			if !isPlain(e) {
				return false
			}
		}
		return true
	}
	return false
}

// applyPatch applies add, replace, remove and test operations in place.
// The document's root must be an object. Values are converted to plain
// JSON values so later policies see them as CEL sees the rest.
func applyPatch(doc map[string]any, ops []jsonpatch.JsonPatchOperation) error {
	if doc == nil {
		return fmt.Errorf("there is no object to patch")
	}
	for _, op := range ops {
		if err := applyOp(doc, op); err != nil {
			return fmt.Errorf("%s %s: %w", op.Operation, op.Path, err)
		}
	}
	return nil
}

func applyOp(doc map[string]any, op jsonpatch.JsonPatchOperation) error {
	segs, err := splitPointer(op.Path)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		return fmt.Errorf("patching the whole object is not supported")
	}
	// Copy the value: later operations edit the working object in place and
	// must not reach back into the patch that is sent to the API server.
	value, err := ToJSONValue(op.Value)
	if err != nil {
		return err
	}
	value = deepCopyJSON(value)
	// Walk to the parent container.
	var parent any = doc
	setParent := func(any) {} // replaces the parent in its own parent (for slices)
	for _, s := range segs[:len(segs)-1] {
		switch c := parent.(type) {
		case map[string]any:
			child, ok := c[s]
			if !ok {
				return fmt.Errorf("path not found at %q", s)
			}
			key := s
			setParent = func(v any) { c[key] = v }
			parent = child
		case []any:
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 || i >= len(c) {
				return fmt.Errorf("index %q out of range", s)
			}
			idx := i
			setParent = func(v any) { c[idx] = v }
			parent = c[i]
		default:
			return fmt.Errorf("cannot descend into a scalar at %q", s)
		}
	}
	last := segs[len(segs)-1]
	switch c := parent.(type) {
	case map[string]any:
		_, exists := c[last]
		switch op.Operation {
		case "add":
			c[last] = value
		case "replace":
			if !exists {
				return fmt.Errorf("replace of missing key %q", last)
			}
			c[last] = value
		case "remove":
			if !exists {
				return fmt.Errorf("remove of missing key %q", last)
			}
			delete(c, last)
		case "test":
			if !exists || !jsonEqual(c[last], value) {
				return fmt.Errorf("test failed")
			}
		default:
			return fmt.Errorf("unsupported operation %q", op.Operation)
		}
	case []any:
		if last == "-" {
			if op.Operation != "add" {
				return fmt.Errorf("%q only works with add", "-")
			}
			setParent(append(c, value))
			return nil
		}
		i, err := strconv.Atoi(last)
		if err != nil || i < 0 || i > len(c) || (i == len(c) && op.Operation != "add") {
			return fmt.Errorf("index %q out of range", last)
		}
		switch op.Operation {
		case "add":
			c = append(c, nil)
			copy(c[i+1:], c[i:])
			c[i] = value
			setParent(c)
		case "replace":
			c[i] = value
		case "remove":
			setParent(append(c[:i:i], c[i+1:]...))
		case "test":
			if !jsonEqual(c[i], value) {
				return fmt.Errorf("test failed")
			}
		default:
			return fmt.Errorf("unsupported operation %q", op.Operation)
		}
	default:
		return fmt.Errorf("parent of %q is not an object or a list", last)
	}
	return nil
}

func splitPointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("JSON pointer %q must start with /", p)
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		if strings.IndexByte(s, '~') >= 0 {
			segs[i] = pointerUnescaper.Replace(s)
		}
	}
	return segs, nil
}

func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}
