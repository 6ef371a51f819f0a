package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"celadon.io/celadon/source"
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

// Error is a load or compile error located in a policy file. Error()
// gives its one line, `file:line:col: policy "name": message`; Display adds
// the source line and a caret.
type Error = source.Error

// ErrorList is every error found while loading a policy set. Its Error()
// prints each error's Display form.
type ErrorList = source.ErrorList

// document is one parsed policy and where its fields are written.
type document struct {
	src    *source.Document
	policy Policy
}

// parseFile splits a file into policy documents. A syntax error stops the
// file; decoding errors drop their document and the rest go on.
func parseFile(f File) ([]*document, ErrorList) {
	srcs, err := source.Parse(f.Name, f.Data)
	var docs []*document
	var errs ErrorList
	for _, src := range srcs {
		d := &document{src: src}
		if derrs := d.decode(); len(derrs) > 0 {
			errs = append(errs, derrs...)
			continue
		}
		docs = append(docs, d)
	}
	var located *Error
	if errors.As(err, &located) {
		errs = append(errs, located)
	} else if err != nil {
		errs = append(errs, &Error{File: f.Name, Msg: err.Error()})
	}
	return docs, errs
}

// decode strictly decodes the policy. Every error names the policy when its
// name could be read.
func (d *document) decode() ErrorList {
	var errs ErrorList
	for _, fe := range d.src.Decode(&d.policy) {
		errs = append(errs, d.errorf(fe.Path, "%v", fe))
	}
	return errs
}

// errorf returns an error located at the field at path (its closest
// ancestor present when absent).
func (d *document) errorf(path string, format string, args ...any) *Error {
	e := d.src.ErrorAt(d.src.Pos(path), fmt.Sprintf(format, args...))
	e.Policy = d.policy.Metadata.Name
	return e
}

// line is the line the policy's document starts on.
func (d *document) line() int { return d.src.Pos("").Line }
