package deploy

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
)

// TestUnreadyInstall applies every install for real to an API server with
// no kubelet: the image is never pulled and no pod ever runs, as on a
// cluster where Celadon's image is wrong or its nodes are full. Nothing the
// install applied may stand in the way of the cluster: deleting an
// unlabelled ConfigMap, a Service and a namespace succeeds, and no webhook
// configuration exists (Celadon writes them once a replica is ready).
//
// The control: the configurations a ready Celadon writes for the shipped
// policies, pointing at the Service of an install whose pods do not run,
// make the same deletes fail. So a webhook configuration applied with the
// install would be caught.
func TestUnreadyInstall(t *testing.T) {
	c, _ := sharedControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	for i, k := range kustomizations {
		t.Run(filepath.Base(k.dir), func(t *testing.T) {
			checkInert(ctx, t, c, fmt.Sprintf("unready-%d", i), build(t, k.dir))
		})
	}
	t.Run("monitoring", func(t *testing.T) { checkInert(ctx, t, c, "unready-monitoring", build(t, monitoringOverlay(t))) })
	// The chart, as `helm install` applies it (in install order).
	for i, values := range []map[string]any{
		{"certificates": "cert-manager", "createNamespace": true, "serviceMonitor": map[string]any{"enabled": true}, "prometheusRule": map[string]any{"enabled": true}},
		{"certificates": "self-signed", "createSecret": map[string]any{"enabled": true}},
		{"certificates": "secret", "autoscaling": map[string]any{"enabled": true}},
	} {
		t.Run(fmt.Sprintf("chart %v", values["certificates"]), func(t *testing.T) {
			checkInert(ctx, t, c, fmt.Sprintf("unready-chart-%d", i), mustRenderChart(t, "celadon-chart", values))
		})
	}

	t.Run("control", func(t *testing.T) {
		objs := build(t, CertManagerOverlay)
		applyForReal(ctx, t, c, objs)
		t.Cleanup(func() { removeInstall(context.Background(), t, c, objs) })
		m, v := shippedConfigurations(t, Namespace)
		for _, obj := range []client.Object{m, v} {
			if err := c.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := c.Delete(context.Background(), obj); client.IgnoreNotFound(err) != nil {
					t.Errorf("deleting %T %s: %v", obj, obj.GetName(), err)
				}
			})
		}
		ns := victims(ctx, t, c, "unready-control")
		// The configurations are narrowed: an unlabelled Service is not
		// sent to Celadon, a protected one is.
		if err := c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plain"}}); err != nil {
			t.Errorf("deleting an unlabelled Service while the configurations call a Celadon that does not run: %v, want it deleted", err)
		}
		err := c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "protected"}})
		if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
			t.Errorf("deleting a protected Service while the configurations call a Celadon that does not run: %v, want a failed webhook call", err)
		}
		if err := c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
			t.Errorf("deleting a namespace while the configurations call a Celadon that does not run: %v, want a failed webhook call", err)
		}
	})
}

// checkInert applies objs for real, checks that the cluster works around
// them as if they were not there, and removes them (but the namespaces: a
// deleted namespace stays Terminating without a namespace controller, and
// the next install would be refused).
func checkInert(ctx context.Context, t *testing.T, c client.Client, victimPrefix string, objs []*unstructured.Unstructured) {
	t.Helper()
	applyForReal(ctx, t, c, objs)
	defer removeInstall(ctx, t, c, objs)

	var m admissionregistrationv1.MutatingWebhookConfigurationList
	var v admissionregistrationv1.ValidatingWebhookConfigurationList
	if err := c.List(ctx, &m); err != nil {
		t.Fatal(err)
	}
	if err := c.List(ctx, &v); err != nil {
		t.Fatal(err)
	}
	for _, w := range m.Items {
		t.Errorf("MutatingWebhookConfiguration %s exists though Celadon never ran", w.Name)
	}
	for _, w := range v.Items {
		t.Errorf("ValidatingWebhookConfiguration %s exists though Celadon never ran", w.Name)
	}

	ns := victims(ctx, t, c, victimPrefix)
	for _, obj := range []client.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plain"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plain"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "protected"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
	} {
		if err := c.Delete(ctx, obj); err != nil {
			t.Errorf("deleting %T %s with the install applied and no Celadon running: %v", obj, obj.GetName(), err)
		}
	}
}

// victims creates a namespace with an unlabelled ConfigMap and Service
// named plain, and returns its name.
func victims(ctx context.Context, t *testing.T, c client.Client, name string) string {
	t.Helper()
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "plain"}, Data: map[string]string{"k": "v"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "plain"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}},
		// What the shipped protect-delete policy protects: its DELETE calls
		// the Fail webhook.
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "protected", Labels: map[string]string{"celadon.io/protected": "true"}},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}},
	} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	return name
}

// applyForReal applies objs server-side, as `kubectl apply` does, after
// creating the namespaces they go into (as `helm install
// --create-namespace` would).
func applyForReal(ctx context.Context, t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, u := range objs {
		if ns := u.GetNamespace(); ns != "" {
			if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
				t.Fatalf("creating the namespace %s: %v", ns, err)
			}
		}
	}
	for _, u := range objs {
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kubectl"), client.ForceOwnership); err != nil {
			t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// removeInstall deletes objs, but their Namespaces.
func removeInstall(ctx context.Context, t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			continue
		}
		if err := c.Delete(ctx, u); client.IgnoreNotFound(err) != nil {
			t.Errorf("deleting %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// shippedConfigurations returns the configurations `celadon serve
// --manage-webhooks --webhook-service=<ns>/celadon` writes for the shipped
// policies, as the generator of the server builds them.
func shippedConfigurations(t *testing.T, ns string) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
	t.Helper()
	files, err := engine.ReadFiles(filepath.Join(root, PoliciesDir))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	m, v, err := controllers.Configurations(snap, controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: ns, Name: Service}})
	if err != nil {
		t.Fatal(err)
	}
	return m, v
}
