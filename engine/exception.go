package engine

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/google/cel-go/cel"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"celadon.io/celadon/source"
)

// ExceptionKind is the kind of an exception document.
const ExceptionKind = "PolicyException"

// DefaultExceptionMaxLifetime bounds how far ahead an exception of the
// exceptions directory may expire, from when it is loaded.
const DefaultExceptionMaxLifetime = 90 * 24 * time.Hour

// ExpiryWarningWindow is how long before an applied exception expires the
// requester is warned, and what `celadon validate` lists.
const ExpiryWarningWindow = 7 * 24 * time.Hour

// PolicyException is one exception document as written: it turns the
// results of the policies it names into skip for the requests it matches,
// until it expires. See the README's "Exceptions".
type PolicyException struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   PolicyMetadata `json:"metadata"`
	Spec       ExceptionSpec  `json:"spec"`
}

// ExceptionSpec says which policies an exception excepts, where, why, who
// answers for it and until when.
type ExceptionSpec struct {
	// Policies are policy names, or globs (path.Match) in the policy
	// directory. Required.
	Policies []string `json:"policies"`
	// Match selects the requests excepted. All parts must match; an empty
	// part matches everything.
	Match ExceptionMatch `json:"match"`
	// Reason says why. Required.
	Reason string `json:"reason"`
	// Owner answers for the exception: a team, an email. Required.
	Owner string `json:"owner"`
	// Expires is an RFC 3339 timestamp from which the exception no longer
	// applies. Required in the exceptions directory.
	Expires string `json:"expires,omitempty"`
}

// ExceptionMatch selects the requests an exception applies to.
type ExceptionMatch struct {
	// Namespaces lists namespace names: the request's namespace (a
	// Namespace's own name) must be one of them. Required in the
	// exceptions directory.
	Namespaces []string `json:"namespaces,omitempty"`
	// NamespaceSelector and ObjectSelector match as a policy's do.
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	ObjectSelector    *metav1.LabelSelector `json:"objectSelector,omitempty"`
	// Names are object names or globs (path.Match). An object created
	// with generateName alone is matched by its generateName.
	Names []string `json:"names,omitempty"`
	// Resources and Operations are written as a policy's.
	Resources  []string `json:"resources,omitempty"`
	Operations []string `json:"operations,omitempty"`
	// Conditions are CEL, all must be true, with a policy's variables
	// but variables: object, oldObject, request, namespaceObject.
	Conditions []Condition `json:"conditions,omitempty"`
}

// ExceptionOrigin says where an exception was loaded from, which decides
// what it may match.
type ExceptionOrigin string

// ExceptionOrigin values.
const (
	// FromPolicies: the policy directory, as trusted as its policies.
	FromPolicies ExceptionOrigin = "policies"
	// FromExceptions: the exceptions directory, which teams may be given
	// edit on: its exceptions must name their policies one by one, list
	// namespaces (their subdirectory's alone in a subdirectory), match
	// namespaced objects in those namespaces only, and expire within
	// ExceptionOptions.MaxLifetime.
	FromExceptions ExceptionOrigin = "exceptions"
)

// CompiledException is an exception ready to match requests. It is
// immutable.
type CompiledException struct {
	// Exception is the exception as written.
	Exception PolicyException
	// File and Line locate its document.
	File string
	Line int
	// Origin says which directory it comes from.
	Origin ExceptionOrigin
	// Expires is when it stops applying; zero when it never does.
	Expires time.Time

	doc         *source.Document
	namespaces  map[string]bool // nil: any
	names       []string
	rules       []resourceRule
	ops         map[string]bool // nil: any
	nsSelector  labels.Selector
	objSelector labels.Selector
	conditions  []*Expression
}

// Name returns the exception's name.
func (e *CompiledException) Name() string { return e.Exception.Metadata.Name }

// Owner returns who answers for the exception.
func (e *CompiledException) Owner() string { return e.Exception.Spec.Owner }

// Excepts reports whether the exception names the policy, by name or glob.
func (e *CompiledException) Excepts(policy string) bool {
	for _, p := range e.Exception.Spec.Policies {
		if ok, _ := path.Match(p, policy); ok {
			return true
		}
	}
	return false
}

// Expired reports whether the exception no longer applies at now: its
// expiry is now or before.
func (e *CompiledException) Expired(now time.Time) bool {
	return !e.Expires.IsZero() && !now.Before(e.Expires)
}

// ErrorAt returns an error (or a warning, for a caller that says so in
// msg) about the field at path of the exception's document, such as
// "spec.policies[1]", located at file:line:col with its source line.
func (e *CompiledException) ErrorAt(path, msg string) *Error {
	err := e.doc.ErrorAt(e.doc.Pos(path), msg)
	err.Policy, err.Kind = e.Name(), "exception"
	return err
}

// ExceptionSet is a compiled, immutable set of exceptions: those of the
// policy directory (Snapshot.Exceptions) or of the exceptions directory.
type ExceptionSet struct {
	// Exceptions are in file order.
	Exceptions []*CompiledException
	// Hash identifies the content the set was compiled from.
	Hash string

	byPolicy sync.Map // policy name -> []*CompiledException
}

// For returns the exceptions naming the policy, in file order. A nil set
// has none.
func (s *ExceptionSet) For(policy string) []*CompiledException {
	if s == nil || len(s.Exceptions) == 0 {
		return nil
	}
	if v, ok := s.byPolicy.Load(policy); ok {
		return v.([]*CompiledException)
	}
	var out []*CompiledException
	for _, e := range s.Exceptions {
		if e.Excepts(policy) {
			out = append(out, e)
		}
	}
	s.byPolicy.Store(policy, out)
	return out
}

// Exception returns the named exception, or nil.
func (s *ExceptionSet) Exception(name string) *CompiledException {
	if s == nil {
		return nil
	}
	for _, e := range s.Exceptions {
		if e.Name() == name {
			return e
		}
	}
	return nil
}

// ExceptionOptions configure CompileExceptions.
type ExceptionOptions struct {
	// Now is the time expiries are checked against. Default time.Now().
	Now time.Time
	// MaxLifetime bounds how far after Now an exception may expire.
	// Default DefaultExceptionMaxLifetime.
	MaxLifetime time.Duration
}

// CompileExceptions compiles the files of an exceptions directory
// (ReadExceptionFiles): PolicyException documents only, each held to the
// rules of FromExceptions. Every error is reported, located at
// file:line:col; a set with errors is returned with them, and its callers
// refuse it.
func CompileExceptions(files []File, opts ExceptionOptions) (*ExceptionSet, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.MaxLifetime <= 0 {
		opts.MaxLifetime = DefaultExceptionMaxLifetime
	}
	var errs ErrorList
	var docs []*exceptionDocument
	for _, f := range files {
		ps, xs, e := parseFile(f)
		errs = append(errs, e...)
		for _, d := range ps {
			errs = append(errs, d.errorf("kind", "the exceptions directory holds %s documents only: a %s goes in the policy directory", ExceptionKind, d.policy.Kind))
		}
		docs = append(docs, xs...)
	}
	set, cerrs := compileExceptions(docs, FromExceptions, opts)
	set.Hash = Hash(files)
	errs = append(errs, cerrs...)
	if len(errs) > 0 {
		return set, errs
	}
	return set, nil
}

// compileExceptions compiles exception documents of one origin into a set;
// names are unique within it.
func compileExceptions(docs []*exceptionDocument, origin ExceptionOrigin, opts ExceptionOptions) (*ExceptionSet, ErrorList) {
	var errs ErrorList
	set := &ExceptionSet{}
	seen := map[string]*exceptionDocument{}
	for _, d := range docs {
		e, eerrs := d.compile(origin, opts)
		errs = append(errs, eerrs...)
		if e == nil {
			continue
		}
		if prev, dup := seen[e.Name()]; dup {
			errs = append(errs, d.errorf("metadata.name", "duplicate exception name, first defined at %s:%d", prev.src.File, prev.src.Pos("").Line))
			continue
		}
		seen[e.Name()] = d
		set.Exceptions = append(set.Exceptions, e)
	}
	return set, errs
}

// exceptionDocument is one parsed exception and where its fields are
// written.
type exceptionDocument struct {
	src  *source.Document
	file File
	ex   PolicyException
}

func (d *exceptionDocument) decode() ErrorList {
	var errs ErrorList
	for _, fe := range d.src.Decode(&d.ex) {
		errs = append(errs, d.errorf(fe.Path, "%v", fe))
	}
	return errs
}

// errorf returns an error located at the field at path, its message led by
// the field (without "spec.") unless the field is the document or an
// error of decoding, which names it already.
func (d *exceptionDocument) errorf(path, format string, args ...any) *Error {
	e := d.src.ErrorAt(d.src.Pos(path), fmt.Sprintf(format, args...))
	e.Policy, e.Kind = d.ex.Metadata.Name, "exception"
	return e
}

// fieldErrorf is errorf with the message led by the field.
func (d *exceptionDocument) fieldErrorf(path, format string, args ...any) *Error {
	return d.errorf(path, "%s: %s", strings.TrimPrefix(path, "spec."), fmt.Sprintf(format, args...))
}

func (d *exceptionDocument) exprError(err error) *Error {
	var ee *exprError
	if !errors.As(err, &ee) {
		return d.errorf("", "%v", err)
	}
	e := d.src.ErrorAt(d.src.PosIn(ee.field, ee.expr, ee.offset), strings.TrimPrefix(ee.field, "spec.")+": "+ee.msg)
	e.Policy, e.Kind = d.ex.Metadata.Name, "exception"
	return e
}

// isGlob reports whether a name pattern has path.Match's special
// characters.
func isGlob(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// compile checks one exception. It returns nil, with errors, when the
// exception is not usable.
func (d *exceptionDocument) compile(origin ExceptionOrigin, opts ExceptionOptions) (*CompiledException, ErrorList) {
	var errs ErrorList
	x := &d.ex
	if x.APIVersion != APIVersion || x.Kind != ExceptionKind {
		return nil, ErrorList{d.errorf("apiVersion", "apiVersion/kind must be %s/%s, not %s/%s", APIVersion, ExceptionKind, x.APIVersion, x.Kind)}
	}
	name := x.Metadata.Name
	if name == "" {
		return nil, ErrorList{d.errorf("metadata", "metadata.name is required")}
	}
	if msgs := validation.IsQualifiedName(name); len(msgs) > 0 || strings.Contains(name, "/") {
		return nil, ErrorList{d.errorf("metadata.name", "invalid name: %s", strings.Join(msgs, "; "))}
	}
	restricted := origin == FromExceptions
	e := &CompiledException{Exception: *x, File: d.src.File, Line: d.src.Pos("").Line, Origin: origin, doc: d.src}
	s := x.Spec

	if len(s.Policies) == 0 {
		errs = append(errs, d.fieldErrorf("spec.policies", "required: the names of the policies excepted"))
	}
	for i, p := range s.Policies {
		field := fmt.Sprintf("spec.policies[%d]", i)
		switch _, err := path.Match(p, ""); {
		case p == "":
			errs = append(errs, d.fieldErrorf(field, "empty policy name"))
		case err != nil:
			errs = append(errs, d.fieldErrorf(field, "%q is not a valid glob: %v", p, err))
		case restricted && isGlob(p):
			errs = append(errs, d.fieldErrorf(field, "%q is a glob: an exception of the exceptions directory names its policies one by one, so that it never excepts a policy added later", p))
		}
	}
	if strings.TrimSpace(s.Reason) == "" {
		errs = append(errs, d.fieldErrorf("spec.reason", "required: why the policies do not apply here"))
	}
	switch owner := strings.TrimSpace(s.Owner); {
	case owner == "":
		errs = append(errs, d.fieldErrorf("spec.owner", "required: who answers for the exception (a team, an email)"))
	case len(s.Owner) > 256:
		errs = append(errs, d.fieldErrorf("spec.owner", "at most 256 characters, not %d", len(s.Owner)))
	case strings.ContainsFunc(s.Owner, unicode.IsControl):
		errs = append(errs, d.fieldErrorf("spec.owner", "one line without control characters: it is shown in warnings"))
	}
	if s.Expires != "" {
		t, err := time.Parse(time.RFC3339, s.Expires)
		switch {
		case err != nil:
			errs = append(errs, d.fieldErrorf("spec.expires", "%q is not an RFC 3339 timestamp, a date with a time and a zone such as 2026-03-31T00:00:00Z", s.Expires))
		case restricted && t.After(opts.Now.Add(opts.MaxLifetime)):
			errs = append(errs, d.fieldErrorf("spec.expires", "%s is more than %s after now (%s), the limit of the exceptions directory: renew the exception nearer the time instead",
				t.UTC().Format(time.RFC3339), days(opts.MaxLifetime), opts.Now.UTC().Format(time.RFC3339)))
		default:
			e.Expires = t
		}
	} else if restricted {
		errs = append(errs, d.fieldErrorf("spec.expires", "required in the exceptions directory: an RFC 3339 timestamp at most %s ahead", days(opts.MaxLifetime)))
	}

	m := s.Match
	if len(m.Namespaces) > 0 {
		e.namespaces = map[string]bool{}
	}
	for i, ns := range m.Namespaces {
		field := fmt.Sprintf("spec.match.namespaces[%d]", i)
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, d.fieldErrorf(field, "%q is not a namespace name (globs are not allowed here; use namespaceSelector): %s", ns, strings.Join(msgs, "; ")))
			continue
		}
		if restricted && d.file.Namespace != "" && ns != d.file.Namespace {
			errs = append(errs, d.fieldErrorf(field, "namespace %q: the exceptions of %s match in namespace %q only, which the directory is named after", ns, dirOf(d.file.Name), d.file.Namespace))
			continue
		}
		e.namespaces[ns] = true
	}
	if restricted && len(m.Namespaces) == 0 {
		hint := "list the namespaces it applies to"
		if d.file.Namespace != "" {
			hint = fmt.Sprintf("here, [%s]", d.file.Namespace)
		}
		errs = append(errs, d.fieldErrorf("spec.match.namespaces", "required in the exceptions directory, where an exception matches only in the namespaces it lists: %s", hint))
	}
	for i, n := range m.Names {
		field := fmt.Sprintf("spec.match.names[%d]", i)
		if _, err := path.Match(n, ""); n == "" || err != nil {
			errs = append(errs, d.fieldErrorf(field, "%q is not a name or a valid glob", n))
			continue
		}
		e.names = append(e.names, n)
	}
	for i, r := range m.Resources {
		rr, err := parseResource(r)
		if err != nil {
			errs = append(errs, d.fieldErrorf(fmt.Sprintf("spec.match.resources[%d]", i), "%v", err))
			continue
		}
		e.rules = append(e.rules, rr)
	}
	for i, op := range m.Operations {
		if e.ops == nil {
			e.ops = map[string]bool{}
		}
		switch op {
		case "*":
			for _, o := range allOperations {
				e.ops[o] = true
			}
		case "CREATE", "UPDATE", "DELETE", "CONNECT":
			e.ops[op] = true
		default:
			errs = append(errs, d.fieldErrorf(fmt.Sprintf("spec.match.operations[%d]", i), "unknown operation %q: want CREATE, UPDATE, DELETE, CONNECT or \"*\"", op))
		}
	}
	var err error
	if e.nsSelector, err = selector(m.NamespaceSelector); err != nil {
		errs = append(errs, d.fieldErrorf("spec.match.namespaceSelector", "%v", err))
	}
	if e.objSelector, err = selector(m.ObjectSelector); err != nil {
		errs = append(errs, d.fieldErrorf("spec.match.objectSelector", "%v", err))
	}
	if len(m.Conditions) > 0 {
		env, verrs := newPolicyEnv(nil, nil)
		for _, ve := range verrs {
			errs = append(errs, d.exprError(ve))
		}
		for i, c := range m.Conditions {
			if env == nil {
				break
			}
			ce, err := env.compile(fmt.Sprintf("spec.match.conditions[%d].expression", i), c.Expression, cel.BoolType)
			if err != nil {
				errs = append(errs, d.exprError(err))
				continue
			}
			ce.name = c.Name
			if ce.name == "" {
				ce.name = fmt.Sprintf("conditions[%d]", i)
			}
			e.conditions = append(e.conditions, ce)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return e, nil
}

// days words a duration of whole days as "90 days".
func days(d time.Duration) string {
	n := int(d / (24 * time.Hour))
	if n == 1 {
		return "1 day"
	}
	if time.Duration(n)*24*time.Hour != d {
		return d.String()
	}
	return fmt.Sprintf("%d days", n)
}

func dirOf(file string) string {
	if i := strings.LastIndexByte(file, '/'); i >= 0 {
		return file[:i+1]
	}
	return "./"
}
