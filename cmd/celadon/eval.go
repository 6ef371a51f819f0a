package main

// `celadon eval`: run policies offline against objects or an
// AdmissionReview, and show what the webhook would answer.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/webhook"
)

func init() { rootCmd.AddCommand(newEvalCmd()) }

// Output formats of eval: -o.
var evalOutputs = []outputFormat{
	{"text", "each policy's result, the decision, the patch and a diff"},
	{"yaml", "the resulting objects, as YAML"},
	{"json", "the resulting objects, as JSON"},
	{"patch", "each request's JSON patch"},
	{"review", "each AdmissionReview the webhook would answer"},
	{"results", "each request's decision, policy results, patch and object, as JSON"},
}

type evalOptions struct {
	policies    string
	file        string
	old         string
	request     string
	operation   string
	nsLabels    string
	cluster     []string
	user        string
	subresource string
	output      string
	exceptions  exceptionFlags
}

func newEvalCmd() *cobra.Command { return newEvalCmdFor(&evalOptions{}) }

func newEvalCmdFor(o *evalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "eval -p POLICIES (-f OBJECTS [--old OLD] | --old OLD | --request REVIEW)",
		Short: "Evaluate policies against objects or an AdmissionReview, offline",
		Long: `Eval runs policies against Kubernetes objects, or against an AdmissionReview,
exactly as the webhook would, and shows each policy's result, the decision,
the JSON patch and the object before and after.

Each object in OBJECTS (YAML documents separated by "---", concatenated JSON,
or the items of a List) is evaluated as its own admission request, built as
the API server builds it. The operation is CREATE; UPDATE when --old is given
with -f (objects and old objects pair up in order); DELETE when only --old is
given. Mutating policies run first, in file order, then validating ones on
the mutated object, as in the API server's admission chain, all in one pass.
In a cluster, each failurePolicy has webhooks of its own: the API server calls
the mutating one of Fail policies before that of Ignore policies, and the
validating ones in parallel, returning one of their denials where eval joins
them all.

Cluster state comes from --cluster: files or directories of objects
(Services, Secrets, IngressClasses, Namespaces...) that builtins looking
objects up read, as the server reads its caches. A Namespace there is the
request's namespace with its own labels; any other namespace exists with the
labels of --namespace-labels. Every namespace has kubernetes.io/metadata.name.

Output (-o): text, for people; yaml and json, the resulting objects only
(as admitted: patched, or unchanged when denied; none for DELETE); patch,
each request's JSON patch; review, the AdmissionReview the webhook would send
back; results, for programs: per request, one JSON object
  {"source", "request": {"operation", "kind", "resource", "subResource",
   "namespace", "name", "user"}, "allowed", "message", "warnings",
   "auditAnnotations", "results": [{"policy", "action", "state",
   "enforcement", "reason", "patchOperations", "panicked", "exception"}],
   "patch", "object"}
with every key always present ("object" null for DELETE).

Exceptions: PolicyException documents among the policies apply, and
-e EXCEPTIONS adds an exceptions directory (or file) read as
"celadon serve --exceptions-dir" reads it, its rules included. An excepted
policy is a skip whose reason names the exception; one that expires within
7 days also warns. --now evaluates at another time than now: what happens
once an exception has expired.

Exit status: 0 when every request is allowed, 1 when one is denied, 2 for bad
usage, unreadable input or a policy error.`,
		Example: `  celadon eval -p policies/ -f pod.yaml
  celadon eval -p policies/ -f deploy.yaml --old deploy-old.yaml -o patch
  celadon eval -p policies/sts-index.yaml -f pod.yaml --namespace-labels team=a,env=prod -o yaml
  celadon eval -p policies/ -f ingress.yaml --cluster services.yaml,classes.yaml
  celadon eval -p policies/ --old deploy.yaml              # DELETE
  celadon eval -p policies/ --request review.json -o review
  celadon eval -p policies/ -f pods.yaml -o results | jq '.results[] | select(.state != "pass")'
  celadon eval -p policies/ -e exceptions/ -f pod.yaml --now 2026-04-01T00:00:00Z`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	f := cmd.Flags()
	f.StringVarP(&o.policies, "policies", "p", "", "policy file or directory (required)")
	f.StringVarP(&o.file, "filename", "f", "", `objects to evaluate: YAML or JSON, many documents allowed ("-" reads stdin)`)
	f.StringVar(&o.old, "old", "", "old objects, for UPDATE (with -f) or DELETE (alone)")
	f.StringVar(&o.request, "request", "", "an AdmissionReview (admission.k8s.io/v1 or v1beta1) to evaluate instead of -f")
	f.StringVar(&o.operation, "operation", "", "CREATE, UPDATE, DELETE or CONNECT (default CREATE; UPDATE with -f and --old; DELETE with --old alone)")
	f.StringVar(&o.nsLabels, "namespace-labels", "", "labels of the request's namespace, as key=value,... (for namespaceSelector and namespaceObject)")
	f.StringSliceVar(&o.cluster, "cluster", nil, "objects in the cluster, for builtins that look objects up: files or directories, repeated or comma-separated")
	f.StringVar(&o.user, "user", defaultUser, "username of the requesting user (groups system:masters, system:authenticated)")
	f.StringVar(&o.subresource, "subresource", "", `subresource of the request, e.g. "status"`)
	o.exceptions.add(cmd)
	addOutputFlag(cmd, &o.output, evalOutputs)
	return cmd
}

// evalCase is one admission request and its decision.
type evalCase struct {
	source     string
	apiVersion string // of the AdmissionReview
	req        *admissionv1.AdmissionRequest
	before     map[string]any // the object as sent; nil for DELETE
	decision   *engine.Decision
	patched    map[string]any     // the decision's object
	calls      []controllers.Call // the generated webhooks the API server would call
	resourceOK bool               // the kind is known to client-go, so the resource is not a guess
}

// after returns the object as the API server would persist it: with the
// patch applied when allowed, unchanged when denied; nil for DELETE.
func (c *evalCase) after() map[string]any {
	if c.decision.Allowed && c.patched != nil {
		return c.patched
	}
	return c.before
}

func (o *evalOptions) run(cmd *cobra.Command) error {
	cases, pushdown, err := o.evaluate(cmd)
	if err != nil {
		return err
	}
	denied := 0
	for _, c := range cases {
		if !c.decision.Allowed {
			denied++
		}
	}
	out := cmd.OutOrStdout()
	switch o.output {
	case "text":
		err = writeText(out, cases, pushdown)
	case "yaml", "json":
		err = writeObjects(out, cases, o.output)
	case "patch":
		err = writePatches(out, cases)
	case "review":
		err = writeReviews(out, cases)
	case "results":
		err = writeResults(out, cases)
	}
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if denied > 0 {
		// The formats that do not carry the denial say it on stderr.
		if o.output != "text" && o.output != "review" && o.output != "results" {
			for _, c := range cases {
				if !c.decision.Allowed {
					fmt.Fprintf(cmd.ErrOrStderr(), "celadon: %s: denied: %s\n", c.source, c.decision.Message)
				}
			}
		}
		return &exitError{code: 1}
	}
	return nil
}

// simulatedService is the Service of the webhook configurations eval
// simulates the API server's calls with.
var simulatedService = controllers.ServiceRef{Namespace: "celadon", Name: "celadon"}

// evaluate evaluates the requests of the flags, and says for each which
// generated webhooks the API server would call, and for each policy what
// is pushed down to it.
func (o *evalOptions) evaluate(cmd *cobra.Command) ([]*evalCase, []controllers.PolicyPushdown, error) {
	ev, err := o.evaluator(cmd)
	if err != nil {
		return nil, nil, err
	}
	cases, err := o.cases(cmd)
	if err != nil {
		return nil, nil, err
	}
	for _, c := range cases {
		if err := ev.evaluate(cmd.Context(), c); err != nil {
			return nil, nil, &exitError{code: 2, err: fmt.Errorf("%s: %v", c.source, err)}
		}
	}
	return cases, ev.pushdown, nil
}

// evaluator evaluates requests as the server and the API server would.
type evaluator struct {
	snap     *engine.Snapshot
	opts     engine.EvalOptions
	mwc      *admissionregistrationv1.MutatingWebhookConfiguration
	vwc      *admissionregistrationv1.ValidatingWebhookConfiguration
	pushdown []controllers.PolicyPushdown
}

func (o *evalOptions) evaluator(cmd *cobra.Command) (*evaluator, error) {
	if o.policies == "" {
		return nil, usageErrorf("eval: -p/--policies is required")
	}
	labels, err := parseLabels(o.nsLabels)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	now, err := o.exceptions.clock()
	if err != nil {
		return nil, err
	}
	ev := &evaluator{}
	if ev.snap, err = loadPolicies(cmd, o.policies); err != nil {
		return nil, err
	}
	exceptions, err := o.exceptions.load(cmd, now)
	if err != nil {
		return nil, err
	}
	if ev.mwc, ev.vwc, err = controllers.Configurations(ev.snap, controllers.ConfigOptions{Service: &simulatedService}); err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	if ev.pushdown, err = controllers.Pushdown(ev.snap); err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	cluster := newOfflineCluster()
	cluster.otherNamespaces = flagNamespaces{labels: labels}
	if err := loadCluster(cluster, o.cluster); err != nil {
		return nil, usageErrorf("--cluster: %v", err)
	}
	ev.opts = engine.EvalOptions{Phase: engine.PhaseAll, Namespaces: cluster, Exceptions: exceptions, Now: func() time.Time { return now }}
	if len(o.cluster) > 0 {
		// Without --cluster, builtins that look objects up get no cluster
		// at all: an error under their failurePolicy, not a cluster that
		// has nothing.
		ev.opts.Cluster = cluster
	}
	return ev, nil
}

// evaluate fills in the case's decision, patched object and calls.
func (ev *evaluator) evaluate(ctx context.Context, c *evalCase) error {
	d, err := ev.snap.Evaluate(ctx, c.req, ev.opts)
	if err != nil {
		return err
	}
	c.decision = d
	if c.patched, err = d.Object(); err != nil {
		return err
	}
	var nsLabels map[string]string
	if c.req.Namespace != "" {
		if ns, err := ev.opts.Namespaces.GetNamespace(ctx, c.req.Namespace); err == nil {
			nsLabels = ns.Labels
		}
	}
	c.calls, err = controllers.SimulateCalls(ev.mwc, ev.vwc, c.req, nsLabels)
	return err
}

// cases builds the admission requests from the flags.
func (o *evalOptions) cases(cmd *cobra.Command) ([]*evalCase, error) {
	if o.request != "" {
		if o.file != "" || o.old != "" {
			return nil, usageErrorf("--request cannot be combined with -f or --old")
		}
		for _, name := range []string{"operation", "user", "subresource"} {
			if cmd.Flags().Changed(name) {
				return nil, usageErrorf("--%s applies to -f and --old; the review's request already says it", name)
			}
		}
		rv, err := loadReview(o.request)
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		c := &evalCase{source: o.request, apiVersion: rv.APIVersion, req: rv.Request, resourceOK: true}
		if c.before, err = decodeObjectJSON(rv.Request.Object.Raw); err != nil {
			return nil, usageErrorf("%s: request.object: %v", o.request, err)
		}
		return []*evalCase{c}, nil
	}
	if o.file == "" && o.old == "" {
		return nil, usageErrorf("eval: give objects with -f (and --old), or an AdmissionReview with --request")
	}
	if o.file == "-" && o.old == "-" {
		return nil, usageErrorf("-f and --old cannot both read standard input")
	}
	op := admissionv1.Create
	switch {
	case o.operation != "":
		var err error
		if op, err = parseOperation(o.operation); err != nil {
			return nil, usageErrorf("%v", err)
		}
	case o.file != "" && o.old != "":
		op = admissionv1.Update
	case o.old != "":
		op = admissionv1.Delete
	}
	var objs, olds []inputObject
	var err error
	if o.file != "" {
		if objs, err = loadObjects(o.file); err != nil {
			return nil, usageErrorf("%v", err)
		}
	}
	if o.old != "" {
		if olds, err = loadObjects(o.old); err != nil {
			return nil, usageErrorf("%v", err)
		}
	}
	switch op {
	case admissionv1.Create, admissionv1.Connect:
		if o.old != "" {
			return nil, usageErrorf("--old makes no sense for %s", op)
		}
		if o.file == "" {
			return nil, usageErrorf("%s needs the object: -f", op)
		}
	case admissionv1.Update:
		if o.file == "" || o.old == "" {
			return nil, usageErrorf("UPDATE needs the new objects (-f) and the old ones (--old)")
		}
		if len(objs) != len(olds) {
			return nil, usageErrorf("UPDATE pairs objects with old objects in order, but %s has %d and %s has %d", o.file, len(objs), o.old, len(olds))
		}
	case admissionv1.Delete:
		switch {
		case o.file != "" && o.old != "":
			return nil, usageErrorf("DELETE has no new object: give the objects being deleted with --old only")
		case o.old == "":
			olds, objs = objs, nil // the objects being deleted, given with -f
		}
	}
	ropts := requestOptions{Operation: op, SubResource: o.subresource, User: o.user}
	n := max(len(objs), len(olds))
	cases := make([]*evalCase, 0, n)
	for i := range n {
		var obj, old *inputObject
		if i < len(objs) {
			obj = &objs[i]
		}
		if i < len(olds) {
			old = &olds[i]
		}
		req, err := buildRequest(i+1, obj, old, ropts)
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		c := &evalCase{apiVersion: admissionv1.SchemeGroupVersion.String(), req: req}
		ref := obj
		if obj != nil {
			c.before = obj.Object
		} else {
			ref = old
		}
		c.source = ref.Source
		_, c.resourceOK = resourceFor(ref.gvk())
		cases = append(cases, c)
	}
	return cases, nil
}

func decodeObjectJSON(raw []byte) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var m map[string]any
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func stringIn(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// requestLine describes a request in one line:
// "CREATE pods default/web-0 (v1 Pod), user kubernetes-admin".
func requestLine(r *admissionv1.AdmissionRequest) string {
	res := r.Resource.Resource
	if r.Resource.Group != "" {
		res = r.Resource.Group + "/" + res
	}
	if r.SubResource != "" {
		res += "/" + r.SubResource
	}
	name := r.Name
	if name == "" {
		name = "(no name)"
	}
	if r.Namespace != "" && !(r.Resource.Group == "" && r.Resource.Resource == "namespaces") {
		name = r.Namespace + "/" + name
	}
	gv := r.Kind.Version
	if r.Kind.Group != "" {
		gv = r.Kind.Group + "/" + gv
	}
	return fmt.Sprintf("%s %s %s (%s %s), user %s", r.Operation, res, name, gv, r.Kind.Kind, r.UserInfo.Username)
}

// writeText writes the human-readable account of every request.
func writeText(w io.Writer, cases []*evalCase, pushdown []controllers.PolicyPushdown) error {
	var b bytes.Buffer
	if err := writePushdown(&b, pushdown); err != nil {
		return err
	}
	allowed := 0
	for _, c := range cases {
		b.WriteString("\n")
		d := c.decision
		fmt.Fprintf(&b, "=== %s\n", c.source)
		fmt.Fprintf(&b, "request: %s\n", requestLine(c.req))
		if !c.resourceOK {
			fmt.Fprintf(&b, "note: %s is not a built-in kind; its resource is guessed as %q\n", c.req.Kind.Kind, c.req.Resource.Resource)
		}
		if len(d.Results) == 0 {
			b.WriteString("policies: none match\n")
		} else {
			b.WriteString("policies:\n")
			tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
			for _, r := range d.Results {
				state := string(r.State)
				if r.State == engine.StateFail && r.Enforcement == engine.Audit {
					state += " (audit)"
				}
				reason := oneLine(r.Reason)
				if r.Panicked {
					reason += " (panicked)"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Policy, r.Action, state, reason)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		writeCalls(&b, c.calls)
		if len(d.Warnings) > 0 {
			b.WriteString("warnings:\n")
			for _, wn := range d.Warnings {
				fmt.Fprintf(&b, "  %s\n", oneLine(wn))
			}
		}
		if len(d.AuditAnnotations) > 0 {
			b.WriteString("audit annotations:\n")
			keys := make([]string, 0, len(d.AuditAnnotations))
			for k := range d.AuditAnnotations {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(&b, "  %s: %s\n", k, oneLine(d.AuditAnnotations[k]))
			}
		}
		if !d.Allowed {
			fmt.Fprintf(&b, "DENIED: %s\n", d.Message)
			continue
		}
		allowed++
		if len(d.Patch) == 0 {
			b.WriteString("ALLOWED\n")
			continue
		}
		fmt.Fprintf(&b, "ALLOWED with %d patch operation%s\n", len(d.Patch), pluralS(len(d.Patch)))
		b.WriteString("patch:\n[\n")
		for j, op := range d.Patch {
			line, err := json.Marshal(op)
			if err != nil {
				return err
			}
			sep := ","
			if j == len(d.Patch)-1 {
				sep = ""
			}
			fmt.Fprintf(&b, "  %s%s\n", line, sep)
		}
		b.WriteString("]\n")
		before, err := objectYAML(c.before)
		if err != nil {
			return err
		}
		after, err := objectYAML(c.after())
		if err != nil {
			return err
		}
		b.WriteString("diff:\n")
		b.WriteString(unifiedDiff("before", "after", before, after))
	}
	if len(cases) > 1 {
		fmt.Fprintf(&b, "\n%d requests: %d allowed, %d denied\n", len(cases), allowed, len(cases)-allowed)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// writePushdown says, per policy, what the generated webhook serving it
// lets the API server check before it calls Celadon.
func writePushdown(b *bytes.Buffer, pushdown []controllers.PolicyPushdown) error {
	if len(pushdown) == 0 {
		return nil
	}
	b.WriteString("pushed down to the API server (webhook matchConditions):\n")
	tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	for _, p := range pushdown {
		what := "all"
		switch {
		case p.Expression == "true":
			what = "nothing"
		case !p.Conditions:
			what = "selectors, resources and operations"
		}
		if p.Reason != "" {
			what += "; " + oneLine(p.Reason)
		}
		if len(p.Autogen) > 0 {
			what += "; autogen, on the pod templates of " + strings.Join(p.Autogen, ", ") + ": resources and operations"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", p.Policy, p.Webhook, what)
	}
	return tw.Flush()
}

// writeCalls says which generated webhooks whose rules match the API
// server would call.
func writeCalls(b *bytes.Buffer, calls []controllers.Call) {
	var parts []string
	for _, c := range calls {
		switch {
		case c.Called && c.Reason != "":
			parts = append(parts, c.Webhook+" ("+c.Reason+")")
		case c.Called:
			parts = append(parts, c.Webhook)
		case c.Reason != "no rule matches":
			parts = append(parts, "not "+c.Webhook+" ("+c.Reason+")")
		}
	}
	if len(parts) == 0 {
		b.WriteString("api server calls: no webhook\n")
		return
	}
	fmt.Fprintf(b, "api server calls: %s\n", strings.Join(parts, "; "))
}

func pluralS(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// oneLine keeps a table cell on its line.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", `\n`) }

func objectYAML(obj map[string]any) (string, error) {
	if obj == nil {
		return "", nil
	}
	out, err := yaml.Marshal(obj)
	return string(out), err
}

// writeObjects writes the resulting objects: YAML documents separated by
// "---", or one indented JSON value each. DELETE requests have none.
func writeObjects(w io.Writer, cases []*evalCase, format string) error {
	var b bytes.Buffer
	first := true
	for _, c := range cases {
		obj := c.after()
		if obj == nil {
			continue
		}
		if format == "yaml" {
			if !first {
				b.WriteString("---\n")
			}
			s, err := objectYAML(obj)
			if err != nil {
				return err
			}
			b.WriteString(s)
		} else {
			j, err := json.MarshalIndent(obj, "", "  ")
			if err != nil {
				return err
			}
			b.Write(j)
			b.WriteString("\n")
		}
		first = false
	}
	_, err := w.Write(b.Bytes())
	return err
}

// writePatches writes each request's JSON patch on a line of its own: "[]"
// when nothing changes or the request is denied.
func writePatches(w io.Writer, cases []*evalCase) error {
	var b bytes.Buffer
	for _, c := range cases {
		p, err := c.decision.PatchJSON()
		if err != nil {
			return err
		}
		b.Write(p)
		b.WriteString("\n")
	}
	_, err := w.Write(b.Bytes())
	return err
}

// writeReviews writes, for each request, the AdmissionReview the webhook
// would send back: built by webhook.FromDecision and written by
// webhook.AppendReview as the server does, in the request's review
// version, indented.
func writeReviews(w io.Writer, cases []*evalCase) error {
	var b bytes.Buffer
	var j []byte
	for _, c := range cases {
		resp := webhook.FromDecision(c.decision)
		var err error
		if j, err = webhook.AppendReview(j[:0], c.apiVersion, c.req.UID, &resp); err != nil {
			return fmt.Errorf("%s: %v", c.source, err)
		}
		// Indent keeps AppendReview's closing newline.
		if err := json.Indent(&b, j, "", "  "); err != nil {
			return err
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// evalResult is one request's JSON document of -o results.
type evalResult struct {
	Source  string        `json:"source"`
	Request requestOutput `json:"request"`
	decisionOutput
	Object map[string]any `json:"object"` // as admitted; null for DELETE
	// APIServerCalls says, per generated webhook, whether the API server
	// would call it.
	APIServerCalls []controllers.Call `json:"apiServerCalls"`
}

// writeResults writes, for each request, an indented JSON object: its
// source and request, the decision with every policy's result, the patch,
// and the object as the API server would persist it.
func writeResults(w io.Writer, cases []*evalCase) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	for _, c := range cases {
		d, err := newDecisionOutput(c.decision)
		if err != nil {
			return fmt.Errorf("%s: %v", c.source, err)
		}
		if err := enc.Encode(evalResult{Source: c.source, Request: newRequestOutput(c.req), decisionOutput: d, Object: c.after(), APIServerCalls: c.calls}); err != nil {
			return err
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// unifiedDiff returns a unified diff, with three lines of context, of two
// texts; "" when they are equal.
func unifiedDiff(aName, bName, a, b string) string {
	if a == b {
		return ""
	}
	al, bl := splitLines(a), splitLines(b)
	edits := diffLines(al, bl)
	const ctx = 3
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", aName, bName)
	for i := 0; i < len(edits); {
		for i < len(edits) && edits[i].op == ' ' {
			i++
		}
		if i == len(edits) {
			break
		}
		start := max(i-ctx, 0)
		end := i
		for {
			for end < len(edits) && edits[end].op != ' ' {
				end++
			}
			k := end
			for k < len(edits) && edits[k].op == ' ' {
				k++
			}
			if k < len(edits) && k-end <= 2*ctx {
				end = k
				continue
			}
			end = min(end+ctx, len(edits))
			break
		}
		hunk := edits[start:end]
		var na, nb int
		for _, e := range hunk {
			if e.op != '+' {
				na++
			}
			if e.op != '-' {
				nb++
			}
		}
		fmt.Fprintf(&out, "@@ -%s +%s @@\n", hunkRange(hunk[0].a, na), hunkRange(hunk[0].b, nb))
		for _, e := range hunk {
			out.WriteByte(e.op)
			out.WriteString(e.text)
			out.WriteByte('\n')
		}
		i = end
	}
	return out.String()
}

// hunkRange formats a hunk's range as GNU diff does: the first line
// (1-based) and the count when not 1; an empty range names the line before.
func hunkRange(pos, n int) string {
	switch n {
	case 0:
		return fmt.Sprintf("%d,0", pos)
	case 1:
		return fmt.Sprintf("%d", pos+1)
	}
	return fmt.Sprintf("%d,%d", pos+1, n)
}

func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// lineEdit is one line of a diff: ' ' kept, '-' removed, '+' added; a and b
// are the number of lines of each text before it.
type lineEdit struct {
	op   byte
	text string
	a, b int
}

// diffLines computes a shortest edit script by longest common subsequence,
// after trimming the common prefix and suffix; changes made by a patch are
// local, so what is left is small. Past a size limit it gives up on
// finding common lines in the middle.
func diffLines(a, b []string) []lineEdit {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	am, bm := a[pre:len(a)-suf], b[pre:len(b)-suf]
	var edits []lineEdit
	ai, bi := 0, 0
	emit := func(op byte, text string) {
		edits = append(edits, lineEdit{op: op, text: text, a: ai, b: bi})
		if op != '+' {
			ai++
		}
		if op != '-' {
			bi++
		}
	}
	for _, l := range a[:pre] {
		emit(' ', l)
	}
	n, m := len(am), len(bm)
	if n*m <= 4_000_000 {
		// lcs[i*(m+1)+j] is the LCS length of am[i:] and bm[j:].
		lcs := make([]int32, (n+1)*(m+1))
		for i := n - 1; i >= 0; i-- {
			for j := m - 1; j >= 0; j-- {
				if am[i] == bm[j] {
					lcs[i*(m+1)+j] = lcs[(i+1)*(m+1)+j+1] + 1
				} else {
					lcs[i*(m+1)+j] = max(lcs[(i+1)*(m+1)+j], lcs[i*(m+1)+j+1])
				}
			}
		}
		i, j := 0, 0
		for i < n && j < m {
			switch {
			case am[i] == bm[j]:
				emit(' ', am[i])
				i++
				j++
			case lcs[(i+1)*(m+1)+j] >= lcs[i*(m+1)+j+1]:
				emit('-', am[i])
				i++
			default:
				emit('+', bm[j])
				j++
			}
		}
		for ; i < n; i++ {
			emit('-', am[i])
		}
		for ; j < m; j++ {
			emit('+', bm[j])
		}
	} else {
		for _, l := range am {
			emit('-', l)
		}
		for _, l := range bm {
			emit('+', l)
		}
	}
	for _, l := range a[len(a)-suf:] {
		emit(' ', l)
	}
	return edits
}
