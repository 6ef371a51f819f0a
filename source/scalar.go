package source

import (
	"strings"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// PosIn returns the position of a character of text, a string found in the
// string value at path: the value itself, or the part of it that is a CEL
// expression (a ${{ }} template). offset counts characters from the start of
// text; past its end, it is the position just after text's last character
// that is not a line break, where a parser reports an unexpected end.
//
// YAML writes a string in many ways (quoted, escaped, folded, in a block);
// when the value cannot be matched to its source, the position is that of
// the value.
func (d *Document) PosIn(path, text string, offset int) Pos {
	f, ok := d.nodes[path]
	if !ok || f.value.Kind != yaml.ScalarNode {
		return d.Pos(path)
	}
	n := f.value
	start := nodePos(n)
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		// The text starts below the indicator.
		start = Pos{Line: n.Line + 1, Column: max(blockIndent(d.data, n.Line), 0) + 1}
	}
	at := strings.Index(n.Value, text)
	length := utf8.RuneCountInString(strings.TrimRight(text, "\r\n"))
	if at < 0 || length == 0 {
		return start
	}
	first := utf8.RuneCountInString(n.Value[:at])
	positions := scalarPositions(d.data, n, first+length)
	switch {
	case positions == nil:
		return start
	case offset >= length:
		p := positions[first+length-1]
		p.Column++
		return p
	}
	return positions[first+max(offset, 0)]
}

// scalarPositions returns the position of each of the first n characters
// of a scalar's value, found by reading its source as YAML writes it; nil
// when the source does not spell the value out as expected.
func scalarPositions(data []byte, node *yaml.Node, n int) []Pos {
	value := []rune(node.Value)
	lines := strings.Split(string(data), "\n")
	if n > len(value) || node.Line < 1 || node.Line > len(lines) {
		return nil
	}
	r := &scalarReader{lines: lines, line: node.Line - 1}
	switch {
	case node.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		r.block = true
		if r.indent = blockIndent(data, node.Line); r.indent < 0 {
			return nil
		}
		r.line++
		r.col = r.indent
	case node.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0:
		r.quote = '"'
		if node.Style&yaml.SingleQuotedStyle != 0 {
			r.quote = '\''
		}
		r.col = byteOffset(lines[r.line], node.Column) // past the opening quote
	default:
		r.col = byteOffset(lines[r.line], node.Column-1)
	}
	out := make([]Pos, 0, n)
	for len(out) < n {
		want := value[len(out)]
		p, got, ok := r.next(want)
		if !ok || got != want {
			return nil
		}
		out = append(out, p)
	}
	return out
}

// blockIndent returns the indentation of a block scalar whose indicator is
// on line (1-based): that of its first line that is not blank; -1 when the
// indicator gives it explicitly, which is left to the fallback.
func blockIndent(data []byte, line int) int {
	lines := strings.Split(string(data), "\n")
	if line < 1 || line > len(lines) {
		return -1
	}
	header := lines[line-1]
	if i := strings.LastIndexAny(header, "|>"); i < 0 || strings.ContainsAny(strings.Fields(header[i:])[0], "123456789") {
		return -1
	}
	for _, l := range lines[line:] {
		if strings.TrimSpace(l) != "" {
			return len(l) - len(strings.TrimLeft(l, " "))
		}
	}
	return -1
}

// byteOffset returns the byte offset of the character at col (0-based) of
// a line.
func byteOffset(line string, col int) int {
	off := 0
	for i := 0; i < col && off < len(line); i++ {
		_, size := utf8.DecodeRuneInString(line[off:])
		off += size
	}
	return off
}

// scalarReader reads a scalar's characters from its source lines, as YAML
// folds, escapes and indents them.
type scalarReader struct {
	lines     []string
	line, col int  // 0-based; col in bytes
	block     bool // a literal or folded block: lines lose indent columns
	indent    int
	quote     rune // '"' or '\'' for a quoted scalar
}

// next returns the position and the character that the next character of
// the value comes from. want, the character expected, settles where YAML's
// folding is ambiguous: a line break is a space, a newline or nothing.
func (r *scalarReader) next(want rune) (Pos, rune, bool) {
	for r.line < len(r.lines) {
		text := strings.TrimRight(r.lines[r.line], "\r")
		if r.col >= len(text) || !r.block && strings.TrimSpace(text[r.col:]) == "" {
			// The end of a line: a space or newline of the value, or a
			// break that folding removed.
			p := Pos{Line: r.line + 1, Column: utf8.RuneCountInString(text[:min(r.col, len(text))]) + 1}
			r.nextLine()
			if want == ' ' || want == '\n' {
				return p, want, true
			}
			continue
		}
		p := Pos{Line: r.line + 1, Column: utf8.RuneCountInString(text[:r.col]) + 1}
		c, size := utf8.DecodeRuneInString(text[r.col:])
		r.col += size
		switch {
		case r.quote == '\'' && c == '\'' && strings.HasPrefix(text[r.col:], "'"):
			r.col++ // '' is a quote
		case r.quote == '"' && c == '\\':
			return p, r.escape(text), true
		}
		return p, c, true
	}
	return Pos{}, 0, false
}

// nextLine moves to the start of the next line's text.
func (r *scalarReader) nextLine() {
	r.line++
	r.col = 0
	if r.line >= len(r.lines) {
		return
	}
	text := r.lines[r.line]
	if r.block {
		r.col = min(r.indent, len(text))
		return
	}
	r.col = len(text) - len(strings.TrimLeft(text, " \t"))
}

// escape reads the rest of a double-quoted escape, its backslash read.
func (r *scalarReader) escape(text string) rune {
	if r.col >= len(text) {
		return utf8.RuneError // an escaped line break: left to the fallback
	}
	c := text[r.col]
	r.col++
	hex := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
	if hex > 0 {
		if r.col+hex > len(text) {
			return utf8.RuneError
		}
		var v rune
		for _, h := range text[r.col : r.col+hex] {
			switch {
			case h >= '0' && h <= '9':
				v = v*16 + h - '0'
			case h >= 'a' && h <= 'f':
				v = v*16 + h - 'a' + 10
			case h >= 'A' && h <= 'F':
				v = v*16 + h - 'A' + 10
			default:
				return utf8.RuneError
			}
		}
		r.col += hex
		return v
	}
	if v, ok := map[byte]rune{'0': 0, 'a': '\a', 'b': '\b', 't': '\t', '\t': '\t', 'n': '\n', 'v': '\v', 'f': '\f',
		'r': '\r', 'e': 0x1b, ' ': ' ', '"': '"', '/': '/', '\\': '\\', 'N': 0x85, '_': 0xa0, 'L': 0x2028, 'P': 0x2029}[c]; ok {
		return v
	}
	return utf8.RuneError
}
