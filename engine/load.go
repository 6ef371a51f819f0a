package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
	kjson "sigs.k8s.io/json"
)

// File is one policy file: its display name and content.
type File struct {
	Name string
	Data []byte
}

// ReadFiles reads policy files from path: a file, or every *.yaml, *.yml and
// *.json in a directory, sorted by name. Entries whose names start with "."
// are skipped, so a mounted ConfigMap's "..data" and timestamped directories
// are read once, through the key symlinks.
func ReadFiles(path string) ([]File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return []File{{Name: path, Data: data}}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []File
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		switch strings.ToLower(filepath.Ext(name)) {
		case ".yaml", ".yml", ".json":
		default:
			continue
		}
		full := filepath.Join(path, name)
		st, err := os.Stat(full) // follows the ConfigMap key symlinks
		if err != nil {
			return nil, err
		}
		if st.IsDir() {
			continue
		}
		data, err := os.ReadFile(full)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Name: full, Data: data})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, nil
}

// Hash returns a stable content hash of a policy set.
func Hash(files []File) string {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(f.Name), len(f.Data))
		h.Write(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Error is a load or compile error located in a policy file.
type Error struct {
	File   string
	Line   int
	Column int
	Policy string
	Msg    string
}

// Error formats as `file:line: policy "name": message`.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Policy != "" {
		b.WriteString("policy " + strconv.Quote(e.Policy) + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every error found while loading a policy set.
type ErrorList []*Error

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// document is one parsed policy with the positions of its fields.
type document struct {
	file   string
	policy Policy
	root   *yaml.Node
	pos    positions
}

// positions maps field paths ("spec.match.conditions[0].expression") to
// their YAML nodes.
type positions struct {
	keys   map[string]*yaml.Node
	values map[string]*yaml.Node
}

func indexPositions(n *yaml.Node) positions {
	p := positions{keys: map[string]*yaml.Node{}, values: map[string]*yaml.Node{}}
	var walk func(path string, n *yaml.Node)
	walk = func(path string, n *yaml.Node) {
		p.values[path] = n
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				child := k.Value
				if path != "" {
					child = path + "." + k.Value
				}
				p.keys[child] = k
				walk(child, n.Content[i+1])
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(path+"["+strconv.Itoa(i)+"]", c)
			}
		case yaml.AliasNode:
			if n.Alias != nil {
				walk(path, n.Alias)
			}
		}
	}
	walk("", n)
	return p
}

// line returns the line of a field, or of its closest ancestor present.
func (p positions) line(path string) int {
	for path != "" {
		if n, ok := p.keys[path]; ok {
			return n.Line
		}
		if n, ok := p.values[path]; ok {
			return n.Line
		}
		path = parentPath(path)
	}
	if n, ok := p.values[""]; ok {
		return n.Line
	}
	return 0
}

// exprLine returns the file line of a line within a CEL expression.
func (p positions) exprLine(path string, exprLine int) int {
	n, ok := p.values[path]
	if !ok {
		return p.line(path)
	}
	line := n.Line
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		line++ // block scalars start on the line after the indicator
	}
	if exprLine > 1 {
		line += exprLine - 1
	}
	return line
}

func parentPath(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

// fieldFromStrictError extracts the field path from a strict JSON decoding
// error, e.g. `json: unknown field "spec.foo"`.
func fieldFromStrictError(msg string) string {
	if i := strings.Index(msg, `unknown field "`); i >= 0 {
		rest := msg[i+len(`unknown field "`):]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			return rest[:j]
		}
	}
	if i := strings.Index(msg, `duplicate field "`); i >= 0 {
		rest := msg[i+len(`duplicate field "`):]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			return rest[:j]
		}
	}
	if i := strings.Index(msg, "Go struct field "); i >= 0 {
		f := strings.Fields(msg[i+len("Go struct field "):])
		if len(f) > 0 {
			if j := strings.IndexByte(f[0], '.'); j >= 0 {
				return f[0][j+1:]
			}
		}
	}
	return ""
}

// parseFile splits a file into policy documents. Syntax errors stop the
// file; per-document decoding errors are collected and the rest go on.
func parseFile(f File) ([]*document, ErrorList) {
	var docs []*document
	var errs ErrorList
	dec := yaml.NewDecoder(bytes.NewReader(f.Data))
	for {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, &Error{File: f.Name, Line: yamlErrorLine(err), Msg: "YAML: " + yamlErrorMessage(err)})
			break
		}
		if len(root.Content) == 0 || (root.Content[0].Kind == yaml.ScalarNode && root.Content[0].Tag == "!!null") {
			continue // empty document, e.g. a trailing "---"
		}
		body := root.Content[0]
		d := &document{file: f.Name, root: body, pos: indexPositions(body)}
		if err := d.decode(); err != nil {
			errs = append(errs, err)
			continue
		}
		docs = append(docs, d)
	}
	return docs, errs
}

// yamlErrorMessage drops yaml's "yaml: line N:" prefix: the line is
// reported, corrected, by the Error itself.
func yamlErrorMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if strings.HasPrefix(msg, "line ") {
		if i := strings.Index(msg, ": "); i >= 0 {
			return msg[i+2:]
		}
	}
	return msg
}

func yamlErrorLine(err error) int {
	msg := err.Error()
	if i := strings.Index(msg, "line "); i >= 0 {
		rest := msg[i+5:]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if n, err := strconv.Atoi(rest[:j]); err == nil {
			// yaml.v3 reports parser errors with a 0-based line, scanner
			// errors with a 1-based one; parser errors read "did not find
			// expected ...".
			if strings.Contains(msg, "did not find expected") {
				n++
			}
			return n
		}
	}
	return 0
}

func (d *document) errorf(path string, format string, args ...any) *Error {
	return &Error{File: d.file, Line: d.pos.line(path), Policy: d.policy.Metadata.Name, Msg: fmt.Sprintf(format, args...)}
}

func (d *document) decode() *Error {
	if d.root.Kind != yaml.MappingNode {
		return d.errorf("", "a policy document must be a mapping, not %s", nodeKind(d.root))
	}
	var generic any
	if err := d.root.Decode(&generic); err != nil {
		return d.errorf("", "YAML: %v", err)
	}
	generic, err := jsonCompatible(generic)
	if err != nil {
		return d.errorf("", "%v", err)
	}
	raw, err := json.Marshal(generic)
	if err != nil {
		return d.errorf("", "%v", err)
	}
	// Read the name first so that every later error can name the policy.
	if m, ok := generic.(map[string]any); ok {
		if md, ok := m["metadata"].(map[string]any); ok {
			if name, ok := md["name"].(string); ok {
				d.policy.Metadata.Name = name
			}
		}
	}
	strict, err := kjson.UnmarshalStrict(raw, &d.policy)
	if err != nil {
		field, msg := decodeErrorMessage(err)
		return d.errorf(field, "%s", msg)
	}
	if len(strict) > 0 {
		return d.errorf(fieldFromStrictError(strict[0].Error()), "%s", strings.TrimPrefix(strict[0].Error(), "json: "))
	}
	return nil
}

var typeMismatch = regexp.MustCompile(`cannot unmarshal (\w+) into Go (?:struct field \S*?\.(\S+)|value) of type (\S+)`)

// decodeErrorMessage turns a JSON decoding error into the field it is about
// and a message in the policy's terms, not Go's: `match.resources: expected
// a list, got string` rather than `cannot unmarshal string into Go struct
// field Match.spec.match.resources of type []string`.
func decodeErrorMessage(err error) (field, msg string) {
	m := typeMismatch.FindStringSubmatch(err.Error())
	if m == nil {
		return fieldFromStrictError(err.Error()), strings.TrimPrefix(err.Error(), "json: ")
	}
	got, field, want := m[1], m[2], m[3]
	if got == "number" {
		got = "a number"
	} else if got != "null" {
		got = "a" + map[bool]string{true: "n", false: ""}[strings.ContainsAny(got[:1], "aeiou")] + " " + got
	}
	msg = fmt.Sprintf("expected %s, got %s", jsonTypeName(want), got)
	if field != "" {
		msg = field + ": " + msg
	}
	return field, msg
}

// jsonTypeName names a Go type as the JSON it decodes from.
func jsonTypeName(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"), strings.HasPrefix(goType, "*[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["), strings.Contains(goType, "."):
		if strings.HasSuffix(goType, "Enforcement") || strings.HasSuffix(goType, "FailurePolicy") || strings.HasSuffix(goType, "RawMessage") {
			return "a string"
		}
		return "an object"
	case strings.Contains(goType, "int"), strings.Contains(goType, "float"):
		return "a number"
	case goType == "bool", goType == "*bool":
		return "a boolean"
	case goType == "string", goType == "*string":
		return "a string"
	}
	return goType
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a scalar"
	}
	return "a mapping"
}

// jsonCompatible turns YAML's map[any]any into map[string]any.
func jsonCompatible(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			v[k] = c
		}
		return v, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("map key %v is not a string", k)
			}
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[ks] = c
		}
		return out, nil
	case []any:
		for i, e := range v {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			v[i] = c
		}
		return v, nil
	}
	return v, nil
}
