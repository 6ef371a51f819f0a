package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/controlplane"
	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/webhook"
)

// TestUnmatchedRequestsNeverLeaveTheAPIServer proves the narrowed webhook
// configurations through the real API server, with the shipped policies
// alone: a plain Deployment's pod and the DELETE of an unlabelled
// ConfigMap or Service are never sent to Celadon (its request counter does
// not move), while a StatefulSet's pod and a protected DELETE are. With
// Celadon stopped, the unmatched requests still succeed, and the protected
// DELETE still fails (failurePolicy Fail).
func TestUnmatchedRequestsNeverLeaveTheAPIServer(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)

	// The main server serves the shipped policies too: take its
	// configurations away for the test, so that only this one decides.
	suite.main.mu.Lock()
	mainCA := suite.main.ca
	suite.main.mu.Unlock()
	if err := suite.main.uninstallConfigs(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := suite.main.installConfigs(ctx, suite.main.srv.Snapshot(), mainCA); err != nil {
			t.Errorf("reinstalling the main server's configurations: %v", err)
		}
	})

	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := devenv.ReadPolicyFiles(filepath.Join(root, "policies"))
	if err != nil {
		t.Fatal(err)
	}
	// Created first, so deleted last: after this server's configurations.
	ns := newNamespace(ctx, t, "pushdown", nil)
	s, err := startCeladon(ctx, "celadon-pushdown", shipped)
	if err != nil {
		t.Fatal(err)
	}
	cleanupCeladon(t, s)

	sel := map[string]string{"app": "plain"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plain"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: podSpec()},
		},
	}
	podsOf := func(want int) func(context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			var pods corev1.PodList
			err := suite.c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(sel))
			return err == nil && len(pods.Items) == want, err
		}
	}
	deleteUnlabelled := func(suffix string) error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cm-" + suffix}}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc-" + suffix},
			Spec:       corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{Port: 80}}},
		}
		for _, obj := range []client.Object{cm, svc} {
			if err := suite.c.Create(ctx, obj); err != nil {
				return fmt.Errorf("creating %s: %w", obj.GetName(), err)
			}
			if err := suite.c.Delete(ctx, obj); err != nil {
				return fmt.Errorf("deleting %s: %w", obj.GetName(), err)
			}
		}
		return nil
	}

	before := admissionRequests(ctx, t, s)
	if err := suite.c.Create(ctx, deploy); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the Deployment's pod", podsOf(1))
	if err := deleteUnlabelled("a"); err != nil {
		t.Fatal(err)
	}
	if after := admissionRequests(ctx, t, s); after != before {
		t.Errorf("Celadon served %v requests for a plain Deployment's pod and unlabelled deletes, want none", after-before)
	}

	// The counter does move for what a policy can match.
	sts := createOwner(ctx, t, ns, "db")
	if err := suite.c.Create(ctx, ownedPod(sts, 0, nil)); err != nil {
		t.Fatal(err)
	}
	protected := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "protected", Labels: map[string]string{protectedLabel: "true"}},
		Spec:       corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	if err := suite.c.Create(ctx, protected); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		patch := []byte(`{"metadata":{"labels":{"` + protectedLabel + `":null}}}`)
		_ = suite.c.Patch(ctx, protected, client.RawPatch("application/merge-patch+json", patch))
	})
	mid := admissionRequests(ctx, t, s)
	if err := suite.c.Delete(ctx, protected); err == nil || !strings.Contains(err.Error(), "is protected") {
		t.Fatalf("deleting a protected Service: %v, want protect-delete's denial", err)
	}
	if got := admissionRequests(ctx, t, s); got < mid+1 || mid < before+1 {
		t.Errorf("requests served: %v before, %v after the StatefulSet pod, %v after the protected delete: want both counted", before, mid, got)
	}

	// With Celadon stopped, what no policy matches still works.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if err := suite.c.Patch(ctx, deploy, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"replicas":2}}`))); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the Deployment's second pod, with Celadon stopped", podsOf(2))
	if err := deleteUnlabelled("b"); err != nil {
		t.Errorf("with Celadon stopped: %v", err)
	}
	err = suite.c.Delete(ctx, protected)
	if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
		t.Errorf("deleting a protected Service with Celadon stopped: %v, want the Fail webhook's failed call", err)
	}
}

// admissionRequests sums the server's admission request counter.
func admissionRequests(ctx context.Context, t *testing.T, s *celadon) float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.metrics+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, webhook.MetricRequests+"{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		total += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}
