package main

// `celadon convert`: ValidatingAdmissionPolicies, MutatingAdmissionPolicies
// and their bindings as Celadon policies.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/cel-go/common"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/parser"
	"github.com/spf13/cobra"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

func init() { rootCmd.AddCommand(newConvertCmd()) }

func newConvertCmd() *cobra.Command {
	var params []string
	var outDir, kubeconfig, kubeContext string
	var fromCluster bool
	cmd := &cobra.Command{
		Use:   "convert FILE|DIR|- ... [--params FILE|DIR] [--params-from-cluster] [--out-dir DIR]",
		Short: "Convert ValidatingAdmissionPolicies and MutatingAdmissionPolicies to Celadon policies",
		Long: `Convert reads ValidatingAdmissionPolicy, MutatingAdmissionPolicy and their
bindings (admissionregistration.k8s.io v1, v1beta1 or v1alpha1; files,
directories of *.yaml, *.yml and *.json, or - for stdin) and writes one
Celadon policy per policy and binding: named after the policy, or
<policy>.<binding> when the policy has several bindings, with
.<parameter> appended for a binding whose paramRef has a selector.

A binding's paramRef is resolved from the objects in --params and, with
--params-from-cluster, those the cluster holds, and the parameter object is
inlined as the policy variable "params": expressions' params become
variables.params. The values are those at conversion time.

The policies are compiled as celadon validate compiles them before they
are written. Notes on what changes in meaning are printed on stderr. Exit
status: 0 when every binding converts, 2 otherwise (nothing is written).`,
		Example: `  celadon convert vap.yaml binding.yaml --params params/ > policies/converted.yaml
  kubectl get validatingadmissionpolicies,validatingadmissionpolicybindings -o yaml | celadon convert -
  celadon convert vaps/ --out-dir policies/ && celadon validate -p policies/`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			docs, err := readConvertInputs(cmd.InOrStdin(), args)
			if err != nil {
				return usageErrorf("%v", err)
			}
			var paramObjs []paramObject
			for _, p := range params {
				objs, err := readParams(p)
				if err != nil {
					return usageErrorf("params: %v", err)
				}
				paramObjs = append(paramObjs, objs...)
			}
			if fromCluster {
				kinds, err := paramKinds(docs)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				cfg, err := convertRestConfig(kubeconfig, kubeContext)
				if err != nil {
					return err
				}
				objs, err := clusterParams(cmd.Context(), cfg, kinds)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				paramObjs = append(paramObjs, objs...)
			}
			out, notes, err := convert(docs, paramObjs)
			for _, n := range notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			// What celadon validate would refuse is not written: an
			// expression the engine does not support, a name too long.
			if _, err := engine.Compile([]engine.File{{Name: "<converted>", Data: out.yaml()}}, engine.Options{Registry: builtins.Registry()}); err != nil {
				n := printPolicyErrors(cmd.ErrOrStderr(), err)
				return &exitError{code: 2, err: fmt.Errorf("%d error%s in the converted policies", n, pluralS(n))}
			}
			if outDir == "" {
				_, err := cmd.OutOrStdout().Write(out.yaml())
				return err
			}
			for _, p := range out {
				data, err := marshalConverted(p)
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(outDir, p.policy.Metadata.Name+".yaml"), data, 0o644); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&params, "params", nil, "file or directory of parameter objects for paramRef (repeatable)")
	cmd.Flags().BoolVar(&fromCluster, "params-from-cluster", false, "also read parameter objects from the cluster: every object of each paramKind")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for --params-from-cluster (default $KUBECONFIG, ~/.kube/config, in-cluster)")
	cmd.Flags().StringVar(&kubeContext, "context", "", "the kubeconfig context for --params-from-cluster")
	cmd.Flags().StringVar(&outDir, "out-dir", "", "write each policy to DIR/<name>.yaml instead of stdout")
	return cmd
}

// convertDoc is one input document with where it came from.
type convertDoc struct {
	source string // file#n
	raw    []byte
	kind   string
}

// paramObject is one parameter object, as generic JSON.
type paramObject struct {
	source string
	obj    map[string]any
}

func (p paramObject) str(path ...string) string {
	var v any = p.obj
	for _, k := range path {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	s, _ := v.(string)
	return s
}

func (p paramObject) labels() labels.Set {
	meta, _ := p.obj["metadata"].(map[string]any)
	l, _ := meta["labels"].(map[string]any)
	out := labels.Set{}
	for k, v := range l {
		out[k], _ = v.(string)
	}
	return out
}

// splitDocs splits YAML (or JSON) into documents, unwrapping List kinds as
// kubectl get -o yaml writes them.
func splitDocs(name string, data []byte) ([]convertDoc, error) {
	var out []convertDoc
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		chunk, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		var head struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Items      []json.RawMessage `json:"items"`
		}
		if err := yaml.Unmarshal(chunk, &head); err != nil {
			return nil, fmt.Errorf("%s#%d: %v", name, n, err)
		}
		if head.APIVersion == "" && head.Kind == "" {
			continue // empty document or comments only
		}
		src := fmt.Sprintf("%s#%d", name, n)
		raw, err := yaml.YAMLToJSON(chunk)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", src, err)
		}
		if strings.HasSuffix(head.Kind, "List") && head.Items != nil {
			for i, it := range head.Items {
				var k struct {
					Kind string `json:"kind"`
				}
				_ = json.Unmarshal(it, &k)
				out = append(out, convertDoc{source: fmt.Sprintf("%s.items[%d]", src, i), raw: it, kind: k.Kind})
			}
			continue
		}
		out = append(out, convertDoc{source: src, raw: raw, kind: head.Kind})
	}
}

func readConvertInputs(stdin io.Reader, args []string) ([]convertDoc, error) {
	var docs []convertDoc
	for _, a := range args {
		if a == "-" {
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, err
			}
			d, err := splitDocs("<stdin>", data)
			if err != nil {
				return nil, err
			}
			docs = append(docs, d...)
			continue
		}
		files, err := engine.ReadFiles(a)
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("%s: no *.yaml, *.yml or *.json files", a)
		}
		for _, f := range files {
			d, err := splitDocs(f.Name, f.Data)
			if err != nil {
				return nil, err
			}
			docs = append(docs, d...)
		}
	}
	return docs, nil
}

func readParams(path string) ([]paramObject, error) {
	files, err := engine.ReadFiles(path)
	if err != nil {
		return nil, err
	}
	var out []paramObject
	for _, f := range files {
		docs, err := splitDocs(f.Name, f.Data)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			var obj map[string]any
			if err := json.Unmarshal(d.raw, &obj); err != nil {
				return nil, fmt.Errorf("%s: %v", d.source, err)
			}
			if meta, ok := obj["metadata"].(map[string]any); ok {
				delete(meta, "managedFields") // bookkeeping, not parameters
			}
			out = append(out, paramObject{source: d.source, obj: obj})
		}
	}
	return out, nil
}

// admissionPolicy is what a VAP and a MAP share, and what each has alone.
type admissionPolicy struct {
	source           string
	kind             string // ValidatingAdmissionPolicy or MutatingAdmissionPolicy
	name             string
	paramKind        *admissionregistrationv1.ParamKind
	match            *admissionregistrationv1.MatchResources
	matchConditions  []admissionregistrationv1.MatchCondition
	variables        []admissionregistrationv1.Variable
	failurePolicy    *admissionregistrationv1.FailurePolicyType
	validations      []admissionregistrationv1.Validation
	auditAnnotations []admissionregistrationv1.AuditAnnotation
	mutations        []admissionregistrationv1.Mutation
	reinvocation     admissionregistrationv1.ReinvocationPolicyType
}

type admissionBinding struct {
	source            string
	kind              string
	name              string
	policyName        string
	paramRef          *admissionregistrationv1.ParamRef
	match             *admissionregistrationv1.MatchResources
	validationActions []admissionregistrationv1.ValidationAction
}

// policyKindOf maps a binding kind to the kind of policy it binds.
var policyKindOf = map[string]string{
	"ValidatingAdmissionPolicyBinding": "ValidatingAdmissionPolicy",
	"MutatingAdmissionPolicyBinding":   "MutatingAdmissionPolicy",
}

// decodeAdmissionDocs sorts documents into policies and bindings. Every
// version decodes into v1's types: the fields convert reads are the same.
func decodeAdmissionDocs(docs []convertDoc) (map[string]*admissionPolicy, []*admissionBinding, error) {
	policies := map[string]*admissionPolicy{}
	var bindings []*admissionBinding
	for _, d := range docs {
		var head metav1.TypeMeta
		_ = json.Unmarshal(d.raw, &head)
		group, _, _ := strings.Cut(head.APIVersion, "/")
		if group != "admissionregistration.k8s.io" {
			return nil, nil, fmt.Errorf("%s: %s %s is not a ValidatingAdmissionPolicy, MutatingAdmissionPolicy or binding of one", d.source, head.APIVersion, head.Kind)
		}
		var err error
		if prev := policies[head.Kind+"/"+nameOf(d.raw)]; prev != nil {
			return nil, nil, fmt.Errorf("%s: %s %q is defined twice, first at %s", d.source, head.Kind, prev.name, prev.source)
		}
		switch head.Kind {
		case "ValidatingAdmissionPolicy":
			var v admissionregistrationv1.ValidatingAdmissionPolicy
			if err = json.Unmarshal(d.raw, &v); err == nil {
				policies[head.Kind+"/"+v.Name] = &admissionPolicy{
					source: d.source, kind: head.Kind, name: v.Name, paramKind: v.Spec.ParamKind,
					match: v.Spec.MatchConstraints, matchConditions: v.Spec.MatchConditions,
					variables: v.Spec.Variables, failurePolicy: v.Spec.FailurePolicy,
					validations: v.Spec.Validations, auditAnnotations: v.Spec.AuditAnnotations,
				}
			}
		case "MutatingAdmissionPolicy":
			var v admissionregistrationv1.MutatingAdmissionPolicy
			if err = json.Unmarshal(d.raw, &v); err == nil {
				policies[head.Kind+"/"+v.Name] = &admissionPolicy{
					source: d.source, kind: head.Kind, name: v.Name, paramKind: v.Spec.ParamKind,
					match: v.Spec.MatchConstraints, matchConditions: v.Spec.MatchConditions,
					variables: v.Spec.Variables, failurePolicy: v.Spec.FailurePolicy,
					mutations: v.Spec.Mutations, reinvocation: v.Spec.ReinvocationPolicy,
				}
			}
		case "ValidatingAdmissionPolicyBinding":
			var v admissionregistrationv1.ValidatingAdmissionPolicyBinding
			if err = json.Unmarshal(d.raw, &v); err == nil {
				bindings = append(bindings, &admissionBinding{
					source: d.source, kind: head.Kind, name: v.Name, policyName: v.Spec.PolicyName,
					paramRef: v.Spec.ParamRef, match: v.Spec.MatchResources, validationActions: v.Spec.ValidationActions,
				})
			}
		case "MutatingAdmissionPolicyBinding":
			var v admissionregistrationv1.MutatingAdmissionPolicyBinding
			if err = json.Unmarshal(d.raw, &v); err == nil {
				bindings = append(bindings, &admissionBinding{
					source: d.source, kind: head.Kind, name: v.Name, policyName: v.Spec.PolicyName,
					paramRef: v.Spec.ParamRef, match: v.Spec.MatchResources,
				})
			}
		default:
			return nil, nil, fmt.Errorf("%s: unknown kind %s %q: want ValidatingAdmissionPolicy, MutatingAdmissionPolicy or a binding of one", d.source, head.APIVersion, head.Kind)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s: %v", d.source, head.Kind, err)
		}
	}
	return policies, bindings, nil
}

func nameOf(raw []byte) string {
	var o metav1.PartialObjectMetadata
	_ = json.Unmarshal(raw, &o)
	return o.Name
}

// convertedPolicy is one output policy and what it came from.
type convertedPolicy struct {
	from   string
	policy engine.Policy
}

type convertedPolicies []convertedPolicy

func marshalConverted(p convertedPolicy) ([]byte, error) {
	data, err := yaml.Marshal(p.policy)
	if err != nil {
		return nil, err
	}
	return append([]byte("# Converted from "+p.from+".\n"), data...), nil
}

func (ps convertedPolicies) yaml() []byte {
	var b bytes.Buffer
	for i, p := range ps {
		if i > 0 {
			b.WriteString("---\n")
		}
		data, err := marshalConverted(p)
		if err != nil {
			panic(err) // engine.Policy always marshals
		}
		b.Write(data)
	}
	return b.Bytes()
}

// convert converts every binding; notes say where meaning changes.
func convert(docs []convertDoc, params []paramObject) (convertedPolicies, []string, error) {
	policies, bindings, err := decodeAdmissionDocs(docs)
	if err != nil {
		return nil, nil, err
	}
	var notes []string
	count := map[string]int{}
	for _, b := range bindings {
		count[policyKindOf[b.kind]+"/"+b.policyName]++
	}
	keys := make([]string, 0, len(policies))
	for k := range policies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if count[k] == 0 {
			notes = append(notes, fmt.Sprintf("%s: %s has no binding, so it applies to nothing: not converted", policies[k].source, k))
		}
	}
	var out convertedPolicies
	for _, b := range bindings {
		key := policyKindOf[b.kind] + "/" + b.policyName
		p := policies[key]
		if p == nil {
			return nil, notes, fmt.Errorf("%s: %s %q binds %s, which is not in the input", b.source, b.kind, b.name, key)
		}
		name := p.name
		if count[key] > 1 {
			name = p.name + "." + b.name
		}
		ps, n, err := convertPair(p, b, name, params)
		notes = append(notes, n...)
		if err != nil {
			return nil, notes, fmt.Errorf("%s %q: %w", b.kind, b.name, err)
		}
		out = append(out, ps...)
	}
	return out, notes, nil
}

// convertPair converts one policy and binding: one Celadon policy, or one
// per parameter object a paramRef selector matches.
func convertPair(p *admissionPolicy, b *admissionBinding, name string, params []paramObject) ([]convertedPolicy, []string, error) {
	var notes []string
	note := func(format string, args ...any) {
		notes = append(notes, fmt.Sprintf("%s %q: ", b.kind, b.name)+fmt.Sprintf(format, args...))
	}
	spec := engine.PolicySpec{}
	if p.match == nil || len(p.match.ResourceRules) == 0 {
		return nil, nil, fmt.Errorf("%s %q: spec.matchConstraints.resourceRules is required", p.kind, p.name)
	}
	m, err := convertMatch(p.match, "spec.matchConstraints")
	if err != nil {
		return nil, nil, fmt.Errorf("%s %q: %w", p.kind, p.name, err)
	}
	if b.match != nil {
		if err := intersectMatch(&m, b.match); err != nil {
			return nil, nil, err
		}
	}
	for _, mr := range []*admissionregistrationv1.MatchResources{p.match, b.match} {
		if mr != nil && mr.MatchPolicy != nil && *mr.MatchPolicy == admissionregistrationv1.Exact {
			note("matchPolicy Exact: Celadon's webhook configurations match Equivalent, so a request for another version of the resources (rewritten to one listed) is matched too")
		}
	}
	for _, c := range p.matchConditions {
		m.Conditions = append(m.Conditions, engine.Condition{Name: c.Name, Expression: c.Expression})
	}
	spec.Match = m
	for _, v := range p.variables {
		if v.Name == "params" && p.paramKind != nil {
			return nil, nil, fmt.Errorf("%s %q: a variable is named params, the name convert gives the parameter object", p.kind, p.name)
		}
		spec.Variables = append(spec.Variables, engine.Variable{Name: v.Name, Expression: v.Expression})
	}
	// The API server's default is Fail for both kinds; Celadon's is Ignore
	// for mutating builtins, so it is always written.
	spec.FailurePolicy = engine.Fail
	if p.failurePolicy != nil && *p.failurePolicy == admissionregistrationv1.Ignore {
		spec.FailurePolicy = engine.Ignore
	}
	// The API server runs a VAP or a MAP on pods on pods only: no autogen
	// onto the pod templates of Deployments and the other controllers.
	if slices.Contains(spec.Match.Resources, "pods") {
		spec.Autogen = ptr.To(false)
	}
	var with any
	if p.kind == "ValidatingAdmissionPolicy" {
		spec.Action = "validate"
		spec.Enforcement, err = enforcement(b.validationActions, note)
		if err != nil {
			return nil, notes, err
		}
		with = struct {
			Validations      []admissionregistrationv1.Validation      `json:"validations,omitempty"`
			AuditAnnotations []admissionregistrationv1.AuditAnnotation `json:"auditAnnotations,omitempty"`
		}{p.validations, p.auditAnnotations}
	} else {
		spec.Action = "mutate"
		if p.reinvocation == admissionregistrationv1.NeverReinvocationPolicy {
			note("reinvocationPolicy Never: Celadon reinvokes its mutating policies as IfNeeded does")
		}
		with = struct {
			Mutations []admissionregistrationv1.Mutation `json:"mutations"`
		}{p.mutations}
	}
	if spec.With, err = json.Marshal(with); err != nil {
		return nil, notes, err
	}
	from := fmt.Sprintf("%s %s and %s %s", p.kind, p.name, b.kind, b.name)
	newPolicy := func(name string, s engine.PolicySpec) convertedPolicy {
		return convertedPolicy{from: from, policy: engine.Policy{
			APIVersion: engine.APIVersion, Kind: engine.Kind,
			Metadata: engine.PolicyMetadata{Name: name}, Spec: s,
		}}
	}
	if p.paramKind == nil {
		if b.paramRef != nil {
			note("paramRef ignored: the policy has no paramKind")
		}
		return []convertedPolicy{newPolicy(name, spec)}, notes, nil
	}
	if b.paramRef == nil {
		return nil, notes, fmt.Errorf("no paramRef, but %s %q has paramKind %s", p.kind, p.name, p.paramKind.Kind)
	}
	found, err := findParams(p.paramKind, b.paramRef, params)
	if err != nil {
		return nil, notes, err
	}
	if len(found) == 0 {
		if b.paramRef.ParameterNotFoundAction != nil && *b.paramRef.ParameterNotFoundAction == admissionregistrationv1.AllowAction {
			note("no %s parameter matches paramRef, whose parameterNotFoundAction Allow admits every request: not converted", p.paramKind.Kind)
			return nil, notes, nil
		}
		return nil, notes, fmt.Errorf("no %s %s parameter in --params matches paramRef %s", p.paramKind.APIVersion, p.paramKind.Kind, describeParamRef(b.paramRef))
	}
	var out []convertedPolicy
	for _, po := range found {
		s, err := withParams(spec, po.obj)
		if err != nil {
			return nil, notes, fmt.Errorf("%s: %w", po.source, err)
		}
		n := name
		if b.paramRef.Selector != nil {
			n = name + "." + po.str("metadata", "name")
		}
		out = append(out, newPolicy(n, s))
	}
	return out, notes, nil
}

func describeParamRef(r *admissionregistrationv1.ParamRef) string {
	var parts []string
	if r.Namespace != "" {
		parts = append(parts, "namespace "+r.Namespace)
	}
	if r.Name != "" {
		parts = append(parts, "name "+r.Name)
	}
	if r.Selector != nil {
		s, _ := metav1.LabelSelectorAsSelector(r.Selector)
		parts = append(parts, fmt.Sprintf("selector %q", s.String()))
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// findParams returns the parameter objects paramRef names, sorted by name.
func findParams(kind *admissionregistrationv1.ParamKind, ref *admissionregistrationv1.ParamRef, params []paramObject) ([]paramObject, error) {
	var sel labels.Selector
	if ref.Selector != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(ref.Selector); err != nil {
			return nil, fmt.Errorf("paramRef.selector: %v", err)
		}
	} else if ref.Name == "" {
		return nil, fmt.Errorf("paramRef needs a name or a selector")
	}
	var out []paramObject
	for _, po := range params {
		if po.str("apiVersion") != kind.APIVersion || po.str("kind") != kind.Kind {
			continue
		}
		ns := po.str("metadata", "namespace")
		if ref.Namespace == "" && ns != "" {
			// The API server would look in the request's namespace.
			return nil, fmt.Errorf("%s: paramRef has no namespace and %s %s/%s is namespaced: the API server would read the parameter from each request's namespace, which convert cannot; set paramRef.namespace", po.source, kind.Kind, ns, po.str("metadata", "name"))
		}
		if ns != ref.Namespace {
			continue
		}
		if ref.Name != "" && po.str("metadata", "name") != ref.Name {
			continue
		}
		if sel != nil && !sel.Matches(po.labels()) {
			continue
		}
		out = append(out, po)
	}
	slices.SortFunc(out, func(a, b paramObject) int {
		return strings.Compare(a.str("metadata", "name"), b.str("metadata", "name"))
	})
	return out, nil
}

// withParams returns spec with the parameter object as variable "params",
// first, and every expression's params read as variables.params.
func withParams(spec engine.PolicySpec, obj map[string]any) (engine.PolicySpec, error) {
	lit, err := celLiteral(obj)
	if err != nil {
		return spec, err
	}
	out := spec
	out.Variables = append([]engine.Variable{{Name: "params", Expression: lit}}, spec.Variables...)
	for i := 1; i < len(out.Variables); i++ {
		if out.Variables[i].Expression, err = rewriteParams(out.Variables[i].Expression); err != nil {
			return spec, fmt.Errorf("variable %s: %w", out.Variables[i].Name, err)
		}
	}
	out.Match.Conditions = slices.Clone(spec.Match.Conditions)
	for i := range out.Match.Conditions {
		if out.Match.Conditions[i].Expression, err = rewriteParams(out.Match.Conditions[i].Expression); err != nil {
			return spec, fmt.Errorf("matchCondition %s: %w", out.Match.Conditions[i].Name, err)
		}
	}
	// Rewrite the builtin's arguments through their generic form: every
	// expression field of validations, auditAnnotations and mutations.
	var with map[string][]map[string]any
	if err := json.Unmarshal(spec.With, &with); err != nil {
		return spec, err
	}
	for _, list := range with {
		for _, item := range list {
			for _, holder := range []map[string]any{item, asMap(item["applyConfiguration"]), asMap(item["jsonPatch"])} {
				for _, key := range []string{"expression", "messageExpression", "valueExpression"} {
					if s, ok := holder[key].(string); ok {
						if holder[key], err = rewriteParams(s); err != nil {
							return spec, err
						}
					}
				}
			}
		}
	}
	if out.With, err = json.Marshal(with); err != nil {
		return spec, err
	}
	return out, nil
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

var paramsParser = func() *parser.Parser {
	p, err := parser.NewParser(parser.Macros(parser.AllMacros...), parser.EnableOptionalSyntax(true))
	if err != nil {
		panic(err)
	}
	return p
}()

// rewriteParams replaces each identifier params in a CEL expression with
// variables.params, in place, so that the rest of the text is unchanged.
func rewriteParams(expr string) (string, error) {
	if !strings.Contains(expr, "params") {
		return expr, nil
	}
	a, errs := paramsParser.Parse(common.NewTextSource(expr))
	if errs != nil && len(errs.GetErrors()) > 0 {
		return "", fmt.Errorf("%q: %s", expr, errs.ToDisplayString())
	}
	var offsets []int32
	var shadowed bool
	celast.PreOrderVisit(a.Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		switch e.Kind() {
		case celast.IdentKind:
			if e.AsIdent() == "params" {
				offsets = append(offsets, a.SourceInfo().OffsetRanges()[e.ID()].Start)
			}
		case celast.ComprehensionKind:
			c := e.AsComprehension()
			if c.IterVar() == "params" || c.IterVar2() == "params" || c.AccuVar() == "params" {
				shadowed = true
			}
		}
	}))
	if shadowed {
		return "", fmt.Errorf("%q: a macro variable named params hides the parameter object", expr)
	}
	// Offsets count code points; replace from the end so earlier ones hold.
	sort.Slice(offsets, func(i, j int) bool { return offsets[i] > offsets[j] })
	runes := []rune(expr)
	for _, off := range slices.Compact(offsets) {
		runes = slices.Insert(runes, int(off), []rune("variables.")...)
	}
	return string(runes), nil
}

// celLiteral writes a JSON value as a CEL literal. CEL's aggregate
// literals must be of one type, so the items of a map or list of mixed
// types are wrapped in dyn().
func celLiteral(v any) (string, error) {
	lit, _, err := celLiteralTyped(v)
	return lit, err
}

// celLiteralTyped returns v's literal and its CEL type, written out.
func celLiteralTyped(v any) (lit, typ string, err error) {
	switch x := v.(type) {
	case nil:
		return "null", "null_type", nil
	case bool:
		return strconv.FormatBool(x), "bool", nil
	case string:
		return strconv.Quote(x), "string", nil
	case float64:
		if x >= -1<<53 && x <= 1<<53 && x == float64(int64(x)) {
			return strconv.FormatInt(int64(x), 10), "int", nil
		}
		s := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		return s, "double", nil
	case []any:
		lits, elem, err := celItems(len(x), func(i int) any { return x[i] })
		if err != nil {
			return "", "", err
		}
		return "[" + strings.Join(lits, ", ") + "]", "list(" + elem + ")", nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		lits, elem, err := celItems(len(keys), func(i int) any { return x[keys[i]] })
		if err != nil {
			return "", "", err
		}
		for i, k := range keys {
			lits[i] = strconv.Quote(k) + ": " + lits[i]
		}
		return "{" + strings.Join(lits, ", ") + "}", "map(string, " + elem + ")", nil
	}
	return "", "", fmt.Errorf("parameter value %v of type %T", v, v)
}

// celItems writes n items, wrapped in dyn() unless all are of one type.
func celItems(n int, item func(int) any) (lits []string, elem string, err error) {
	types := make([]string, n)
	lits = make([]string, n)
	for i := range n {
		if lits[i], types[i], err = celLiteralTyped(item(i)); err != nil {
			return nil, "", err
		}
	}
	if n == 0 {
		return lits, "dyn", nil
	}
	if len(slices.Compact(slices.Clone(types))) == 1 && !slices.Contains(types, "null_type") {
		return lits, types[0], nil
	}
	for i := range lits {
		lits[i] = "dyn(" + lits[i] + ")"
	}
	return lits, "dyn", nil
}

// enforcement maps a binding's validationActions to Celadon's one
// enforcement: the strongest of them, with a note when others are dropped.
func enforcement(actions []admissionregistrationv1.ValidationAction, note func(string, ...any)) (engine.Enforcement, error) {
	set := map[admissionregistrationv1.ValidationAction]bool{}
	for _, a := range actions {
		switch a {
		case admissionregistrationv1.Deny, admissionregistrationv1.Warn, admissionregistrationv1.Audit:
			set[a] = true
		default:
			return "", fmt.Errorf("validationActions: unknown action %q", a)
		}
	}
	switch {
	case len(set) == 0:
		return "", fmt.Errorf("validationActions is required")
	case set[admissionregistrationv1.Deny] && set[admissionregistrationv1.Warn]:
		return "", fmt.Errorf("validationActions: Deny and Warn may not be used together")
	case set[admissionregistrationv1.Deny]:
		if set[admissionregistrationv1.Audit] {
			note("validationActions [Deny, Audit] converted to enforcement Deny: a policy has one enforcement, and the Audit action's record of the violation is dropped")
		}
		return engine.Deny, nil
	case set[admissionregistrationv1.Warn]:
		if set[admissionregistrationv1.Audit] {
			note("validationActions [Warn, Audit] converted to enforcement Warn: a policy has one enforcement, and the Audit action's record of the violation is dropped")
		}
		return engine.Warn, nil
	}
	return engine.Audit, nil
}

// convertMatch converts a MatchResources into a Match. Rules Celadon's
// resources × operations cannot say exactly become a condition on request.
func convertMatch(mr *admissionregistrationv1.MatchResources, field string) (engine.Match, error) {
	var m engine.Match
	m.NamespaceSelector = nonEmptySelector(mr.NamespaceSelector)
	m.ObjectSelector = nonEmptySelector(mr.ObjectSelector)
	exact := true
	var ops []string
	resources := map[string]bool{}
	for i, r := range mr.ResourceRules {
		if err := checkRule(r, fmt.Sprintf("%s.resourceRules[%d]", field, i)); err != nil {
			return m, err
		}
		o := opStrings(r.Operations)
		if i == 0 {
			ops = o
		} else if !slices.Equal(ops, o) {
			exact = false
			ops = union(ops, o)
		}
		if len(r.ResourceNames) > 0 {
			exact = false
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				entry, ok := resourceEntry(g, res)
				if !ok {
					exact = false
				}
				resources[entry] = true
			}
		}
	}
	m.Resources = sortedKeys(resources)
	m.Operations = ops
	if slices.Contains(ops, "*") {
		m.Operations = nil
	}
	if !exact {
		m.Conditions = append(m.Conditions, engine.Condition{Name: field + ".resourceRules", Expression: rulesExpr(mr.ResourceRules)})
	}
	if len(mr.ExcludeResourceRules) > 0 {
		for i, r := range mr.ExcludeResourceRules {
			if err := checkRule(r, fmt.Sprintf("%s.excludeResourceRules[%d]", field, i)); err != nil {
				return m, err
			}
		}
		m.Conditions = append(m.Conditions, engine.Condition{Name: field + ".excludeResourceRules", Expression: "!(" + rulesExpr(mr.ExcludeResourceRules) + ")"})
	}
	return m, nil
}

// intersectMatch narrows m by a binding's matchResources: selectors are
// merged (both must match), rules become conditions.
func intersectMatch(m *engine.Match, mr *admissionregistrationv1.MatchResources) error {
	b, err := convertMatch(mr, "binding.spec.matchResources")
	if err != nil {
		return err
	}
	m.NamespaceSelector = andSelectors(m.NamespaceSelector, b.NamespaceSelector)
	m.ObjectSelector = andSelectors(m.ObjectSelector, b.ObjectSelector)
	if len(mr.ResourceRules) > 0 {
		m.Conditions = append(m.Conditions, engine.Condition{Name: "binding.spec.matchResources.resourceRules", Expression: rulesExpr(mr.ResourceRules)})
	}
	for _, c := range b.Conditions {
		if strings.HasSuffix(c.Name, "excludeResourceRules") {
			m.Conditions = append(m.Conditions, c)
		}
	}
	return nil
}

func checkRule(r admissionregistrationv1.NamedRuleWithOperations, field string) error {
	if r.Scope != nil && *r.Scope != admissionregistrationv1.AllScopes {
		return fmt.Errorf("%s.scope %s: not supported; Celadon matches either scope", field, *r.Scope)
	}
	if len(r.APIGroups) == 0 || len(r.Resources) == 0 || len(r.Operations) == 0 {
		return fmt.Errorf("%s: apiGroups, resources and operations are required", field)
	}
	return nil
}

func nonEmptySelector(s *metav1.LabelSelector) *metav1.LabelSelector {
	if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
		return nil
	}
	return s
}

// andSelectors returns a selector matching what both match; a label both
// set to different values becomes two In requirements, which nothing meets.
func andSelectors(a, b *metav1.LabelSelector) *metav1.LabelSelector {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	out := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for _, s := range []*metav1.LabelSelector{a, b} {
		for k, v := range s.MatchLabels {
			if prev, ok := out.MatchLabels[k]; ok && prev != v {
				out.MatchExpressions = append(out.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpIn, Values: []string{v}})
				continue
			}
			out.MatchLabels[k] = v
		}
		out.MatchExpressions = append(out.MatchExpressions, s.MatchExpressions...)
	}
	return out
}

// resourceEntry writes a rule's group and resource as a match.resources
// entry; ok is false when none says exactly that, and the entry is then a
// wildcard covering it.
func resourceEntry(group, res string) (string, bool) {
	sub := strings.Contains(res, "/")
	wild := "*"
	if sub {
		wild = "*/*"
	}
	switch {
	case group == "*" && (res == "*" || res == "*/*"):
		return res, true
	case group == "*":
		return wild, false
	case group == "":
		return res, true
	case sub || strings.Contains(group, "."):
		return group + "/" + res, true
	}
	// An undotted group reads as a resource unless it is built in.
	if e := group + "/" + res; isGroupResource(e) {
		return e, true
	}
	return wild, false
}

func isGroupResource(entry string) bool {
	switch strings.SplitN(entry, "/", 2)[0] {
	case "apps", "batch", "autoscaling", "policy", "extensions":
		return true
	}
	return false
}

func opStrings(ops []admissionregistrationv1.OperationType) []string {
	out := make([]string, len(ops))
	for i, o := range ops {
		out[i] = string(o)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func union(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	sort.Strings(out)
	return slices.Compact(out)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// subResource reads the request's subresource: absent, not empty, when
// there is none.
const subResource = `request.?subResource.orValue("")`

// rulesExpr is a CEL condition true when a request matches one of rules.
func rulesExpr(rules []admissionregistrationv1.NamedRuleWithOperations) string {
	var ors []string
	for _, r := range rules {
		var ands []string
		if !slices.Contains(r.APIGroups, "*") {
			ands = append(ands, "request.resource.group in "+celStrings(r.APIGroups))
		}
		var resOrs []string
		all := false
		for _, res := range r.Resources {
			name, sub, hasSub := strings.Cut(res, "/")
			var c []string
			if name != "*" {
				c = append(c, "request.resource.resource == "+strconv.Quote(name))
			}
			switch {
			case !hasSub:
				c = append(c, subResource+` == ""`)
			case sub != "*":
				c = append(c, subResource+" == "+strconv.Quote(sub))
			case name != "*":
				c = append(c, subResource+` != ""`)
			}
			if len(c) == 0 {
				all = true // "*/*": every resource
			}
			resOrs = append(resOrs, strings.Join(c, " && "))
		}
		switch {
		case all:
		case len(resOrs) == 1:
			ands = append(ands, resOrs[0])
		case len(resOrs) > 1:
			ands = append(ands, "(("+strings.Join(resOrs, ") || (")+"))")
		}
		if ops := opStrings(r.Operations); !slices.Contains(ops, "*") {
			ands = append(ands, "request.operation in "+celStrings(ops))
		}
		if len(r.ResourceNames) > 0 {
			ands = append(ands, "request.name in "+celStrings(r.ResourceNames))
		}
		if len(ands) == 0 {
			return "true"
		}
		ors = append(ors, strings.Join(ands, " && "))
	}
	if len(ors) == 1 {
		return ors[0]
	}
	return "(" + strings.Join(ors, ") || (") + ")"
}

func celStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
