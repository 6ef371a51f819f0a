package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/controlplane"
	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/server"
)

// Policy files of the main server, besides the shipped policies/: the
// testdata file each key is read from.
var mainTestdata = map[string]string{
	"team-a.yaml": "team-a.yaml",
	"reload.yaml": "reload-v1.yaml",
}

// mainPolicies returns the main server's initial policy set: the shipped
// policies/ and mainTestdata.
func mainPolicies() (map[string][]byte, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	files, err := devenv.ReadPolicyFiles(filepath.Join(root, "policies"))
	if err != nil {
		return nil, err
	}
	for key, src := range mainTestdata {
		if _, dup := files[key]; dup {
			return nil, fmt.Errorf("testdata %s would replace the shipped policies/%s", src, key)
		}
		data, err := os.ReadFile(filepath.Join("testdata", src))
		if err != nil {
			return nil, err
		}
		files[key] = data
	}
	return files, nil
}

// celadon is a Celadon server running in-process, as `celadon serve` runs
// it, with its policies in a ConfigMap-style directory, its certificate in
// a Secret-style directory, and webhook configurations generated from its
// policies.
type celadon struct {
	// name names its webhook configurations.
	name      string
	srv       *server.Server
	port      int
	metrics   string // host:port of /metrics and /status
	health    string // host:port of /healthz and /readyz
	dir       string // temporary directory holding the two below
	policyDir string
	certDir   string

	mu sync.Mutex
	ca *devenv.CA // the CA of the certificate being served
	kp *devenv.KeyPair

	// configure, when set, adjusts the server's options before it starts.
	configure func(s *celadon, o *server.Options)

	cancel   context.CancelFunc
	done     chan error // Start's result
	stopOnce sync.Once
	stopErr  error
}

// startCeladon starts a server for policies, waits until it is ready,
// installs its generated webhook configurations (named name) and waits
// until the API server uses them.
func startCeladon(ctx context.Context, name string, policies map[string][]byte) (*celadon, error) {
	s, err := runCeladon(ctx, name, policies, nil)
	if err != nil {
		return nil, err
	}
	if err := s.installConfigs(ctx, s.srv.Snapshot(), s.ca); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// createLoop calls a create function over and over, counting what it
// admits and what fails, so that a test can change something under a
// server (its certificate) and assert that no request failed meanwhile.
type createLoop struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	ok       int
	failures []string
}

// startCreateLoop calls create every 20 ms until stop is called or the
// test ends.
func startCreateLoop(ctx context.Context, t *testing.T, create func(context.Context) error) *createLoop {
	ctx, cancel := context.WithCancel(ctx)
	l := &createLoop{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			err := create(ctx)
			l.mu.Lock()
			if err == nil {
				l.ok++
			} else if ctx.Err() == nil {
				l.failures = append(l.failures, err.Error())
			}
			l.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { l.stop(t, "") })
	return l
}

// waitMore waits until the loop has admitted n more requests; it fails
// t at once when any request has failed.
func (l *createLoop) waitMore(ctx context.Context, t *testing.T, what string, n int) {
	t.Helper()
	l.mu.Lock()
	target := l.ok + n
	l.mu.Unlock()
	waitFor(ctx, t, fmt.Sprintf("%d more %s", n, what), func(context.Context) (bool, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.failures) > 0 {
			return false, fmt.Errorf("%d requests failed, the first: %s", len(l.failures), l.failures[0])
		}
		return l.ok >= target, nil
	})
}

// stop ends the loop and waits for it. Unless during is empty, it logs
// the counts and fails t when any request failed "during" the change.
func (l *createLoop) stop(t *testing.T, during string) {
	t.Helper()
	l.cancel()
	<-l.done
	if during == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%d requests admitted %s, %d failures", l.ok, during, len(l.failures))
	if len(l.failures) > 0 {
		t.Errorf("%d of %d requests failed %s; first ones:\n%v", len(l.failures), l.ok+len(l.failures), during, l.failures[:min(len(l.failures), 5)])
	}
}

// cleanupCeladon stops s and removes its webhook configurations when the
// test ends.
func cleanupCeladon(t *testing.T, s *celadon) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := s.stop(); err != nil {
			t.Errorf("stopping Celadon %s: %v", s.name, err)
		}
		if err := s.uninstallConfigs(ctx); err != nil {
			t.Errorf("removing the webhook configurations %s: %v", s.name, err)
		}
	})
}

// runCeladon starts a server for policies, its options adjusted by
// configure (may be nil), and waits until it is ready. It installs no
// webhook configurations.
func runCeladon(ctx context.Context, name string, policies map[string][]byte, configure func(*celadon, *server.Options)) (*celadon, error) {
	dir, err := os.MkdirTemp("", "celadon-e2e-"+name+"-")
	if err != nil {
		return nil, err
	}
	s := &celadon{name: name, dir: dir, policyDir: filepath.Join(dir, "policies"), certDir: filepath.Join(dir, "certs"), configure: configure}
	if err := devenv.WriteAtomic(s.policyDir, policies); err != nil {
		return nil, err
	}
	if s.ca, s.kp, err = devenv.GenerateCerts(s.certDir, name+" CA"); err != nil {
		return nil, err
	}
	// A free port can be taken between FreePort and Start: try again then.
	for attempt := 1; ; attempt++ {
		err = s.start(ctx)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting Celadon %s: %w", name, err)
	}
	return s, nil
}

// start runs the server on fresh ports and waits for /readyz.
func (s *celadon) start(ctx context.Context) error {
	var ports [3]int
	for i := range ports {
		p, err := devenv.FreePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	s.port = ports[0]
	s.metrics = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	s.health = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	opts := server.Options{
		PoliciesDir:            s.policyDir,
		Registry:               builtins.Registry(),
		Host:                   "127.0.0.1",
		Port:                   s.port,
		CertDir:                s.certDir,
		MetricsBindAddress:     s.metrics,
		InsecureMetrics:        true, // the tests scrape it over plain HTTP
		HealthProbeBindAddress: s.health,
		Config:                 suite.cp.Config,
		// net/http's Shutdown waits up to 5 s for a connection that has sent
		// no request yet (one the API server's transport dialled and did not
		// use): a grace period of 5 s raced it.
		GracefulShutdownTimeout: 10 * time.Second,
		Logger:                  ctrl.Log.WithName(s.name),
	}
	if s.configure != nil {
		s.configure(s, &opts)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	s.srv = srv
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan error, 1)
	go func() { s.done <- srv.Start(runCtx) }()

	readyCtx, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()
	ready := make(chan error, 1)
	go func() { ready <- devenv.WaitForHTTP(readyCtx, waitTimeout, "http://"+s.health+"/readyz") }()
	select {
	case err := <-ready:
		if err != nil {
			cancel()
			<-s.done
		}
		return err
	case err := <-s.done:
		cancel()
		if err == nil {
			err = errors.New("Start returned before the server was ready")
		}
		return err
	}
}

// url is the base URL the API server reaches the webhook at.
func (s *celadon) url() string { return "https://127.0.0.1:" + strconv.Itoa(s.port) }

// addr is the webhook's host:port.
func (s *celadon) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// installConfigs generates the webhook configurations for snap, trusting
// the CAs given, applies them and waits until the API server uses them.
func (s *celadon) installConfigs(ctx context.Context, snap *engine.Snapshot, cas ...*devenv.CA) error {
	m, v, err := controllers.Configurations(snap, controllers.ConfigOptions{
		Name:     s.name,
		URL:      s.url(),
		CABundle: devenv.Bundle(cas...),
	})
	if err != nil {
		return err
	}
	if err := devenv.ApplyWebhookConfigurations(ctx, suite.c, m, v); err != nil {
		return err
	}
	return devenv.SyncWebhookConfigurations(ctx, suite.c, metav1.NamespaceDefault, waitTimeout)
}

// uninstallConfigs deletes the server's webhook configurations and waits
// until the API server no longer uses them.
func (s *celadon) uninstallConfigs(ctx context.Context) error {
	if err := devenv.DeleteWebhookConfigurations(ctx, suite.c, s.name); err != nil {
		return err
	}
	return devenv.SyncWebhookConfigurations(ctx, suite.c, metav1.NamespaceDefault, waitTimeout)
}

// webhookNames lists the webhooks of the server's configurations as the
// API server has them, mutating ones first.
func webhookNames(t *testing.T, s *celadon) string {
	t.Helper()
	ctx := context.Background()
	var m admissionregistrationv1.MutatingWebhookConfiguration
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	var names []string
	if err := suite.c.Get(ctx, client.ObjectKey{Name: s.name}, &m); err != nil {
		t.Fatal(err)
	}
	for _, w := range m.Webhooks {
		names = append(names, w.Name)
	}
	if err := suite.c.Get(ctx, client.ObjectKey{Name: s.name}, &v); err != nil {
		t.Fatal(err)
	}
	for _, w := range v.Webhooks {
		names = append(names, w.Name)
	}
	return strings.Join(names, " ")
}

// stop cancels the server's context, waits for Start to return and for its
// port to close, and removes its files. Its webhook configurations stay.
func (s *celadon) stop() error {
	s.stopOnce.Do(func() {
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				s.stopErr = err
			}
		case <-time.After(time.Minute):
			s.stopErr = errors.New("Start did not return within a minute of its context being cancelled")
		}
		if err := devenv.WaitForPortClosed(context.Background(), waitTimeout, s.addr()); err != nil && s.stopErr == nil {
			s.stopErr = err
		}
		_ = os.RemoveAll(s.dir)
	})
	return s.stopErr
}

// setPolicies replaces the server's policy directory content, as the
// kubelet updates a mounted ConfigMap.
func (s *celadon) setPolicies(t *testing.T, files map[string][]byte) {
	t.Helper()
	if err := devenv.WriteAtomic(s.policyDir, files); err != nil {
		t.Fatal(err)
	}
}

// status GETs /status from the metrics address.
func (s *celadon) status(ctx context.Context) (*server.Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.metrics+server.StatusPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /status: %s: %s", resp.Status, body)
	}
	var st server.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("GET /status: %w in %s", err, body)
	}
	return &st, nil
}

// testContext returns a context bounding one test.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newNamespace creates a namespace named e2e-<prefix>-<random> with labels,
// deleted when the test ends, and waits for its default service account
// (ServiceAccount admission rejects pods until it exists).
func newNamespace(ctx context.Context, t *testing.T, prefix string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-" + prefix + "-", Labels: labels}}
	if err := suite.c.Create(ctx, ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := suite.c.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", ns.Name, err)
		}
	})
	waitFor(ctx, t, "the default service account of "+ns.Name, func(ctx context.Context) (bool, error) {
		err := suite.c.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	})
	return ns.Name
}

// waitFor polls cond up to waitTimeout, failing t on a timeout or error.
func waitFor(ctx context.Context, t *testing.T, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	if err := devenv.WaitFor(ctx, waitTimeout, what, cond); err != nil {
		t.Fatal(err)
	}
}

// podSpec is a spec with two containers; no kubelet runs, so the image is
// never pulled.
func podSpec() corev1.PodSpec {
	return corev1.PodSpec{Containers: []corev1.Container{
		{Name: "app", Image: "registry.invalid/app:1"},
		{Name: "metrics", Image: "registry.invalid/metrics:1", Env: []corev1.EnvVar{{Name: "PORT", Value: "9090"}}},
	}}
}

// newStatefulSet returns a StatefulSet whose pods are all created at once
// (Parallel: no kubelet makes them Ready, so OrderedReady would stop at
// the first).
func newStatefulSet(ns, name string, replicas int32) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template:            corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec()},
		},
	}
}

// createOwner creates a StatefulSet with no replicas, to own pods that
// tests create themselves: the policies see a pod of a StatefulSet, and
// the garbage collector finds a live owner.
func createOwner(ctx context.Context, t *testing.T, ns, name string) *appsv1.StatefulSet {
	t.Helper()
	sts := newStatefulSet(ns, name, 0)
	if err := suite.c.Create(ctx, sts); err != nil {
		t.Fatalf("creating StatefulSet %s/%s: %v", ns, name, err)
	}
	return sts
}

// ownedPod returns pod <owner>-<ordinal> with an ownerReference to owner
// that is not a controller reference, and labels the StatefulSet's
// selector does not match, so its controller leaves the pod alone.
func ownedPod(owner *appsv1.StatefulSet, ordinal int, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: owner.Namespace,
			Name:      owner.Name + "-" + strconv.Itoa(ordinal),
			Labels:    labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "StatefulSet", Name: owner.Name, UID: owner.UID,
			}},
		},
		Spec: podSpec(),
	}
}

// env returns the value of variable name in container, and whether it is
// set.
func env(pod *corev1.Pod, container, name string) (string, bool) {
	for _, c := range pod.Spec.Containers {
		if c.Name != container {
			continue
		}
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value, true
			}
		}
	}
	return "", false
}

// describeEnv summarizes the env of every container, for failure messages.
func describeEnv(pod *corev1.Pod) string {
	var parts []string
	for _, c := range pod.Spec.Containers {
		var vars []string
		for _, e := range c.Env {
			vars = append(vars, e.Name+"="+e.Value)
		}
		parts = append(parts, c.Name+"{"+strings.Join(vars, ",")+"}")
	}
	return strings.Join(parts, " ")
}
