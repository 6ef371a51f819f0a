package controllers

// The background scan: on the leader, every interval, the validating
// policies that match CREATE are evaluated on the objects that already
// exist, read from informer caches of just the resources they match, and
// the results are written as OpenReports objects. Audit results of
// admission requests join them.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/reports"
)

// ScanUser is the user a background scan's requests name.
const ScanUser = "celadon:background-scan"

// ScanOptions configure a BackgroundScanner.
type ScanOptions struct {
	// Interval between scans, from the end of one to the start of the next.
	Interval time.Duration
	// Policies holds the served policy set.
	Policies interface{ Current() *engine.Snapshot }
	// Namespaces and Cluster are what requests read, as in admission.
	Namespaces engine.NamespaceGetter
	Cluster    engine.ObjectGetter
	// Excluded are namespaces whose objects are not scanned, as no webhook
	// is called for them.
	Excluded []string
	// Exceptions returns the exceptions of the exceptions directory, as
	// admission applies them; nil when there are none.
	Exceptions func() *engine.ExceptionSet
	// OnScan, when set, receives each finished scan's counts per policy.
	OnScan func(at time.Time, counts map[string]map[engine.State]int)
	Log    logr.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// BackgroundScanner runs the background scan. It is a manager runnable
// that needs leader election: one replica writes the reports.
type BackgroundScanner struct {
	o       ScanOptions
	cfg     *rest.Config
	c       client.Client
	trigger chan struct{}

	mu sync.Mutex
	// audits are admission results in Audit mode, by object and policy,
	// kept until their object is deleted (its DELETE is admitted, or a
	// scan of its kind no longer sees it), their policy goes, or two
	// intervals (at least a minute) pass without them being seen again.
	audits map[auditKey]reports.Result
	// informers by resource, started on first need.
	informers map[schema.GroupVersionResource]cache.SharedIndexInformer
	factory   dynamicinformer.DynamicSharedInformerFactory
}

type auditKey struct {
	uid    types.UID
	policy string
}

// NewBackgroundScanner returns a scanner reading the cluster through cfg
// and writing reports with c.
func NewBackgroundScanner(o ScanOptions, cfg *rest.Config, c client.Client) *BackgroundScanner {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &BackgroundScanner{o: o, cfg: cfg, c: c, trigger: make(chan struct{}, 1), audits: map[auditKey]reports.Result{}, informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{}}
}

// NeedLeaderElection makes only the leader scan.
func (b *BackgroundScanner) NeedLeaderElection() bool { return true }

// Trigger asks for a scan now, e.g. after a policy reload.
func (b *BackgroundScanner) Trigger() {
	select {
	case b.trigger <- struct{}{}:
	default:
	}
}

// Start scans every interval until ctx ends.
func (b *BackgroundScanner) Start(ctx context.Context) error {
	dyn, err := dynamic.NewForConfig(b.cfg)
	if err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(b.cfg)
	if err != nil {
		return err
	}
	b.factory = dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	defer b.factory.Shutdown()
	b.o.Log.Info("starting the background scan", "interval", b.o.Interval.String())
	for {
		if err := b.Scan(ctx, disc); err != nil && ctx.Err() == nil {
			b.o.Log.Error(err, "background scan")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(b.o.Interval):
		case <-b.trigger:
		}
	}
}

// scanned says whether a policy takes part in scans: a validating policy
// matching CREATE, as a scan evaluates objects as if created now.
func scanned(p *engine.CompiledPolicy) bool {
	return p.Type == engine.Validating && slices.Contains(p.Operations(), "CREATE")
}

// ScanResources returns the resources the scanned policies of snap match,
// as rules: what a scan lists and watches.
func ScanResources(snap *engine.Snapshot) []engine.ResourceRule {
	seen := map[engine.ResourceRule]bool{}
	var out []engine.ResourceRule
	for _, p := range snap.Policies {
		if !scanned(p) {
			continue
		}
		for _, r := range p.Resources() {
			if r.Subresource != "" || seen[r] {
				continue
			}
			seen[r] = true
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Group+"/"+out[i].Resource < out[j].Group+"/"+out[j].Resource
	})
	return out
}

// ScanAccess is what a background scan of rules needs: list and watch on
// the resources, and the reports it writes.
func ScanAccess(rules []engine.ResourceRule) []engine.Access {
	out := []engine.Access{
		{APIGroups: []string{reports.GroupVersion.Group}, Resources: []string{"reports", "clusterreports"}, Verbs: []string{"get", "list", "create", "update", "delete"},
			Why: "--background-scan: the leader writes the scan's results as a Report per namespace and a ClusterReport, and deletes those left without results"},
	}
	byGroup := map[string][]string{}
	var groups []string
	for _, r := range rules {
		if byGroup[r.Group] == nil {
			groups = append(groups, r.Group)
		}
		byGroup[r.Group] = append(byGroup[r.Group], r.Resource)
	}
	sort.Strings(groups)
	for _, g := range groups {
		res := byGroup[g]
		sort.Strings(res)
		out = append(out, engine.Access{APIGroups: []string{g}, Resources: slices.Compact(res), Verbs: []string{"list", "watch"},
			Why: "--background-scan: the informers of the objects the validating policies match, which the scan evaluates"})
	}
	return out
}

// Scan runs one scan and writes the reports.
func (b *BackgroundScanner) Scan(ctx context.Context, disc discovery.DiscoveryInterface) error {
	snap := b.o.Policies.Current()
	if snap == nil {
		return nil
	}
	start := b.o.Now()
	gvrs, err := resolve(disc, ScanResources(snap))
	if err != nil {
		return fmt.Errorf("resolving the scanned resources: %w", err)
	}
	var results []reports.Result
	counts := map[string]map[engine.State]int{}
	// What the scan saw, so that an admission result of an object of a
	// scanned kind that is gone goes too.
	scannedKinds := map[schema.GroupKind]bool{}
	seen := map[types.UID]bool{}
	excluded := map[string]bool{}
	for _, ns := range b.o.Excluded {
		excluded[ns] = true
	}
	for _, gvr := range gvrs {
		inf, err := b.informer(ctx, gvr)
		if err != nil {
			return err
		}
		for _, item := range inf.GetStore().List() {
			u, ok := item.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			scannedKinds[u.GroupVersionKind().GroupKind()] = true
			seen[u.GetUID()] = true
			if excluded[u.GetNamespace()] || (gvr.Group == "" && gvr.Resource == "namespaces" && excluded[u.GetName()]) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			rs, err := b.evaluate(ctx, snap, gvr, u, start)
			if err != nil {
				return err
			}
			for _, r := range rs {
				if counts[r.Policy] == nil {
					counts[r.Policy] = map[engine.State]int{}
				}
				counts[r.Policy][r.State]++
			}
			results = append(results, rs...)
		}
	}
	// A scan result replaces an admission one of the same object and
	// policy: a report lists each once.
	scanned := make(map[auditKey]bool, len(results))
	for _, r := range results {
		scanned[auditKey{r.Object.UID, r.Policy}] = true
	}
	b.forgetGone(scannedKinds, seen)
	for _, r := range b.currentAudits(snap, start) {
		if !scanned[auditKey{r.Object.UID, r.Policy}] {
			results = append(results, r)
		}
	}
	if err := b.write(ctx, results); err != nil {
		return err
	}
	if b.o.OnScan != nil {
		b.o.OnScan(start, counts)
	}
	b.o.Log.V(1).Info("background scan", "resources", len(gvrs), "results", len(results), "took", b.o.Now().Sub(start).String())
	return nil
}

// resolve maps resource rules to the preferred version of every listable
// resource they match, from discovery.
func resolve(disc discovery.DiscoveryInterface, rules []engine.ResourceRule) ([]schema.GroupVersionResource, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	groups, err := restmapper.GetAPIGroupResources(disc)
	if err != nil && len(groups) == 0 {
		return nil, err
	}
	var out []schema.GroupVersionResource
	for _, g := range groups {
		v := g.Group.PreferredVersion.Version
		for _, res := range g.VersionedResources[v] {
			if strings.Contains(res.Name, "/") || !slices.Contains(res.Verbs, "list") || !slices.Contains(res.Verbs, "watch") {
				continue
			}
			target := engine.ResourceRule{Group: g.Group.Name, Resource: res.Name}
			if slices.ContainsFunc(rules, func(r engine.ResourceRule) bool { return covers(r, target) }) {
				out = append(out, schema.GroupVersionResource{Group: g.Group.Name, Version: v, Resource: res.Name})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// informer returns the synced informer of gvr, started on first use.
// Managed fields are dropped from the cache: nothing reads them.
func (b *BackgroundScanner) informer(ctx context.Context, gvr schema.GroupVersionResource) (cache.SharedIndexInformer, error) {
	b.mu.Lock()
	inf, ok := b.informers[gvr]
	if !ok {
		inf = b.factory.ForResource(gvr).Informer()
		_ = inf.SetTransform(func(obj any) (any, error) {
			if u, ok := obj.(*unstructured.Unstructured); ok {
				u.SetManagedFields(nil)
			}
			return obj, nil
		})
		b.informers[gvr] = inf
		b.factory.Start(ctx.Done())
	}
	b.mu.Unlock()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("the cache of %s did not sync", gvr)
	}
	return inf, nil
}

// evaluate evaluates the scanned policies on one object, as a CREATE.
func (b *BackgroundScanner) evaluate(ctx context.Context, snap *engine.Snapshot, gvr schema.GroupVersionResource, u *unstructured.Unstructured, at time.Time) ([]reports.Result, error) {
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return nil, err
	}
	gvk := u.GroupVersionKind()
	req := &admissionv1.AdmissionRequest{
		UID:       types.UID("scan-" + string(u.GetUID())),
		Kind:      metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
		Resource:  metav1.GroupVersionResource{Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource},
		Name:      u.GetName(),
		Namespace: u.GetNamespace(),
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: ScanUser},
		Object:    runtime.RawExtension{Raw: raw},
		// Side-effecting builtins act only on real requests.
		DryRun: ptr.To(true),
	}
	eo := engine.EvalOptions{Phase: engine.PhaseValidating, Namespaces: b.o.Namespaces, Cluster: b.o.Cluster, Now: b.o.Now}
	if b.o.Exceptions != nil {
		eo.Exceptions = b.o.Exceptions()
	}
	d, err := snap.Evaluate(ctx, req, eo)
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", gvr.Resource, u.GetNamespace(), u.GetName(), err)
	}
	ref := corev1.ObjectReference{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName(), UID: u.GetUID()}
	var out []reports.Result
	for _, r := range d.Results {
		p := snap.Policy(r.Policy)
		// A skip is reported when an exception made it, as reviewers
		// want to see what is excepted; not when the policy does not apply.
		if p == nil || !scanned(p) || (r.State == engine.StateSkip && r.Exception == "") {
			continue
		}
		res := resultOf(r, ref, at)
		if r.Exception != "" {
			ex := eo.Exceptions.Exception(r.Exception)
			if ex == nil {
				ex = snap.Exceptions.Exception(r.Exception)
			}
			if ex != nil {
				res.Properties = reports.ExceptionProperties(ex.Name(), ex.Expires, at)
			}
		}
		out = append(out, res)
	}
	return out, nil
}

func resultOf(r engine.PolicyResult, ref corev1.ObjectReference, at time.Time) reports.Result {
	out := reports.Result{Policy: r.Policy, State: r.State, Message: r.Reason, Object: ref, Time: at}
	if r.State == engine.StateFail && r.Enforcement != "" {
		out.Properties = map[string]string{"enforcement": string(r.Enforcement)}
	}
	if r.Exception != "" {
		out.Properties = map[string]string{reports.PropertyException: r.Exception}
	}
	return out
}

// RecordAdmission keeps the Audit results of an admission request for the
// reports, and forgets those of an object being deleted.
func (b *BackgroundScanner) RecordAdmission(req *admissionv1.AdmissionRequest, d *engine.Decision) {
	if req == nil || d == nil || (req.DryRun != nil && *req.DryRun) || req.SubResource != "" {
		return
	}
	// Most requests need nothing: no Audit result, and no kept result
	// that a DELETE could end.
	audited := slices.ContainsFunc(d.Results, func(r engine.PolicyResult) bool {
		return r.State == engine.StateFail && r.Enforcement == engine.Audit
	})
	if !audited && (req.Operation != admissionv1.Delete || b.auditCount() == 0) {
		return
	}
	var u unstructured.Unstructured
	raw := req.Object.Raw
	if req.Operation == admissionv1.Delete {
		raw = req.OldObject.Raw
	}
	if len(raw) == 0 || json.Unmarshal(raw, &u.Object) != nil || u.GetUID() == "" && req.Operation != admissionv1.Create {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if req.Operation == admissionv1.Delete {
		for k := range b.audits {
			if k.uid == u.GetUID() {
				delete(b.audits, k)
			}
		}
		return
	}
	if u.GetUID() == "" {
		return // a CREATE: the object has no uid yet; the next scan sees it
	}
	ref := corev1.ObjectReference{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: req.Namespace, Name: req.Name, UID: u.GetUID()}
	now := b.o.Now()
	for _, r := range d.Results {
		if r.State == engine.StateFail && r.Enforcement == engine.Audit {
			b.audits[auditKey{u.GetUID(), r.Policy}] = resultOf(r, ref, now)
		}
	}
}

// forgetGone forgets the admission results of objects of a scanned kind
// that the scan did not see: deleted without a webhook call.
func (b *BackgroundScanner) forgetGone(kinds map[schema.GroupKind]bool, seen map[types.UID]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, r := range b.audits {
		gk := schema.FromAPIVersionAndKind(r.Object.APIVersion, r.Object.Kind).GroupKind()
		if kinds[gk] && !seen[k.uid] {
			delete(b.audits, k)
		}
	}
}

func (b *BackgroundScanner) auditCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.audits)
}

// currentAudits returns the admission Audit results still current: their
// policy is served and they are at most two intervals (and at least a
// minute) old; it forgets the others.
func (b *BackgroundScanner) currentAudits(snap *engine.Snapshot, now time.Time) []reports.Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []reports.Result
	for k, r := range b.audits {
		if snap.Policy(k.policy) == nil || now.Sub(r.Time) > max(2*b.o.Interval, time.Minute) {
			delete(b.audits, k)
			continue
		}
		out = append(out, r)
	}
	return out
}

var (
	reportGVK        = reports.GroupVersion.WithKind("Report")
	clusterReportGVK = reports.GroupVersion.WithKind("ClusterReport")
)

// write makes the cluster's reports those of results: each is created or
// replaced, and Celadon's reports without results any more are deleted.
func (b *BackgroundScanner) write(ctx context.Context, results []reports.Result) error {
	namespaced, cluster := reports.Build(results)
	var existing unstructured.UnstructuredList
	existing.SetGroupVersionKind(reportGVK.GroupVersion().WithKind("ReportList"))
	if err := b.c.List(ctx, &existing, client.MatchingLabels{reports.ManagedByLabel: reports.Source}); err != nil {
		return fmt.Errorf("listing reports: %w", err)
	}
	for _, r := range existing.Items {
		if r.GetName() == reports.ReportName && namespaced[r.GetNamespace()] == nil {
			if err := b.c.Delete(ctx, &r); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("deleting the report of %s: %w", r.GetNamespace(), err)
			}
		}
	}
	for _, r := range namespaced {
		if err := b.put(ctx, reportGVK, r.Namespace, r); err != nil {
			return err
		}
	}
	if cluster != nil {
		return b.put(ctx, clusterReportGVK, "", cluster)
	}
	old := &unstructured.Unstructured{}
	old.SetGroupVersionKind(clusterReportGVK)
	old.SetName(reports.ReportName)
	if err := b.c.Delete(ctx, old); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting the cluster report: %w", err)
	}
	return nil
}

// sameReport reports whether two reports say the same, their results'
// timestamps aside: an unchanged report is not rewritten every scan.
func sameReport(a, b map[string]any) bool {
	norm := func(m map[string]any) string {
		results, _, _ := unstructured.NestedSlice(m, "results")
		for _, r := range results {
			if rm, ok := r.(map[string]any); ok {
				delete(rm, "timestamp")
			}
		}
		summary, _, _ := unstructured.NestedMap(m, "summary")
		j, _ := json.Marshal([]any{summary, results, m["source"]})
		return string(j)
	}
	return norm(a) == norm(b)
}

// put creates the report or replaces the existing one's content.
func (b *BackgroundScanner) put(ctx context.Context, gvk schema.GroupVersionKind, ns string, report any) error {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(report)
	if err != nil {
		return err
	}
	want := &unstructured.Unstructured{Object: m}
	want.SetGroupVersionKind(gvk)
	have := &unstructured.Unstructured{}
	have.SetGroupVersionKind(gvk)
	err = b.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: reports.ReportName}, have)
	switch {
	case apierrors.IsNotFound(err):
		if err := b.c.Create(ctx, want); err != nil {
			return fmt.Errorf("creating %s %s/%s: %w", gvk.Kind, ns, reports.ReportName, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("reading %s %s/%s: %w", gvk.Kind, ns, reports.ReportName, err)
	}
	if sameReport(have.Object, want.Object) {
		return nil
	}
	want.SetResourceVersion(have.GetResourceVersion())
	if err := b.c.Update(ctx, want); err != nil {
		return fmt.Errorf("updating %s %s/%s: %w", gvk.Kind, ns, reports.ReportName, err)
	}
	return nil
}
