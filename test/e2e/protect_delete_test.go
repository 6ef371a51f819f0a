package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const protectedLabel = "celadon.io/protected"

// TestProtectedObjectsCannotBeDeleted proves the shipped
// policies/protect-delete.yaml: the API server refuses to DELETE a
// Deployment, a Service and a Namespace labelled celadon.io/protected=true,
// with the policy's message, and deletes the same objects without the
// label.
func TestProtectedObjectsCannotBeDeleted(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	ns := newNamespace(ctx, t, "protect", nil)

	objects := func(name string, labels map[string]string) []client.Object {
		sel := map[string]string{"app": name}
		return []client.Object{
			&appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
				Spec: appsv1.DeploymentSpec{
					Replicas: ptr.To(int32(0)),
					Selector: &metav1.LabelSelector{MatchLabels: sel},
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: podSpec()},
				},
			},
			&corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
				Spec:       corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{Port: 80}}},
			},
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name, Labels: labels}},
		}
	}
	protected := objects("payments", map[string]string{protectedLabel: "true"})
	unprotected := objects("scratch", map[string]string{protectedLabel: "false"})
	for _, obj := range append(append([]client.Object{}, protected...), unprotected...) {
		if err := suite.c.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	t.Cleanup(func() {
		// Unprotect what is left so the namespaces can go.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, obj := range protected {
			patch := []byte(`{"metadata":{"labels":{"` + protectedLabel + `":null}}}`)
			if err := suite.c.Patch(ctx, obj, client.RawPatch("application/merge-patch+json", patch)); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("unprotecting %s: %v", obj.GetName(), err)
				continue
			}
			if err := suite.c.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting %s: %v", obj.GetName(), err)
			}
		}
	})

	// The policy's messageExpression.
	want := map[string]string{
		"Deployment": "deployment " + ns + "/payments is protected by the label celadon.io/protected=true; remove the label to delete it",
		"Service":    "service " + ns + "/payments is protected by the label celadon.io/protected=true; remove the label to delete it",
		"Namespace":  "namespace " + ns + "-payments is protected by the label celadon.io/protected=true; remove the label to delete it",
	}
	for _, obj := range protected {
		kind := kindOf(obj)
		t.Run("protected "+kind, func(t *testing.T) {
			err := suite.c.Delete(ctx, obj)
			if err == nil {
				t.Fatalf("DELETE of protected %s %s was allowed", kind, obj.GetName())
			}
			if !apierrors.IsForbidden(err) && !apierrors.IsBadRequest(err) {
				t.Errorf("error is not a denial (403 or 400): %v", err)
			}
			if !strings.Contains(err.Error(), want[kind]) {
				t.Errorf("denial does not carry the policy's message\n got: %v\nwant: ...%s...", err, want[kind])
			}
			if !strings.Contains(err.Error(), `admission webhook "fail.validate.celadon.io" denied the request`) {
				t.Errorf("denial does not come from Celadon's fail.validate webhook: %v", err)
			}
			// Still there, label and all.
			if err := suite.c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
				t.Fatalf("protected %s is gone: %v", kind, err)
			}
			if obj.GetDeletionTimestamp() != nil {
				t.Errorf("protected %s is being deleted", kind)
			}
		})
	}
	for _, obj := range unprotected {
		kind := kindOf(obj)
		t.Run("unprotected "+kind, func(t *testing.T) {
			if err := suite.c.Delete(ctx, obj); err != nil {
				t.Fatalf("DELETE of unprotected %s %s: %v", kind, obj.GetName(), err)
			}
			// A Namespace is finalized by the namespace controller; being
			// deleted is what the API server decided.
			waitFor(ctx, t, fmt.Sprintf("%s %s to be deleted", kind, obj.GetName()), func(ctx context.Context) (bool, error) {
				err := suite.c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
				if apierrors.IsNotFound(err) {
					return true, nil
				}
				return err == nil && obj.GetDeletionTimestamp() != nil, err
			})
		})
	}
}

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *appsv1.Deployment:
		return "Deployment"
	case *corev1.Service:
		return "Service"
	case *corev1.Namespace:
		return "Namespace"
	}
	return fmt.Sprintf("%T", obj)
}
