package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
)

// TestFailurePolicyWhenServerIsDown starts a second Celadon server with a
// fail-open mutating policy (testdata/down-ignore.yaml) and a fail-closed
// validating one (testdata/down-fail.yaml), checks that both are served,
// stops it, and checks what the API server does without it: the webhook
// generated for the Fail policy blocks pod creation with the API server's
// "failed calling webhook" error; once the configurations are regenerated
// from the Ignore policy alone, pods are admitted, unmutated by it.
//
// The main server stays up throughout; this server's webhooks match every
// pod CREATE in the cluster while they are installed, so they are removed
// before the test returns.
func TestFailurePolicyWhenServerIsDown(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	files := map[string][]byte{"ignore.yaml": read("down-ignore.yaml"), "fail.yaml": read("down-fail.yaml")}
	s, err := startCeladon(ctx, "celadon-e2e-down", files)
	if err != nil {
		t.Fatal(err)
	}
	cleanupCeladon(t, s)
	if names := webhookNames(t, s); names != "ignore.mutate.celadon.io fail.validate.celadon.io" {
		t.Fatalf("generated webhooks: %s", names)
	}
	ns := newNamespace(ctx, t, "down", nil)
	owner := createOwner(ctx, t, ns, "down")

	// Up: both policies are served.
	pod := ownedPod(owner, 0, nil)
	if err := suite.c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got, _ := env(pod, "app", "DOWN_INDEX"); got != "0" {
		t.Fatalf("with the server up, pod %s has no DOWN_INDEX=0: %s", pod.Name, describeEnv(pod))
	}
	err = suite.c.Create(ctx, ownedPod(owner, 1, map[string]string{"e2e.celadon.io/deny": "true"}))
	if err == nil || !strings.Contains(err.Error(), "e2e-down-fail: this pod is denied") {
		t.Fatalf("with the server up, want the labelled pod denied by e2e-down-fail, got %v", err)
	}

	// Down.
	stopped := time.Now()
	if err := s.stop(); err != nil {
		t.Fatalf("stopping the server: %v", err)
	}
	t.Logf("server stopped, port closed, in %v", time.Since(stopped).Round(time.Millisecond))

	// Fail: a pod the Fail policy selects is refused, because the
	// fail-closed webhook cannot be called; one it does not select never
	// reaches that webhook (its objectSelector) and is admitted.
	if err := suite.c.Create(ctx, ownedPod(owner, 9, nil)); err != nil {
		t.Errorf("with the server down, a pod no Fail policy selects was refused: %v", err)
	}
	err = suite.c.Create(ctx, ownedPod(owner, 2, map[string]string{"e2e.celadon.io/deny": "true"}))
	if err == nil {
		t.Fatal("with the server down, a selected pod was admitted despite the failurePolicy: Fail webhook")
	}
	for _, want := range []string{`failed calling webhook "fail.validate.celadon.io"`, s.url() + "/validate/fail"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("with the server down, the error does not contain %q: %v", want, err)
		}
	}

	// Ignore: regenerate the configurations from the Ignore policy alone
	// (as after removing fail.yaml from the ConfigMap); pods are admitted,
	// without DOWN_INDEX.
	delete(files, "fail.yaml")
	snap, err := engine.Compile([]engine.File{{Name: "ignore.yaml", Data: files["ignore.yaml"]}}, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.installConfigs(ctx, snap, s.ca); err != nil {
		t.Fatal(err)
	}
	if names := webhookNames(t, s); names != "ignore.mutate.celadon.io" {
		t.Fatalf("regenerated webhooks: %s", names)
	}
	pod = ownedPod(owner, 3, nil)
	if err := suite.c.Create(ctx, pod); err != nil {
		t.Fatalf("with the server down and only a failurePolicy: Ignore webhook, pod creation failed: %v", err)
	}
	if got, ok := env(pod, "app", "DOWN_INDEX"); ok {
		t.Errorf("pod %s has DOWN_INDEX=%q from a server that is down", pod.Name, got)
	}
	if got, _ := env(pod, "app", "INDEX"); got != "3" {
		t.Errorf("pod %s: the main server's sts-index did not run: %s", pod.Name, describeEnv(pod))
	}
}
