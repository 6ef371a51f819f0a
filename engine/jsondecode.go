package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// jsonDoc is a parsed JSON document as a tape: one node per value and per
// object key, in document order, with no Go map or boxed value. It exists
// because decoding the object into maps was most of the cost of an
// admission request; most requests read a few fields of it, through Value
// and the CEL values in jsoncel.go, and never need the maps.
type jsonDoc struct {
	// text is one copy of the input: unescaped strings are slices of it.
	text  string
	nodes []jsonNode
	// strs holds the strings that had escapes or non-ASCII text, decoded.
	strs []string
	// spans are the extents of the values parseInto was asked to record.
	spans []jsonSpan
	// dupKeys is set when some object repeats a key. Such documents are
	// only read through native(), which keeps the last value as
	// encoding/json does.
	dupKeys bool
	// keyIndex and elemIndex map the keys of objects and the positions of
	// lists larger than indexedSize to their value nodes. They are built on
	// first lookup, so that reading many members of a large object (a
	// ConfigMap's data in a comprehension) stays linear, as with a map.
	// A jsonDoc is read by one goroutine: the evaluation's.
	keyIndex  map[int32]map[string]int32
	elemIndex map[int32][]int32
	// recent holds CEL values of objects and lists lately read, by node
	// modulo its size: a comprehension reads the same ones again and
	// again (c.securityContext in every check of a container).
	recent [32]*celObject
	// spare are wrappers not yet used, allocated a few at a time.
	spare []celObject
}

// indexedSize is the size above which an object or list gets an index
// rather than a linear scan per lookup.
const indexedSize = 16

// jsonNode is one value (or object key) of a jsonDoc. It holds no pointer,
// so the tape is a single allocation the garbage collector does not scan.
type jsonNode struct {
	kind jsonKind
	// a and b are, for a string or number, its span in text (a string's
	// without quotes); for an escaped string, a is its index in strs; for an
	// object, a is its number of members and b the index of the node after
	// the object; for a list, the same with elements.
	a, b int32
}

type jsonKind uint8

const (
	jsonNull jsonKind = iota
	jsonFalse
	jsonTrue
	jsonNumber
	jsonString
	jsonEscapedString
	jsonObject // followed by a key node and a value per member
	jsonList   // followed by its elements
)

// parseJSON parses and validates a document into a tape.
func parseJSON(data []byte) (*jsonDoc, error) {
	d := new(jsonDoc)
	if err := d.parseInto(data, -1, false); err != nil {
		return nil, err
	}
	return d, nil
}

// parseInto parses data into d, reusing d's slices. It records the byte
// extent of each value nested at most spanDepth deep (see span). With
// own, d keeps data itself, which the caller must never write again.
func (d *jsonDoc) parseInto(data []byte, spanDepth int, own bool) error {
	if len(data) > math.MaxInt32 {
		return fmt.Errorf("JSON document of %d bytes is too large", len(data))
	}
	// One copy of the input backs every unescaped key and string value:
	// slicing it costs no allocation, and the caller may reuse data
	// afterwards.
	text := unsafe.String(unsafe.SliceData(data), len(data))
	if !own {
		text = string(data)
	}
	*d = jsonDoc{text: text, nodes: d.nodes[:0], strs: d.strs[:0], spans: d.spans[:0]}
	// A Kubernetes object has about one node per 7 bytes of compact JSON;
	// past maxPresizedNodes the tape grows with the nodes actually found,
	// so that a large body of a few long strings (a 7 MB annotation) does
	// not cost twice its size in nodes it never fills.
	if want := min(len(data)/6+4, maxPresizedNodes); cap(d.nodes) < want {
		d.nodes = make([]jsonNode, 0, want)
	}
	p := jsonParser{data: data, text: d.text, doc: d, spanDepth: spanDepth, maxNodes: maxTapeNodes(len(data))}
	p.skipSpace()
	err := p.value(0)
	if p.tooDense {
		return fmt.Errorf("%w: more than %d values in %d bytes", ErrTooDense, len(d.nodes)-1, len(data))
	}
	if err != nil {
		return err
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		return p.errorf("unexpected %q after the top-level value", p.data[p.pos])
	}
	return nil
}

// ErrTooDense refuses a document of many more values for its size than a
// Kubernetes object has: its tape would take up to six times its bytes
// (12 bytes a node, a node per 2 bytes of "[0,0,0,…]"), a memory
// amplification outside the body budget.
var ErrTooDense = errors.New("JSON document too dense to parse")

// maxTapeNodes is the most nodes a document of size bytes may have: one
// per 4 bytes, past the first 65,536. A Kubernetes object has about one per
// 7 bytes; a tape then takes at most three times its document.
func maxTapeNodes(size int) int { return 1<<16 + size/4 }

// maxPresizedNodes bounds the nodes a tape is made with before parsing:
// 16,384 nodes (192 KiB) cover objects of about 100 KB.
const maxPresizedNodes = 1 << 14

// jsonSpan is the byte extent in text of the value at node.
type jsonSpan struct{ node, start, end int32 }

// span returns the text of value i as it was sent; "" unless parseInto
// recorded it.
func (d *jsonDoc) span(i int32) string {
	for _, s := range d.spans {
		if s.node == i {
			return d.text[s.start:s.end]
		}
	}
	return ""
}

// maxJSONDepth bounds nesting, as encoding/json does, so a hostile body
// cannot exhaust the stack.
const maxJSONDepth = 10000

type jsonParser struct {
	data []byte
	text string // the same bytes as data
	pos  int
	doc  *jsonDoc
	// spanDepth is the depth down to which values' extents are recorded.
	spanDepth int
	// maxNodes bounds the tape (maxTapeNodes); tooDense is set when the
	// document needs more.
	maxNodes int
	tooDense bool
}

var errJSONEnd = errors.New("unexpected end of JSON input")

func (p *jsonParser) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at offset %d: %s", p.pos, fmt.Sprintf(format, args...))
}

func (p *jsonParser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jsonParser) push(kind jsonKind, a, b int) int {
	if n := len(p.doc.nodes); n == cap(p.doc.nodes) {
		if p.grow(); p.tooDense {
			return n - 1 // the parse is over: nothing reads the tape
		}
	}
	p.doc.nodes = append(p.doc.nodes, jsonNode{kind: kind, a: int32(a), b: int32(b)})
	return len(p.doc.nodes) - 1
}

// grow doubles the tape, up to maxNodes: append's growth of a quarter at a
// time would allocate five times the final tape on the way.
func (p *jsonParser) grow() {
	n := len(p.doc.nodes)
	if n >= p.maxNodes {
		// Stop: with no input left, the parse returns at its next read.
		p.tooDense = true
		p.data = p.data[:p.pos]
		return
	}
	nodes := make([]jsonNode, n, min(2*n+16, p.maxNodes))
	copy(nodes, p.doc.nodes)
	p.doc.nodes = nodes
}

// close records the size and extent of the object or list at node at.
func (p *jsonParser) close(at, n int) {
	p.doc.nodes[at].a, p.doc.nodes[at].b = int32(n), int32(len(p.doc.nodes))
}

func (p *jsonParser) value(depth int) error {
	if depth <= p.spanDepth {
		start, at := p.pos, len(p.doc.nodes)
		err := p.plainValue(depth)
		p.doc.spans = append(p.doc.spans, jsonSpan{int32(at), int32(start), int32(p.pos)})
		return err
	}
	return p.plainValue(depth)
}

func (p *jsonParser) plainValue(depth int) error {
	if p.pos >= len(p.data) {
		return errJSONEnd
	}
	if depth > maxJSONDepth {
		return p.errorf("nested too deeply")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		return p.str()
	case c == 't':
		p.push(jsonTrue, 0, 0)
		return p.literal("true")
	case c == 'f':
		p.push(jsonFalse, 0, 0)
		return p.literal("false")
	case c == 'n':
		p.push(jsonNull, 0, 0)
		return p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		return p.errorf("unexpected %q", c)
	}
}

func (p *jsonParser) literal(word string) error {
	if len(p.data)-p.pos < len(word) || string(p.data[p.pos:p.pos+len(word)]) != word {
		return p.errorf("invalid literal, want %s", word)
	}
	p.pos += len(word)
	return nil
}

func (p *jsonParser) object(depth int) error {
	p.pos++ // '{'
	at := p.push(jsonObject, 0, 0)
	n := 0
	var seen map[string]struct{} // the keys so far, once there are many
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		p.close(at, n)
		return nil
	}
	for {
		p.skipSpace()
		if p.pos >= len(p.data) {
			return errJSONEnd
		}
		if p.data[p.pos] != '"' {
			return p.errorf("expected a string key, got %q", p.data[p.pos])
		}
		if err := p.str(); err != nil {
			return err
		}
		p.noteKey(at, n, len(p.doc.nodes)-1, &seen)
		n++
		p.skipSpace()
		if p.pos >= len(p.data) {
			return errJSONEnd
		}
		if p.data[p.pos] != ':' {
			return p.errorf("expected ':' after a key, got %q", p.data[p.pos])
		}
		p.pos++
		p.skipSpace()
		if err := p.value(depth + 1); err != nil {
			return err
		}
		p.skipSpace()
		if p.pos >= len(p.data) {
			return errJSONEnd
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			p.close(at, n)
			return nil
		default:
			return p.errorf("expected ',' or '}', got %q", p.data[p.pos])
		}
	}
}

// pairwiseKeys is how many keys of an object noteKey compares pairwise
// before it switches to a set.
const pairwiseKeys = 32

// noteKey sets dupKeys when key, the n-th key of the object at node obj,
// repeats an earlier one. seen is the object's set of keys, made when the
// object has pairwiseKeys of them.
func (p *jsonParser) noteKey(obj, n, key int, seen *map[string]struct{}) {
	d := p.doc
	if d.dupKeys || n == 0 {
		return
	}
	k := d.str(int32(key))
	if n < pairwiseKeys {
		kn := d.nodes[key]
		j := int32(obj + 1)
		for range n {
			// Two plain keys of different lengths differ: skip the compare.
			jn := d.nodes[j]
			if (jn.kind != jsonString || kn.kind != jsonString || jn.b-jn.a == kn.b-kn.a) && d.str(j) == k {
				d.dupKeys = true
				return
			}
			j = d.next(j + 1)
		}
		return
	}
	if n == pairwiseKeys {
		*seen = make(map[string]struct{}, 2*pairwiseKeys)
		j := int32(obj + 1)
		for range n {
			(*seen)[d.str(j)] = struct{}{}
			j = d.next(j + 1)
		}
	}
	if _, dup := (*seen)[k]; dup {
		d.dupKeys = true
		return
	}
	(*seen)[k] = struct{}{}
}

func (p *jsonParser) array(depth int) error {
	p.pos++ // '['
	at := p.push(jsonList, 0, 0)
	n := 0
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		p.close(at, n)
		return nil
	}
	for {
		p.skipSpace()
		if err := p.value(depth + 1); err != nil {
			return err
		}
		n++
		p.skipSpace()
		if p.pos >= len(p.data) {
			return errJSONEnd
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			p.close(at, n)
			return nil
		default:
			return p.errorf("expected ',' or ']', got %q", p.data[p.pos])
		}
	}
}

// plainByte marks the bytes a string holds as they are: not '"', '\\', a
// control character or part of a multi-byte sequence.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// hasStringSpecial reports whether any of the eight bytes in x is not a
// plainByte: '"', '\\', a control character or a byte >= 0x80. It lets str
// skip plain text eight bytes at a time.
func hasStringSpecial(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	// (v - ones) & ^v has a byte's high bit set where v's byte is zero;
	// (x - ones*0x20) & ^x where x's byte is below 0x20.
	return ((x-ones*0x20)&^x|(quote-ones)&^quote|(backslash-ones)&^backslash|x)&highs != 0
}

// str parses a string into a node. One without escapes or non-ASCII text,
// which is nearly every string of a Kubernetes object, is a span of the
// input's copy: no allocation.
func (p *jsonParser) str() error {
	start := p.pos + 1 // after '"'
	i := start
	for i+8 <= len(p.data) && !hasStringSpecial(binary.LittleEndian.Uint64(p.data[i:])) {
		i += 8
	}
	for i < len(p.data) && plainByte[p.data[i]] {
		i++
	}
	switch {
	case i >= len(p.data):
		p.pos = i
		return errJSONEnd
	case p.data[i] == '"':
		p.pos = i + 1
		p.push(jsonString, start, i)
		return nil
	case p.data[i] < 0x20:
		p.pos = i
		return p.errorf("control character in string")
	}
	p.pos = start
	s, err := p.slowStr()
	if err != nil {
		return err
	}
	p.doc.strs = append(p.doc.strs, s)
	p.push(jsonEscapedString, len(p.doc.strs)-1, 0)
	return nil
}

// slowStr handles escapes and non-ASCII text; invalid UTF-8 becomes U+FFFD,
// byte by byte, as in encoding/json.
func (p *jsonParser) slowStr() (string, error) {
	buf := make([]byte, 0, 32)
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			return string(buf), nil
		case c < 0x20:
			return "", p.errorf("control character in string")
		case c == '\\':
			if p.pos+1 >= len(p.data) {
				return "", errJSONEnd
			}
			e := p.data[p.pos+1]
			p.pos += 2
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return "", p.errorf("invalid \\u escape")
				}
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if p.pos+1 < len(p.data) && p.data[p.pos] == '\\' && p.data[p.pos+1] == 'u' {
						save := p.pos
						p.pos += 2
						var ok2 bool
						if r2, ok2 = p.hex4(); !ok2 {
							return "", p.errorf("invalid \\u escape")
						}
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							buf = utf8.AppendRune(buf, dec)
							continue
						}
						p.pos = save
					}
					r = utf8.RuneError
				}
				buf = utf8.AppendRune(buf, r)
			default:
				return "", p.errorf("invalid escape '\\%c'", e)
			}
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.data[p.pos:])
			if r == utf8.RuneError && size == 1 {
				buf = utf8.AppendRune(buf, utf8.RuneError)
			} else {
				buf = append(buf, p.data[p.pos:p.pos+size]...)
			}
			p.pos += size
		}
	}
	return "", errJSONEnd
}

func (p *jsonParser) hex4() (rune, bool) {
	if p.pos+4 > len(p.data) {
		return 0, false
	}
	var r rune
	for _, c := range p.data[p.pos : p.pos+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	p.pos += 4
	return r, true
}

// number checks a JSON number and records its span; numberValue converts
// it when it is read.
func (p *jsonParser) number() error {
	start := p.pos
	if p.data[p.pos] == '-' {
		p.pos++
	}
	digits := func() int {
		n := 0
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	intStart := p.pos
	n := digits()
	if n == 0 {
		return p.errorf("invalid number")
	}
	if n > 1 && p.data[intStart] == '0' {
		return p.errorf("invalid number: leading zero")
	}
	integer := true
	if p.pos < len(p.data) && p.data[p.pos] == '.' {
		integer = false
		p.pos++
		if digits() == 0 {
			return p.errorf("invalid number: no digits after '.'")
		}
	}
	if p.pos < len(p.data) && (p.data[p.pos] == 'e' || p.data[p.pos] == 'E') {
		integer = false
		p.pos++
		if p.pos < len(p.data) && (p.data[p.pos] == '+' || p.data[p.pos] == '-') {
			p.pos++
		}
		if digits() == 0 {
			return p.errorf("invalid number: no digits in exponent")
		}
	}
	// A number too large for float64 is an error now, not when it is read.
	if text := p.text[start:p.pos]; !integer || n > 18 {
		if _, isInt := numberValue(text).(int64); !isInt {
			f, err := strconv.ParseFloat(text, 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				return p.errorf("invalid number %q", text)
			}
			if math.IsInf(f, 0) {
				return p.errorf("number %s out of range", text)
			}
		}
	}
	p.push(jsonNumber, start, p.pos)
	return nil
}

// numberValue converts a valid JSON number: an int64 when it is an integer
// that fits, else a float64.
func numberValue(text string) any {
	integer := strings.IndexAny(text, ".eE") < 0
	digits := len(text)
	if text[0] == '-' {
		digits--
	}
	if integer && digits <= 18 {
		// Fits int64 without overflow checks.
		var v int64
		for _, c := range []byte(text[len(text)-digits:]) {
			v = v*10 + int64(c-'0')
		}
		if text[0] == '-' {
			v = -v
		}
		return v
	}
	if integer {
		if v, err := strconv.ParseInt(text, 10, 64); err == nil {
			return v
		}
	}
	f, _ := strconv.ParseFloat(text, 64) // checked when parsed
	return f
}
