package e2e

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestNamespaceSelector: testdata/team-a.yaml selects namespaces labelled
// team=a. The same pod, created in a team=a and in a team=b namespace, gets
// TEAM_A_INDEX only in the first. Celadon reads namespace labels from its
// informer on the real API server.
//
// The shipped sts-index sets INDEX in both: it has a namespaceSelector too,
// so INDEX shows that Celadon saw the request and had the namespace in its
// cache (which follows the API server a moment behind; a pod created before
// the namespace reached it is retried as another pod).
func TestNamespaceSelector(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	for _, tc := range []struct {
		team    string
		mutated bool
	}{
		{"a", true},
		{"b", false},
	} {
		t.Run("team="+tc.team, func(t *testing.T) {
			ns := newNamespace(ctx, t, "team-"+tc.team, map[string]string{"team": tc.team})
			owner := createOwner(ctx, t, ns, "db")
			var pod *corev1.Pod
			ordinal := 0
			waitFor(ctx, t, "a pod of "+ns+" seen by Celadon with its namespace (INDEX set by sts-index)", func(ctx context.Context) (bool, error) {
				pod = ownedPod(owner, ordinal, nil)
				ordinal++
				if err := suite.c.Create(ctx, pod); err != nil {
					return false, err
				}
				_, ok := env(pod, "app", "INDEX") // pod holds what the API server stored
				return ok, nil
			})
			got, ok := env(pod, "app", "TEAM_A_INDEX")
			want, _ := env(pod, "app", "INDEX")
			switch {
			case tc.mutated && (!ok || got != want):
				t.Errorf("team=%s: pod %s has TEAM_A_INDEX=%q (set: %v), want %q: %s", tc.team, pod.Name, got, ok, want, describeEnv(pod))
			case !tc.mutated && ok:
				t.Errorf("team=%s: pod %s has TEAM_A_INDEX=%q: the policy's namespaceSelector should skip this namespace: %s", tc.team, pod.Name, got, describeEnv(pod))
			}
		})
	}
}
