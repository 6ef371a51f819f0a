package e2e

import (
	"context"
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

// TestNamespaceWithProtectedContentsIsNotHalfDeleted proves the shipped
// policies/protect-namespace-contents.yaml with the namespace controller
// running: the DELETE of an unlabelled namespace holding a protected
// Deployment is denied, naming it, and nothing in it is deleted (before the
// policy, everything else went and the namespace stuck in Terminating);
// once the label is removed, the namespace is deleted completely.
func TestNamespaceWithProtectedContentsIsNotHalfDeleted(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-nscontents-"}}
	if err := suite.c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	sel := map[string]string{"app": "ledger"}
	protected := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "ledger", Labels: map[string]string{"app": "ledger", protectedLabel: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: podSpec()},
		},
	}
	others := []client.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "settings"}, Data: map[string]string{"mode": "live"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "credentials"}, StringData: map[string]string{"password": "hunter2"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "ledger"}, Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{Port: 80}}}},
	}
	all := append([]client.Object{protected}, others...)
	for _, obj := range all {
		if err := suite.c.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	unprotect := func(ctx context.Context) error {
		patch := []byte(`{"metadata":{"labels":{"` + protectedLabel + `":null}}}`)
		return suite.c.Patch(ctx, protected, client.RawPatch("application/merge-patch+json", patch))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := unprotect(ctx); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("unprotecting: %v", err)
		}
		if err := suite.c.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", ns.Name, err)
		}
	})

	err := suite.c.Delete(ctx, ns)
	if err == nil {
		t.Fatalf("DELETE of namespace %s holding a protected Deployment was allowed", ns.Name)
	}
	want := "namespace " + ns.Name + " holds 1 protected object (celadon.io/protected=true): deployments.apps/ledger; " +
		"deleting it would delete everything else in it and leave it stuck in Terminating"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("denial does not name the protected Deployment\n got: %v\nwant: ...%s...", err, want)
	}
	if !strings.Contains(err.Error(), `admission webhook "fail.validate.celadon.io" denied the request`) {
		t.Errorf("denial does not come from Celadon's fail.validate webhook: %v", err)
	}
	// Give the namespace controller time to act, were the namespace
	// terminating: nothing may go.
	time.Sleep(3 * time.Second)
	if err := suite.c.Get(ctx, client.ObjectKeyFromObject(ns), ns); err != nil {
		t.Fatalf("namespace: %v", err)
	}
	if ns.DeletionTimestamp != nil || ns.Status.Phase != corev1.NamespaceActive {
		t.Fatalf("namespace %s is being deleted (phase %s) though its DELETE was denied", ns.Name, ns.Status.Phase)
	}
	for _, obj := range all {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Errorf("%T %s is gone: %v", obj, obj.GetName(), err)
		} else if obj.GetDeletionTimestamp() != nil {
			t.Errorf("%T %s is being deleted", obj, obj.GetName())
		}
	}

	// Unprotected on purpose: the namespace goes, contents and all, at
	// once: the API server's list decides, not a cache still holding the
	// label.
	if err := unprotect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := suite.c.Delete(ctx, ns); err != nil {
		t.Fatalf("DELETE of namespace %s once unprotected: %v", ns.Name, err)
	}
	waitFor(ctx, t, "namespace "+ns.Name+" to be deleted completely", func(ctx context.Context) (bool, error) {
		err := suite.c.Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	for _, obj := range all {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(obj), obj); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s outlived its namespace: %v", obj, obj.GetName(), err)
		}
	}
}
