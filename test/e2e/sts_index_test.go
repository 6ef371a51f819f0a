package e2e

import (
	"context"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestStatefulSetPodsGetTheirIndex proves the shipped policies/sts-index.yaml:
// the real StatefulSet controller creates three pods, and the API server,
// calling Celadon on each pod's CREATE, stores each with INDEX set to its
// ordinal in every container.
func TestStatefulSetPodsGetTheirIndex(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	ns := newNamespace(ctx, t, "sts-index", nil)

	if err := suite.c.Create(ctx, newStatefulSet(ns, "web", 3)); err != nil {
		t.Fatal(err)
	}
	pods := make([]*corev1.Pod, 3)
	waitFor(ctx, t, "the StatefulSet controller to create web-0, web-1 and web-2", func(ctx context.Context) (bool, error) {
		for i := range pods {
			var pod corev1.Pod
			if err := suite.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-" + strconv.Itoa(i)}, &pod); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			pods[i] = &pod
		}
		return true, nil
	})
	for i, pod := range pods {
		if owner := metav1.GetControllerOf(pod); owner == nil || owner.Kind != "StatefulSet" || owner.Name != "web" {
			t.Errorf("%s: controller %+v, want StatefulSet web", pod.Name, owner)
		}
		for _, c := range pod.Spec.Containers {
			if got, ok := env(pod, c.Name, "INDEX"); !ok || got != strconv.Itoa(i) {
				t.Errorf("%s container %s: INDEX=%q (set: %v), want %q; env: %s", pod.Name, c.Name, got, ok, strconv.Itoa(i), describeEnv(pod))
			}
		}
		// The container's own variables are kept.
		if got, _ := env(pod, "metrics", "PORT"); got != "9090" {
			t.Errorf("%s: container metrics lost PORT=9090: %s", pod.Name, describeEnv(pod))
		}
	}
}
