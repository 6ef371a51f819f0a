package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func parseOne(t *testing.T, src string) *Document {
	t.Helper()
	docs, err := Parse("f.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 {
		t.Fatalf("got %d documents, want 1", len(docs))
	}
	return docs[0]
}

func TestParseJSON(t *testing.T) {
	for _, c := range []struct{ name, yaml, json string }{
		{"keys in order", "b: 1\na: x\n", `{"b":1,"a":"x"}`},
		{"scalars", "i: 0x1F\nf: 1.5\nn: ~\nt: true\ns: '1'\ninf: .inf\nd: 2001-12-14\nk: 1e3\n",
			`{"i":31,"f":1.5,"n":null,"t":true,"s":"1","inf":".inf","d":"2001-12-14","k":1000}`},
		{"block scalars", "l: |\n  a\n  b\nf: >-\n  a\n  b\n", `{"l":"a\nb\n","f":"a b"}`},
		{"duplicate keys kept for Decode to report", "a: 1\na: 2\n", `{"a":1,"a":2}`},
		{"non-string keys", "1: a\ntrue: b\n", `{"1":"a","true":"b"}`},
		{"aliases", "a: &x [1, 2]\nb: *x\n", `{"a":[1,2],"b":[1,2]}`},
		{"merge keys, own keys first", "base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n", `{"base":{"x":1,"y":2},"m":{"y":3,"x":1}}`},
		{"merge of a list", "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nm: {<<: [*a, *b]}\n", `{"a":{"x":1},"b":{"x":2,"y":2},"m":{"x":1,"y":2}}`},
		{"JSON", `{"a": [1, {"b": null}]}`, `{"a":[1,{"b":null}]}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := string(parseOne(t, c.yaml).JSON); got != c.json {
				t.Errorf("JSON\n got %s\nwant %s", got, c.json)
			}
		})
	}
}

func TestParseDocuments(t *testing.T) {
	docs, err := Parse("f.yaml", []byte("---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || string(docs[1].JSON) != `{"b":2}` || docs[1].Pos("") != (Pos{7, 1}) {
		t.Fatalf("documents: %d, the second %s at %v", len(docs), docs[1].JSON, docs[1].Pos(""))
	}
}

func TestParseSyntaxError(t *testing.T) {
	for _, c := range []struct{ name, yaml, want, display string }{
		{"parser error", "a: 1\nb: {c: [}\n", "f.yaml:2: YAML: did not find expected node content", " | b: {c: [}"},
		{"scanner error", "a: 1\n  b: x\n", "f.yaml:2: YAML: mapping values are not allowed in this context", " |   b: x"},
	} {
		t.Run(c.name, func(t *testing.T) {
			docs, err := Parse("f.yaml", []byte("x: 0\n---\n"+c.yaml))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("want an *Error, got %v", err)
			}
			if len(docs) != 1 {
				t.Errorf("the document before the error is lost: %d documents", len(docs))
			}
			// The lines count from the start of the file.
			want := strings.Replace(c.want, "f.yaml:2", "f.yaml:4", 1)
			if e.Error() != want || e.Column != 0 {
				t.Errorf("got %q (column %d), want %q", e.Error(), e.Column, want)
			}
			// No column, hence no caret: the line alone is quoted.
			if got := e.Display(); got != want+"\n"+c.display {
				t.Errorf("Display:\n%s\nwant:\n%s", got, want+"\n"+c.display)
			}
		})
	}
}

func TestParseAliasBomb(t *testing.T) {
	for _, c := range []struct{ name, first, next string }{
		{"nested lists", "a: &a [x, x, x, x, x, x, x, x, x, x]\n", "%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n"},
		{"merges of merges", "a: &a {x: 1}\n", "%s: &%s {<<: [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]}\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, prev := c.first, "a"
			for _, name := range []string{"b", "c", "d", "e", "f", "g", "h", "i", "j"} {
				args := []any{name, name}
				for range 10 {
					args = append(args, prev)
				}
				src += fmt.Sprintf(c.next, args...)
				prev = name
			}
			_, err := Parse("f.yaml", []byte(src))
			if err == nil || !strings.Contains(err.Error(), "aliases expand the document") {
				t.Fatalf("want the alias budget error, got %v", err)
			}
		})
	}
}

const policyYAML = `apiVersion: v1
spec:
  match:
    resources: [pods, "apps/deployments"]
    conditions:
    - name: a
      expression: object.metadata.name == "x"
  with:
    containers:
    - name: app
    - name: sidecar
      ports: [{containerPort: 80}]
`

func TestPos(t *testing.T) {
	d := parseOne(t, policyYAML)
	for path, want := range map[string]Pos{
		"":                                    {1, 1},
		"apiVersion":                          {1, 1},
		"spec.match":                          {3, 3},
		"spec.match.resources[1]":             {4, 23},
		"spec.match.conditions[0].expression": {7, 7},
		"spec.with.containers[1].name":        {11, 7},
		"spec.with.containers[1].ports[0].containerPort": {12, 16},
		// Absent: the closest ancestor present.
		"spec.with.containers[1].image": {11, 7},
		"spec.with.containers[5]":       {9, 5},
		"spec.nothing.here":             {2, 1},
	} {
		if got := d.Pos(path); got != want {
			t.Errorf("Pos(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestPosIn(t *testing.T) {
	for _, c := range []struct {
		name, yaml, text string
		offset           int
		want             Pos
	}{
		{"plain", "e: a + b\n", "a + b", 4, Pos{1, 8}},
		{"past the end", "e: a +\n", "a +", 3, Pos{1, 7}},
		{"double-quoted, escapes before", `e: "\"a\" + b"` + "\n", `"a" + b`, 6, Pos{1, 13}},
		{"single-quoted, a doubled quote before", "e: 'it''s + b'\n", "it's + b", 7, Pos{1, 13}},
		{"unicode before", "é: é + b\n", "é + b", 4, Pos{1, 8}},
		{"literal block, second line", "e: |\n  has(a) &&\n    b + 1\n", "has(a) &&\n  b + 1\n", 16, Pos{3, 9}},
		{"literal block, end after the final newline", "e: |\n  a ==\nf: 1\n", "a ==\n", 5, Pos{2, 7}},
		{"folded block", "e: >\n  a &&\n  b\n", "a && b\n", 5, Pos{3, 3}},
		{"folded block, a blank line", "e: >\n  a\n\n  b\n", "a\nb\n", 2, Pos{4, 3}},
		{"multi-line plain", "e: a &&\n  b\n", "a && b", 5, Pos{2, 3}},
		{"a template's expression", `e: "x-${{ a + }}"` + "\n", " a + ", 3, Pos{1, 13}},
		{"in a list", "l:\n- x\n- 'a + b'\n", "a + b", 4, Pos{3, 8}},
		// Fallbacks: the value's own position.
		{"text not in the value", "e: abc\n", "xyz", 1, Pos{1, 4}},
		{"escaped line break", "e: \"a \\\n  b\"\n", "a b", 2, Pos{1, 4}},
		{"explicit indentation", "e: |2\n    a\n", "  a\n", 2, Pos{2, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := parseOne(t, c.yaml)
			path := "e"
			if strings.HasPrefix(c.yaml, "l:") {
				path = "l[1]"
			} else if strings.HasPrefix(c.yaml, "é") {
				path = "é"
			}
			if got := d.PosIn(path, c.text, c.offset); got != c.want {
				t.Errorf("PosIn(%q, %d) = %v, want %v", c.text, c.offset, got, c.want)
			}
		})
	}
}

type decodeTarget struct {
	Name  string `json:"name"`
	Count int32  `json:"count"`
	Items []struct {
		Port  int32    `json:"port"`
		Hosts []string `json:"hosts"`
	} `json:"items"`
	Meta map[string]string `json:"meta"`
	On   *bool             `json:"on"`
	Data []byte            `json:"data"`
	Raw  json.RawMessage   `json:"raw"`
}

func TestDecode(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"fine", "name: a\nitems: [{port: 1}]\n", ""},
		{"unknown fields, every one", "name: a\nnmae: b\nitems: [{port: 1}, {prot: 2}]\n", "nmae: unknown field; items[1].prot: unknown field"},
		{"duplicate key", "name: a\nname: b\n", "name: duplicate field"},
		{"duplicate key where v keeps raw JSON", "raw: {a: 1, a: 2}\n", "raw.a: duplicate field"},
		{"duplicate key in a map", "meta: {a: b, a: c}\n", "meta.a: duplicate field"},
		{"a list for a string", "name: [a]\n", "name: expected a string, got a list"},
		{"a string for a list, in the second item", "items:\n- {hosts: [a]}\n- {hosts: a}\n", "items[1].hosts: expected a list, got a string"},
		{"a string for a number", "items: [{port: 1}, {port: http}]\n", "items[1].port: expected a number, got a string"},
		{"a fraction for an integer", "count: 1.5\n", "count: expected an integer, got 1.5"},
		{"an object for a boolean", "on: {}\n", "on: expected a boolean, got an object"},
		{"a number for a map value", "meta: {a: b, c: [1]}\n", "meta.c: expected a string, got a list"},
		{"a list for the value itself", "- a\n", "expected an object, got a list"},
		{"a number for bytes", "data: 1\n", "data: expected a string, got a number"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := parseOne(t, c.yaml).Decode(&decodeTarget{})
			if len(got) == 0 && c.want != "" || len(got) > 0 && got.Error() != c.want {
				t.Errorf("got %q, want %q", got.Error(), c.want)
			}
		})
	}
}

func TestFieldErrorsWithin(t *testing.T) {
	errs := FieldErrors{{Path: "", Msg: "m"}, {Path: "a", Msg: "m"}, {Path: "[1].b", Msg: "m"}}.Within("with.x")
	if got := errs.Error(); got != "with.x: m; with.x.a: m; with.x[1].b: m" {
		t.Errorf("got %q", got)
	}
	var fe *FieldError
	if !errors.As(error(errs), &fe) || fe.Path != "with.x" {
		t.Errorf("errors.As finds %v", fe)
	}
}

func TestErrorForms(t *testing.T) {
	d := parseOne(t, "x: 0\na: \"\tb\"\n")
	e := d.ErrorAt(Pos{2, 6}, "a: bad")
	e.Policy = "p"
	if got, want := e.Error(), `f.yaml:2:6: policy "p": a: bad`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	// The tab prints as a space, so that the caret stays under the b.
	want := "f.yaml:2:6: policy \"p\": a: bad\n | a: \" b\"\n | .....^"
	if got := e.Display(); got != want {
		t.Errorf("Display():\n%s\nwant:\n%s", got, want)
	}
	list := ErrorList{e, {File: "g.yaml", Msg: "unreadable"}}
	if got := list.Error(); got != want+"\ng.yaml: unreadable" {
		t.Errorf("ErrorList:\n%s", got)
	}
}

// FuzzParse feeds arbitrary files to Parse: every document must be valid
// JSON, and every position Pos and PosIn give must be in the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte(policyYAML))
	f.Add([]byte("e: |\n  has(a) &&\n    b + 1\n---\nf: >\n  a\n\n  b\n"))
	f.Add([]byte("e: \"\\\"a\\\" + \\u00e9\"\nl: ['it''s', \"x-${{ a }}\"]\nm: {<<: {a: 1}, b: 2}\n"))
	f.Add([]byte(`{"a": [1, {"b": "c"}], "a": 2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, _ := Parse("f.yaml", data)
		lines := strings.Count(string(lineBreaks(data)), "\n") + 1 // YAML's lines: a lone CR breaks one too
		for _, d := range docs {
			if !json.Valid(d.JSON) {
				t.Fatalf("invalid JSON %s", d.JSON)
			}
			inFile := func(p Pos) bool { return p == Pos{} || p.Line >= 1 && p.Line <= lines+1 && p.Column >= 1 }
			for path, f := range d.nodes {
				if p := d.Pos(path); !inFile(p) {
					t.Fatalf("Pos(%q) = %v, outside the file", path, p)
				}
				v := f.value.Value
				for _, text := range []string{v, v[len(v)/2:]} {
					for _, offset := range []int{-1, 0, 1, len(text) / 2, len(text), len(text) + 5} {
						if p := d.PosIn(path, text, offset); !inFile(p) {
							t.Fatalf("PosIn(%q, %q, %d) = %v, outside the file", path, text, offset, p)
						}
					}
				}
				_ = d.ErrorAt(d.Pos(path), "m").Display()
			}
		}
	})
}

// TestLoneCarriageReturns: YAML takes a lone CR for a line break, so the
// positions count it as one, and an error quotes the line it is on.
func TestLoneCarriageReturns(t *testing.T) {
	docs, err := Parse("f.yaml", []byte("a: 1\rb: {c: 2\r"))
	var e *Error
	if !errors.As(err, &e) || len(docs) != 0 {
		t.Fatalf("Parse: %v, %d documents; want a syntax error", err, len(docs))
	}
	if e.Line < 2 {
		t.Errorf("error %q at line %d: want it past line 1", e.Display(), e.Line)
	}
	docs, err = Parse("f.yaml", []byte("a: 1\rb: 2\r"))
	if err != nil || len(docs) != 1 {
		t.Fatalf("Parse: %v, %d documents", err, len(docs))
	}
	if p := docs[0].Pos("b"); p.Line != 2 {
		t.Errorf("Pos(b) = %v, want line 2", p)
	} else if e := docs[0].ErrorAt(p, "m"); !strings.Contains(e.Display(), "\n | b: 2") {
		t.Errorf("error at b quotes %q, want its line", e.Display())
	}
}
