package source

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"

	kjson "sigs.k8s.io/json"
)

// Messages of the FieldErrors that strict decoding reports.
const (
	UnknownField   = "unknown field"
	DuplicateField = "duplicate field"
)

// FieldError is a problem with one field of a value, not yet located in a
// file: the caller knows where the value is.
type FieldError struct {
	// Path is the field, from the value decoded: "spec.match.resources",
	// "containers[1].ports[0].containerPort"; empty for the value itself.
	Path string
	Msg  string
}

// Error returns "path: message", or the message alone for the value itself.
func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// FieldErrors is every problem found in one value.
type FieldErrors []*FieldError

func (l FieldErrors) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap lets errors.As find each FieldError.
func (l FieldErrors) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Within puts prefix, a field path, before the path of each error, in
// place, and returns l: what a part of a value reports becomes the whole
// value's errors.
func (l FieldErrors) Within(prefix string) FieldErrors {
	for _, e := range l {
		switch {
		case e.Path == "":
			e.Path = prefix
		case prefix == "", strings.HasPrefix(e.Path, "["):
			e.Path = prefix + e.Path
		default:
			e.Path = prefix + "." + e.Path
		}
	}
	return l
}

// Decode strictly decodes the document into v; see Decode. A key given
// twice is an error wherever it is, even in a part that v keeps as raw
// JSON.
func (d *Document) Decode(v any) FieldErrors {
	errs := Decode(d.JSON, v)
	for _, path := range d.dups {
		if !slices.ContainsFunc(errs, func(e *FieldError) bool { return e.Path == path && e.Msg == DuplicateField }) {
			errs = append(errs, &FieldError{Path: path, Msg: DuplicateField})
		}
	}
	return errs
}

// Decode strictly decodes JSON into v, as sigs.k8s.io/json does for
// Kubernetes objects (case-sensitive, integers kept). It returns nil, or
// every unknown and duplicate field and the first other error, each naming
// its field with list indexes:
//
//	spec.match.namespaces: unknown field
//	spec.match.resources: expected a list, got a string
func Decode(data []byte, v any) FieldErrors {
	strict, err := kjson.UnmarshalStrict(data, v)
	var errs FieldErrors
	if err != nil {
		errs = append(errs, decodeError(data, err))
	}
	for _, e := range strict {
		fe := &FieldError{Msg: UnknownField}
		if strings.HasPrefix(e.Error(), DuplicateField) {
			fe.Msg = DuplicateField
		}
		if p, ok := e.(interface{ FieldPath() string }); ok {
			fe.Path = p.FieldPath()
		}
		errs = append(errs, fe)
	}
	return errs
}

// DecodeError words an error of decoding data (sigs.k8s.io/json or
// encoding/json, strict or not) in JSON's terms, naming the field; see
// decodeError.
func DecodeError(data []byte, err error) *FieldError { return decodeError(data, err) }

// decodeError words a decoding error in JSON's terms rather than Go's:
// `expected a list, got a string`, not `cannot unmarshal string into Go
// struct field Match.spec.match.resources of type []string`.
func decodeError(data []byte, err error) *FieldError {
	mismatch, ok := asTypeMismatch(err)
	if !ok {
		return &FieldError{Msg: strings.TrimPrefix(err.Error(), "json: ")}
	}
	want, got := jsonKind(mismatch.goType), valueKind(mismatch.value)
	if lit, isNumber := strings.CutPrefix(mismatch.value, "number "); isNumber && want == "a number" {
		want, got = "an integer", lit // 1.5, or too large, for an int field
	}
	return &FieldError{Path: pathAt(data, mismatch.offset), Msg: "expected " + want + ", got " + got}
}

// typeMismatch is what a json.UnmarshalTypeError says.
type typeMismatch struct {
	value  string // "string", "number 1.5", "array"...
	goType reflect.Type
	offset int64 // just past the value, or past its first byte
}

// asTypeMismatch reads an UnmarshalTypeError by its fields: sigs.k8s.io/json
// returns its own internal copy of encoding/json's type, which cannot be
// named here.
func asTypeMismatch(err error) (typeMismatch, bool) {
	rv := reflect.ValueOf(err)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct || rv.Elem().Type().Name() != "UnmarshalTypeError" {
		return typeMismatch{}, false
	}
	s := rv.Elem()
	value, typ, offset := s.FieldByName("Value"), s.FieldByName("Type"), s.FieldByName("Offset")
	if value.Kind() != reflect.String || offset.Kind() != reflect.Int64 || !typ.IsValid() || !typ.CanInterface() {
		return typeMismatch{}, false
	}
	t, _ := typ.Interface().(reflect.Type)
	if t == nil {
		return typeMismatch{}, false
	}
	return typeMismatch{value: value.String(), goType: t, offset: offset.Int()}, true
}

// jsonKind names the JSON a Go type decodes from.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a string" // []byte is base64
		}
		return "a list"
	case reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

// valueKind names a JSON value as an UnmarshalTypeError describes it.
func valueKind(v string) string {
	v, _, _ = strings.Cut(v, " ")
	switch v {
	case "string":
		return "a string"
	case "number":
		return "a number"
	case "bool":
		return "a boolean"
	case "array":
		return "a list"
	case "object":
		return "an object"
	}
	return v
}

// pathAt returns the path of the innermost value of data that starts before
// offset: the value a decoding error at offset is about. Type errors name
// their field without list indexes ("containers.ports"); this finds which
// item it is.
func pathAt(data []byte, offset int64) string {
	type frame struct {
		path    string
		object  bool
		key     string
		index   int
		wantKey bool
	}
	var stack []*frame
	// next returns the path of the value about to be read, and moves its
	// container on to the following one.
	next := func() string {
		if len(stack) == 0 {
			return ""
		}
		top := stack[len(stack)-1]
		if top.object {
			top.wantKey = true
			return joinPath(top.path, top.key)
		}
		top.index++
		return top.path + "[" + strconv.Itoa(top.index-1) + "]"
	}
	found := ""
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		before := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil || before >= offset {
			return found
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			found = next()
			stack = append(stack, &frame{path: found, object: tok == json.Delim('{'), wantKey: true})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		default:
			if top := len(stack) - 1; top >= 0 && stack[top].object && stack[top].wantKey {
				stack[top].key, _ = tok.(string)
				stack[top].wantKey = false
				continue
			}
			found = next()
		}
	}
}
