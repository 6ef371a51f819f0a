package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/server"
	"celadon.io/celadon/webhook"
)

// busyPolicy is a mutating policy of the overload test: pods of a
// StatefulSet get env var name, under failurePolicy fp. Its webhook times
// out after 2 s, so a request waiting for a slot is answered after 1.8 s.
func busyPolicy(name, env, fp string) []byte {
	return fmt.Appendf(nil, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: %s
spec:
  match:
    resources: [pods]
    operations: [CREATE]
    conditions:
    - name: owned-by-statefulset
      expression: >-
        has(object.metadata.ownerReferences) &&
        object.metadata.ownerReferences.exists(r, r.kind == 'StatefulSet')
  action: injectEnvIndex
  with:
    name: %s
  failurePolicy: %s
  timeoutSeconds: 2
`, name, env, fp)
}

// holdPolicy holds every ConfigMap review in holdBuiltin. No webhook
// configuration is generated for it: the test posts its review itself.
const holdPolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-busy-hold
spec:
  match:
    resources: [configmaps]
  action: e2eHold
`

// holdBuiltin takes the evaluation slot it runs in until release is
// closed or its deadline passes.
type holdBuiltin struct {
	entered chan struct{}
	release chan struct{}
}

func (holdBuiltin) Name() string            { return "e2eHold" }
func (holdBuiltin) Type() engine.ActionType { return engine.Validating }
func (h holdBuiltin) Compile(*engine.CompileContext) (engine.Action, error) {
	return engine.ActionFunc(func(ac *engine.ActionContext) (engine.Outcome, error) {
		h.entered <- struct{}{}
		select {
		case <-h.release:
		case <-ac.Done():
		}
		return engine.Outcome{}, nil
	}), nil
}

// TestOverloadAppliesFailurePolicy saturates a second server (one
// evaluation slot, held by a review the test posts itself) and creates pods
// through the API server: through a failurePolicy Ignore webhook they are
// admitted, unpatched by it; through a Fail webhook they are refused with
// the API server's "failed calling webhook" and Celadon's reason. Busy is
// a failed call, never a denial.
func TestOverloadAppliesFailurePolicy(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)

	hold := holdBuiltin{entered: make(chan struct{}, 1), release: make(chan struct{})}
	reg := engine.NewRegistry()
	for _, name := range builtins.Registry().Names() {
		b, _ := builtins.Registry().Lookup(name)
		reg.Register(b)
	}
	reg.Register(hold)
	files := map[string][]byte{
		"ignore.yaml": busyPolicy("e2e-busy-ignore", "BUSY_INDEX", "Ignore"),
		"fail.yaml":   busyPolicy("e2e-busy-fail", "BUSY_FAIL_INDEX", "Fail"),
		"hold.yaml":   []byte(holdPolicy),
	}
	s, err := runCeladon(ctx, "celadon-e2e-busy", files, func(_ *celadon, o *server.Options) {
		o.Registry = reg
		o.MaxConcurrent = 1
	})
	if err != nil {
		t.Fatal(err)
	}
	cleanupCeladon(t, s)
	// install serves the configurations of one policy file alone.
	install := func(file string) {
		t.Helper()
		snap, err := engine.Compile([]engine.File{{Name: file, Data: files[file]}}, engine.Options{Registry: reg})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.installConfigs(ctx, snap, s.ca); err != nil {
			t.Fatal(err)
		}
	}
	install("ignore.yaml")
	if names := webhookNames(t, s); names != "ignore.mutate.celadon.io" {
		t.Fatalf("generated webhooks: %s", names)
	}
	ns := newNamespace(ctx, t, "busy", nil)
	owner := createOwner(ctx, t, ns, "busy")

	// Not busy: the Ignore webhook patches.
	pod := ownedPod(owner, 0, nil)
	if err := suite.c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got, _ := env(pod, "app", "BUSY_INDEX"); got != "0" {
		t.Fatalf("with a free slot, pod %s has no BUSY_INDEX=0: %s", pod.Name, describeEnv(pod))
	}

	// Busy: the one slot is held by a review of a ConfigMap.
	held := make(chan error, 1)
	go func() { held <- postHeldReview(s) }()
	select {
	case <-hold.entered:
	case err := <-held:
		t.Fatalf("the held review returned before it was held: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("the held review never reached its policy")
	}
	released := false
	release := func() {
		if !released {
			released = true
			close(hold.release)
			if err := <-held; err != nil {
				t.Errorf("the held review: %v", err)
			}
		}
	}
	defer release()

	// Ignore: admitted, unchanged by the busy server; the main server's
	// sts-index still ran.
	pod = ownedPod(owner, 1, nil)
	if err := suite.c.Create(ctx, pod); err != nil {
		t.Fatalf("with the server busy, a pod was refused through a failurePolicy: Ignore webhook: %v", err)
	}
	if got, ok := env(pod, "app", "BUSY_INDEX"); ok {
		t.Errorf("pod %s has BUSY_INDEX=%q from a server with no free slot", pod.Name, got)
	}
	if got, _ := env(pod, "app", "INDEX"); got != "1" {
		t.Errorf("pod %s: the main server's sts-index did not run: %s", pod.Name, describeEnv(pod))
	}

	// Fail: refused, as a failed call that says why.
	install("fail.yaml")
	if names := webhookNames(t, s); names != "fail.mutate.celadon.io" {
		t.Fatalf("regenerated webhooks: %s", names)
	}
	err = suite.c.Create(ctx, ownedPod(owner, 2, nil))
	if err == nil {
		t.Fatal("with the server busy, a pod was admitted through a failurePolicy: Fail webhook")
	}
	for _, want := range []string{`failed calling webhook "fail.mutate.celadon.io"`, "too many concurrent admission requests (limit 1)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("with the server busy, the error does not contain %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "denied the request") {
		t.Errorf("busy was answered as a denial: %v", err)
	}
	t.Logf("through the Fail webhook: %v", err)

	// Not busy again: the Fail webhook patches.
	release()
	pod = ownedPod(owner, 3, nil)
	if err := suite.c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got, _ := env(pod, "app", "BUSY_FAIL_INDEX"); got != "3" {
		t.Errorf("with the slot free again, pod %s has no BUSY_FAIL_INDEX=3: %s", pod.Name, describeEnv(pod))
	}
}

// postHeldReview posts a ConfigMap CREATE review to s, which its hold
// policy holds until released; it returns an error unless the answer is
// an allowed review.
func postHeldReview(s *celadon) error {
	review, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "held",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "configmaps"},
			Namespace: "default", Name: "held", Operation: admissionv1.Create,
			UserInfo: authenticationv1.UserInfo{Username: "e2e"},
			Object:   runtime.RawExtension{Raw: []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","namespace":"default"}}`)},
		},
	})
	if err != nil {
		return err
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool()}}}
	defer c.CloseIdleConnections()
	resp, err := c.Post(s.url()+webhook.WebhookPath(engine.Validating, engine.Fail)+"?timeout=30s", "application/json", bytes.NewReader(review))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out admissionv1.AdmissionReview
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || out.Response == nil || !out.Response.Allowed {
		return fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, body)
	}
	return nil
}
