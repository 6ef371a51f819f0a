package server

import (
	"celadon.io/celadon/webhook"

	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"celadon.io/celadon/builtins"
)

// The cluster cache itself runs against a real API server in test/e2e
// (TestClusterCache); these tests need none.

// oneService is an ObjectGetter holding Service shop/api with port 80.
type oneService struct{}

func (oneService) Get(_ context.Context, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	if gvr.Resource == "services" && ns == "shop" && name == "api" {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "api", "namespace": "shop"},
			"spec": map[string]any{"ports": []any{map[string]any{"port": int64(80)}}},
		}}, nil
	}
	return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
}

const ingressPolicy = `  match:
    resources: [networking.k8s.io/ingresses]
  action: checkIngressBackends
`

// ingressReview is a review of an Ingress CREATE in shop whose one backend
// is service:80.
func ingressReview(service string) []byte {
	return review(v1, "1d2c3b4a-0000-4000-8000-000000000001", func(r *admissionv1.AdmissionRequest) {
		r.Kind = metav1.GroupVersionKind{Group: "networking.k8s.io", Version: "v1", Kind: "Ingress"}
		r.Resource = metav1.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"}
		r.Name, r.Namespace = "shop", "shop"
		r.Object = runtime.RawExtension{Raw: []byte(`{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"shop","namespace":"shop"},` +
			`"spec":{"defaultBackend":{"service":{"name":"` + service + `","port":{"number":80}}}}}`)}
	})
}

// TestServerServesOptionsCluster: Options.Cluster, when set, is what
// builtins read.
func TestServerServesOptionsCluster(t *testing.T) {
	s, _ := newTestServer(t, map[string]string{"p.yaml": policy("backends", ingressPolicy)}, func(o *Options) {
		o.Registry = builtins.Registry()
		o.Cluster = oneService{}
	})
	if got := mustReview(t, post(s.ValidateHandler(), webhook.ValidatePath, ingressReview("api"), "application/json")); !got.Response.Allowed {
		t.Errorf("backend api:80 exists, but denied: %+v", got.Response.Result)
	}
	got := mustReview(t, post(s.ValidateHandler(), webhook.ValidatePath, ingressReview("cart"), "application/json"))
	if got.Response.Allowed || got.Response.Result.Message != `service "cart" not found` {
		t.Errorf("backend cart:80: allowed %v, result %+v; want denied: service \"cart\" not found", got.Response.Allowed, got.Response.Result)
	}
}

// TestServerClusterBeforeStart: without Options.Cluster, lookups before
// Start are errors (the policy's failurePolicy decides), never a pass.
func TestServerClusterBeforeStart(t *testing.T) {
	s, _ := newTestServer(t, map[string]string{"p.yaml": policy("backends", ingressPolicy)}, func(o *Options) {
		o.Registry = builtins.Registry()
	})
	got := mustReview(t, post(s.ValidateHandler(), webhook.ValidatePath, ingressReview("api"), "application/json"))
	if got.Response.Allowed || !strings.Contains(got.Response.Result.Message, "the cluster cache is not started") {
		t.Errorf("allowed %v, result %+v; want denied by failurePolicy Fail: the cluster cache is not started", got.Response.Allowed, got.Response.Result)
	}
}
