package engine

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/google/cel-go/cel"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"celadon.io/celadon/source"
)

// Operations a policy can match.
var allOperations = []string{"CREATE", "UPDATE", "DELETE", "CONNECT"}

// undottedGroups are the built-in API groups whose names have no dot, so
// "apps/deployments" reads as group/resource rather than resource/subresource.
var undottedGroups = map[string]bool{"apps": true, "batch": true, "autoscaling": true, "policy": true, "extensions": true}

// CompiledPolicy is a policy ready to evaluate. It is immutable.
type CompiledPolicy struct {
	// Policy is the policy as written, with defaults applied.
	Policy Policy
	// File and Line locate the policy's document.
	File string
	Line int
	// Type is the type of the policy's builtin.
	Type ActionType
	// Err is a compile error kept with the policy: evaluating the policy
	// yields it under the policy's failurePolicy.
	Err error

	ordinal     int
	rules       []resourceRule
	ops         map[string]bool
	nsSelector  labels.Selector // nil matches everything
	objSelector labels.Selector // nil matches everything
	conditions  []*Expression
	env         *policyEnv
	builtin     Builtin
	action      Action
	// autogen are the pod controllers a pod policy also applies to.
	autogen []AutogenRule
	// warnings are the policy's expressions that type-check against some
	// of the kinds it matches only.
	warnings []*Error
}

// Warnings returns what is worth a warning in the policy, though it loads:
// each expression that type-checks against some of the kinds the policy
// matches but not all, located as an error.
func (p *CompiledPolicy) Warnings() []*Error { return slices.Clone(p.warnings) }

// Name returns the policy's name.
func (p *CompiledPolicy) Name() string { return p.Policy.Metadata.Name }

// Resources returns the (group, resource, subresource) rules the policy
// matches, with "*" as a wildcard.
func (p *CompiledPolicy) Resources() []ResourceRule {
	out := make([]ResourceRule, len(p.rules))
	for i, r := range p.rules {
		out[i] = ResourceRule(r)
	}
	return out
}

// Operations returns the operations the policy matches, sorted.
func (p *CompiledPolicy) Operations() []string {
	out := make([]string, 0, len(p.ops))
	for op := range p.ops {
		out = append(out, op)
	}
	sort.Strings(out)
	return out
}

// ResourceRule is one parsed entry of match.resources.
type ResourceRule struct {
	Group, Resource, Subresource string
}

type resourceRule ResourceRule

func (r resourceRule) wildcard() bool { return r.Resource == "*" || r.Subresource == "*" }

func (r resourceRule) matches(group, resource, sub string) bool {
	if r.Group != "*" && r.Group != group {
		return false
	}
	if r.Resource != "*" && r.Resource != resource {
		return false
	}
	return r.Subresource == sub || (r.Subresource == "*" && sub != "") || (r.Subresource == "*" && r.Resource == "*")
}

// parseResource reads one entry of match.resources.
func parseResource(s string) (resourceRule, error) {
	if s == "*" {
		return resourceRule{Group: "*", Resource: "*"}, nil
	}
	if s == "*/*" {
		return resourceRule{Group: "*", Resource: "*", Subresource: "*"}, nil
	}
	parts := strings.Split(s, "/")
	for _, p := range parts {
		if p == "" {
			return resourceRule{}, fmt.Errorf("resource %q has an empty segment", s)
		}
	}
	switch len(parts) {
	case 1:
		return resourceRule{Resource: parts[0]}, nil
	case 2:
		if strings.Contains(parts[0], ".") || undottedGroups[parts[0]] {
			return resourceRule{Group: parts[0], Resource: parts[1]}, nil
		}
		return resourceRule{Resource: parts[0], Subresource: parts[1]}, nil
	case 3:
		return resourceRule{Group: parts[0], Resource: parts[1], Subresource: parts[2]}, nil
	}
	return resourceRule{}, fmt.Errorf("resource %q has too many segments: want resource, group/resource or [group/]resource/subresource", s)
}

// Options configure Compile, and a Store.
type Options struct {
	// Registry holds the builtins policies may name. Required.
	Registry *Registry
	// AllowEmpty lets a Store publish a set of no policies. Without it,
	// Store.Load refuses one (ErrNoPolicies) like a set that does not
	// compile, at start and at every reload alike: an emptied ConfigMap
	// (no keys, or only comments) would otherwise switch every policy off
	// as a "successful" reload. Compile itself accepts an empty set; its
	// callers decide (`celadon validate` refuses one).
	AllowEmpty bool
	// Schemas are the OpenAPI schemas the policies' CEL is type-checked
	// against; nil is BuiltinSchemas, the built-in kinds'. Schemas from a
	// cluster's discovery (DiscoverySchemas) also check the resources of
	// the groups it serves that are not built in: CRDs'.
	Schemas *Schemas
	// Rediscover, when set, is called by Store.Load before it compiles,
	// and what it returns replaces Schemas for that compilation: the
	// server reads the cluster's discovery and schemas again, so that
	// CRDs created since are checked and known. Content refused only
	// because of resources unknown to that discovery is compiled again,
	// with discovery read again, at every Load until it loads, as a
	// policy may name a CRD being created at the same time. Compile
	// ignores it.
	Rediscover func() *Schemas
}

// ErrNoPolicies is why a Store refuses content that holds no policy: no
// policy file, or files that are empty or only comments. Options.AllowEmpty
// allows it.
var ErrNoPolicies = errors.New("no policies: the policy files hold no policy (no file, or only empty files and comments); an empty set is not served, so that an emptied ConfigMap does not switch every policy off")

// Compile parses and compiles a policy set into a Snapshot. Every error is
// reported, each located at file:line:col. PolicyException documents among
// the policies become the snapshot's Exceptions, as trusted as the
// policies (FromPolicies). A policy whose expressions or
// arguments fail to compile is kept in the snapshot with its error, so a
// caller may choose to serve the rest; most callers refuse a set with errors.
func Compile(files []File, opts Options) (*Snapshot, error) {
	if opts.Registry == nil {
		return nil, fmt.Errorf("engine.Compile: no builtin registry")
	}
	var errs ErrorList
	var docs []*document
	var exDocs []*exceptionDocument
	for _, f := range files {
		d, x, e := parseFile(f)
		docs = append(docs, d...)
		exDocs = append(exDocs, x...)
		errs = append(errs, e...)
	}
	snap := &Snapshot{Hash: Hash(files), index: map[indexKey][]*CompiledPolicy{}}
	var xerrs ErrorList
	snap.Exceptions, xerrs = compileExceptions(exDocs, FromPolicies, ExceptionOptions{})
	snap.Exceptions.Hash = snap.Hash
	errs = append(errs, xerrs...)
	schemas := opts.Schemas
	if schemas == nil {
		schemas = BuiltinSchemas()
	}
	seen := map[string]*document{}
	unserved := 0
	for _, d := range docs {
		p, perrs := compilePolicy(d, opts.Registry, schemas)
		errs = append(errs, perrs...)
		unserved += d.unserved
		if p == nil {
			continue
		}
		if prev, dup := seen[p.Name()]; dup {
			errs = append(errs, d.errorf("metadata.name", "duplicate policy name, first defined at %s:%d", prev.src.File, prev.line()))
			continue
		}
		seen[p.Name()] = d
		p.ordinal = len(snap.Policies)
		snap.Policies = append(snap.Policies, p)
	}
	snap.buildIndex()
	if len(errs) > 0 {
		snap.onlyUnserved = unserved == len(errs)
		return snap, errs
	}
	return snap, nil
}

// compilePolicy checks one document. It returns nil when the document is not
// a usable policy at all (no name, wrong kind); otherwise the policy, with
// any compile error kept in Err.
func compilePolicy(d *document, reg *Registry, schemas *Schemas) (*CompiledPolicy, ErrorList) {
	var errs ErrorList
	pol := &d.policy
	if pol.APIVersion != APIVersion || pol.Kind != Kind {
		return nil, ErrorList{d.errorf("apiVersion", "apiVersion/kind must be %s/%s, not %s/%s", APIVersion, Kind, pol.APIVersion, pol.Kind)}
	}
	name := pol.Metadata.Name
	if name == "" {
		return nil, ErrorList{d.errorf("metadata", "metadata.name is required")}
	}
	if msgs := validation.IsQualifiedName(name); len(msgs) > 0 || strings.Contains(name, "/") {
		return nil, ErrorList{d.errorf("metadata.name", "invalid name: %s", strings.Join(msgs, "; "))}
	}
	p := &CompiledPolicy{Policy: *pol, File: d.src.File, Line: d.line()}

	b, ok := reg.Lookup(pol.Spec.Action)
	switch {
	case pol.Spec.Action == "":
		errs = append(errs, d.errorf("spec.action", "spec.action is required; builtins: %s", strings.Join(reg.Names(), ", ")))
	case !ok:
		errs = append(errs, d.errorf("spec.action", "unknown builtin %q; builtins: %s", pol.Spec.Action, strings.Join(reg.Names(), ", ")))
	default:
		p.Type, p.builtin = b.Type(), b
	}

	if err := pol.Spec.FailurePolicy.validate(); err != nil {
		errs = append(errs, d.errorf("spec.failurePolicy", "%v", err))
	}
	if err := pol.Spec.Enforcement.validate(); err != nil {
		errs = append(errs, d.errorf("spec.enforcement", "%v", err))
	}
	if t := pol.Spec.TimeoutSeconds; t != nil && (*t < 1 || *t > 30) {
		errs = append(errs, d.errorf("spec.timeoutSeconds", "timeoutSeconds must be between 1 and 30, not %d", *t))
	}
	if a := pol.Spec.Autogen; a != nil && *a {
		if msg := autogenError(p.builtin); msg != "" {
			errs = append(errs, d.errorf("spec.autogen", "%s", msg))
		}
	}
	if p.Type == Mutating && pol.Spec.Enforcement != "" {
		errs = append(errs, d.errorf("spec.enforcement", "enforcement applies to validating builtins only; %q mutates", pol.Spec.Action))
	}
	if p.Policy.Spec.FailurePolicy == "" {
		p.Policy.Spec.FailurePolicy = Fail
		if p.Type == Mutating {
			p.Policy.Spec.FailurePolicy = Ignore
		}
	}
	if p.Type == Validating && p.Policy.Spec.Enforcement == "" {
		p.Policy.Spec.Enforcement = Deny
	}

	m := pol.Spec.Match
	if len(m.Resources) == 0 {
		errs = append(errs, d.errorf("spec.match", "spec.match.resources is required"))
	}
	for i, r := range m.Resources {
		rr, err := parseResource(r)
		if err == nil {
			err = checkResource(r, rr, schemas)
		}
		if _, ok := err.(*unservedError); ok {
			d.unserved++
		}
		if err != nil {
			path := fmt.Sprintf("spec.match.resources[%d]", i)
			errs = append(errs, d.errorf(path, "%s: %v", strings.TrimPrefix(path, "spec."), err))
			continue
		}
		p.rules = append(p.rules, rr)
	}
	p.ops = map[string]bool{}
	if len(m.Operations) == 0 {
		m.Operations = []string{"*"}
		p.Policy.Spec.Match.Operations = m.Operations
	}
	for i, op := range m.Operations {
		switch op {
		case "*":
			for _, o := range allOperations {
				p.ops[o] = true
			}
		case "CREATE", "UPDATE", "DELETE", "CONNECT":
			p.ops[op] = true
		default:
			errs = append(errs, d.errorf(fmt.Sprintf("spec.match.operations[%d]", i), "unknown operation %q: want CREATE, UPDATE, DELETE, CONNECT or \"*\"", op))
		}
	}
	var err error
	if p.nsSelector, err = selector(m.NamespaceSelector); err != nil {
		errs = append(errs, d.errorf("spec.match.namespaceSelector", "namespaceSelector: %v", err))
	}
	if p.objSelector, err = selector(m.ObjectSelector); err != nil {
		errs = append(errs, d.errorf("spec.match.objectSelector", "objectSelector: %v", err))
	}

	varNames := map[string]bool{}
	varsOK := true
	for i, v := range pol.Spec.Variables {
		path := fmt.Sprintf("spec.variables[%d].name", i)
		msg := ""
		switch {
		case v.Name == "":
			msg = "variable name is required"
		case varNames[v.Name]:
			msg = fmt.Sprintf("duplicate variable %q", v.Name)
		case !isCELIdentifier(v.Name):
			msg = fmt.Sprintf("variable name %q is not a CEL identifier", v.Name)
		}
		if msg != "" {
			errs = append(errs, d.errorf(path, "%s", msg))
			varsOK = false
		}
		varNames[v.Name] = true
	}
	// The CEL checks below need the variables' names, and the builtin's
	// its builtin; other errors above do not stop them, so that every error
	// of the policy is reported at once.
	if !varsOK {
		p.Err = errs
		return p, errs
	}

	env, verrs := newPolicyEnv(pol.Spec.Variables, schemas.policyKinds(p.rules))
	for _, e := range verrs {
		errs = append(errs, d.exprError(e))
	}
	if env == nil {
		p.Err = errs
		return p, errs
	}
	p.env = env
	for i, c := range m.Conditions {
		e, err := env.compile(fmt.Sprintf("spec.match.conditions[%d].expression", i), c.Expression, cel.BoolType)
		if err != nil {
			errs = append(errs, d.exprError(err))
			continue
		}
		e.name = c.Name
		if e.name == "" {
			e.name = fmt.Sprintf("conditions[%d]", i)
		}
		p.conditions = append(p.conditions, e)
	}

	if p.builtin == nil {
		p.Err = errs
		return p, errs
	}
	cc := &CompileContext{Policy: name, with: pol.Spec.With, failurePolicy: p.Policy.Spec.FailurePolicy, cel: env}
	action, err := b.Compile(cc)
	if err != nil {
		errs = append(errs, d.builtinErrors(err, cc)...)
	} else if action == nil {
		errs = append(errs, d.errorf("spec.with", "builtin %q compiled to no action", b.Name()))
	}
	p.action = action
	if env.warnings != nil {
		for _, w := range *env.warnings {
			e := d.exprError(w)
			e.Msg = "warning: " + e.Msg
			p.warnings = append(p.warnings, e)
		}
	}
	if len(errs) > 0 {
		p.Err = errs
	}
	p.setAutogen()
	return p, errs
}

// exprError locates a CEL compile error at its character in the expression
// when CEL says where, else at the expression's start.
func (d *document) exprError(err error) *Error {
	var ee *exprError
	if !errors.As(err, &ee) {
		return d.errorf("", "%v", err)
	}
	e := d.src.ErrorAt(d.src.PosIn(ee.field, ee.expr, ee.offset), strings.TrimPrefix(ee.field, "spec.")+": "+ee.msg)
	e.Policy = d.policy.Metadata.Name
	return e
}

// builtinErrors locates the error of a builtin's Compile: a CEL error in its
// expression, each error of DecodeWith at its field, another field error at
// its field, anything else at spec.with (spec.action when there is no with).
func (d *document) builtinErrors(err error, cc *CompileContext) ErrorList {
	// Several errors (errors.Join) are each located.
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		if _, fes := err.(source.FieldErrors); !fes {
			var errs ErrorList
			for _, e := range j.Unwrap() {
				errs = append(errs, d.builtinErrors(e, cc)...)
			}
			return errs
		}
	}
	var ee *exprError
	if errors.As(err, &ee) {
		return ErrorList{d.exprError(ee)}
	}
	if list, ok := err.(source.FieldErrors); ok {
		errs := make(ErrorList, len(list))
		for i, fe := range list {
			errs[i] = d.errorf("spec."+fe.Path, "%v", fe)
		}
		return errs
	}
	path := "spec.with"
	var fe *source.FieldError
	switch {
	case errors.As(err, &fe):
		path = "spec." + fe.Path
	case cc.firstField != nil:
		path = "spec." + cc.firstField.Path
	case len(d.policy.Spec.With) == 0:
		path = "spec.action" // no with at all: point at the builtin's name
	}
	return ErrorList{d.errorf(path, "%v", err)}
}

func selector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
		return nil, nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

func isCELIdentifier(s string) bool {
	for i, r := range s {
		if !(r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9')) {
			return false
		}
	}
	return s != ""
}
