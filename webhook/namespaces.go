package webhook

import (
	"context"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/engine"
)

// NamespaceLister implements engine.NamespaceGetter on a client-go
// Namespace lister. The server runs a shared informer limited to
// Namespaces, so a request costs a map lookup, never an API call. A
// namespace missing from the cache is an apierrors NotFound error, which
// the engine turns into an error, under failurePolicy, only for policies
// with a namespaceSelector.
//
// Full Namespace objects are cached, not metadata only: namespaceObject in
// CEL exposes status.phase too. Managed fields are stripped on the way in.
// The objects returned are the cache's own: the engine and builtins only
// read them.
type NamespaceLister struct {
	Lister corev1listers.NamespaceLister
}

var _ engine.NamespaceGetter = NamespaceLister{}

// GetNamespace implements engine.NamespaceGetter.
func (n NamespaceLister) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	return n.Lister.Get(name)
}

// NamespaceReader implements engine.NamespaceGetter on a controller-runtime
// client.Reader, such as a manager's cache; each call returns a copy.
type NamespaceReader struct {
	Reader client.Reader
}

var _ engine.NamespaceGetter = NamespaceReader{}

// GetNamespace implements engine.NamespaceGetter.
func (n NamespaceReader) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns := &corev1.Namespace{}
	if err := n.Reader.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		return nil, err
	}
	return ns, nil
}

// lateNamespaces is the server's NamespaceGetter until and after Start
// connects it to the manager's cache.
type lateNamespaces struct {
	g atomic.Pointer[engine.NamespaceGetter]
}

func (l *lateNamespaces) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	g := l.g.Load()
	if g == nil {
		return nil, apierrors.NewServiceUnavailable("celadon: the namespace cache is not started")
	}
	return (*g).GetNamespace(ctx, name)
}

func (l *lateNamespaces) set(g engine.NamespaceGetter) { l.g.Store(&g) }

// startNamespaceInformer runs a shared informer on Namespaces until ctx is
// done. The informer retries on its own while the API server is
// unreachable; the webhook serves meanwhile and readiness waits for it.
//
// It is a plain client-go informer rather than one of the manager's cache:
// the manager waits for its caches to sync before it starts anything else
// and cannot be stopped while they have not, which would tie serving and
// shutdown to the API server's availability.
func startNamespaceInformer(ctx context.Context, cfg *rest.Config) (NamespaceLister, func() bool, func(), error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return NamespaceLister{}, nil, nil, err
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(stripManagedFields))
	nsInformer := factory.Core().V1().Namespaces()
	inf := nsInformer.Informer()
	lister := NamespaceLister{Lister: nsInformer.Lister()}
	factory.Start(ctx.Done())
	return lister, inf.HasSynced, factory.Shutdown, nil
}

func stripManagedFields(obj any) (any, error) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		ns.ManagedFields = nil
	}
	return obj, nil
}
