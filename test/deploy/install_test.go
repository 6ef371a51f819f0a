package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/controlplane"
	"celadon.io/celadon/internal/devenv"
)

// The install tests follow deploy/README.md's install sections against a
// real kube-apiserver, as far as a control plane without nodes allows:
//
//   - Building and pushing the image is not done: there is no container
//     runtime or registry here.
//   - `kubectl apply -k` is done for real: every object of the
//     kustomization is applied server-side and read back.
//   - The pods never run (no kubelet), so `rollout status` cannot pass.
//     Instead the test runs what a pod would: the `celadon` binary built
//     from ./cmd/celadon with the Deployment's args (expanded as the
//     kubelet does) and environment as applied, the policies ConfigMap's
//     data as its --policies directory and the certificate Secret's as its
//     --cert-dir (laid out as the kubelet mounts them), and only the
//     permissions of the ServiceAccount celadon of the install's namespace
//     (impersonated): the kustomization's RBAC must be enough. Only the
//     listening addresses and file paths are changed.
//   - The API server cannot call the Service here (no endpoints, no
//     kube-proxy), so the tests do what it would: a TLS handshake for
//     celadon.<namespace>.svc, verified against the caBundle the webhook
//     configurations hold.

// TestSelfSignedInstall follows "Install with self-signed certificates",
// in the namespace ExampleNamespace (an overlay of the self-signed overlay
// setting only `namespace:`), so that what the server derives from its
// namespace at run time is seen at work: apply the overlay; the server
// creates the Secret celadon-tls and the webhook configurations "celadon"
// with its CA, pointing at the Service of its namespace and leaving that
// namespace out, and serves a certificate for celadon.<namespace>.svc;
// then "Removing Celadon": the Deployment (the server stops), the
// configurations, the rest.
func TestSelfSignedInstall(t *testing.T) {
	e := newInstallEnv(t)
	e.ns = ExampleNamespace
	objs := e.apply(tempOverlay(t, "namespace: "+e.ns+"\nresources:\n- {{deploy}}/overlays/self-signed\n"))
	p := e.runPod(nil)

	var secret corev1.Secret
	if err := e.c.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: "celadon-tls"}, &secret); err != nil {
		t.Fatalf("the Secret celadon-tls: %v", err)
	}
	bundles := e.waitForConfigurations()
	for _, b := range bundles {
		if !bytes.Equal(b, secret.Data["ca.crt"]) {
			t.Errorf("a webhook's caBundle is not the Secret's ca.crt")
		}
	}
	served := p.handshake(t, bundles[0])
	if b, _ := pem.Decode(secret.Data["tls.crt"]); b == nil || !bytes.Equal(b.Bytes, served.Raw) {
		t.Error("the webhook does not serve the Secret's tls.crt")
	}

	// Removing Celadon: the Deployment first (its leader would write the
	// configurations again), then the configurations, then the rest.
	if err := e.c.Delete(e.ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "celadon"}}); err != nil {
		t.Fatal(err)
	}
	if err := p.stop(); err != nil { // what the kubelet does to the pods
		t.Errorf("celadon serve did not shut down cleanly: %v", err)
	}
	if err := devenv.DeleteWebhookConfigurations(e.ctx, e.c, "celadon"); err != nil {
		t.Fatal(err)
	}
	e.remove(objs)
}

// TestOwnCertificateInstall follows "Install without cert-manager (your
// own certificate)": the openssl commands of deploy/README.md, run as they
// are written there; apply deploy/base; create the Secret (tls.crt,
// tls.key, ca.crt); run the pod. The server must serve that certificate,
// and the configurations it writes must trust it for the Service's name.
func TestOwnCertificateInstall(t *testing.T) {
	e := newInstallEnv(t)
	dir := t.TempDir()

	// 1. The README's openssl commands.
	script := readmeBlock(t, filepath.Join(root, "deploy", "README.md"), "## Install without cert-manager (your own certificate)")
	cmd := exec.CommandContext(e.ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the README's openssl commands: %v\n%s\n%s", err, script, out)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// 2. kubectl apply -k deploy/base
	objs := e.apply("deploy/base")
	// 3. kubectl -n celadon create secret generic celadon-tls --from-file=tls.crt --from-file=tls.key --from-file=ca.crt
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "celadon-tls"},
		Data:       map[string][]byte{"tls.crt": read("tls.crt"), "tls.key": read("tls.key"), "ca.crt": read("ca.crt")},
	}
	if err := e.c.Create(e.ctx, secret); err != nil {
		t.Fatal(err)
	}
	// 4. The pod, with the Secret mounted as its cert-dir; it writes the
	// webhook configurations.
	p := e.runPod(secret.Data)

	bundles := e.waitForConfigurations()
	for _, b := range bundles {
		if !bytes.Equal(b, read("ca.crt")) {
			t.Errorf("a webhook's caBundle is not ca.crt")
		}
	}
	served := p.handshake(t, bundles[0])
	if b, _ := pem.Decode(read("tls.crt")); b == nil || !bytes.Equal(b.Bytes, served.Raw) {
		t.Error("the webhook does not serve tls.crt")
	}

	e.checkSecureMetrics(p)

	// Removing: the configurations first, then the rest.
	if err := devenv.DeleteWebhookConfigurations(e.ctx, e.c, "celadon"); err != nil {
		t.Fatal(err)
	}
	if err := p.stop(); err != nil {
		t.Errorf("celadon serve did not shut down cleanly: %v", err)
	}
	e.remove(objs)
}

// installEnv is a fresh control plane and a celadon binary.
type installEnv struct {
	t    *testing.T
	ctx  context.Context
	cp   *controlplane.ControlPlane
	c    client.Client
	bin  string
	logs bytes.Buffer
	// ns is the namespace of the install, Namespace unless set.
	ns string
}

func newInstallEnv(t *testing.T) *installEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real control plane from bin/ (`make controlplane`); skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	e := &installEnv{t: t, ctx: ctx, ns: Namespace}
	e.bin = buildCeladon(ctx, t)
	cp, err := controlplane.Start(ctx, controlplane.Options{Out: &e.logs})
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	e.cp = cp
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log (tail):\n%s", tail(e.logs.String(), 3000))
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	if e.c, err = client.New(cp.Config, client.Options{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// apply is `kubectl apply -k dir`, server-side; it checks every object
// exists afterwards and returns them.
func (e *installEnv) apply(dir string) []*unstructured.Unstructured {
	t := e.t
	t.Helper()
	objs := build(t, dir)
	for _, u := range objs {
		if err := e.c.Apply(e.ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kubectl"), client.ForceOwnership); err != nil {
			t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	for _, u := range objs {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(u.GroupVersionKind())
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(u), live); err != nil {
			t.Errorf("%s %s after apply: %v", u.GetKind(), u.GetName(), err)
		}
	}
	return objs
}

// remove is `kubectl delete -k`.
func (e *installEnv) remove(objs []*unstructured.Unstructured) {
	e.t.Helper()
	for _, u := range objs {
		if err := e.c.Delete(e.ctx, u); client.IgnoreNotFound(err) != nil {
			e.t.Errorf("deleting %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// waitForConfigurations waits for the webhook configurations "celadon",
// checks every webhook calls the Service and leaves its namespace out, and
// returns their caBundles.
func (e *installEnv) waitForConfigurations() [][]byte {
	t := e.t
	t.Helper()
	var bundles [][]byte
	err := devenv.WaitFor(e.ctx, time.Minute, "the webhook configurations celadon", func(ctx context.Context) (bool, error) {
		var m admissionregistrationv1.MutatingWebhookConfiguration
		var v admissionregistrationv1.ValidatingWebhookConfiguration
		if err := e.c.Get(ctx, client.ObjectKey{Name: "celadon"}, &m); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if err := e.c.Get(ctx, client.ObjectKey{Name: "celadon"}, &v); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		var ccs []admissionregistrationv1.WebhookClientConfig
		var selectors []*metav1.LabelSelector
		for _, w := range m.Webhooks {
			ccs, selectors = append(ccs, w.ClientConfig), append(selectors, w.NamespaceSelector)
		}
		for _, w := range v.Webhooks {
			ccs, selectors = append(ccs, w.ClientConfig), append(selectors, w.NamespaceSelector)
		}
		bundles = nil
		for i, cc := range ccs {
			if s := cc.Service; s == nil || s.Namespace != e.ns || s.Name != Service {
				return false, fmt.Errorf("clientConfig %+v: want the Service %s/%s", cc, e.ns, Service)
			}
			sel, err := metav1.LabelSelectorAsSelector(selectors[i])
			if err != nil {
				return false, err
			}
			if sel.Matches(labels.Set{"kubernetes.io/metadata.name": e.ns}) {
				return false, fmt.Errorf("namespaceSelector %+v: Celadon's namespace %s is not left out", selectors[i], e.ns)
			}
			bundles = append(bundles, cc.CABundle)
		}
		return len(ccs) > 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bundles
}

// pod is `celadon serve` run as a pod of the Deployment would run it.
type pod struct {
	cmd     *exec.Cmd
	args    []string
	out     bytes.Buffer
	exited  chan error
	port    int    // the webhook's
	metrics string // host:port of /metrics and /status
	host    string // the Service's name the API server calls
	done    bool
	err     error
}

// runPod starts the binary with the applied Deployment's args and
// environment, the policies ConfigMap as --policies and certFiles (the
// certificate Secret's data, nil for an empty emptyDir) as --cert-dir, as
// the ServiceAccount, and waits until it is ready.
func (e *installEnv) runPod(certFiles map[string][]byte) *pod {
	t := e.t
	t.Helper()
	var d appsv1.Deployment
	if err := e.c.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: "celadon"}, &d); err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := e.c.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: PoliciesConfigMap}, &cm); err != nil {
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
	certDir := filepath.Join(dir, "tls")
	if certFiles != nil {
		if err := devenv.WriteAtomic(certDir, certFiles); err != nil {
			t.Fatal(err)
		}
	}
	sa := d.Spec.Template.Spec.ServiceAccountName
	kubeconfig := serviceAccountKubeconfig(t, e.cp, filepath.Join(dir, "kubeconfig"), e.ns, sa)
	var ports [3]int
	for i := range ports {
		var err error
		if ports[i], err = devenv.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	container := d.Spec.Template.Spec.Containers[0]
	p := &pod{port: ports[0], metrics: "127.0.0.1:" + strconv.Itoa(ports[1]), exited: make(chan error, 1), host: Service + "." + e.ns + ".svc"}
	p.args = append(expandArgs(container, e.ns, sa),
		// Later flags win: the paths and addresses of this machine.
		"--policies="+filepath.Join(dir, "policies"),
		"--cert-dir="+certDir,
		"--host=127.0.0.1",
		"--port="+strconv.Itoa(ports[0]),
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(ports[1]),
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(ports[2]),
		"--kubeconfig="+kubeconfig,
		"--log-format=console",
	)
	p.cmd = exec.Command(e.bin, p.args...)
	p.cmd.Env = append(os.Environ(), podEnv(t, container, e.ns, sa)...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.stop()
		if t.Failed() {
			t.Logf("celadon %s\n%s", strings.Join(p.args, " "), tail(p.out.String(), 6000))
		}
	})
	ready := make(chan error, 1)
	go func() {
		ready <- devenv.WaitForHTTP(e.ctx, 3*time.Minute, "http://127.0.0.1:"+strconv.Itoa(ports[2])+"/readyz")
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-p.exited:
		p.done, p.err = true, err
		t.Fatalf("celadon serve exited before it was ready: %v", err)
	}
	return p
}

// checkSecureMetrics checks what the pod serves on its metrics address, as
// the install configures it (no --metrics-secure=false), through the API
// server: nothing without a token (401), nothing to a ServiceAccount not
// bound to celadon-metrics-reader (403), /metrics and /status to one that
// is. The server's reviews run with the install's RBAC only.
func (e *installEnv) checkSecureMetrics(p *pod) {
	t := e.t
	t.Helper()
	const monitoring = "monitoring"
	if err := e.c.Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: monitoring}}); err != nil {
		t.Fatal(err)
	}
	token := func(name string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: monitoring, Name: name}}
		if err := e.c.Create(e.ctx, sa); err != nil {
			t.Fatal(err)
		}
		tr := &authenticationv1.TokenRequest{}
		if err := e.c.SubResource("token").Create(e.ctx, sa, tr); err != nil {
			t.Fatalf("a token for %s/%s: %v", monitoring, name, err)
		}
		return tr.Status.Token
	}
	scraper, stranger := token("prometheus"), token("stranger")
	const anyRefusal = -1
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "celadon-metrics-prometheus"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "celadon-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: monitoring, Name: "prometheus"}},
	}
	if err := e.c.Create(e.ctx, binding); err != nil {
		t.Fatal(err)
	}
	// The certificate is self-signed: what a scraper does too.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(path, token string) (int, error) {
		req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, "https://"+p.metrics+path, nil)
		if err != nil {
			return 0, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	for _, path := range []string{"/metrics", "/status"} {
		for _, tc := range []struct {
			who, token string
			want       int
		}{
			{"no token", "", http.StatusUnauthorized},
			// controller-runtime's filter answers 500 when the TokenReview
			// rejects a token: refused, if not with the code one expects.
			{"a token the API server does not know", "not-a-token", anyRefusal},
			{"an unbound ServiceAccount", stranger, http.StatusForbidden},
			{"a ServiceAccount bound to celadon-metrics-reader", scraper, http.StatusOK},
		} {
			var code int
			// The RBAC just written may take a moment to be seen.
			err := devenv.WaitFor(e.ctx, 30*time.Second, path+" for "+tc.who, func(context.Context) (bool, error) {
				var err error
				code, err = get(path, tc.token)
				return err == nil && (code == tc.want || tc.want == anyRefusal && code >= 400), nil
			})
			if err != nil {
				t.Errorf("GET https://%s%s with %s: HTTP %d, want %d", p.metrics, path, tc.who, code, tc.want)
			}
		}
	}
	if code, err := func() (int, error) {
		resp, err := http.Get("http://" + p.metrics + "/metrics")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}(); err == nil && code == http.StatusOK {
		t.Errorf("GET http://%s/metrics (plain HTTP): HTTP %d, want no metrics", p.metrics, code)
	}
}

// stop sends SIGINT, as the kubelet sends SIGTERM, and waits for the exit.
func (p *pod) stop() error {
	if p.done {
		return p.err
	}
	p.done = true
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case p.err = <-p.exited:
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.err = errors.New("still running a minute after SIGINT")
	}
	return p.err
}

// handshake does what the API server does when it calls the Service:
// TLS for celadon.<namespace>.svc, trusting only caBundle. It returns the
// certificate served.
func (p *pod) handshake(t *testing.T, caBundle []byte) *x509.Certificate {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		t.Fatal("no certificate in the caBundle")
	}
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)), &tls.Config{ServerName: p.host, RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS to the webhook as %s, trusting the caBundle: %v", p.host, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// buildCeladon builds ./cmd/celadon into a temporary directory.
func buildCeladon(ctx context.Context, t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "celadon")
	if err := devenv.BuildCeladon(ctx, root, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// serviceAccountKubeconfig writes a kubeconfig of the control plane's admin
// that impersonates the ServiceAccount sa of ns, with the groups a
// ServiceAccount token carries: the API server authorizes its requests
// with the ServiceAccount's RBAC only.
func serviceAccountKubeconfig(t *testing.T, cp *controlplane.ControlPlane, path, ns, sa string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(cp.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	kctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		t.Fatalf("%s: no current context", cp.KubeconfigPath)
	}
	user := cfg.AuthInfos[kctx.AuthInfo]
	user.Impersonate = "system:serviceaccount:" + ns + ":" + sa
	user.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// podEnv returns the container's environment as the kubelet would set it
// in the namespace ns, for the downward-API fields the Deployment uses.
func podEnv(t *testing.T, c corev1.Container, ns, sa string) []string {
	t.Helper()
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+ns)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.serviceAccountName":
			env = append(env, e.Name+"="+sa)
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			// The kubelet gives the limit in bytes (divisor 1).
			limit, ok := c.Resources.Limits[corev1.ResourceMemory]
			if !ok {
				t.Fatalf("env %s: the container has no memory limit", e.Name)
			}
			env = append(env, e.Name+"="+strconv.FormatInt(limit.Value(), 10))
		default:
			t.Fatalf("env %s: a source this test does not know: %+v", e.Name, e.ValueFrom)
		}
	}
	return env
}

// readmeBlock returns the first ```sh block of file after the line
// heading, unindented.
func readmeBlock(t *testing.T, file, heading string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		block     strings.Builder
		found, in bool
		indent    string
		sc        = bufio.NewScanner(f)
	)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case !found:
			found = line == heading
		case !in && trimmed == "```sh":
			in, indent = true, line[:strings.Index(line, "```")]
		case in && trimmed == "```":
			return block.String()
		case in:
			block.WriteString(strings.TrimPrefix(line, indent) + "\n")
		}
	}
	t.Fatalf("%s: no ```sh block after %q", file, heading)
	return ""
}
