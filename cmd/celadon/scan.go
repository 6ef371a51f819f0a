package main

// `celadon scan`: evaluate the validating policies against objects that
// already exist, in a cluster or in manifests, as if each were being
// created now.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"celadon.io/celadon/engine"
)

func init() { rootCmd.AddCommand(newScanCmd()) }

// Output formats of scan: -o.
var scanOutputs = []outputFormat{
	{"table", "one line per result that is not a pass, and a summary"},
	{"json", "the summary, the policies and each object's results, as JSON"},
	{"yaml", "what json prints, as YAML"},
	{"junit", "JUnit XML: a testsuite per policy, a testcase per result"},
	{"sarif", "SARIF 2.1.0, for code scanning: a rule per policy, a result per violation"},
	{"report", "OpenReports objects: a Report per namespace and a ClusterReport"},
}

type scanOptions struct {
	policies   string
	files      []string
	recursive  bool
	namespace  string
	kubeconfig string
	context    string
	chunkSize  int64
	qps        float32
	timeout    time.Duration
	nsLabels   string
	user       string
	showPass   bool
	output     string
	exceptions exceptionFlags
}

// Defaults of the flags a scan of a cluster reads with.
const (
	defaultChunkSize = 500
	defaultScanQPS   = 20
	// defaultRequestTimeout bounds each request, so that an API server
	// that accepts connections and never answers fails the scan rather
	// than hangs it.
	defaultRequestTimeout = time.Minute
	// scanObjectTimeout bounds the evaluation of one object, as the API
	// server's timeout bounds a webhook call.
	scanObjectTimeout = 30 * time.Second
)

func newScanCmd() *cobra.Command { return newScanCmdFor(&scanOptions{}) }

func newScanCmdFor(o *scanOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scan -p POLICIES [-f MANIFESTS]...",
		Short: "Evaluate validating policies against existing objects, in a cluster or in manifests",
		Long: `Scan evaluates the validating policies of POLICIES against objects that already
exist, each as if it were being created now: an admission request with
operation CREATE whose object is the object as it is. Mutating policies are
not run; validating policies that match no CREATE (only UPDATE, DELETE or
CONNECT) or only subresources do not apply to a scan, and are listed as such.

The objects come from a cluster, or from manifests with -f:

  cluster    the kubeconfig of --kubeconfig, else $KUBECONFIG, else
             ~/.kube/config, else the in-cluster configuration, as kubectl
             finds it; --context picks a context. Scan asks the API server
             which resources it serves (discovery), keeps those a policy
             matches, and lists each in pages of --chunk-size objects, at
             most --qps requests a second. Objects are evaluated page by page
             and not kept: memory does not grow with the cluster. Namespace
             labels (namespaceSelector, namespaceObject) are the cluster's:
             namespaces are listed first. A progress line is shown on stderr
             when it is a terminal.
  manifests  files, directories (their *.yaml, *.yml and *.json files; with
             -R, those of subdirectories too) or "-" for standard input: YAML
             documents separated by "---", concatenated JSON, and the items of
             Lists (kubectl get -o yaml, helm template). A Namespace among
             them gives its labels; any other namespace has the labels of
             --namespace-labels. Builtins that look objects up
             (checkIngressBackends) find them among the manifests.

Output (-o): table lists every result that found something (fail, warn,
error), then the policies that do not apply and a summary line; json and
yaml the same, for programs; junit and sarif for CI systems; report the
OpenReports objects policy-reporter and Kyverno's tools read (a Report per
namespace, a ClusterReport for cluster-scoped objects). Results that found
nothing wrong are counted, and listed only with --show-pass: pass, and skip,
which is how a compliant object ends under deny, whose conditions describe
the violation.

Exit status: 0 when no object would be denied, 1 when one would (as with
eval: a failure under enforcement Deny, or an error under failurePolicy Fail;
Warn and Audit never deny), 2 for bad usage, unreadable input, a policy that
does not compile, a cluster that cannot be reached, or a resource that could
not be listed (the results of the others are printed first).`,
		Example: `  celadon scan -p policies/                                   # the current kubectl context
  celadon scan -p policies/ --context prod -o sarif > scan.sarif
  celadon scan -p policies/ -n shop --show-pass
  celadon scan -p policies/ -f manifests/ -R
  helm template ./chart | celadon scan -p policies/ -f - -o junit > scan.xml
  kubectl get deploy -A -o yaml | celadon scan -p policies/ -f -
  celadon scan -p policies/ -o report | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	f := cmd.Flags()
	f.StringVarP(&o.policies, "policies", "p", "", "policy file or directory (required)")
	f.StringArrayVarP(&o.files, "filename", "f", nil, `manifests to scan instead of a cluster: files, directories or "-" for stdin; repeatable`)
	f.BoolVarP(&o.recursive, "recursive", "R", false, "read the directories of -f recursively")
	f.StringVarP(&o.namespace, "namespace", "n", "", "cluster: scan this namespace only (and no cluster-scoped objects); manifests: the namespace of objects that name none (default \"default\")")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)")
	f.StringVar(&o.context, "context", "", "the kubeconfig context to use (default: its current context)")
	f.Int64Var(&o.chunkSize, "chunk-size", defaultChunkSize, "objects per LIST request (the API server's limit)")
	f.Float32Var(&o.qps, "qps", defaultScanQPS, "at most this many API requests a second (bursts of twice as many)")
	f.DurationVar(&o.timeout, "request-timeout", defaultRequestTimeout, "how long one API request (a page of a LIST) may take; 0: no limit")
	f.StringVar(&o.nsLabels, "namespace-labels", "", "manifests: labels of the namespaces no Namespace manifest describes, as key=value,...")
	f.StringVar(&o.user, "user", defaultUser, "username of the requesting user the policies see (groups system:masters, system:authenticated)")
	o.exceptions.add(cmd)
	f.BoolVar(&o.showPass, "show-pass", false, "also list the results that found nothing wrong (pass and skip); they are always counted")
	addOutputFlag(cmd, &o.output, scanOutputs)
	return cmd
}

// scanNow is the time reports carry; tests fix it.
var scanNow = time.Now

func (o *scanOptions) run(cmd *cobra.Command) error {
	if o.chunkSize < 1 {
		return usageErrorf("--chunk-size must be at least 1, not %d", o.chunkSize)
	}
	if o.qps <= 0 {
		return usageErrorf("--qps must be more than 0, not %g", o.qps)
	}
	manifests := len(o.files) > 0
	if o.timeout < 0 {
		return usageErrorf("--request-timeout must not be negative, not %v", o.timeout)
	}
	for _, name := range []string{"kubeconfig", "context", "chunk-size", "qps", "request-timeout"} {
		if manifests && cmd.Flags().Changed(name) {
			return usageErrorf("--%s is for scanning a cluster; -f scans manifests", name)
		}
	}
	if !manifests && cmd.Flags().Changed("namespace-labels") {
		return usageErrorf("--namespace-labels is for manifests: a cluster's namespaces have their own labels")
	}
	if !manifests && o.recursive {
		return usageErrorf("-R is for the directories of -f")
	}
	if stdin := slices.DeleteFunc(slices.Clone(o.files), func(f string) bool { return f != "-" }); len(stdin) > 1 {
		return usageErrorf(`-f - reads standard input once`)
	}
	labels, err := parseLabels(o.nsLabels)
	if err != nil {
		return usageErrorf("%v", err)
	}
	snap, err := loadPolicies(cmd, o.policies)
	if err != nil {
		return err
	}
	now, err := o.exceptions.clock()
	if err != nil {
		return err
	}
	exceptions, err := o.exceptions.load(cmd, now)
	if err != nil {
		return err
	}
	s := newScanner(snap, o.showPass)
	s.opts.Exceptions, s.opts.Now = exceptions, func() time.Time { return now }
	if len(s.applicable) == 0 {
		var b strings.Builder
		for _, p := range s.policies {
			fmt.Fprintf(&b, "\n  %s: %s", p.name, p.notApplicable)
		}
		return usageErrorf("%s: no policy applies to a scan, which runs validating policies on CREATE:%s", o.policies, b.String())
	}
	s.user = o.user
	if s.user == "" {
		s.user = defaultUser
	}
	ctx, stop := signal.NotifyContext(contextOf(cmd), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stderr := cmd.ErrOrStderr()
	if manifests {
		err = s.scanManifests(ctx, o.files, o.recursive, o.namespace, labels)
	} else {
		err = s.scanCluster(ctx, o, stderr)
	}
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("scan interrupted: %v", err)}
	}
	if err := s.write(cmd.OutOrStdout(), o.output); err != nil {
		return &exitError{code: 2, err: err}
	}
	// After the table, where a reader of a terminal sees them.
	for _, w := range s.policyWarnings() {
		fmt.Fprintln(stderr, "celadon: warning:", w)
	}
	switch {
	case len(s.problems) > 0:
		for _, p := range s.problems {
			fmt.Fprintf(stderr, "celadon: not scanned: %s: %s\n", p.resource, p.err)
		}
		return &exitError{code: 2, err: fmt.Errorf("scan incomplete: %d resource%s could not be listed", len(s.problems), pluralS(len(s.problems)))}
	case s.denied > 0:
		if o.output != "table" {
			fmt.Fprintf(stderr, "celadon: %d object%s would be denied\n", s.denied, pluralS(s.denied))
		}
		return &exitError{code: 1}
	}
	return nil
}

func contextOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// scanPolicy is one loaded policy, as a scan sees it.
type scanPolicy struct {
	p    *engine.CompiledPolicy
	name string
	// notApplicable says why the policy does not apply to a scan; "" when
	// it does.
	notApplicable string
	counts        stateCounts
	firstError    string // the reason of its first error
}

// notApplicableReason says why a policy does not apply to a scan, or "".
func notApplicableReason(p *engine.CompiledPolicy) string {
	if p.Type == engine.Mutating {
		return "mutating: a scan runs validating policies only"
	}
	ops := p.Operations()
	if !slices.Contains(ops, string(admissionv1.Create)) {
		return "matches " + strings.Join(ops, ", ") + " only: a scan evaluates CREATE"
	}
	for _, r := range p.Resources() {
		if r.Subresource == "" || r.Resource == "*" {
			return ""
		}
	}
	return "matches subresources only: a scan evaluates objects"
}

// scanResource is a resource whose objects are scanned.
type scanResource struct {
	gvr        schema.GroupVersionResource
	gvk        schema.GroupVersionKind
	namespaced bool
	objects    int
}

func (r *scanResource) String() string {
	if r.gvr.Group == "" {
		return r.gvr.Version + "/" + r.gvr.Resource
	}
	return r.gvr.Group + "/" + r.gvr.Version + "/" + r.gvr.Resource
}

// scanProblem is a resource that could not be listed.
type scanProblem struct {
	resource string
	err      string
}

// scanItem is one object to evaluate: its JSON and what its request needs.
type scanItem struct {
	raw                   []byte
	gvk                   schema.GroupVersionKind
	namespace, name, uid  string
	file                  int32 // index in scanner.files; -1 for a cluster's objects
	line, document, index int32 // in the file: the document's first line, its number, the List item (0: none)
}

// scanner evaluates objects and keeps their results, compactly: per
// object only what names it, and only for objects with a listed result.
type scanner struct {
	snap       *engine.Snapshot
	showPass   bool
	user       string
	opts       engine.EvalOptions
	policies   []*scanPolicy
	byName     map[string]int32 // index in policies
	applicable []*scanPolicy
	created    []byte // the CreateOptions of every request

	// candidates caches, per resource, whether a validating policy
	// matches its CREATE.
	candidates map[schema.GroupVersionResource]bool
	resources  []*scanResource
	problems   []scanProblem
	notes      []string // what the output should say about the scan (inconsistent lists)

	files   []string // manifest files, by index
	strs    strTable // namespaces, messages
	kinds   []scanKind
	kindIdx map[scanKind]int32
	objects []scanObject // those with a listed result
	results []scanResult // listed results, in scan order

	scanned, evaluated, denied int
	counts                     stateCounts
	nsCounts                   map[int32]*stateCounts // by interned namespace ("" cluster-scoped)
	listRequests               int
	source                     string // "cluster" or "manifests"
	server                     string // the API server's URL
}

// scanKind is an object's type.
type scanKind struct {
	apiVersion, kind, group string
}

// scanObject names an object with a listed result.
type scanObject struct {
	kind                  int32
	namespace             int32 // interned
	name, uid             string
	file                  int32
	line, document, index int32
	denied                bool
	message               int32 // interned denial message
}

// scanResult is one listed policy result.
type scanResult struct {
	object  int32
	policy  int32
	state   engine.State
	message int32 // interned
	// exception names the exception that made the result skip, interned;
	// the empty string's index otherwise.
	exception int32
}

// stateCounts counts results by state.
type stateCounts struct {
	Pass  int `json:"pass"`
	Fail  int `json:"fail"`
	Warn  int `json:"warn"`
	Error int `json:"error"`
	Skip  int `json:"skip"`
}

func (c *stateCounts) add(s engine.State) {
	switch s {
	case engine.StatePass:
		c.Pass++
	case engine.StateFail:
		c.Fail++
	case engine.StateWarn:
		c.Warn++
	case engine.StateError:
		c.Error++
	case engine.StateSkip:
		c.Skip++
	}
}

func (c stateCounts) String() string {
	return fmt.Sprintf("%d fail, %d warn, %d error, %d pass, %d skip", c.Fail, c.Warn, c.Error, c.Pass, c.Skip)
}

// strTable interns strings: one copy of each namespace and message
// however many results repeat it.
type strTable struct {
	idx  map[string]int32
	strs []string
}

func (t *strTable) intern(s string) int32 {
	if i, ok := t.idx[s]; ok {
		return i
	}
	if t.idx == nil {
		t.idx = map[string]int32{}
	}
	i := int32(len(t.strs))
	s = strings.Clone(s) // never a slice of a page being read
	t.strs = append(t.strs, s)
	t.idx[s] = i
	return i
}

func (t *strTable) get(i int32) string { return t.strs[i] }

func newScanner(snap *engine.Snapshot, showPass bool) *scanner {
	s := &scanner{
		snap:       snap,
		showPass:   showPass,
		byName:     map[string]int32{},
		candidates: map[schema.GroupVersionResource]bool{},
		kindIdx:    map[scanKind]int32{},
		nsCounts:   map[int32]*stateCounts{},
	}
	for _, p := range snap.Policies {
		sp := &scanPolicy{p: p, name: p.Name(), notApplicable: notApplicableReason(p)}
		s.byName[sp.name] = int32(len(s.policies))
		s.policies = append(s.policies, sp)
		if sp.notApplicable == "" {
			s.applicable = append(s.applicable, sp)
		}
	}
	opts, err := json.Marshal(&metav1.CreateOptions{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "CreateOptions"}})
	if err != nil {
		panic(err) // a fixed, valid object
	}
	s.created = opts
	s.opts = engine.EvalOptions{Phase: engine.PhaseValidating}
	return s
}

// matches reports whether a validating policy matches the CREATE of the
// resource's objects.
func (s *scanner) matches(gvr schema.GroupVersionResource) bool {
	if m, ok := s.candidates[gvr]; ok {
		return m
	}
	m := false
	for _, p := range s.snap.Candidates(gvr.Group, gvr.Resource, "", string(admissionv1.Create)) {
		if s.policies[s.byName[p.Name()]].notApplicable == "" {
			m = true
			break
		}
	}
	s.candidates[gvr] = m
	return m
}

// evaluate evaluates one object of a resource and records its results.
func (s *scanner) evaluate(ctx context.Context, res *scanResource, it *scanItem) error {
	s.scanned++
	res.objects++
	if !s.matches(res.gvr) {
		return nil
	}
	s.evaluated++
	req := &admissionv1.AdmissionRequest{
		UID:             requestUID(s.evaluated),
		Kind:            metav1.GroupVersionKind{Group: it.gvk.Group, Version: it.gvk.Version, Kind: it.gvk.Kind},
		Resource:        metav1.GroupVersionResource{Group: res.gvr.Group, Version: res.gvr.Version, Resource: res.gvr.Resource},
		Name:            it.name,
		Operation:       admissionv1.Create,
		DryRun:          new(bool),
		UserInfo:        authenticationv1.UserInfo{Username: s.user, Groups: []string{"system:masters", "system:authenticated"}},
		Object:          runtime.RawExtension{Raw: it.raw},
		Options:         runtime.RawExtension{Raw: s.created},
		RequestKind:     &metav1.GroupVersionKind{Group: it.gvk.Group, Version: it.gvk.Version, Kind: it.gvk.Kind},
		RequestResource: &metav1.GroupVersionResource{Group: res.gvr.Group, Version: res.gvr.Version, Resource: res.gvr.Resource},
	}
	switch {
	case res.gvr.Group == "" && res.gvr.Resource == "namespaces":
		req.Namespace = it.name // as the API server sets it for a Namespace
	case res.namespaced:
		req.Namespace = it.namespace
	}
	octx, cancel := context.WithTimeout(ctx, scanObjectTimeout)
	d, err := s.snap.Evaluate(octx, req, s.opts)
	cancel()
	if err != nil {
		// The object is not valid JSON: not something a list or a
		// manifest loader lets through.
		return fmt.Errorf("%s: %v", s.describe(it), err)
	}
	if err := ctx.Err(); err != nil {
		return nil // interrupted: the results would be "not evaluated" errors
	}
	s.record(req.Namespace, res.namespaced, it, d)
	return nil
}

// record keeps a decision's results: counted always, listed when they
// found something or --show-pass asks for them.
func (s *scanner) record(namespace string, namespaced bool, it *scanItem, d *engine.Decision) {
	if !d.Allowed {
		s.denied++
	}
	if !namespaced {
		namespace = ""
	}
	ns := s.strs.intern(namespace)
	nsc := s.nsCounts[ns]
	if nsc == nil {
		nsc = &stateCounts{}
		s.nsCounts[ns] = nsc
	}
	obj := int32(-1)
	for _, r := range d.Results {
		s.counts.add(r.State)
		nsc.add(r.State)
		pi := s.byName[r.Policy]
		p := s.policies[pi]
		p.counts.add(r.State)
		if r.State == engine.StateError && p.firstError == "" {
			p.firstError = r.Reason
		}
		// An excepted result is listed, as a report shows it.
		if !s.listed(r.State) && r.Exception == "" {
			continue
		}
		if obj < 0 {
			obj = s.addObject(ns, it, d)
		}
		s.results = append(s.results, scanResult{object: obj, policy: pi, state: r.State, message: s.strs.intern(r.Reason), exception: s.strs.intern(r.Exception)})
	}
}

func (s *scanner) listed(st engine.State) bool {
	switch st {
	case engine.StateFail, engine.StateWarn, engine.StateError:
		return true
	}
	return s.showPass
}

func (s *scanner) addObject(ns int32, it *scanItem, d *engine.Decision) int32 {
	k := scanKind{apiVersion: it.gvk.GroupVersion().String(), kind: it.gvk.Kind, group: it.gvk.Group}
	ki, ok := s.kindIdx[k]
	if !ok {
		ki = int32(len(s.kinds))
		s.kinds = append(s.kinds, k)
		s.kindIdx[k] = ki
	}
	o := scanObject{
		kind: ki, namespace: ns, name: strings.Clone(it.name), uid: strings.Clone(it.uid),
		file: it.file, line: it.line, document: it.document, index: it.index,
		denied: !d.Allowed, message: -1,
	}
	if !d.Allowed {
		o.message = s.strs.intern(d.Message)
	}
	s.objects = append(s.objects, o)
	return int32(len(s.objects) - 1)
}

// describe names an item being scanned, for errors.
func (s *scanner) describe(it *scanItem) string {
	if it.file >= 0 {
		return sourceOf(s.files[it.file], it.document, it.index)
	}
	return fmt.Sprintf("%s %s", it.gvk.Kind, clusterObjectName(it.namespace, it.name))
}

// sourceOf is where a manifest object came from, as eval names it.
func sourceOf(file string, document, index int32) string {
	src := inputDocument{file: file, index: int(document)}.source()
	if index > 0 {
		src += fmt.Sprintf(", item %d", index)
	}
	return src
}

// policyWarnings are what stderr should say about policies that errored:
// a policy that errors on every object it matches is most likely broken,
// and its failurePolicy decided for every one.
func (s *scanner) policyWarnings() []string {
	var out []string
	for _, p := range s.applicable {
		c := p.counts
		if c.Error == 0 {
			continue
		}
		all := c.Pass + c.Fail + c.Warn + c.Error + c.Skip
		which := fmt.Sprintf("%d of the %d objects it was evaluated on", c.Error, all)
		if c.Error == all {
			which = fmt.Sprintf("every object it was evaluated on (%d)", all)
		}
		then := "they would be denied (failurePolicy Fail)"
		if p.p.Policy.Spec.FailurePolicy == engine.Ignore {
			then = "they would be admitted without it (failurePolicy Ignore)"
		}
		out = append(out, fmt.Sprintf("policy %q failed on %s: %s; the first error: %s", p.name, which, then, oneLine(p.firstError)))
	}
	return out
}

// errNoCluster says how to scan without a cluster.
var errNoCluster = errors.New("no cluster to scan: no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not running in a cluster; give manifests with -f to scan files")
