package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"celadon.io/celadon/engine"
)

// Cache is the one owner of the informers the server reads at admission:
// the Namespaces behind namespaceSelector and namespaceObject, and the
// resources builtins read (engine.Snapshot.ClusterReads). It implements
// engine.NamespaceGetter, engine.ObjectGetter and engine.LiveGetter, and
// engine.ObjectPatcher, a direct PATCH, for the builtins that record a
// step of theirs in the cluster; and engine.ObjectLister and
// engine.LiveLister, a namespace's objects by label, for the builtins that
// must know what a namespace holds.
//
// Get and GetNamespace answer from the informers: a request costs a map
// lookup, never an API call. GetLive reads the API server directly, for
// builtins that re-check a miss before denying. Before Start, every read
// is a ServiceUnavailable error, so a policy's failurePolicy decides.
//
// Informers for builtins run only for the resources the served policies
// read: started by Ensure, at start and after every reload, and never
// stopped while the server runs. A resource read with no informer yet gets
// one on first use. Until an informer has synced, Get reads directly.
//
// A resource every reader needs only the metadata of (engine.ClusterRead
// MetadataOnly, e.g. Secrets to know one exists) is cached as
// PartialObjectMetadata through metadata.k8s.io: the Secrets' data never
// reaches Celadon's memory. RBAC is the same either way: list and watch,
// and get for GetLive. Its objects carry apiVersion and metadata only.
//
// Full Namespace objects are cached, not metadata only: namespaceObject in
// CEL exposes status.phase too. Managed fields are stripped on the way in.
// The objects returned are the cache's own: read them only.
//
// Caches follow the API server a moment behind: an object created just
// before the request that names it may be missing. Builtins that deny on a
// miss read it again with GetLive first.
type Cache struct {
	namespaces bool // run the namespace informer
	// live bounds the direct reads of every request together (GetLive):
	// past it they fail at once with engine.ErrLiveReadLimited rather than
	// wait, so that a burst of requests that miss the cache cannot flood
	// the API server nor hold the evaluation slots others need.
	live *rate.Limiter

	mu        sync.Mutex
	ctx       context.Context // set by Start; informers run until it is done
	dyn       dynamic.Interface
	meta      metadata.Interface
	cs        kubernetes.Interface
	ns        corev1listers.NamespaceLister
	nsSynced  func() bool
	informers map[schema.GroupVersionResource]*clusterInformer
	wg        sync.WaitGroup
}

// clusterInformer is one resource's informer.
type clusterInformer struct {
	resource     schema.GroupVersionResource
	metadataOnly bool
	// lastErr is the informer's last list or watch error, for readiness.
	lastErr atomic.Pointer[error]
	lister  cache.GenericLister
	synced  func() bool
	stop    context.CancelFunc
}

var (
	_ engine.NamespaceGetter = (*Cache)(nil)
	_ engine.ObjectGetter    = (*Cache)(nil)
	_ engine.LiveGetter      = (*Cache)(nil)
	_ engine.ObjectPatcher   = (*Cache)(nil)
	_ engine.ObjectLister    = (*Cache)(nil)
	_ engine.LiveLister      = (*Cache)(nil)
)

// New returns a cache that answers ServiceUnavailable until Start. Without
// namespaces, it runs no namespace informer: the caller serves them.
func New(namespaces bool) *Cache {
	return &Cache{
		namespaces: namespaces,
		live:       rate.NewLimiter(LiveReadsPerSecond, LiveReadBurst),
		informers:  map[schema.GroupVersionResource]*clusterInformer{},
	}
}

// The rate of direct reads (GetLive) of the whole server.
const (
	LiveReadsPerSecond = 50
	LiveReadBurst      = 100
)

// errNotStarted is what the cache answers before Start.
func errNotStarted(what string) error {
	return apierrors.NewServiceUnavailable("celadon: the " + what + " cache is not started")
}

// Start connects the cache to the API server through cfg, runs the
// namespace informer and those for reads until ctx is done, and returns a
// readiness check: nil once they have synced, else an error naming the
// first that has not and why, e.g. RBAC forbids listing it. Informers
// started later fall back to direct reads until they sync. Start may be
// called once.
func (c *Cache) Start(ctx context.Context, cfg *rest.Config, reads []engine.ClusterRead) (func() error, error) {
	// Direct reads are bounded by c.live, which refuses at once; client-go's
	// own limiter would make a request wait for its turn, holding an
	// evaluation slot. The informers' few lists and watches back off on
	// their own.
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst, cfg.RateLimiter = -1, 0, nil
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	// A plain client-go informer rather than one of a controller-runtime
	// manager's caches: the manager waits for its caches to sync before it
	// starts anything else and cannot be stopped while they have not, which
	// would tie serving and shutdown to the API server's availability.
	nsSynced := func() bool { return true }
	var nsErr atomic.Pointer[error] // the namespace informer's last list or watch error
	c.mu.Lock()
	c.ctx, c.dyn, c.meta, c.cs = ctx, dyn, meta, cs
	if c.namespaces {
		factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(dropManagedFields))
		nsInformer := factory.Core().V1().Namespaces()
		_ = nsInformer.Informer().SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
			nsErr.Store(&err)
			cache.DefaultWatchErrorHandler(ctx, r, err)
		})
		nsSynced = nsInformer.Informer().HasSynced
		c.ns, c.nsSynced = nsInformer.Lister(), nsSynced
		factory.Start(ctx.Done())
		c.wg.Go(func() { <-ctx.Done(); factory.Shutdown() })
	}
	c.mu.Unlock()
	started := c.Ensure(reads)
	return func() error {
		if !nsSynced() {
			msg := "cluster cache: namespaces not synced"
			if err := nsErr.Load(); err != nil {
				msg += ": " + (*err).Error()
			}
			return errors.New(msg)
		}
		for _, inf := range started {
			if !inf.synced() {
				msg := "cluster cache: " + inf.resource.String() + " not synced"
				if err := inf.lastErr.Load(); err != nil {
					msg += ": " + (*err).Error()
				}
				return errors.New(msg)
			}
		}
		return nil
	}, nil
}

// GetNamespace implements engine.NamespaceGetter. A namespace missing from
// the cache is read from the API server, as the API server's own webhook
// matcher does: one created a moment before the request has not reached the
// cache yet. Only a namespace the API server does not have either is an
// apierrors NotFound error.
func (c *Cache) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	c.mu.Lock()
	lister, cs := c.ns, c.cs
	c.mu.Unlock()
	if lister == nil {
		return nil, errNotStarted("namespace")
	}
	if !c.nsSynced() {
		// Its misses would be NotFound for namespaces that exist.
		return nil, apierrors.NewServiceUnavailable("celadon: the namespace cache is not synced yet")
	}
	ns, err := lister.Get(name)
	if !apierrors.IsNotFound(err) {
		return ns, err
	}
	if !c.live.Allow() {
		return nil, apierrors.NewServiceUnavailable("celadon: namespace " + name + " is not in the cache yet, and " + engine.ErrLiveReadLimited.Error())
	}
	return cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
}

// Wait waits for every informer to stop, once Start's context is done.
func (c *Cache) Wait() { c.wg.Wait() }

// Ensure starts an informer for each resource of reads that has none, or
// has a metadata-only one while full objects are now needed, and returns
// those it started. Before Start it does nothing. The server calls it for
// every new policy set.
func (c *Cache) Ensure(reads []engine.ClusterRead) []*clusterInformer {
	c.mu.Lock()
	defer c.mu.Unlock()
	var started []*clusterInformer
	for _, r := range reads {
		if inf := c.ensureLocked(r); inf != nil {
			started = append(started, inf)
		}
	}
	return started
}

// ensureLocked starts an informer for r when needed; nil when none was
// started.
func (c *Cache) ensureLocked(r engine.ClusterRead) *clusterInformer {
	if c.ctx == nil || c.ctx.Err() != nil {
		return nil
	}
	old, ok := c.informers[r.Resource]
	if ok && (!old.metadataOnly || r.MetadataOnly) {
		return nil
	}
	var gi informers.GenericInformer
	if r.MetadataOnly {
		gi = metadatainformer.NewFilteredMetadataInformer(c.meta, r.Resource, metav1.NamespaceAll, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, nil)
	} else {
		gi = dynamicinformer.NewFilteredDynamicInformer(c.dyn, r.Resource, metav1.NamespaceAll, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, nil)
	}
	inf := gi.Informer()
	ci := &clusterInformer{resource: r.Resource, metadataOnly: r.MetadataOnly, lister: gi.Lister(), synced: inf.HasSynced}
	// Both fail only once the informer runs.
	_ = inf.SetTransform(dropManagedFields)
	_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		ci.lastErr.Store(&err)
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
	ctx, stop := context.WithCancel(c.ctx)
	ci.stop = stop
	c.informers[r.Resource] = ci
	c.wg.Go(func() { inf.RunWithContext(ctx) })
	if ok {
		// The full informer replaces the metadata-only one once it syncs;
		// until then Get reads directly.
		c.wg.Go(func() {
			cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)
			old.stop()
		})
	}
	return ci
}

func dropManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}

// informer returns the resource's informer, starting one (for full
// objects) when there is none.
func (c *Cache) informer(gvr schema.GroupVersionResource) *clusterInformer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if inf, ok := c.informers[gvr]; ok {
		return inf
	}
	c.ensureLocked(engine.ClusterRead{Resource: gvr})
	return c.informers[gvr]
}

// Get implements engine.ObjectGetter. namespace is "" for cluster-scoped
// objects. The objects returned are the cache's own: read them only.
func (c *Cache) Get(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	if !c.started() {
		return nil, errNotStarted("cluster")
	}
	inf := c.informer(gvr)
	if inf == nil || !inf.synced() {
		return c.GetLive(ctx, gvr, namespace, name)
	}
	var obj runtime.Object
	var err error
	if namespace == "" {
		obj, err = inf.lister.Get(name)
	} else {
		obj, err = inf.lister.ByNamespace(namespace).Get(name)
	}
	if err != nil {
		return nil, err
	}
	return toUnstructured(gvr, obj)
}

// GetLive implements engine.LiveGetter with one direct read: of metadata
// only when the resource is cached that way.
func (c *Cache) GetLive(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	c.mu.Lock()
	inf, dyn, meta := c.informers[gvr], c.dyn, c.meta
	c.mu.Unlock()
	if dyn == nil {
		return nil, errNotStarted("cluster")
	}
	if !c.live.Allow() {
		return nil, engine.ErrLiveReadLimited
	}
	if inf != nil && inf.metadataOnly {
		m, err := meta.Resource(gvr).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return toUnstructured(gvr, m)
	}
	return dyn.Resource(gvr).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
}

// List implements engine.ObjectLister from the resource's informer, through
// its namespace index: a request costs a walk of that namespace's objects in
// memory, never an API call, and only the limit returned are converted.
// Until the informer has synced, it lists directly (ListLive).
func (c *Cache) List(ctx context.Context, gvr schema.GroupVersionResource, namespace string, selector labels.Selector, limit int) ([]*unstructured.Unstructured, int, error) {
	if !c.started() {
		return nil, 0, errNotStarted("cluster")
	}
	inf := c.informer(gvr)
	if inf == nil || !inf.synced() {
		return c.ListLive(ctx, gvr, namespace, selector, limit)
	}
	objs, err := inf.lister.ByNamespace(namespace).List(selector)
	if err != nil {
		return nil, 0, err
	}
	names := make([]string, len(objs))
	for i, o := range objs {
		m, err := apimeta.Accessor(o)
		if err != nil {
			return nil, 0, fmt.Errorf("cluster cache: %s: %w", gvr, err)
		}
		names[i] = m.GetName()
	}
	order := make([]int, len(objs))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return names[order[a]] < names[order[b]] })
	out := make([]*unstructured.Unstructured, 0, min(limit, len(objs)))
	for _, i := range order[:min(limit, len(objs))] {
		u, err := toUnstructured(gvr, objs[i])
		if err != nil {
			return nil, 0, err
		}
		out = append(out, u)
	}
	return out, len(objs), nil
}

// ListLive implements engine.LiveLister with one direct LIST of at most
// limit objects (at least 1), filtered by the API server: of metadata only
// when the resource is cached that way. It counts against the server's
// rate of direct reads, as GetLive does.
func (c *Cache) ListLive(ctx context.Context, gvr schema.GroupVersionResource, namespace string, selector labels.Selector, limit int) ([]*unstructured.Unstructured, int, error) {
	c.mu.Lock()
	inf, dyn, meta := c.informers[gvr], c.dyn, c.meta
	c.mu.Unlock()
	if dyn == nil {
		return nil, 0, errNotStarted("cluster")
	}
	if !c.live.Allow() {
		return nil, 0, engine.ErrLiveReadLimited
	}
	// A limit of 0 would mean "all" to the API server.
	opts := metav1.ListOptions{LabelSelector: selector.String(), Limit: int64(max(limit, 1))}
	var items []*unstructured.Unstructured
	var lm metav1.ListMeta
	if inf != nil && inf.metadataOnly {
		l, err := meta.Resource(gvr).Namespace(namespace).List(ctx, opts)
		if err != nil {
			return nil, 0, err
		}
		for i := range l.Items {
			u, err := toUnstructured(gvr, &l.Items[i])
			if err != nil {
				return nil, 0, err
			}
			items = append(items, u)
		}
		lm = l.ListMeta
	} else {
		l, err := dyn.Resource(gvr).Namespace(namespace).List(ctx, opts)
		if err != nil {
			return nil, 0, err
		}
		for i := range l.Items {
			items = append(items, &l.Items[i])
		}
		lm = metav1.ListMeta{Continue: l.GetContinue(), RemainingItemCount: l.GetRemainingItemCount()}
	}
	sort.Slice(items, func(a, b int) bool { return items[a].GetName() < items[b].GetName() })
	total := len(items)
	switch {
	case lm.Continue == "":
	case lm.RemainingItemCount != nil:
		total += int(*lm.RemainingItemCount)
	default:
		total = -1
	}
	return items, total, nil
}

// started reports whether Start has run.
func (c *Cache) started() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dyn != nil
}

// PatchFieldManager is the field manager of the writes builtins make
// through Cache.Patch, so that managedFields say who wrote what.
const PatchFieldManager = "celadon"

// Patch implements engine.ObjectPatcher with one direct write; the caches
// see the result through their watches, a moment later.
func (c *Cache) Patch(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, pt types.PatchType, data []byte) (*unstructured.Unstructured, error) {
	c.mu.Lock()
	dyn := c.dyn
	c.mu.Unlock()
	if dyn == nil {
		return nil, errNotStarted("cluster")
	}
	return dyn.Resource(gvr).Namespace(namespace).Patch(ctx, name, pt, data, metav1.PatchOptions{FieldManager: PatchFieldManager})
}

// toUnstructured returns a cached or read object as an Unstructured: a
// PartialObjectMetadata becomes apiVersion and metadata.
func toUnstructured(gvr schema.GroupVersionResource, obj runtime.Object) (*unstructured.Unstructured, error) {
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		return o, nil
	case *metav1.PartialObjectMetadata:
		md, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&o.ObjectMeta)
		if err != nil {
			return nil, err
		}
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": gvr.GroupVersion().String(), "metadata": md}}, nil
	}
	return nil, fmt.Errorf("cluster cache: unexpected %T for %s", obj, gvr)
}
