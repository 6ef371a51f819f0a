package cluster

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/engine"
)

// NamespaceReader implements engine.NamespaceGetter on a controller-runtime
// client.Reader, such as a manager's cache or a fake client; each call
// returns a copy.
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
