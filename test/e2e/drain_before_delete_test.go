package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/consulagent"
)

// drainPolicy holds the DELETE of the test namespace's pods until their
// Consul instance is deregistered. The agent is on loopback, not on the
// pods' node (no kubelet runs), hence address.
const drainPolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-drain
spec:
  match:
    resources: [pods]
    operations: [DELETE]
    namespaceSelector:
      matchLabels: {e2e.celadon.io/drain: "%s"}
  action: drainBeforeDelete
  with:
    timeoutSeconds: 600
    consul:
      service: web
      address: 127.0.0.1
      agentPort: %d
      aclTokenSecret: {name: consul-acl, key: token}
  failurePolicy: Fail
`

// TestDrainBeforeDeleteStatefulSetScaleDown scales a StatefulSet down
// under a drainBeforeDelete policy, with a real Consul agent enforcing
// ACLs that lists both pods' instances, registered as consulLifecycle's
// hook would: the generated webhook declares sideEffects NoneOnDryRun; a
// dry-run DELETE is denied and starts nothing; while the ACL token in the
// Secret is one the agent refuses, the StatefulSet controller's DELETEs
// fail, and the pod stays while Consul lists it; once the token is right,
// the builtin deregisters the instance, denies that DELETE too, and the
// controller's next DELETE removes the pod, whose instance is gone by
// then: the server counted that denial. The other pod and its instance
// are untouched.
func TestDrainBeforeDeleteStatefulSetScaleDown(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	token := randomToken(t)
	scope := map[string]string{"e2e.celadon.io/drain": token}
	ns := newNamespace(ctx, t, "drain", scope)

	ports, err := consulagent.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	const aclToken = "4c1d2e3f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
	agent, err := consulagent.Start(ports[0], consulagent.ACLConfig(aclToken), aclToken)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Stop()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "consul-acl"}, StringData: map[string]string{"token": "00000000-0000-4000-8000-000000000000"}}
	if err := suite.c.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	s := startScopedCeladon(ctx, t, "celadon-e2e-drain-"+token, map[string][]byte{"drain.yaml": []byte(fmt.Sprintf(drainPolicy, token, ports[0]))}, nil, &metav1.LabelSelector{MatchLabels: scope}, nil)

	// The builtin declares side effects, so its webhook says NoneOnDryRun:
	// the API server sends it dry runs, which it promises to start nothing on.
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := suite.c.Get(ctx, client.ObjectKey{Name: s.name}, &vwc); err != nil {
		t.Fatal(err)
	}
	if len(vwc.Webhooks) != 1 || *vwc.Webhooks[0].SideEffects != admissionregistrationv1.SideEffectClassNoneOnDryRun {
		t.Fatalf("validating webhooks %+v, want one with sideEffects NoneOnDryRun", vwc.Webhooks)
	}

	sts := newStatefulSet(ns, "web", 2)
	if err := suite.c.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	pod := func(name string) (*corev1.Pod, error) {
		var p corev1.Pod
		err := suite.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &p)
		return &p, err
	}
	ids := map[string]string{}
	for _, name := range []string{"web-0", "web-1"} {
		waitFor(ctx, t, "pod "+name, func(context.Context) (bool, error) {
			_, err := pod(name)
			return err == nil, client.IgnoreNotFound(err)
		})
		ids[name] = "web." + ns + "." + name // consulLifecycle's service ID
		registerInstance(t, agent, ids[name])
	}
	listed := func(name string) bool {
		t.Helper()
		services, err := agent.Services()
		if err != nil {
			t.Fatal(err)
		}
		_, ok := services[ids[name]]
		return ok
	}

	t.Run("a dry-run DELETE is denied and starts nothing", func(t *testing.T) {
		p, err := pod("web-1")
		if err != nil {
			t.Fatal(err)
		}
		err = suite.c.Delete(ctx, p, client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), "would deregister service instance "+ids["web-1"]) || !strings.Contains(err.Error(), "(dry run: nothing was started)") {
			t.Fatalf("dry-run DELETE: %v; want the builtin's dry-run denial", err)
		}
		if p, err = pod("web-1"); err != nil || p.Annotations["celadon.io/drain-started"] != "" || !listed("web-1") {
			t.Fatalf("after the dry run: %v, annotations %v, listed %v; want the pod untouched and its instance listed", err, p.Annotations, listed("web-1"))
		}
	})

	// Denials after the dry run's are the scale-down's.
	deniedBefore, err := policyEvaluations(ctx, s, "e2e-drain", "fail")
	if err != nil {
		t.Fatal(err)
	}

	// Scale down: the StatefulSet controller deletes web-1, and retries.
	if err := suite.c.Patch(ctx, sts, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"replicas":1}}`))); err != nil {
		t.Fatal(err)
	}
	waitForDeleteEvent(ctx, t, ns, "deregistering "+ids["web-1"]+": HTTP 403")
	if p, err := pod("web-1"); err != nil || p.DeletionTimestamp != nil || !listed("web-1") {
		t.Fatalf("while the agent refuses the token: pod web-1 %v (deleting %v), listed %v; want it kept while Consul lists it", err, p.DeletionTimestamp, listed("web-1"))
	}

	secret.StringData = map[string]string{"token": aclToken}
	if err := suite.c.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	// The controller retries with a growing backoff; an update of the
	// StatefulSet makes it retry now, as any change would.
	nudge := func() {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"e2e.celadon.io/nudge":"%d"}}}`, time.Now().UnixNano())
		if err := suite.c.Patch(ctx, sts, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
			t.Fatal(err)
		}
	}
	nudge()
	lastNudge := time.Now()
	waitFor(ctx, t, "pod web-1 to be deleted", func(context.Context) (bool, error) {
		_, err := pod("web-1")
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if time.Since(lastNudge) > 5*time.Second {
			nudge()
			lastNudge = time.Now()
		}
		return false, err
	})
	// Deregistration comes before the delete: the instance is gone.
	if listed("web-1") {
		t.Errorf("pod web-1 is deleted, but the agent still lists %s", ids["web-1"])
	}
	if p, err := pod("web-0"); err != nil || p.DeletionTimestamp != nil || !listed("web-0") {
		t.Errorf("pod web-0: %v, listed %v; want it and its instance untouched", err, listed("web-0"))
	}
	// The server counted the DELETEs: refused by the agent (error), denied
	// by the builtin once it deregistered (fail; the controller's events
	// for it are often dropped by the event recorder's spam filter after
	// the errors' events), and allowed (pass).
	for _, c := range []struct {
		state string
		min   float64
	}{{"error", 1}, {"fail", deniedBefore + 1}, {"pass", 1}} {
		if n, err := policyEvaluations(ctx, s, "e2e-drain", c.state); err != nil || n < c.min {
			t.Errorf("celadon_policy_evaluations_total{policy=e2e-drain,state=%s} = %v (%v), want at least %v", c.state, n, err, c.min)
		}
	}
}

// registerInstance registers a service instance of web with the agent,
// as consulLifecycle's postStart hook does for a running pod.
func registerInstance(t *testing.T, agent *consulagent.Agent, id string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"ID": id, "Name": "web", "Address": "127.0.0.3", "Port": 8080})
	req, err := http.NewRequest(http.MethodPut, fmt.Sprintf("http://127.0.0.1:%d/v1/agent/service/register", agent.HTTPPort), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Consul-Token", agent.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("registering %s: %s: %s", id, resp.Status, b)
	}
}

// waitForDeleteEvent waits for a FailedDelete event of the StatefulSet
// controller in ns whose message (the API server's denial) contains want.
func waitForDeleteEvent(ctx context.Context, t *testing.T, ns, want string) {
	t.Helper()
	waitFor(ctx, t, "a FailedDelete event containing "+want, func(ctx context.Context) (bool, error) {
		var events corev1.EventList
		if err := suite.c.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.Reason != "FailedDelete" {
				continue
			}
			if strings.Contains(e.Message, want) {
				return true, nil
			}
		}
		return false, nil
	})
}
