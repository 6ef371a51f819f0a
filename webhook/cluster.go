package webhook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"celadon.io/celadon/engine"
)

// ClusterCache implements engine.ObjectGetter and engine.LiveGetter for
// builtins that read other objects. Get answers from informer caches: a
// request costs a map lookup, never an API call. GetLive reads the API
// server directly, for builtins that re-check a miss before denying. It
// also implements engine.ObjectPatcher, a direct PATCH, for the builtins
// that record a step of theirs in the cluster.
//
// Informers run only for the resources the served policies read
// (engine.Snapshot.ClusterReads): started by Ensure, at start and after
// every reload, and never stopped while the server runs. A resource read
// with no informer yet gets one on first use. Until an informer has
// synced, Get reads directly.
//
// A resource every reader needs only the metadata of (engine.ClusterRead
// MetadataOnly, e.g. Secrets to know one exists) is cached as
// PartialObjectMetadata through metadata.k8s.io: the Secrets' data never
// reaches Celadon's memory. RBAC is the same either way: list and watch,
// and get for GetLive. Its objects carry apiVersion and metadata only.
//
// Caches follow the API server a moment behind: an object created just
// before the request that names it may be missing. Builtins that deny on a
// miss read it again with GetLive first.
type ClusterCache struct {
	dyn  dynamic.Interface
	meta metadata.Interface

	mu        sync.Mutex
	ctx       context.Context // set by Start; informers run until it is done
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
	_ engine.ObjectGetter  = (*ClusterCache)(nil)
	_ engine.LiveGetter    = (*ClusterCache)(nil)
	_ engine.ObjectPatcher = (*ClusterCache)(nil)
)

// NewClusterCache returns a cache reaching the API server through cfg. No
// informer runs before Start.
func NewClusterCache(cfg *rest.Config) (*ClusterCache, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &ClusterCache{dyn: dyn, meta: meta, informers: map[schema.GroupVersionResource]*clusterInformer{}}, nil
}

// Start lets informers run until ctx is done and starts those for reads.
// It returns a readiness check: nil once they have synced, else an error
// naming the first that has not and why, e.g. RBAC forbids listing it.
// Informers started later fall back to direct reads until they sync.
func (c *ClusterCache) Start(ctx context.Context, reads []engine.ClusterRead) func() error {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
	started := c.Ensure(reads)
	return func() error {
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
	}
}

// Wait waits for every informer to stop, once Start's context is done.
func (c *ClusterCache) Wait() { c.wg.Wait() }

// Ensure starts an informer for each resource of reads that has none, or
// has a metadata-only one while full objects are now needed, and returns
// those it started. Before Start it does nothing.
func (c *ClusterCache) Ensure(reads []engine.ClusterRead) []*clusterInformer {
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
func (c *ClusterCache) ensureLocked(r engine.ClusterRead) *clusterInformer {
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
func (c *ClusterCache) informer(gvr schema.GroupVersionResource) *clusterInformer {
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
func (c *ClusterCache) Get(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
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
func (c *ClusterCache) GetLive(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	c.mu.Lock()
	inf := c.informers[gvr]
	c.mu.Unlock()
	if inf != nil && inf.metadataOnly {
		m, err := c.meta.Resource(gvr).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return toUnstructured(gvr, m)
	}
	return c.dyn.Resource(gvr).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
}

// PatchFieldManager is the field manager of the writes builtins make
// through ClusterCache.Patch, so that managedFields say who wrote what.
const PatchFieldManager = "celadon"

// Patch implements engine.ObjectPatcher with one direct write; the caches
// see the result through their watches, a moment later.
func (c *ClusterCache) Patch(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, pt types.PatchType, data []byte) (*unstructured.Unstructured, error) {
	return c.dyn.Resource(gvr).Namespace(namespace).Patch(ctx, name, pt, data, metav1.PatchOptions{FieldManager: PatchFieldManager})
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

// lateCluster is the server's ObjectGetter until and after Start connects
// it to a ClusterCache.
type lateCluster struct {
	c atomic.Pointer[ClusterCache]
}

var (
	_ engine.ObjectGetter  = (*lateCluster)(nil)
	_ engine.LiveGetter    = (*lateCluster)(nil)
	_ engine.ObjectPatcher = (*lateCluster)(nil)
)

func (l *lateCluster) Get(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	c, err := l.cache()
	if err != nil {
		return nil, err
	}
	return c.Get(ctx, gvr, namespace, name)
}

func (l *lateCluster) GetLive(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	c, err := l.cache()
	if err != nil {
		return nil, err
	}
	return c.GetLive(ctx, gvr, namespace, name)
}

func (l *lateCluster) Patch(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, pt types.PatchType, data []byte) (*unstructured.Unstructured, error) {
	c, err := l.cache()
	if err != nil {
		return nil, err
	}
	return c.Patch(ctx, gvr, namespace, name, pt, data)
}

// cache returns the connected ClusterCache, or a 503 before Start.
func (l *lateCluster) cache() (*ClusterCache, error) {
	if c := l.c.Load(); c != nil {
		return c, nil
	}
	return nil, apierrors.NewServiceUnavailable("celadon: the cluster cache is not started")
}

// startCluster connects the late ObjectGetter to a ClusterCache running
// until ctx is done, with informers for what the served policies read. It
// returns the readiness check of those informers and a function waiting
// for them to stop. It does nothing when Options.Cluster is set.
func (s *Server) startCluster(ctx context.Context, cfg *rest.Config) (ready func() error, wait func(), err error) {
	if s.lateCl == nil {
		return func() error { return nil }, func() {}, nil
	}
	c, err := NewClusterCache(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster cache: %w", err)
	}
	ready = c.Start(ctx, s.Snapshot().ClusterReads())
	s.lateCl.c.Store(c)
	s.store.Subscribe(func(snap *engine.Snapshot) { c.Ensure(snap.ClusterReads()) })
	return ready, c.Wait, nil
}
