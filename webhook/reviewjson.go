package webhook

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"

	jsonpatch "gomodules.xyz/jsonpatch/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The answer is written by appending bytes, without reflection or an
// intermediate marshal of the patch: the bytes are those that
// controller-runtime's admission.Response, completed (Complete) and
// written by json.NewEncoder(w).Encode in an admissionv1.AdmissionReview,
// had for the same answer, as reviewjson_test.go checks, including the
// trailing newline and encoding/json's escaping of strings.

// reviewEncoder holds the scratch space of one answer; it is pooled.
type reviewEncoder struct {
	patch []byte   // the patch's JSON, before base64
	keys  []string // the keys of the maps being written, a stack
}

var encoderPool = sync.Pool{New: func() any { return new(reviewEncoder) }}

func getEncoder() *reviewEncoder { return encoderPool.Get().(*reviewEncoder) }

func putEncoder(e *reviewEncoder) {
	if cap(e.patch) > 1<<20 { // let big buffers go
		e.patch = nil
	}
	if cap(e.keys) > 1<<14 {
		e.keys = nil
	}
	e.patch = e.patch[:0]
	clear(e.keys[:cap(e.keys)])
	e.keys = e.keys[:0]
	encoderPool.Put(e)
}

// AppendReview appends to b the AdmissionReview of apiVersion answering
// uid with resp, newline included. The error is that of a patch value
// encoding/json cannot encode (NaN, a channel...).
func AppendReview(b []byte, apiVersion string, uid types.UID, resp *Response) ([]byte, error) {
	e := getEncoder()
	defer putEncoder(e)
	return e.appendReview(b, apiVersion, uid, resp)
}

// keep has buf hold out, appended to buf's free space: an array that
// grew goes back to the pool with buf.
func keep(buf *bytes.Buffer, out []byte) {
	if cap(out) > buf.Cap() {
		*buf = *bytes.NewBuffer(out[:0])
	}
}

func (e *reviewEncoder) appendReview(b []byte, apiVersion string, uid types.UID, resp *Response) ([]byte, error) {
	b = append(b, `{"kind":"AdmissionReview"`...)
	if apiVersion != "" {
		b = append(b, `,"apiVersion":`...)
		b = appendString(b, apiVersion)
	}
	b = append(b, `,"response":{"uid":`...)
	b = appendString(b, string(uid))
	b = append(b, `,"allowed":`...)
	b = strconv.AppendBool(b, resp.allowed)
	b = append(b, `,"status":`...)
	// Complete gave a response without status one of code 200.
	st := metav1.Status{Message: resp.message, Reason: resp.reason, Code: resp.code}
	b = appendStatus(b, &st, http.StatusOK)
	if len(resp.patch) > 0 {
		var err error
		if e.patch, err = e.appendPatch(e.patch[:0], resp.patch); err != nil {
			// Complete's error, word for word.
			if _, jerr := json.Marshal(resp.patch); jerr != nil {
				err = jerr
			}
			return b, err
		}
		b = append(b, `,"patch":"`...)
		b = base64.StdEncoding.AppendEncode(b, e.patch)
		b = append(b, `","patchType":"JSONPatch"`...)
	}
	if len(resp.audit) > 0 {
		b = append(b, `,"auditAnnotations":`...)
		b = e.appendStringMap(b, resp.audit)
	}
	if len(resp.warnings) > 0 {
		b = append(b, `,"warnings":[`...)
		for i, w := range resp.warnings {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, w)
		}
		b = append(b, ']')
	}
	return append(b, "}}\n"...), nil
}

// appendStatus appends st as encoding/json writes it, with code for a
// zero Code. Its callers set neither Details nor ListMeta, which it does
// not write.
func appendStatus(b []byte, st *metav1.Status, code int32) []byte {
	if st.Code != 0 {
		code = st.Code
	}
	b = append(b, '{')
	if st.Kind != "" {
		b = append(b, `"kind":`...)
		b = appendString(b, st.Kind)
		b = append(b, ',')
	}
	if st.APIVersion != "" {
		b = append(b, `"apiVersion":`...)
		b = appendString(b, st.APIVersion)
		b = append(b, ',')
	}
	// ListMeta is a struct: omitempty does not drop it.
	b = append(b, `"metadata":{}`...)
	if st.Status != "" {
		b = append(b, `,"status":`...)
		b = appendString(b, st.Status)
	}
	if st.Message != "" {
		b = append(b, `,"message":`...)
		b = appendString(b, st.Message)
	}
	if st.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, string(st.Reason))
	}
	if code != 0 {
		b = append(b, `,"code":`...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	return append(b, '}')
}

// appendPatch appends ops as json.Marshal does through the operations'
// MarshalJSON: "value" is omitted when nil, except for add and replace.
func (e *reviewEncoder) appendPatch(b []byte, ops []jsonpatch.JsonPatchOperation) ([]byte, error) {
	b = append(b, '[')
	for i := range ops {
		op := &ops[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"op":`...)
		b = appendString(b, op.Operation)
		b = append(b, `,"path":`...)
		b = appendString(b, op.Path)
		if op.Value != nil || op.Operation == "add" || op.Operation == "replace" {
			b = append(b, `,"value":`...)
			var err error
			if b, err = e.appendValue(b, op.Value, 0); err != nil {
				return b, err
			}
		}
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

// maxDepth bounds the recursion of appendValue: deeper values, and cycles,
// go to encoding/json, which detects cycles.
const maxDepth = 500

// appendValue appends v, a patch value. The plain JSON values the engine
// holds (map[string]any, []any, string, int64, float64, bool, nil) and a
// few other common types are written here; any other goes to json.Marshal.
func (e *reviewEncoder) appendValue(b []byte, v any, depth int) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendString(b, v), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int32:
		return strconv.AppendInt(b, int64(v), 10), nil
	case uint64:
		return strconv.AppendUint(b, v, 10), nil
	case float64:
		return appendFloat(b, v)
	case map[string]any:
		if v == nil {
			return append(b, "null"...), nil
		}
		if depth < maxDepth {
			return e.appendMap(b, v, depth+1)
		}
	case []any:
		if v == nil {
			return append(b, "null"...), nil
		}
		if depth < maxDepth {
			b = append(b, '[')
			for i, x := range v {
				if i > 0 {
					b = append(b, ',')
				}
				var err error
				if b, err = e.appendValue(b, x, depth+1); err != nil {
					return b, err
				}
			}
			return append(b, ']'), nil
		}
	case map[string]string:
		if v == nil {
			return append(b, "null"...), nil
		}
		return e.appendStringMap(b, v), nil
	case []string:
		if v == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, s)
		}
		return append(b, ']'), nil
	}
	j, err := json.Marshal(v)
	return append(b, j...), err
}

// appendMap appends m with its keys sorted, as encoding/json does.
func (e *reviewEncoder) appendMap(b []byte, m map[string]any, depth int) ([]byte, error) {
	start := len(e.keys)
	for k := range m {
		e.keys = append(e.keys, k)
	}
	keys := e.keys[start:]
	slices.Sort(keys)
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		if b, err = e.appendValue(b, m[k], depth); err != nil {
			break
		}
	}
	clear(e.keys[start:])
	e.keys = e.keys[:start]
	return append(b, '}'), err
}

func (e *reviewEncoder) appendStringMap(b []byte, m map[string]string) []byte {
	start := len(e.keys)
	for k := range m {
		e.keys = append(e.keys, k)
	}
	keys := e.keys[start:]
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, m[k])
	}
	clear(e.keys[start:])
	e.keys = e.keys[:start]
	return append(b, '}')
}

// appendFloat writes f as encoding/json's floatEncoder: 'f' format, 'e'
// for very small or large magnitudes with a one-digit negative exponent
// unpadded (1e-7, not 1e-07).
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		_, err := json.Marshal(f)
		return b, err
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// appendString appends s quoted as encoding/json does with HTML escaping
// on: <, > and & as \u003c..., U+2028 and U+2029 escaped, invalid UTF-8 as
// \ufffd, control characters as \n, \t... or \u00XX.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
