package builtins

import (
	"encoding/json"
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

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/consulagent"
)

// The tests in this file run the hooks consulLifecycle injects, with
// /bin/sh and the environment the kubelet would give them, against a real
// Consul agent (bin/consul, built from Go modules by `make bin/consul`) in
// -dev mode on loopback, and check what the agent and its catalog hold.

// startConsulAgent starts an agent (see consulagent.Start), stopped when
// the test ends.
func startConsulAgent(t *testing.T, httpPort int, hcl, token string) *consulagent.Agent {
	t.Helper()
	a, err := consulagent.Start(httpPort, hcl, token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	return a
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	p, err := consulagent.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return p[0]
}

// services returns the agent's /v1/agent/services.
func services(t *testing.T, a *consulagent.Agent) map[string]consulagent.Service {
	t.Helper()
	s, err := a.Services()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitCatalog waits until the catalog lists service id of name, or not.
func waitCatalog(t *testing.T, a *consulagent.Agent, name, id string, listed bool) []consulagent.CatalogService {
	t.Helper()
	entries, err := a.WaitCatalog(name, id, listed)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// consulTool returns the path of a program the hooks use, failing the test
// with the Debian package to install (make test installs them).
func consulTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed, and the hooks' tests run it: apt-get install -y %s", name, name)
	}
	return path
}

// toolDir returns a directory holding links to the named programs only, to
// be a hook's PATH: an image with just these tools.
func toolDir(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		if err := os.Symlink(consulTool(t, n), filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// consulHookPod runs a consulLifecycle policy with the given with (YAML
// lines indented by four) on a pod web-0 in namespace shop with spec, and
// returns the pod as the engine's patch left it.
func consulHookPod(t *testing.T, with, spec string) *corev1.Pod {
	t.Helper()
	snap := compilePolicies(t, consulPolicy(with, "Fail"))
	in := yamlJSON(t, consulPod("", spec))
	d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, in, nil), engine.EvalOptions{})
	if !d.Allowed || len(d.Patch) == 0 {
		t.Fatalf("the policy did not patch the pod: allowed %v, %s: %s %s", d.Allowed, statesOf(d), d.Message, d.Results[0].Reason)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(applyDecision(t, in, d), &pod); err != nil {
		t.Fatal(err)
	}
	return &pod
}

// environ returns the env the kubelet gives container of pod, with PATH.
func environ(t *testing.T, k consulagent.Kubelet, pod *corev1.Pod, container, path string) []string {
	t.Helper()
	env, err := k.Environ(pod, container, path)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// startHook starts an exec hook, killed when the test ends if still running.
func startHook(t *testing.T, h *corev1.LifecycleHandler, env []string, dir string) *consulagent.Hook {
	t.Helper()
	r, err := consulagent.StartHook(h, env, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Kill)
	return r
}

// waitHook waits for the hook and returns its exit code.
func waitHook(t *testing.T, r *consulagent.Hook) int {
	t.Helper()
	code, err := r.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// runHook runs an exec hook to the end and returns its exit code and
// output.
func runHook(t *testing.T, h *corev1.LifecycleHandler, env []string, dir string) (int, string, string) {
	t.Helper()
	r := startHook(t, h, env, dir)
	code := waitHook(t, r)
	return code, r.Stdout(), r.Stderr()
}

// serveHealth serves 200 at /healthz on a free port of ip, the pod's
// address, until the test ends, and returns the port.
func serveHealth(t *testing.T, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listening on the pod address %s: %v", ip, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// The pod's address: another loopback address than the agent's (the
// node's), so the test sees which one is registered.
const (
	consulHostIP = "127.0.0.1"
	consulPodIP  = "127.0.0.2"
	consulID     = "web.shop.web-0"
)

// TestConsulLifecycleAgent runs the hooks of a pod the engine patched
// against a real agent: postStart started before the agent listens (it
// retries), registration with an HTTP check that turns passing, then
// preStop and the service gone, with curl; the same with wget alone, and
// under busybox's sh; and the messages when the image has no usable HTTP
// client.
func TestConsulLifecycleAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	consulTool(t, "curl")
	consulTool(t, "wget")
	healthPort := serveHealth(t, consulPodIP)
	httpPort := freePort(t)
	with := fmt.Sprintf(`    service: web
    port: %d
    tags: [blue, "v1.2"]
    meta: {team: shop}
    agentPort: %d
    check: {http: /healthz, interval: 1s, timeout: 1s, deregisterCriticalServiceAfter: 1m}
    retry: {attempts: 120, backoff: 1s, maxBackoff: 1s}
`, healthPort, httpPort)
	pod := consulHookPod(t, with, "  containers:\n  - {name: app, image: app}\n")
	lc := pod.Spec.Containers[0].Lifecycle
	kubelet := consulagent.Kubelet{HostIP: consulHostIP, PodIP: consulPodIP}

	// postStart starts before the agent listens: it retries until it can
	// register.
	hook := startHook(t, lc.PostStart, environ(t, kubelet, pod, "app", toolDir(t, "curl", "sleep")), t.TempDir())
	err := consulagent.Poll("the hook's first failed attempt", func() (bool, error) {
		select {
		case <-hook.Done():
			return false, fmt.Errorf("the hook ended before the agent started:\n%s", hook.Stderr())
		default:
		}
		return strings.Contains(hook.Stderr(), "no response"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	agent := startConsulAgent(t, httpPort, "", "")
	if code := waitHook(t, hook); code != 0 {
		t.Fatalf("postStart exited %d\nstdout:\n%s\nstderr:\n%s", code, hook.Stdout(), hook.Stderr())
	}
	if want := "registered " + consulID + " with the Consul agent at http://127.0.0.1:" + strconv.Itoa(httpPort); !strings.Contains(hook.Stdout(), want) {
		t.Errorf("postStart said %q, want %q", hook.Stdout(), want)
	}

	t.Run("the agent and the catalog list the service with its check", func(t *testing.T) {
		s, ok := services(t, agent)[consulID]
		if !ok {
			t.Fatalf("/v1/agent/services has no %s: %+v", consulID, services(t, agent))
		}
		if s.Service != "web" || s.Address != consulPodIP || s.Port != healthPort ||
			strings.Join(s.Tags, ",") != "blue,v1.2" || len(s.Meta) != 1 || s.Meta["team"] != "shop" {
			t.Errorf("/v1/agent/services: %+v", s)
		}
		entries := waitCatalog(t, agent, "web", consulID, true)
		for _, e := range entries {
			if e.ServiceID == consulID && (e.ServiceAddress != consulPodIP || e.ServicePort != healthPort || e.ServiceName != "web") {
				t.Errorf("/v1/catalog/service/web: %+v", e)
			}
		}
		// The check GETs http://POD_IP:port/healthz, which this test serves.
		var check consulagent.Check
		err := consulagent.Poll("the service's check to pass", func() (bool, error) {
			var checks map[string]consulagent.Check
			if err := agent.Get("/v1/agent/checks", &checks); err != nil {
				return false, err
			}
			for _, c := range checks {
				if c.ServiceID == consulID {
					check = c
				}
			}
			return check.Status == "passing", nil
		})
		if err != nil {
			t.Fatalf("%v; last: %+v", err, check)
		}
		if check.Type != "http" || !strings.Contains(check.Output, "http://"+consulPodIP+":"+strconv.Itoa(healthPort)+"/healthz") {
			t.Errorf("check %+v", check)
		}
	})

	t.Run("preStop deregisters", func(t *testing.T) {
		code, stdout, stderr := runHook(t, lc.PreStop, environ(t, kubelet, pod, "app", toolDir(t, "curl", "sleep")), t.TempDir())
		if code != 0 {
			t.Fatalf("preStop exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if _, ok := services(t, agent)[consulID]; ok {
			t.Errorf("/v1/agent/services still lists %s", consulID)
		}
		waitCatalog(t, agent, "web", consulID, false)
		var checks map[string]consulagent.Check
		if err := agent.Get("/v1/agent/checks", &checks); err != nil {
			t.Fatal(err)
		}
		for id, c := range checks {
			if c.ServiceID == consulID {
				t.Errorf("check %s of the deregistered service remains", id)
			}
		}
	})

	t.Run("wget when the image has no curl", func(t *testing.T) {
		env := environ(t, kubelet, pod, "app", toolDir(t, "wget", "sleep"))
		code, stdout, stderr := runHook(t, lc.PostStart, env, t.TempDir())
		if code != 0 {
			t.Fatalf("postStart with wget exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if s, ok := services(t, agent)[consulID]; !ok || s.Address != consulPodIP || s.Port != healthPort {
			t.Fatalf("after postStart with wget, /v1/agent/services has %+v (found: %v)", s, ok)
		}
		code, stdout, stderr = runHook(t, lc.PreStop, env, t.TempDir())
		if code != 0 {
			t.Fatalf("preStop with wget exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if _, ok := services(t, agent)[consulID]; ok {
			t.Errorf("after preStop with wget, /v1/agent/services still lists %s", consulID)
		}
	})

	t.Run("busybox sh, as in an Alpine image", func(t *testing.T) {
		// The image's /bin/sh is busybox's ash, its sleep and wget are
		// busybox applets, and it has curl.
		busybox := consulTool(t, "busybox")
		path := t.TempDir()
		for name, target := range map[string]string{"sleep": busybox, "wget": busybox, "curl": consulTool(t, "curl")} {
			if err := os.Symlink(target, filepath.Join(path, name)); err != nil {
				t.Fatal(err)
			}
		}
		ash := func(h *corev1.LifecycleHandler) *corev1.LifecycleHandler {
			return &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: append([]string{busybox, "sh"}, h.Exec.Command[1:]...)}}
		}
		env := environ(t, kubelet, pod, "app", path)
		code, stdout, stderr := runHook(t, ash(lc.PostStart), env, t.TempDir())
		if code != 0 {
			t.Fatalf("postStart under busybox sh exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if s, ok := services(t, agent)[consulID]; !ok || s.Address != consulPodIP || s.Port != healthPort {
			t.Fatalf("after postStart under busybox sh, /v1/agent/services has %+v (found: %v)", s, ok)
		}
		code, stdout, stderr = runHook(t, ash(lc.PreStop), env, t.TempDir())
		if code != 0 {
			t.Fatalf("preStop under busybox sh exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if _, ok := services(t, agent)[consulID]; ok {
			t.Errorf("after preStop under busybox sh, /v1/agent/services still lists %s", consulID)
		}

		// Without curl, busybox's wget cannot send PUT: the hook says so.
		if err := os.Remove(filepath.Join(path, "curl")); err != nil {
			t.Fatal(err)
		}
		code, _, stderr = runHook(t, ash(lc.PostStart), env, t.TempDir())
		if want := "the container's wget is not GNU wget and cannot send PUT requests"; code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("postStart with busybox's wget alone exited %d with\n%s\nwant non-zero with %q", code, stderr, want)
		}
	})

	t.Run("neither curl nor wget: a clear message and a failure", func(t *testing.T) {
		code, _, stderr := runHook(t, lc.PostStart, environ(t, kubelet, pod, "app", toolDir(t, "sleep")), t.TempDir())
		want := "celadon consulLifecycle: neither curl nor wget is in the container's PATH: cannot call the Consul agent at http://127.0.0.1:" + strconv.Itoa(httpPort) + "; add curl (or GNU wget) to the image"
		if code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("postStart exited %d with\n%s\nwant non-zero with\n%s", code, stderr, want)
		}
		if _, ok := services(t, agent)[consulID]; ok {
			t.Errorf("registered without an HTTP client?")
		}
	})

	t.Run("a malformed downward-API variable: a clear message and a failure", func(t *testing.T) {
		env := append(environ(t, kubelet, pod, "app", toolDir(t, "curl", "sleep")), "POD_IP=10.0.0.1\"}")
		code, _, stderr := runHook(t, lc.PostStart, env, t.TempDir())
		if want := `POD_IP="10.0.0.1"}" is missing or malformed`; code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("postStart exited %d with\n%s\nwant non-zero with %s", code, stderr, want)
		}
	})
}

// TestConsulLifecycleAgentChained runs chained hooks against a real agent:
// the container's own postStart runs before the registration, and a failed
// one prevents it; its own preStop runs after the deregistration, even
// when the image has no HTTP client. The own hooks record what the agent
// lists when they run.
func TestConsulLifecycleAgentChained(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	httpPort := freePort(t)
	agent := startConsulAgent(t, httpPort, "", "")
	with := fmt.Sprintf("    service: web\n    port: 8080\n    agentPort: %d\n    retry: {attempts: 2, backoff: 1s}\n", httpPort)
	listServices := fmt.Sprintf("curl -sS http://127.0.0.1:%d/v1/agent/services", httpPort)
	hooked := func(postStart string) *corev1.Pod {
		return consulHookPod(t, with, fmt.Sprintf(`  containers:
  - name: app
    image: app
    lifecycle:
      postStart: {exec: {command: [/bin/sh, -c, %q]}}
      preStop: {exec: {command: [/bin/sh, -c, %q]}}
`, postStart, listServices+" > services-at-pre-stop"))
	}
	kubelet := consulagent.Kubelet{HostIP: consulHostIP, PodIP: consulPodIP}
	curl := toolDir(t, "curl", "sleep")
	read := func(dir, name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("the container's own hook did not run: %v", err)
		}
		return string(b)
	}

	dir := t.TempDir()
	pod := hooked(listServices + " > services-at-post-start")
	lc := pod.Spec.Containers[0].Lifecycle
	code, stdout, stderr := runHook(t, lc.PostStart, environ(t, kubelet, pod, "app", curl), dir)
	if code != 0 {
		t.Fatalf("postStart exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if got := read(dir, "services-at-post-start"); !strings.HasPrefix(got, "{") || strings.Contains(got, consulID) {
		t.Errorf("when the container's own postStart ran, the agent listed %q; want no %s yet", got, consulID)
	}
	if _, ok := services(t, agent)[consulID]; !ok {
		t.Fatalf("not registered after the chained postStart")
	}
	code, stdout, stderr = runHook(t, lc.PreStop, environ(t, kubelet, pod, "app", curl), dir)
	if code != 0 {
		t.Fatalf("preStop exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if got := read(dir, "services-at-pre-stop"); !strings.HasPrefix(got, "{") || strings.Contains(got, consulID) {
		t.Errorf("when the container's own preStop ran, the agent listed %q; want %s gone already", got, consulID)
	}
	if _, ok := services(t, agent)[consulID]; ok {
		t.Errorf("still registered after the chained preStop")
	}

	// A failing postStart of its own: its exit code, and no registration.
	pod = hooked("echo warm-up failed >&2; exit 3")
	lc = pod.Spec.Containers[0].Lifecycle
	code, _, stderr = runHook(t, lc.PostStart, environ(t, kubelet, pod, "app", curl), t.TempDir())
	if code != 3 || !strings.Contains(stderr, "warm-up failed") {
		t.Errorf("postStart exited %d with %q; want the container's own 3", code, stderr)
	}
	if _, ok := services(t, agent)[consulID]; ok {
		t.Errorf("registered although the container's own postStart failed")
	}

	// No HTTP client: preStop still runs the container's own hook (whose
	// curl fails too, leaving an empty file), and fails.
	dir = t.TempDir()
	code, _, stderr = runHook(t, lc.PreStop, environ(t, kubelet, pod, "app", toolDir(t, "sleep")), dir)
	if _, err := os.Stat(filepath.Join(dir, "services-at-pre-stop")); err != nil || code == 0 || !strings.Contains(stderr, "neither curl nor wget") {
		t.Errorf("preStop without curl or wget: exit %d, own hook ran: %v, stderr %q", code, err == nil, stderr)
	}
}

// TestConsulLifecycleAgentACL runs the hooks against an agent that enforces
// ACLs (default deny): with the token from the pod's Secret they register
// and deregister; with a wrong token the agent refuses and the hook says
// so and fails.
func TestConsulLifecycleAgentACL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	const token = "4d2a7c1e-9b3f-4e8a-a5d6-0c1b2e3f4a5b"
	httpPort := freePort(t)
	agent := startConsulAgent(t, httpPort, consulagent.ACLConfig(token), token)
	with := fmt.Sprintf("    service: web\n    port: 8080\n    agentPort: %d\n    aclTokenSecret: {name: consul-acl, key: token}\n    retry: {attempts: 2, backoff: 1s}\n", httpPort)
	pod := consulHookPod(t, with, "  containers:\n  - {name: app, image: app}\n")
	lc := pod.Spec.Containers[0].Lifecycle
	curl := toolDir(t, "curl", "sleep")

	good := consulagent.Kubelet{HostIP: consulHostIP, PodIP: consulPodIP, Secrets: map[string]map[string]string{"consul-acl": {"token": token}}}
	code, stdout, stderr := runHook(t, lc.PostStart, environ(t, good, pod, "app", curl), t.TempDir())
	if code != 0 {
		t.Fatalf("postStart with the token exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if _, ok := services(t, agent)[consulID]; !ok {
		t.Fatalf("not registered with the token")
	}

	bad := consulagent.Kubelet{HostIP: consulHostIP, PodIP: consulPodIP, Secrets: map[string]map[string]string{"consul-acl": {"token": "00000000-0000-4000-8000-000000000000"}}}
	for _, tools := range [][]string{{"curl", "sleep"}, {"wget", "sleep"}} {
		code, _, stderr = runHook(t, lc.PreStop, environ(t, bad, pod, "app", toolDir(t, tools...)), t.TempDir())
		if code == 0 || !strings.Contains(stderr, "ACL not found") || !strings.Contains(stderr, "gave up: web not deregistered after 2 attempts") {
			t.Errorf("preStop with a wrong token and %s: exit %d, stderr:\n%s", tools[0], code, stderr)
		}
		if _, ok := services(t, agent)[consulID]; !ok {
			t.Errorf("deregistered with a wrong token and %s", tools[0])
		}
	}

	code, stdout, stderr = runHook(t, lc.PreStop, environ(t, good, pod, "app", curl), t.TempDir())
	if code != 0 {
		t.Fatalf("preStop with the token exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if _, ok := services(t, agent)[consulID]; ok {
		t.Errorf("still registered after preStop with the token")
	}
}
