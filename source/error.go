package source

import (
	"bytes"
	"strconv"
	"strings"
)

// Error is an error located in a file.
type Error struct {
	File string
	// Line is 1-based; 0 when the error is about the whole file.
	Line int
	// Column is 1-based, in characters; 0 when unknown, as for YAML syntax
	// errors, whose parser reports lines only.
	Column int
	// Policy names the policy the error is about; empty outside policies.
	// Kind says what Policy names when it is not a policy ("exception"
	// for a PolicyException); empty for a policy.
	Policy string
	Kind   string
	// Msg is the message, led by the field it is about when there is one.
	Msg string

	// text is the source line, quoted by Display.
	text string
}

// Error returns the one-line form, `file:line:col: policy "name": message`
// (`exception "name"` for an exception), without the parts that are
// unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":" + strconv.Itoa(e.Column))
		}
	}
	b.WriteString(": ")
	if e.Policy != "" {
		kind := e.Kind
		if kind == "" {
			kind = "policy"
		}
		b.WriteString(kind + " " + strconv.Quote(e.Policy) + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// maxQuotedLine bounds the source lines Display quotes: a one-line JSON
// file is better left unquoted than printed whole.
const maxQuotedLine = 500

// Display returns the one-line form followed, when the error has a source
// line, by that line and a caret under the column:
//
//	file:line:col: message
//	 | the source line
//	 | ........^
//
// Tabs in the line print as spaces so that the caret, one dot per
// character before it, stays under the column.
func (e *Error) Display() string {
	s := e.Error()
	if e.text == "" || len(e.text) > maxQuotedLine {
		return s
	}
	s += "\n | " + strings.ReplaceAll(e.text, "\t", " ")
	if e.Column > 0 {
		s += "\n | " + strings.Repeat(".", e.Column-1) + "^"
	}
	return s
}

// ErrorList is every error found in a set of files.
type ErrorList []*Error

// Error returns the Display form of each error, one after the other: a
// list is printed for people, and its errors are lines of their own
// already.
func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Display()
	}
	return strings.Join(msgs, "\n")
}

// lineText returns the text of the 1-based line n of data, without its line
// break; "" when there is no such line.
func lineText(data []byte, n int) string {
	for i := 1; i < n; i++ {
		j := bytes.IndexByte(data, '\n')
		if j < 0 {
			return ""
		}
		data = data[j+1:]
	}
	if n < 1 {
		return ""
	}
	if j := bytes.IndexByte(data, '\n'); j >= 0 {
		data = data[:j]
	}
	return strings.TrimSuffix(string(data), "\r")
}
