// Package source reads Celadon's YAML files (policies and test suites) and
// locates errors in them.
//
// Parse decodes a file once: each document becomes JSON, for strict
// decoding into Go types, and an index from field paths
// ("spec.match.conditions[0].expression", "spec.with.containers[1].name")
// to the line and column of the field. Decode turns what strict decoding
// finds (unknown and duplicate fields, type mismatches) into FieldErrors
// worded one way, whatever the type decoded into; the caller locates them
// with Pos, or PosIn for a character inside a string such as a CEL
// expression.
//
// An Error has two forms. Error() is one line,
//
//	file:line:col: policy "name": field: message
//
// for logs, /status and anything else read line by line. Display adds the
// source line and a caret under the column, in the style of cel-go, for
// people at a terminal:
//
//	policies.yaml:10:43: policy "broken": match.conditions[0].expression: CEL: Syntax error: ...
//	 |       expression: "object.metadata.name =="
//	 | ..........................................^
//
// Parts that are unknown are left out: a YAML syntax error has no column,
// as yaml.v3 reports lines only, so it prints file:line and quotes the line
// without a caret. An ErrorList prints the Display form of each of its
// errors.
package source
