package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	kjson "sigs.k8s.io/json"

	"celadon.io/celadon/source"
)

// Decode stores a copy of the value in what dst points to, as Kubernetes
// decodes JSON (sigs.k8s.io/json): into a typed struct such as
// *corev1.Pod, field names matched case-sensitively and unknown fields
// dropped; or into *map[string]any, *[]any or *any for a builtin that works
// on plain values, integers that fit being int64. What dst gets is the
// caller's: changing it leaves the object as it is.
//
// An absent value is an error; null decodes as JSON null does, leaving a
// struct as it was. Other errors name the field at fault.
func (v Value) Decode(dst any) error {
	if !v.exists {
		return fmt.Errorf("cannot decode into %T: the value is absent", dst)
	}
	// Plain targets are built straight from the tape, or copied: no JSON.
	switch p := dst.(type) {
	case *any:
		*p = v.copyPlain()
		return nil
	case *map[string]any:
		if v.IsNull() {
			*p = nil
			return nil
		}
		if !v.IsObject() {
			return fmt.Errorf("cannot decode into %T: expected an object, got %s", dst, v.kindName())
		}
		*p = v.copyPlain().(map[string]any)
		return nil
	case *[]any:
		if v.IsNull() {
			*p = nil
			return nil
		}
		if !v.IsList() {
			return fmt.Errorf("cannot decode into %T: expected a list, got %s", dst, v.kindName())
		}
		*p = v.copyPlain().([]any)
		return nil
	}
	text, err := v.jsonText()
	if err != nil {
		return fmt.Errorf("cannot decode into %T: %w", dst, err)
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(text, dst); err != nil {
		if v.doc == nil && v.ov == nil {
			// Of several faults the decoder names the first, and a map's
			// keys come in no set order: decode again, keys sorted, so that
			// the error is the same every time.
			if sorted, mErr := json.Marshal(v.plain); mErr == nil {
				if again := kjson.UnmarshalCaseSensitivePreserveInts(sorted, dst); again != nil {
					text, err = sorted, again
				}
			}
		}
		return fmt.Errorf("cannot decode into %T: %s", dst, source.DecodeError(text, err))
	}
	return nil
}

// copyPlain returns the value as plain Go values the caller owns.
func (v Value) copyPlain() any {
	if v.ov != nil {
		return v.ov.native(true)
	}
	if v.doc != nil {
		return v.doc.native(v.i)
	}
	return deepCopyJSON(v.plain)
}

// jsonText returns the value as JSON. The whole parsed object is the text
// it was parsed from; a part of it is written out from the tape.
func (v Value) jsonText() ([]byte, error) {
	if v.ov != nil {
		return v.ov.appendJSON(nil)
	}
	if v.doc == nil {
		return appendPlainJSON(nil, v.plain)
	}
	if v.i == 0 {
		return []byte(v.doc.text), nil
	}
	// About 8 bytes per node in Kubernetes objects.
	return v.doc.appendJSON(make([]byte, 0, 8*(v.doc.next(v.i)-v.i)), v.i), nil
}

// kindName names the value's JSON type for messages: "an object", "a
// list", "a string", "a number", "a boolean" or "null".
func (v Value) kindName() string {
	switch {
	case v.IsObject():
		return "an object"
	case v.IsList():
		return "a list"
	case v.IsNull():
		return "null"
	}
	if _, ok := v.Str(); ok {
		return "a string"
	}
	if _, ok := v.Interface().(bool); ok {
		return "a boolean"
	}
	return "a number"
}

// appendJSON appends the JSON text of node i and its subtree.
func (d *jsonDoc) appendJSON(b []byte, i int32) []byte {
	switch n := d.nodes[i]; n.kind {
	case jsonObject:
		b = append(b, '{')
		j := i + 1
		for k := range n.a {
			if k > 0 {
				b = append(b, ',')
			}
			b = append(d.appendJSON(b, j), ':')
			b = d.appendJSON(b, j+1)
			j = d.next(j + 1)
		}
		return append(b, '}')
	case jsonList:
		b = append(b, '[')
		j := i + 1
		for k := range n.a {
			if k > 0 {
				b = append(b, ',')
			}
			b = d.appendJSON(b, j)
			j = d.next(j)
		}
		return append(b, ']')
	case jsonString:
		// A plain string's text needs no escaping: that is what made it plain.
		b = append(b, '"')
		b = append(b, d.text[n.a:n.b]...)
		return append(b, '"')
	case jsonEscapedString:
		return appendJSONString(b, d.strs[n.a])
	case jsonNumber:
		return append(b, d.text[n.a:n.b]...)
	case jsonTrue:
		return append(b, "true"...)
	case jsonFalse:
		return append(b, "false"...)
	}
	return append(b, "null"...)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, the rest (UTF-8 included) as it is.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// appendPlainJSON appends plain Go values as JSON that reads back as the
// same values: unlike json.Marshal, a float64 keeps a fraction or an
// exponent, so that 2.0 stays a float64 as it was when its text was
// parsed. Keys come in the map's order, not sorted: decoding does not
// care, and sorting is most of json.Marshal's cost. Other values go
// through json.Marshal.
func appendPlainJSON(b []byte, v any) ([]byte, error) {
	var err error
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case string:
		return appendJSONString(b, v), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case float64:
		if math.IsInf(v, 0) || math.IsNaN(v) {
			break
		}
		// encoding/json's format: exponents only for very large or small.
		if abs := math.Abs(v); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
			return strconv.AppendFloat(b, v, 'e', -1, 64), nil
		}
		start := len(b)
		if b = strconv.AppendFloat(b, v, 'f', -1, 64); bytes.IndexByte(b[start:], '.') < 0 {
			b = append(b, ".0"...)
		}
		return b, nil
	case map[string]any:
		b = append(b, '{')
		first := true
		for k, e := range v {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(appendJSONString(b, k), ':')
			if b, err = appendPlainJSON(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendPlainJSON(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	text, err := json.Marshal(v)
	return append(b, text...), err
}
