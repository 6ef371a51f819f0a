package builtins

// The createSecret reconciler: admission only records which Secrets a
// namespace should hold (a namespace being created does not exist yet, so
// nothing can be created in it during the webhook call); this controller
// makes it so, for new namespaces, for namespaces created before Celadon
// ran and for namespaces a policy selects after an edit. It runs on the
// elected leader only. Nothing here runs per admission request.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/prom"
)

// Timings of the secret reconciler. A failed controller is restarted by the
// server, after a pause of its own.
const (
	// secretResync re-reconciles every namespace this often: a source
	// Secret outside Celadon's namespace is not watched, so its copies
	// follow it within this time.
	secretResync = 5 * time.Minute
	// secretConflictRecheck re-checks a namespace with a conflict or a
	// missing source this often: an unmanaged Secret outside Celadon's
	// namespace is not watched either.
	secretConflictRecheck = time.Minute
)

// Secret metrics.
const (
	MetricSecretConflicts = "celadon_secret_conflicts_total"
	MetricSecretWrites    = "celadon_secret_writes_total"
	MetricSecretIssues    = "celadon_secret_issues"
)

// Reasons of SecretIssue, also the reasons of the Events recorded on the
// namespace.
const (
	// SecretConflict: a Secret of the same name exists and Celadon does not
	// manage it (no app.kubernetes.io/managed-by: celadon label), or
	// another policy does. It is left alone.
	SecretConflict = "SecretConflict"
	// SecretSourceNotFound: the source Secret to copy does not exist.
	SecretSourceNotFound = "SecretSourceNotFound"
	// SecretSourceNotAllowed: the source Secret is in a namespace the
	// operator did not allow copies from (Celadon's own, and
	// --secret-source-namespaces).
	SecretSourceNotAllowed = "SecretSourceNotAllowed"
	// SecretPolicyError: the policy could not be evaluated for the
	// namespace (a template or condition failed).
	SecretPolicyError = "SecretPolicyError"
	// SecretError: writing the Secret or the ServiceAccount failed.
	SecretError = "SecretError"
)

// SecretStatus is the reconciler's part of /status, on the replica that
// runs it (the leader).
type SecretStatus struct {
	// Namespace is Celadon's namespace, the default of from.namespace.
	Namespace string `json:"namespace"`
	// Issues are the Secrets that are not as their policy wants, sorted by
	// namespace and name.
	Issues []SecretIssue `json:"issues"`
}

// SecretIssue is one Secret the reconciler could not make as its policy
// wants.
type SecretIssue struct {
	Namespace string    `json:"namespace"`
	Secret    string    `json:"secret,omitempty"`
	Policy    string    `json:"policy"`
	Reason    string    `json:"reason"`
	Message   string    `json:"message"`
	Since     time.Time `json:"since"`
}

type secretMetrics struct {
	conflicts *prometheus.CounterVec
	writes    *prometheus.CounterVec
	issues    prometheus.Gauge
}

func newSecretMetrics(reg prometheus.Registerer) *secretMetrics {
	if reg == nil {
		reg = prometheus.NewRegistry() // nowhere to report: count anyway
	}
	return &secretMetrics{
		conflicts: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricSecretConflicts,
			Help: "Secrets createSecret found taken by a Secret Celadon does not manage (counted when first seen), by policy.",
		}, []string{"policy"})),
		writes: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricSecretWrites,
			Help: "Writes of the createSecret reconciler, by operation: create, update (a Secret), serviceaccount (imagePullSecrets).",
		}, []string{"operation"})),
		issues: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricSecretIssues,
			Help: "Secrets the createSecret reconciler cannot make as their policy wants now (conflicts, missing sources, errors).",
		})),
	}
}

// secretController is createSecret's controller (engine.ControllerBuiltin):
// the server runs it on the elected leader once a served policy uses
// createSecret. A server without such a policy needs no RBAC on Secrets.
type secretController struct {
	cc      engine.ControllerContext
	apiRead client.Reader // uncached reads
	metrics *secretMetrics
	resync  chan struct{} // a new policy set
	mu      sync.Mutex
	issues  map[string][]SecretIssue // by namespace; nil until started
}

// NewController returns createSecret's reconciler.
func (createSecret) NewController(cc engine.ControllerContext) (engine.Controller, error) {
	apiRead, err := client.New(cc.Config, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		return nil, fmt.Errorf("createSecret: client: %w", err)
	}
	r := &secretController{cc: cc, apiRead: apiRead, metrics: newSecretMetrics(cc.Metrics), resync: make(chan struct{}, 1)}
	cc.Policies.Subscribe(func(*engine.Snapshot) {
		select {
		case r.resync <- struct{}{}:
		default: // pending already
		}
	})
	return r, nil
}

// leftAlone says why the reconciler writes nothing into namespace ns; ""
// when it may. It never writes where admission never looks: the namespaces
// no webhook is called for (Celadon's own among them), nor kube-public,
// which the cluster's bootstrap makes readable to everyone.
func (r *secretController) leftAlone(ns string) string {
	switch {
	case ns == r.cc.Namespace:
		return "it is Celadon's own namespace"
	case slices.Contains(r.cc.ExcludedNamespaces, ns):
		return "no webhook is called for it"
	case ns == metav1.NamespacePublic:
		return "it is the cluster's public namespace"
	}
	return ""
}

// Start runs the reconciler until ctx is done or it fails.
func (r *secretController) Start(ctx context.Context) error {
	return r.run(ctx, r.cc.Log.WithName("secrets"))
}

// run runs the controller, with caches of its own, until ctx is done or
// it fails.
func (r *secretController) run(ctx context.Context, log logr.Logger) error {
	ns := r.cc.Namespace
	log.Info("reconciling the Secrets of createSecret policies", "namespace", ns)

	managed := labels.SelectorFromSet(labels.Set{SecretManagedByLabel: SecretManagedByValue})
	secrets := cache.ByObject{Label: managed}
	if ns != "" {
		// Sources in Celadon's namespace are watched; elsewhere only the
		// copies are.
		secrets = cache.ByObject{Namespaces: map[string]cache.Config{
			ns:                  {LabelSelector: labels.Everything()},
			cache.AllNamespaces: {LabelSelector: managed},
		}}
	}
	c, err := cache.New(r.cc.Config, cache.Options{
		Scheme: clientgoscheme.Scheme,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}:         secrets,
			&corev1.ServiceAccount{}: {Field: fields.OneTermEqualSelector("metadata.name", DefaultServiceAccount)},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("secrets: cache: %w", err)
	}
	cl, err := client.New(r.cc.Config, client.Options{Scheme: clientgoscheme.Scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return fmt.Errorf("secrets: client: %w", err)
	}
	rec := &secretReconciler{ctl: r, c: cl, namespace: ns, log: log}
	ctl, err := controller.NewTypedUnmanaged("celadon-secrets", controller.TypedOptions[reconcile.Request]{
		Reconciler:         rec,
		Logger:             log,
		SkipNameValidation: ptr.To(true), // one per Server; tests run several
		RecoverPanic:       ptr.To(true),
	})
	if err != nil {
		return err
	}
	enqueueAll := func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		var list corev1.NamespaceList
		if err := cl.List(ctx, &list); err != nil {
			log.Error(err, "listing namespaces")
			return
		}
		for _, n := range list.Items {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: n.Name}})
		}
	}
	sources := []source.TypedSource[reconcile.Request]{
		source.Kind(c, &corev1.Namespace{}, &handler.TypedEnqueueRequestForObject[*corev1.Namespace]{}),
		source.Kind(c, &corev1.ServiceAccount{}, handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, sa *corev1.ServiceAccount) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: sa.Namespace}}}
		})),
		source.Kind(c, &corev1.Secret{}, handler.TypedFuncs[*corev1.Secret, reconcile.Request]{
			CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[*corev1.Secret], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				rec.secretChanged(ctx, e.Object, q, enqueueAll)
			},
			UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[*corev1.Secret], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				rec.secretChanged(ctx, e.ObjectNew, q, enqueueAll)
			},
			DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[*corev1.Secret], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				rec.secretChanged(ctx, e.Object, q, enqueueAll)
			},
		}),
		// After every successful reload, and every secretResync: every
		// namespace.
		source.TypedFunc[reconcile.Request](func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			go func() {
				t := time.NewTicker(secretResync)
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-r.resync:
					case <-t.C:
					}
					enqueueAll(ctx, q)
				}
			}()
			return nil
		}),
	}
	for _, src := range sources {
		if err := ctl.Watch(src); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.issues = map[string][]SecretIssue{}
	r.mu.Unlock()
	// The cache stops with the controller, even when the controller fails
	// to start (e.g. a cache that never syncs for lack of RBAC).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Start(ctx) }()
	err = ctl.Start(ctx)
	cancel()
	if cerr := <-errc; err == nil {
		err = cerr
	}
	return err
}

// Status returns the reconciler's part of /status (engine.StatusReporter);
// nil until it runs.
func (r *secretController) Status() any {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.issues == nil {
		return nil
	}
	st := &SecretStatus{Namespace: r.cc.Namespace, Issues: []SecretIssue{}}
	for _, ns := range slices.Sorted(maps.Keys(r.issues)) {
		st.Issues = append(st.Issues, r.issues[ns]...)
	}
	return st
}

// setIssues replaces the issues of namespace ns and returns those that are
// new (not in the previous set under the same secret, policy and reason);
// they keep their first time.
func (r *secretController) setIssues(ns string, issues []SecretIssue) []SecretIssue {
	r.mu.Lock()
	defer r.mu.Unlock()
	type key struct{ secret, policy, reason string }
	old := map[key]SecretIssue{}
	for _, i := range r.issues[ns] {
		old[key{i.Secret, i.Policy, i.Reason}] = i
	}
	var fresh []SecretIssue
	for n, i := range issues {
		if prev, ok := old[key{i.Secret, i.Policy, i.Reason}]; ok {
			issues[n].Since = prev.Since
			continue
		}
		fresh = append(fresh, i)
	}
	sort.Slice(issues, func(a, b int) bool {
		return issues[a].Secret < issues[b].Secret || (issues[a].Secret == issues[b].Secret && issues[a].Policy < issues[b].Policy)
	})
	if len(issues) == 0 {
		delete(r.issues, ns)
	} else {
		r.issues[ns] = issues
	}
	total := 0
	for _, l := range r.issues {
		total += len(l)
	}
	r.metrics.issues.Set(float64(total))
	return fresh
}

// secretReconciler reconciles one namespace: the Secrets the createSecret
// policies selecting it want.
type secretReconciler struct {
	ctl       *secretController
	c         client.Client // reads from the cache
	namespace string        // Celadon's
	log       logr.Logger
}

// secretChanged enqueues what a Secret event concerns: a managed copy's
// namespace; every namespace when it is a source of the served policies.
func (rec *secretReconciler) secretChanged(ctx context.Context, s *corev1.Secret, q workqueue.TypedRateLimitingInterface[reconcile.Request], enqueueAll func(context.Context, workqueue.TypedRateLimitingInterface[reconcile.Request])) {
	if s.Labels[SecretManagedByLabel] == SecretManagedByValue {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: s.Namespace}})
	}
	for _, src := range SecretSources(rec.ctl.cc.Policies.Current()) {
		ns := src.Namespace
		if ns == "" {
			ns = rec.namespace
		}
		if ns == s.Namespace && src.Name == s.Name {
			enqueueAll(ctx, q)
			return
		}
	}
}

// Reconcile makes the namespace's Secrets as the served policies want.
// Copies are created and updated, never deleted: a namespace a policy no
// longer selects keeps its copies.
func (rec *secretReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ns := &corev1.Namespace{}
	if err := rec.c.Get(ctx, client.ObjectKey{Name: req.Name}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			rec.ctl.setIssues(req.Name, nil)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	if ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating || rec.ctl.leftAlone(ns.Name) != "" {
		rec.ctl.setIssues(ns.Name, nil)
		return reconcile.Result{}, nil
	}
	cc := rec.ctl.cc
	plans, results, err := PlanSecrets(ctx, cc.Policies.Current(), ns, engine.EvalOptions{Namespaces: cc.Namespaces, Cluster: cc.Cluster})
	if err != nil {
		return reconcile.Result{}, err
	}
	var issues []SecretIssue
	now := time.Now().UTC()
	for _, r := range results {
		if r.State == engine.StateError {
			issues = append(issues, SecretIssue{Namespace: ns.Name, Policy: r.Policy, Reason: SecretPolicyError, Message: r.Reason, Since: now})
		}
	}
	var errs []error
	taken := map[string]string{} // secret name → policy, within this namespace
	for i := range plans {
		p := &plans[i]
		if first, dup := taken[p.Name]; dup {
			issues = append(issues, SecretIssue{Namespace: ns.Name, Secret: p.Name, Policy: p.Policy, Reason: SecretConflict,
				Message: fmt.Sprintf("Secret %s/%s is wanted by policy %s too, which comes first", ns.Name, p.Name, first), Since: now})
			continue
		}
		taken[p.Name] = p.Policy
		reason, err := rec.apply(ctx, ns, p)
		if err == nil {
			continue
		}
		if reason == SecretError {
			errs = append(errs, err)
		}
		issues = append(issues, SecretIssue{Namespace: ns.Name, Secret: p.Name, Policy: p.Policy, Reason: reason, Message: err.Error(), Since: now})
	}
	for _, i := range rec.ctl.setIssues(ns.Name, issues) {
		rec.log.Info("createSecret: "+i.Message, "namespace", i.Namespace, "secret", i.Secret, "policy", i.Policy, "reason", i.Reason)
		if i.Reason == SecretConflict {
			rec.ctl.metrics.conflicts.WithLabelValues(i.Policy).Inc()
		}
		cc.Events.Eventf(ns, nil, corev1.EventTypeWarning, i.Reason, "CreateSecret", "%s", i.Message)
	}
	if len(errs) > 0 {
		return reconcile.Result{}, errors.Join(errs...)
	}
	if len(issues) > 0 {
		return reconcile.Result{RequeueAfter: secretConflictRecheck}, nil
	}
	return reconcile.Result{}, nil
}

// apply makes one planned Secret, then adds it to the ServiceAccount when
// asked. A failure returns the issue's reason with the error.
func (rec *secretReconciler) apply(ctx context.Context, ns *corev1.Namespace, p *SecretPlan) (string, error) {
	desired, reason, err := rec.desired(ctx, p)
	if err != nil || desired == nil {
		return reason, err
	}
	key := client.ObjectKey{Namespace: ns.Name, Name: p.Name}
	live := &corev1.Secret{}
	err = rec.c.Get(ctx, key, live) // the cache holds managed Secrets only
	switch {
	case apierrors.IsNotFound(err):
		err = rec.c.Create(ctx, desired)
		if err == nil {
			rec.ctl.metrics.writes.WithLabelValues("create").Inc()
			rec.ctl.cc.Events.Eventf(ns, nil, corev1.EventTypeNormal, "SecretCreated", "CreateSecret", "created Secret %s from %s (policy %s)", p.Name, desired.Annotations[SecretSourceAnnotation], p.Policy)
			break
		}
		if !apierrors.IsAlreadyExists(err) {
			return SecretError, fmt.Errorf("creating Secret %s/%s: %w", ns.Name, p.Name, err)
		}
		// Not in the cache, yet there: unmanaged, or managed and not
		// cached yet. Read it from the API server.
		if err := rec.ctl.apiRead.Get(ctx, key, live); err != nil {
			return SecretError, fmt.Errorf("reading Secret %s/%s: %w", ns.Name, p.Name, err)
		}
		fallthrough
	case err == nil:
		if reason, err := rec.update(ctx, ns, p, desired, live); err != nil {
			return reason, err
		}
	default:
		return SecretError, fmt.Errorf("reading Secret %s/%s: %w", ns.Name, p.Name, err)
	}
	if p.AddToServiceAccount != "" {
		return rec.addToServiceAccount(ctx, ns.Name, p)
	}
	return "", nil
}

// desired returns the Secret the plan wants, reading its source; nil with
// no error when the plan's target is its own source.
func (rec *secretReconciler) desired(ctx context.Context, p *SecretPlan) (*corev1.Secret, string, error) {
	if p.From == nil {
		return desiredSecret(p, rec.namespace, nil), "", nil
	}
	src := types.NamespacedName{Namespace: p.From.Namespace, Name: p.From.Name}
	if src.Namespace == "" {
		if rec.namespace == "" {
			return nil, SecretSourceNotFound, fmt.Errorf("source Secret %s: from.namespace is not set and Celadon's namespace is unknown (set --namespace or $POD_NAMESPACE)", src.Name)
		}
		src.Namespace = rec.namespace
	}
	if src.Namespace == p.Namespace && src.Name == p.Name {
		return nil, "", nil // the source itself
	}
	if src.Namespace != rec.namespace && !slices.Contains(rec.ctl.cc.SourceNamespaces, src.Namespace) {
		// Whoever edits the policies would otherwise read any Secret of
		// the cluster through a copy in a namespace of theirs.
		return nil, SecretSourceNotAllowed, fmt.Errorf("source Secret %s: createSecret copies only from Celadon's namespace and those allowed with --secret-source-namespaces, not %s", src, src.Namespace)
	}
	var reader client.Reader = rec.ctl.apiRead
	if src.Namespace == rec.namespace {
		reader = rec.c // watched: the cache has it
	}
	from := &corev1.Secret{}
	if err := reader.Get(ctx, src, from); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, SecretSourceNotFound, fmt.Errorf("source Secret %s for %s/%s does not exist", src, p.Namespace, p.Name)
		}
		return nil, SecretError, fmt.Errorf("reading source Secret %s: %w", src, err)
	}
	return desiredSecret(p, rec.namespace, from), "", nil
}

// desiredSecret is the Secret a plan wants: a copy of from's type and data,
// or the plan's inline ones when from is nil, with the plan's labels and
// annotations and Celadon's own.
func desiredSecret(p *SecretPlan, celadonNamespace string, from *corev1.Secret) *corev1.Secret {
	s := &corev1.Secret{}
	s.Namespace, s.Name = p.Namespace, p.Name
	s.Labels = map[string]string{}
	maps.Copy(s.Labels, p.Labels)
	s.Labels[SecretManagedByLabel] = SecretManagedByValue
	s.Annotations = map[string]string{}
	maps.Copy(s.Annotations, p.Annotations)
	s.Annotations[SecretPolicyAnnotation] = p.Policy
	s.Annotations[SecretSourceAnnotation] = p.Source(celadonNamespace)
	if from == nil {
		s.Type, s.Data = p.Type, p.Data
	} else {
		s.Type, s.Data = from.Type, from.Data
	}
	return s
}

// update brings a live Secret to desired when Celadon manages it for the
// same policy; anything else is a conflict, and live is left alone.
func (rec *secretReconciler) update(ctx context.Context, ns *corev1.Namespace, p *SecretPlan, desired, live *corev1.Secret) (string, error) {
	want, reason, err := secretUpdate(p, desired, live)
	if err != nil || want == nil {
		return reason, err
	}
	if err := rec.c.Update(ctx, want); err != nil {
		return SecretError, fmt.Errorf("updating Secret %s/%s: %w", ns.Name, p.Name, err)
	}
	rec.ctl.metrics.writes.WithLabelValues("update").Inc()
	rec.ctl.cc.Events.Eventf(ns, nil, corev1.EventTypeNormal, "SecretUpdated", "CreateSecret", "updated Secret %s from %s (policy %s)", p.Name, desired.Annotations[SecretSourceAnnotation], p.Policy)
	return "", nil
}

// secretUpdate returns live brought to desired, or nil when it is up to
// date. Data is replaced whole; labels and annotations are set, others'
// kept. A Secret Celadon does not manage, or manages for another policy, is
// a conflict; a type that differs is an error (it is immutable).
func secretUpdate(p *SecretPlan, desired, live *corev1.Secret) (*corev1.Secret, string, error) {
	name := live.Namespace + "/" + live.Name
	if live.Labels[SecretManagedByLabel] != SecretManagedByValue {
		return nil, SecretConflict, fmt.Errorf("Secret %s exists and is not managed by Celadon (no label %s=%s); policy %s leaves it alone", name, SecretManagedByLabel, SecretManagedByValue, p.Policy)
	}
	if owner := live.Annotations[SecretPolicyAnnotation]; owner != p.Policy {
		return nil, SecretConflict, fmt.Errorf("Secret %s is managed by policy %q, not %s; %s leaves it alone", name, owner, p.Policy, p.Policy)
	}
	if live.Type != desired.Type {
		return nil, SecretError, fmt.Errorf("Secret %s has type %s, the policy wants %s, and a Secret's type cannot change: delete it and Celadon recreates it", name, live.Type, desired.Type)
	}
	want := live.DeepCopy()
	want.Data = desired.Data
	if want.Labels == nil {
		want.Labels = map[string]string{}
	}
	maps.Copy(want.Labels, desired.Labels)
	if want.Annotations == nil {
		want.Annotations = map[string]string{}
	}
	maps.Copy(want.Annotations, desired.Annotations)
	if sameData(live.Data, want.Data) && maps.Equal(live.Labels, want.Labels) && maps.Equal(live.Annotations, want.Annotations) {
		return nil, "", nil
	}
	return want, "", nil
}

func sameData(a, b map[string][]byte) bool {
	return maps.EqualFunc(a, b, func(x, y []byte) bool { return bytes.Equal(x, y) })
}

// addToServiceAccount lists the Secret in the namespace's default
// ServiceAccount's imagePullSecrets. A ServiceAccount not created yet is
// handled when it appears (it is watched).
func (rec *secretReconciler) addToServiceAccount(ctx context.Context, ns string, p *SecretPlan) (string, error) {
	sa := &corev1.ServiceAccount{}
	if err := rec.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: p.AddToServiceAccount}, sa); err != nil {
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		return SecretError, fmt.Errorf("reading ServiceAccount %s/%s: %w", ns, p.AddToServiceAccount, err)
	}
	for _, ref := range sa.ImagePullSecrets {
		if ref.Name == p.Name {
			return "", nil
		}
	}
	patched := sa.DeepCopy()
	patched.ImagePullSecrets = append(patched.ImagePullSecrets, corev1.LocalObjectReference{Name: p.Name})
	// The optimistic lock keeps a concurrent edit of the list: a merge
	// patch replaces lists whole.
	if err := rec.c.Patch(ctx, patched, client.MergeFromWithOptions(sa, client.MergeFromWithOptimisticLock{})); err != nil {
		return SecretError, fmt.Errorf("adding Secret %s to the imagePullSecrets of ServiceAccount %s/%s: %w", p.Name, ns, p.AddToServiceAccount, err)
	}
	rec.ctl.metrics.writes.WithLabelValues("serviceaccount").Inc()
	return "", nil
}
