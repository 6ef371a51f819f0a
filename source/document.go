package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"math"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Pos is a position in a file: a 1-based line and column, the column
// counted in characters. The zero Pos is unknown.
type Pos struct {
	Line, Column int
}

// String returns "line:col".
func (p Pos) String() string { return strconv.Itoa(p.Line) + ":" + strconv.Itoa(p.Column) }

// Document is one document of a YAML (or JSON) file, parsed once.
type Document struct {
	// File is the name of the file, as errors print it.
	File string
	// JSON is the document as JSON, its keys in the order written.
	JSON []byte

	data  []byte               // the whole file, for quoting its lines
	nodes map[string]fieldNode // by field path; "" is the document itself
	dups  []string             // paths of keys given twice, the second time
}

// fieldNode is where a field is written: its key in a mapping (nil for a
// list item or the document) and its value.
type fieldNode struct {
	key, value *yaml.Node
}

// Parse reads the documents of a file; empty documents are skipped. A
// syntax error ends the file: the documents before it are returned with
// an *Error.
//
// Each document is converted to JSON as written, duplicate keys included;
// Decode reports them. Scalars that JSON has no value for (.inf, .nan,
// timestamps, binary) become strings, as keys of other types do.
func Parse(file string, data []byte) ([]*Document, error) {
	data = lineBreaks(data)
	var docs []*Document
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, syntaxError(file, data, err)
		}
		if len(root.Content) == 0 || root.Content[0].ShortTag() == "!!null" {
			continue // empty, e.g. after a trailing "---"
		}
		d := &Document{File: file, data: data, nodes: map[string]fieldNode{}}
		c := &converter{doc: d, budget: aliasBudget(data)}
		if err := c.value("", nil, root.Content[0]); err != nil {
			return docs, d.ErrorAt(d.Pos(""), "YAML: "+err.Error())
		}
		d.JSON = c.buf
		docs = append(docs, d)
	}
}

// lineBreaks returns data with each lone carriage return, which YAML takes
// for a line break, made a line feed, so that the lines YAML counts are the
// lines positions and quoted source lines count. Data without one is
// returned as it is.
func lineBreaks(data []byte) []byte {
	i := bytes.IndexByte(data, '\r')
	if i < 0 {
		return data
	}
	out := bytes.Clone(data)
	for ; i < len(out); i++ {
		if out[i] == '\r' && (i+1 == len(out) || out[i+1] != '\n') {
			out[i] = '\n'
		}
	}
	return out
}

// aliasBudget bounds the nodes a document may expand to through aliases,
// so that a small file of nested aliases cannot take all memory.
func aliasBudget(data []byte) int { return 10000 + 100*len(data) }

var errTooManyAliases = errors.New("aliases expand the document beyond its size allows")

// converter writes a YAML node tree as JSON and indexes its fields.
type converter struct {
	doc    *Document
	buf    []byte
	budget int
}

func (c *converter) value(path string, key, n *yaml.Node) error {
	if c.budget--; c.budget < 0 {
		return errTooManyAliases
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	c.doc.nodes[path] = fieldNode{key: key, value: n}
	switch n.Kind {
	case yaml.MappingNode:
		entries, err := c.entries(n, nil)
		if err != nil {
			return err
		}
		c.buf = append(c.buf, '{')
		seen := make(map[string]bool, len(entries))
		for i, e := range entries {
			if i > 0 {
				c.buf = append(c.buf, ',')
			}
			if seen[e.name] {
				c.doc.dups = append(c.doc.dups, joinPath(path, e.name))
			}
			seen[e.name] = true
			c.buf = appendString(c.buf, e.name)
			c.buf = append(c.buf, ':')
			if err := c.value(joinPath(path, e.name), e.key, e.value); err != nil {
				return err
			}
		}
		c.buf = append(c.buf, '}')
	case yaml.SequenceNode:
		c.buf = append(c.buf, '[')
		for i, item := range n.Content {
			if i > 0 {
				c.buf = append(c.buf, ',')
			}
			if err := c.value(path+"["+strconv.Itoa(i)+"]", nil, item); err != nil {
				return err
			}
		}
		c.buf = append(c.buf, ']')
	default:
		c.buf = appendScalar(c.buf, n)
	}
	return nil
}

// entry is one key and value of a mapping.
type entry struct {
	name       string
	key, value *yaml.Node
}

// entries returns a mapping's own entries in order, duplicates kept, then
// those that its merge keys ("<<: *base") bring and it does not set itself.
// taken holds the names set by a mapping that merges this one.
func (c *converter) entries(n *yaml.Node, taken map[string]bool) ([]entry, error) {
	var out []entry
	var merged []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if c.budget--; c.budget < 0 {
			return nil, errTooManyAliases // merges of merges, too
		}
		k, v := n.Content[i], n.Content[i+1]
		if isMergeKey(k) {
			merged = append(merged, mergedMappings(v)...)
			continue
		}
		out = append(out, entry{name: keyName(k), key: k, value: v})
	}
	if len(merged) == 0 {
		return out, nil
	}
	skip := maps.Clone(taken)
	if skip == nil {
		skip = map[string]bool{}
	}
	for _, e := range out {
		skip[e.name] = true
	}
	for _, m := range merged {
		more, err := c.entries(m, skip)
		if err != nil {
			return nil, err
		}
		for _, e := range more {
			if !skip[e.name] {
				skip[e.name] = true
				out = append(out, e)
			}
		}
	}
	return out, nil
}

func isMergeKey(k *yaml.Node) bool { return k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" }

// mergedMappings returns the mappings a merge key's value names: one
// mapping, or a list of them, through aliases.
func mergedMappings(v *yaml.Node) []*yaml.Node {
	v = resolveAlias(v)
	switch v.Kind {
	case yaml.MappingNode:
		return []*yaml.Node{v}
	case yaml.SequenceNode:
		var out []*yaml.Node
		for _, item := range v.Content {
			if item = resolveAlias(item); item.Kind == yaml.MappingNode {
				out = append(out, item)
			}
		}
		return out
	}
	return nil
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// keyName is a key as JSON has it: a string, whatever YAML made of it.
func keyName(k *yaml.Node) string {
	if k = resolveAlias(k); k.Kind == yaml.ScalarNode {
		return k.Value
	}
	return "<" + nodeKind(k) + " key>"
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "sequence"
	}
	return "scalar"
}

// appendScalar writes a scalar as the JSON value YAML means by it.
func appendScalar(buf []byte, n *yaml.Node) []byte {
	switch n.ShortTag() {
	case "!!null":
		return append(buf, "null"...)
	case "!!bool":
		var b bool
		if n.Decode(&b) == nil {
			return strconv.AppendBool(buf, b)
		}
	case "!!int", "!!float":
		var v any
		if n.Decode(&v) == nil {
			if f, ok := v.(float64); !ok || !math.IsInf(f, 0) && !math.IsNaN(f) {
				if j, err := json.Marshal(v); err == nil {
					return append(buf, j...)
				}
			}
		}
	}
	return appendString(buf, n.Value)
}

func appendString(buf []byte, s string) []byte {
	j, _ := json.Marshal(s) // a string always marshals
	return append(buf, j...)
}

// joinPath appends a key to a field path.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// parentPath drops the last key or index of a field path.
func parentPath(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

// Pos returns the position of the field at path: its key in a mapping, or
// the value of a list item. A path the document does not have gives the
// position of its closest ancestor that it has.
func (d *Document) Pos(path string) Pos {
	for {
		if f, ok := d.nodes[path]; ok {
			if f.key != nil {
				return nodePos(f.key)
			}
			return nodePos(f.value)
		}
		if path == "" {
			return Pos{}
		}
		path = parentPath(path)
	}
}

func nodePos(n *yaml.Node) Pos { return Pos{Line: n.Line, Column: n.Column} }

// ErrorAt returns an error at pos in the document's file; the caller may set
// its Policy.
func (d *Document) ErrorAt(pos Pos, msg string) *Error {
	return &Error{File: d.File, Line: pos.Line, Column: pos.Column, Msg: msg, text: lineText(d.data, pos.Line)}
}

// syntaxError locates a YAML syntax error. yaml.v3 reports its line in the
// message, and no column.
func syntaxError(file string, data []byte, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, after
				// Parser errors ("did not find expected ...") count lines
				// from 0, scanner errors from 1.
				if strings.HasPrefix(msg, "did not find expected") {
					line++
				}
			}
		}
	}
	return &Error{File: file, Line: line, Msg: "YAML: " + msg, text: lineText(data, line)}
}
