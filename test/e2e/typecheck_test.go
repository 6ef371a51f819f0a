package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

// TestTypeCheckAgainstTheClustersSchemas checks that the cluster's schemas
// (engine.DiscoverySchemas, what `celadon serve` reads at start) type-check
// a CRD's kind, which the offline snapshot does not know, and the built-in
// ones as the snapshot does.
func TestTypeCheckAgainstTheClustersSchemas(t *testing.T) {
	requireSuite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "gadgets.typecheck.example.com"},
		"spec": map[string]any{
			"group": "typecheck.example.com",
			"scope": "Namespaced",
			"names": map[string]any{"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"spec": map[string]any{"type": "object", "properties": map[string]any{"size": map[string]any{"type": "integer"}}},
					},
				}},
			}},
		},
	}}
	if err := suite.c.Create(ctx, crd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = suite.c.Delete(context.Background(), crd, client.PropagationPolicy("Background")) })

	dc, err := discovery.NewDiscoveryClientForConfig(suite.cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	policy := func(resource, expr string) []engine.File {
		return []engine.File{{Name: "p.yaml", Data: []byte(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: p}
spec:
  match:
    resources: [` + resource + `]
    conditions:
    - expression: ` + expr + `
  action: deny
  with: {message: denied}
`)}}
	}
	compile := func(schemas *engine.Schemas, files []engine.File) error {
		_, err := engine.Compile(files, engine.Options{Registry: builtins.Registry(), Schemas: schemas})
		return err
	}
	// Offline, the CRD's kind is dyn.
	if err := compile(nil, policy("typecheck.example.com/gadgets", "object.spec.colour == 'red'")); err != nil {
		t.Fatalf("offline, a CRD's field is not checked: %v", err)
	}
	// The CRD's schema reaches /openapi/v3 a moment after it is
	// established.
	var last error
	for {
		schemas, err := engine.DiscoverySchemas(dc)
		if err != nil {
			t.Fatal(err)
		}
		last = compile(schemas, policy("typecheck.example.com/gadgets", "object.spec.colour == 'red'"))
		if last != nil && strings.Contains(last.Error(), "undefined field 'colour' (object is a typecheck.example.com.v1.Gadget)") {
			if err := compile(schemas, policy("typecheck.example.com/gadgets", "object.spec.size > 3")); err != nil {
				t.Errorf("a field of the CRD's schema: %v", err)
			}
			if err := compile(schemas, policy("pods", "object.spec.replicas > 3")); err == nil || !strings.Contains(err.Error(), "undefined field 'replicas' (object is a core.v1.Pod)") {
				t.Errorf("a Pod has no spec.replicas in the cluster's schema either: got %v", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the CRD's field is never type-checked; last: %v", last)
		case <-time.After(time.Second):
		}
	}
}
