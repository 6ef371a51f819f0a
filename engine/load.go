package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"celadon.io/celadon/source"
)

// File is one policy file: its display name and content.
type File struct {
	Name string
	Data []byte
	// Namespace is set on the files of an exceptions directory's
	// subdirectory: the namespace the subdirectory is named after, the
	// only one its exceptions may match (ReadExceptionFiles).
	Namespace string
}

// ReadFiles reads policy files from path: a file, or every *.yaml, *.yml and
// *.json in a directory, sorted by name. Entries whose names start with "."
// are skipped, so a mounted ConfigMap's "..data" and timestamped directories
// are read once, through the key symlinks.
func ReadFiles(path string) ([]File, error) {
	files, _, err := readFiles(path)
	return files, err
}

// ReadExceptionFiles reads an exceptions directory: its files, as ReadFiles
// reads them, then the files of each of its subdirectories, sorted by
// name, each subdirectory named after the one namespace its exceptions may
// match (File.Namespace). A subdirectory is where one team's ConfigMap is
// mounted. A subdirectory whose name is not a namespace name is an error.
func ReadExceptionFiles(path string) ([]File, error) {
	files, dirs, err := readFiles(path)
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		ns := filepath.Base(d)
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			return nil, fmt.Errorf("%s: a subdirectory of the exceptions directory is named after the namespace its exceptions may match, and %q is not a namespace name: %s", d, ns, strings.Join(msgs, "; "))
		}
		sub, _, err := readFiles(d)
		if err != nil {
			return nil, err
		}
		for i := range sub {
			sub[i].Namespace = ns
		}
		files = append(files, sub...)
	}
	return files, nil
}

// ExceptionDirs returns the directories of an exceptions directory that
// hold files: path and its subdirectories (not those starting with "."),
// for a watcher. A file gives its directory.
func ExceptionDirs(path string) []string {
	st, err := os.Stat(path)
	if err != nil {
		return []string{path}
	}
	if !st.IsDir() {
		return []string{filepath.Dir(path)}
	}
	_, dirs, _ := readFiles(path)
	return append([]string{path}, dirs...)
}

// readFiles reads the policy files of path, a file or a directory, and
// lists the subdirectories of a directory, both sorted by name.
func readFiles(path string) ([]File, []string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !st.IsDir() {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, err
		}
		return []File{{Name: path, Data: data}}, nil, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, nil, err
	}
	var files []File
	var dirs []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		full := filepath.Join(path, name)
		switch strings.ToLower(filepath.Ext(name)) {
		case ".yaml", ".yml", ".json":
		default:
			// Not a policy file; a directory (or a link to one) is listed.
			if st, err := os.Stat(full); err == nil && st.IsDir() {
				dirs = append(dirs, full)
			}
			continue
		}
		st, err := os.Stat(full) // follows the ConfigMap key symlinks
		if err != nil {
			return nil, nil, err
		}
		if st.IsDir() {
			dirs = append(dirs, full)
			continue
		}
		data, err := os.ReadFile(full)
		if err != nil {
			return nil, nil, err
		}
		files = append(files, File{Name: full, Data: data})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	sort.Strings(dirs)
	return files, dirs, nil
}

// Hash returns a stable content hash of a policy set.
func Hash(files []File) string {
	h := sha256.New()
	for _, f := range files {
		name := filepath.Base(f.Name)
		if f.Namespace != "" {
			name = f.Namespace + "/" + name // a file moved to another namespace's directory is new content
		}
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(f.Data))
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
	// unserved counts the errors of resources unknown to the cluster's
	// discovery (unservedError).
	unserved int
}

// parseFile splits a file into policy and exception documents, by kind. A
// syntax error stops the file; decoding errors drop their document and the
// rest go on.
func parseFile(f File) ([]*document, []*exceptionDocument, ErrorList) {
	srcs, err := source.Parse(f.Name, f.Data)
	var docs []*document
	var exs []*exceptionDocument
	var errs ErrorList
	for _, src := range srcs {
		if kindOf(src) == ExceptionKind {
			x := &exceptionDocument{src: src, file: f}
			if derrs := x.decode(); len(derrs) > 0 {
				errs = append(errs, derrs...)
				continue
			}
			exs = append(exs, x)
			continue
		}
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
	return docs, exs, errs
}

// kindOf returns a document's kind, "" when it has none that reads as a
// string.
func kindOf(src *source.Document) string {
	var head struct {
		Kind any `json:"kind"`
	}
	if json.Unmarshal(src.JSON, &head) != nil {
		return ""
	}
	s, _ := head.Kind.(string)
	return s
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
