package deploy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/controlplane"
	"celadon.io/celadon/internal/devenv"
)

// TestSelfSignedInstall follows deploy/README.md's "Install with
// self-signed certificates" against a real kube-apiserver, as far as a
// control plane without nodes allows:
//
//   - Building and pushing the image is not done: there is no container
//     runtime or registry here.
//   - `kubectl apply -k deploy/overlays/self-signed` is done for real: every
//     object of the kustomization is applied server-side and read back.
//   - The pods never run (no kubelet), so `rollout status` cannot pass.
//     Instead the test runs what a pod would: the `celadon` binary built
//     from ./cmd/celadon with the Deployment's args and environment as
//     applied, the policies ConfigMap's data as its --policies directory
//     (laid out as the kubelet mounts it), an empty --cert-dir (the
//     emptyDir), and the API server's permissions of the ServiceAccount
//     celadon/celadon alone (impersonated): the overlay's RBAC must be
//     enough. Only the listening addresses and file paths are changed.
//   - The README's check: the server creates the Secret celadon-tls, and
//     the webhook configurations "celadon" with its CA as caBundle,
//     pointing at the Service celadon/celadon. The API server cannot call
//     that Service here (no endpoints, no kube-proxy), so the test does
//     what it would: a TLS handshake for celadon.celadon.svc, verified
//     against the caBundle the configurations hold.
//   - "Removing Celadon": the Deployment is deleted (the server stops),
//     then the configurations, then every object of the kustomization.
func TestSelfSignedInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real control plane from bin/ (`make controlplane`); skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bin := buildCeladon(ctx, t)

	var logs bytes.Buffer
	cp, err := controlplane.Start(ctx, controlplane.Options{Out: &logs})
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	c, err := client.New(cp.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// kubectl apply -k deploy/overlays/self-signed (server-side).
	objs := build(t, SelfSignedOverlay)
	for _, u := range objs {
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kubectl"), client.ForceOwnership); err != nil {
			t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	for _, u := range objs {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(u.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(u), live); err != nil {
			t.Errorf("%s %s after apply: %v", u.GetKind(), u.GetName(), err)
		}
	}

	// What a pod of the Deployment would run.
	var d appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "celadon"}, &d); err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: PoliciesConfigMap}, &cm); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	policyFiles := map[string][]byte{}
	for k, v := range cm.Data {
		policyFiles[k] = []byte(v)
	}
	if err := devenv.WriteAtomic(filepath.Join(dir, "policies"), policyFiles); err != nil {
		t.Fatal(err)
	}
	kubeconfig := serviceAccountKubeconfig(t, cp, filepath.Join(dir, "kubeconfig"), d.Spec.Template.Spec.ServiceAccountName)
	var ports [3]int
	for i := range ports {
		if ports[i], err = devenv.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	container := d.Spec.Template.Spec.Containers[0]
	args := append(append([]string(nil), container.Args...),
		// Later flags win: the paths and addresses of this machine.
		"--policies="+filepath.Join(dir, "policies"),
		"--cert-dir="+filepath.Join(dir, "tls"),
		"--host=127.0.0.1",
		"--port="+strconv.Itoa(ports[0]),
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(ports[1]),
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(ports[2]),
		"--kubeconfig="+kubeconfig,
		"--log-format=console",
	)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), podEnv(t, container, d.Spec.Template.Spec.ServiceAccountName)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("celadon serve %s\n%s", strings.Join(args, " "), tail(out.String(), 6000))
			t.Logf("control plane log (tail):\n%s", tail(logs.String(), 3000))
		}
	})
	ready := make(chan error, 1)
	go func() {
		ready <- devenv.WaitForHTTP(ctx, 3*time.Minute, "http://127.0.0.1:"+strconv.Itoa(ports[2])+"/readyz")
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-exited:
		t.Fatalf("celadon serve exited before it was ready: %v", err)
	}

	// The Secret, shared by the replicas.
	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "celadon-tls"}, &secret); err != nil {
		t.Fatalf("the Secret celadon-tls: %v", err)
	}
	// The configurations, written by the elected replica.
	host := Service + "." + Namespace + ".svc"
	var bundles [][]byte
	err = devenv.WaitFor(ctx, time.Minute, "the webhook configurations celadon", func(ctx context.Context) (bool, error) {
		var m admissionregistrationv1.MutatingWebhookConfiguration
		var v admissionregistrationv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, client.ObjectKey{Name: "celadon"}, &m); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if err := c.Get(ctx, client.ObjectKey{Name: "celadon"}, &v); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		bundles = nil
		var ccs []admissionregistrationv1.WebhookClientConfig
		for _, w := range m.Webhooks {
			ccs = append(ccs, w.ClientConfig)
		}
		for _, w := range v.Webhooks {
			ccs = append(ccs, w.ClientConfig)
		}
		for _, cc := range ccs {
			if s := cc.Service; s == nil || s.Namespace != Namespace || s.Name != Service {
				return false, fmt.Errorf("clientConfig %+v: want the Service %s/%s", cc, Namespace, Service)
			}
			bundles = append(bundles, cc.CABundle)
		}
		return len(ccs) > 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bundles {
		if !bytes.Equal(b, secret.Data["ca.crt"]) {
			t.Errorf("a webhook's caBundle is not the Secret's ca.crt")
		}
	}
	// What the API server does when it calls the Service.
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundles[0]) {
		t.Fatal("no certificate in the caBundle")
	}
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), &tls.Config{ServerName: host, RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS to the webhook as %s, trusting the caBundle: %v", host, err)
	}
	served := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if b, _ := pem.Decode(secret.Data["tls.crt"]); b == nil || !bytes.Equal(b.Bytes, served.Raw) {
		t.Error("the webhook does not serve the Secret's tls.crt")
	}

	// Removing Celadon: the Deployment first (its leader would write the
	// configurations again), then the configurations, then the rest.
	if err := c.Delete(ctx, &d); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(os.Interrupt) // what the kubelet does to the pods
	if err := <-exited; err != nil {
		t.Errorf("celadon serve did not shut down cleanly: %v", err)
	}
	exited <- nil // for the cleanup
	if err := devenv.DeleteWebhookConfigurations(ctx, c, "celadon"); err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		if err := c.Delete(ctx, u); client.IgnoreNotFound(err) != nil {
			t.Errorf("deleting %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// buildCeladon builds ./cmd/celadon into a temporary directory, as the
// image's Dockerfile does (CGO off, -trimpath).
func buildCeladon(ctx context.Context, t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "celadon")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/celadon")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/celadon: %v\n%s", err, out)
	}
	return bin
}

// serviceAccountKubeconfig writes a kubeconfig of the control plane's admin
// that impersonates the ServiceAccount sa of Namespace, with the groups a
// ServiceAccount token carries: the API server authorizes its requests
// with the ServiceAccount's RBAC only.
func serviceAccountKubeconfig(t *testing.T, cp *controlplane.ControlPlane, path, sa string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(cp.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		t.Fatalf("%s: no current context", cp.KubeconfigPath)
	}
	user := cfg.AuthInfos[ctx.AuthInfo]
	user.Impersonate = "system:serviceaccount:" + Namespace + ":" + sa
	user.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + Namespace, "system:authenticated"}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// podEnv returns the container's environment as the kubelet would set it,
// for the downward-API fields the Deployment uses.
func podEnv(t *testing.T, c corev1.Container, sa string) []string {
	t.Helper()
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+Namespace)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.serviceAccountName":
			env = append(env, e.Name+"="+sa)
		default:
			t.Fatalf("env %s: a source this test does not know: %+v", e.Name, e.ValueFrom)
		}
	}
	return env
}
