package builtins

import (
	"bytes"
	"encoding/json"
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
	"sync"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"celadon.io/celadon/engine"
)

// The tests in this file run the hooks consulLifecycle injects, with
// /bin/sh and the environment the kubelet would give them, against a real
// Consul agent (bin/consul, built from Go modules by `make bin/consul`) in
// -dev mode on loopback, and check what the agent and its catalog hold.

// consulWait bounds each wait on the agent or a hook; generous, because
// the machine may be busy.
const consulWait = 2 * time.Minute

// consulAgent is a Consul agent in -dev mode on loopback.
type consulAgent struct {
	httpPort int
	token    string // the management token when ACLs are on
	cmd      *exec.Cmd
	log      *bytes.Buffer
	logMu    *sync.Mutex
	done     chan struct{}
}

// consulBinary returns bin/consul, failing the test with how to build it.
func consulBinary(t *testing.T) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("..", "bin", "consul"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the Consul agent %s is missing: build it with `make bin/consul` (make test does): %v", path, err)
	}
	return path
}

// consulTool returns the path of a program the hooks use, failing the test
// with the Debian package to install.
func consulTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed, and the hooks' tests run it: apt-get install -y %s", name, name)
	}
	return path
}

// consulFreePorts returns n loopback ports that were free a moment ago.
// (internal/devenv has the like, but importing it here would be a cycle:
// it imports webhook, which imports this package.)
func consulFreePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	return ports
}

// consulPoll calls cond every 100ms until it returns true or an error, or
// consulWait has passed; the error names what was awaited and the last
// error of a cond that returns retry.
func consulPoll(what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(consulWait)
	for {
		ok, err := cond()
		switch {
		case err != nil:
			return fmt.Errorf("waiting for %s: %w", what, err)
		case ok:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("waiting for %s: gave up after %v", what, consulWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startConsulAgent starts an agent whose HTTP API listens on httpPort, every
// other listener on a free port, with extra HCL configuration (may be ""),
// and waits until it has elected itself leader. The agent is stopped when
// the test ends.
func startConsulAgent(t *testing.T, httpPort int, hcl, token string) *consulAgent {
	t.Helper()
	bin := consulBinary(t)
	var lastErr error
	// A free port can be taken before the agent binds it: try again then.
	for attempt := 0; attempt < 3; attempt++ {
		p := consulFreePorts(t, 5)
		args := []string{"agent", "-dev", "-node", "celadon-test",
			"-bind", "127.0.0.1", "-client", "127.0.0.1", "-http-port", strconv.Itoa(httpPort),
			"-dns-port", strconv.Itoa(p[0]), "-serf-lan-port", strconv.Itoa(p[1]), "-serf-wan-port", strconv.Itoa(p[2]),
			"-server-port", strconv.Itoa(p[3]), "-grpc-port", strconv.Itoa(p[4])}
		if hcl != "" {
			args = append(args, "-hcl", hcl)
		}
		a := &consulAgent{httpPort: httpPort, token: token, log: &bytes.Buffer{}, logMu: &sync.Mutex{}, done: make(chan struct{})}
		a.cmd = exec.Command(bin, args...)
		a.cmd.Stdout, a.cmd.Stderr = a, a
		a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := a.cmd.Start(); err != nil {
			t.Fatalf("starting %s: %v", bin, err)
		}
		go func() { _ = a.cmd.Wait(); close(a.done) }()
		lastErr = a.waitLeader()
		if lastErr == nil {
			t.Cleanup(a.stop)
			return a
		}
		a.stop()
		if !strings.Contains(a.output(), "address already in use") {
			break
		}
	}
	t.Fatalf("the Consul agent did not start: %v", lastErr)
	return nil
}

// Write collects the agent's output.
func (a *consulAgent) Write(p []byte) (int, error) {
	a.logMu.Lock()
	defer a.logMu.Unlock()
	return a.log.Write(p)
}

func (a *consulAgent) output() string {
	a.logMu.Lock()
	defer a.logMu.Unlock()
	return a.log.String()
}

// waitLeader waits until the agent answers with a leader, or exits.
func (a *consulAgent) waitLeader() error {
	var last error
	err := consulPoll("the Consul agent's leader", func() (bool, error) {
		select {
		case <-a.done:
			return false, errors.New("the agent exited")
		default:
		}
		var leader string
		last = a.get("/v1/status/leader", &leader)
		return last == nil && leader != "", nil
	})
	if err != nil {
		return fmt.Errorf("%w (last answer: %v)\nagent output:\n%s", err, last, a.output())
	}
	return nil
}

// stop kills the agent (a -dev agent keeps nothing) and waits for it.
func (a *consulAgent) stop() {
	_ = a.cmd.Process.Kill()
	<-a.done
}

// get GETs path from the agent's HTTP API, with the management token, and
// decodes the JSON answer into v.
func (a *consulAgent) get(path string, v any) error {
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", a.httpPort, path), nil)
	if err != nil {
		return err
	}
	if a.token != "" {
		req.Header.Set("X-Consul-Token", a.token)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.Unmarshal(body, v)
}

// agentService is an entry of /v1/agent/services.
type agentService struct {
	ID, Service, Address string
	Port                 int
	Tags                 []string
	Meta                 map[string]string
}

// services returns /v1/agent/services.
func (a *consulAgent) services(t *testing.T) map[string]agentService {
	t.Helper()
	var s map[string]agentService
	if err := a.get("/v1/agent/services", &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitCatalog waits until /v1/catalog/service/name lists the service id
// (want true) or does not (want false): the agent syncs its services to
// the catalog in the background.
func (a *consulAgent) waitCatalog(t *testing.T, name, id string, want bool) []catalogService {
	t.Helper()
	var entries []catalogService
	err := consulPoll(fmt.Sprintf("catalog service %s to list %s: %v", name, id, want), func() (bool, error) {
		entries = nil
		if err := a.get("/v1/catalog/service/"+name, &entries); err != nil {
			return false, err
		}
		found := false
		for _, e := range entries {
			found = found || e.ServiceID == id
		}
		return found == want, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// catalogService is an entry of /v1/catalog/service/<name>.
type catalogService struct {
	ServiceID, ServiceName, ServiceAddress string
	ServicePort                            int
	ServiceTags                            []string
}

// agentCheck is an entry of /v1/agent/checks.
type agentCheck struct {
	CheckID, Name, Status, ServiceID, ServiceName, Type, Output string
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

// kubeletEnv is what the kubelet knows of a running pod: its addresses
// and the Secrets its env refers to.
type kubeletEnv struct {
	hostIP, podIP string
	secrets       map[string]map[string]string // name -> key -> value
}

// environ returns the environment the kubelet gives container name of pod,
// resolving the downward API and Secret references, with PATH set to path.
// Literal values are used as they are: the test pods use no $(VAR).
func (k kubeletEnv) environ(t *testing.T, pod *corev1.Pod, name, path string) []string {
	t.Helper()
	env := []string{"PATH=" + path}
	for _, c := range pod.Spec.Containers {
		if c.Name != name {
			continue
		}
		for _, e := range c.Env {
			value := e.Value
			switch {
			case e.ValueFrom == nil:
			case e.ValueFrom.FieldRef != nil:
				switch e.ValueFrom.FieldRef.FieldPath {
				case "status.hostIP":
					value = k.hostIP
				case "status.podIP":
					value = k.podIP
				case "metadata.name":
					value = pod.Name
				case "metadata.namespace":
					value = pod.Namespace
				default:
					t.Fatalf("env %s: field %s is not handled here", e.Name, e.ValueFrom.FieldRef.FieldPath)
				}
			case e.ValueFrom.SecretKeyRef != nil:
				ref := e.ValueFrom.SecretKeyRef
				v, ok := k.secrets[ref.Name][ref.Key]
				if !ok {
					t.Fatalf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
				}
				value = v
			default:
				t.Fatalf("env %s: valueFrom %+v is not handled here", e.Name, e.ValueFrom)
			}
			env = append(env, e.Name+"="+value)
		}
		return env
	}
	t.Fatalf("pod has no container %s", name)
	return nil
}

// hookRun is a hook command running in the background.
type hookRun struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr syncBuffer
	done   chan struct{}
	err    error
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startHook starts the hook's exec command as the kubelet runs it in the
// container, with env, in dir.
func startHook(t *testing.T, h *corev1.LifecycleHandler, env []string, dir string) *hookRun {
	t.Helper()
	if h == nil || h.Exec == nil || len(h.Exec.Command) == 0 {
		t.Fatalf("not an exec hook: %+v", h)
	}
	r := &hookRun{done: make(chan struct{})}
	r.cmd = exec.Command(h.Exec.Command[0], h.Exec.Command[1:]...)
	r.cmd.Env, r.cmd.Dir = env, dir
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// wait waits for the hook and returns its exit code.
func (r *hookRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(consulWait):
		t.Fatalf("the hook did not finish in %v\nstdout:\n%s\nstderr:\n%s", consulWait, r.stdout.String(), r.stderr.String())
	}
	var exit *exec.ExitError
	switch {
	case r.err == nil:
		return 0
	case errors.As(r.err, &exit):
		return exit.ExitCode()
	}
	t.Fatalf("the hook: %v", r.err)
	return -1
}

// runHook runs the hook to the end and returns its exit code and output.
func runHook(t *testing.T, h *corev1.LifecycleHandler, env []string, dir string) (int, string, string) {
	t.Helper()
	r := startHook(t, h, env, dir)
	code := r.wait(t)
	return code, r.stdout.String(), r.stderr.String()
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
	httpPort := consulFreePorts(t, 1)[0]
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
	kubelet := kubeletEnv{hostIP: consulHostIP, podIP: consulPodIP}

	// postStart starts before the agent listens: it retries until it can
	// register.
	hook := startHook(t, lc.PostStart, kubelet.environ(t, pod, "app", toolDir(t, "curl", "sleep")), t.TempDir())
	err := consulPoll("the hook's first failed attempt", func() (bool, error) {
		select {
		case <-hook.done:
			return false, fmt.Errorf("the hook ended before the agent started: %v\n%s", hook.err, hook.stderr.String())
		default:
		}
		return strings.Contains(hook.stderr.String(), "no response"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	agent := startConsulAgent(t, httpPort, "", "")
	if code := hook.wait(t); code != 0 {
		t.Fatalf("postStart exited %d\nstdout:\n%s\nstderr:\n%s", code, hook.stdout.String(), hook.stderr.String())
	}
	if want := "registered " + consulID + " with the Consul agent at http://127.0.0.1:" + strconv.Itoa(httpPort); !strings.Contains(hook.stdout.String(), want) {
		t.Errorf("postStart said %q, want %q", hook.stdout.String(), want)
	}

	t.Run("the agent and the catalog list the service with its check", func(t *testing.T) {
		s, ok := agent.services(t)[consulID]
		if !ok {
			t.Fatalf("/v1/agent/services has no %s: %+v", consulID, agent.services(t))
		}
		if s.Service != "web" || s.Address != consulPodIP || s.Port != healthPort ||
			strings.Join(s.Tags, ",") != "blue,v1.2" || len(s.Meta) != 1 || s.Meta["team"] != "shop" {
			t.Errorf("/v1/agent/services: %+v", s)
		}
		entries := agent.waitCatalog(t, "web", consulID, true)
		for _, e := range entries {
			if e.ServiceID == consulID && (e.ServiceAddress != consulPodIP || e.ServicePort != healthPort || e.ServiceName != "web") {
				t.Errorf("/v1/catalog/service/web: %+v", e)
			}
		}
		// The check GETs http://POD_IP:port/healthz, which this test serves.
		var check agentCheck
		err := consulPoll("the service's check to pass", func() (bool, error) {
			var checks map[string]agentCheck
			if err := agent.get("/v1/agent/checks", &checks); err != nil {
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
		code, stdout, stderr := runHook(t, lc.PreStop, kubelet.environ(t, pod, "app", toolDir(t, "curl", "sleep")), t.TempDir())
		if code != 0 {
			t.Fatalf("preStop exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if _, ok := agent.services(t)[consulID]; ok {
			t.Errorf("/v1/agent/services still lists %s", consulID)
		}
		agent.waitCatalog(t, "web", consulID, false)
		var checks map[string]agentCheck
		if err := agent.get("/v1/agent/checks", &checks); err != nil {
			t.Fatal(err)
		}
		for id, c := range checks {
			if c.ServiceID == consulID {
				t.Errorf("check %s of the deregistered service remains", id)
			}
		}
	})

	t.Run("wget when the image has no curl", func(t *testing.T) {
		env := kubelet.environ(t, pod, "app", toolDir(t, "wget", "sleep"))
		code, stdout, stderr := runHook(t, lc.PostStart, env, t.TempDir())
		if code != 0 {
			t.Fatalf("postStart with wget exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if s, ok := agent.services(t)[consulID]; !ok || s.Address != consulPodIP || s.Port != healthPort {
			t.Fatalf("after postStart with wget, /v1/agent/services has %+v (found: %v)", s, ok)
		}
		code, stdout, stderr = runHook(t, lc.PreStop, env, t.TempDir())
		if code != 0 {
			t.Fatalf("preStop with wget exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if _, ok := agent.services(t)[consulID]; ok {
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
		env := kubelet.environ(t, pod, "app", path)
		code, stdout, stderr := runHook(t, ash(lc.PostStart), env, t.TempDir())
		if code != 0 {
			t.Fatalf("postStart under busybox sh exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if s, ok := agent.services(t)[consulID]; !ok || s.Address != consulPodIP || s.Port != healthPort {
			t.Fatalf("after postStart under busybox sh, /v1/agent/services has %+v (found: %v)", s, ok)
		}
		code, stdout, stderr = runHook(t, ash(lc.PreStop), env, t.TempDir())
		if code != 0 {
			t.Fatalf("preStop under busybox sh exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if _, ok := agent.services(t)[consulID]; ok {
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
		code, _, stderr := runHook(t, lc.PostStart, kubelet.environ(t, pod, "app", toolDir(t, "sleep")), t.TempDir())
		want := "celadon consulLifecycle: neither curl nor wget is in the container's PATH: cannot call the Consul agent at http://127.0.0.1:" + strconv.Itoa(httpPort) + "; add curl (or GNU wget) to the image"
		if code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("postStart exited %d with\n%s\nwant non-zero with\n%s", code, stderr, want)
		}
		if _, ok := agent.services(t)[consulID]; ok {
			t.Errorf("registered without an HTTP client?")
		}
	})

	t.Run("a malformed downward-API variable: a clear message and a failure", func(t *testing.T) {
		env := append(kubelet.environ(t, pod, "app", toolDir(t, "curl", "sleep")), "POD_IP=10.0.0.1\"}")
		code, _, stderr := runHook(t, lc.PostStart, env, t.TempDir())
		if want := `POD_IP="10.0.0.1"}" is missing or malformed`; code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("postStart exited %d with\n%s\nwant non-zero with %s", code, stderr, want)
		}
	})
}

// TestConsulLifecycleAgentChained runs chained hooks against a real agent:
// the container's own postStart runs before the registration, and a failed
// one prevents it; its own preStop runs after the deregistration, even
// when the image has no HTTP client.
func TestConsulLifecycleAgentChained(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	httpPort := consulFreePorts(t, 1)[0]
	agent := startConsulAgent(t, httpPort, "", "")
	with := fmt.Sprintf("    service: web\n    port: 8080\n    agentPort: %d\n    retry: {attempts: 2, backoff: 1s}\n", httpPort)
	hooked := func(postStart string) *corev1.Pod {
		return consulHookPod(t, with, `  containers:
  - name: app
    image: app
    lifecycle:
      postStart: {exec: {command: [/bin/sh, -c, `+postStart+`]}}
      preStop: {exec: {command: [/bin/sh, -c, "echo $POD_NAME > pre-stop-ran"]}}
`)
	}
	kubelet := kubeletEnv{hostIP: consulHostIP, podIP: consulPodIP}
	curl := toolDir(t, "curl", "sleep")

	dir := t.TempDir()
	pod := hooked(`"test ! -e registered-too-early && echo ok > post-start-ran"`)
	lc := pod.Spec.Containers[0].Lifecycle
	code, stdout, stderr := runHook(t, lc.PostStart, kubelet.environ(t, pod, "app", curl), dir)
	if code != 0 {
		t.Fatalf("postStart exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "post-start-ran")); err != nil || string(b) != "ok\n" {
		t.Errorf("the container's own postStart did not run: %q %v", b, err)
	}
	if _, ok := agent.services(t)[consulID]; !ok {
		t.Fatalf("not registered after the chained postStart")
	}
	code, stdout, stderr = runHook(t, lc.PreStop, kubelet.environ(t, pod, "app", curl), dir)
	if code != 0 {
		t.Fatalf("preStop exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "pre-stop-ran")); err != nil || string(b) != "web-0\n" {
		t.Errorf("the container's own preStop did not run: %q %v", b, err)
	}
	if _, ok := agent.services(t)[consulID]; ok {
		t.Errorf("still registered after the chained preStop")
	}

	// A failing postStart of its own: its exit code, and no registration.
	pod = hooked(`"echo warm-up failed >&2; exit 3"`)
	lc = pod.Spec.Containers[0].Lifecycle
	code, _, stderr = runHook(t, lc.PostStart, kubelet.environ(t, pod, "app", curl), t.TempDir())
	if code != 3 || !strings.Contains(stderr, "warm-up failed") {
		t.Errorf("postStart exited %d with %q; want the container's own 3", code, stderr)
	}
	if _, ok := agent.services(t)[consulID]; ok {
		t.Errorf("registered although the container's own postStart failed")
	}

	// No HTTP client: preStop still runs the container's own hook, and
	// fails.
	dir = t.TempDir()
	code, _, stderr = runHook(t, lc.PreStop, kubelet.environ(t, pod, "app", toolDir(t, "sleep")), dir)
	if _, err := os.Stat(filepath.Join(dir, "pre-stop-ran")); err != nil || code == 0 || !strings.Contains(stderr, "neither curl nor wget") {
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
	httpPort := consulFreePorts(t, 1)[0]
	agent := startConsulAgent(t, httpPort, `acl { enabled = true, default_policy = "deny", tokens { initial_management = "`+token+`" } }`, token)
	with := fmt.Sprintf("    service: web\n    port: 8080\n    agentPort: %d\n    aclTokenSecret: {name: consul-acl, key: token}\n    retry: {attempts: 2, backoff: 1s}\n", httpPort)
	pod := consulHookPod(t, with, "  containers:\n  - {name: app, image: app}\n")
	lc := pod.Spec.Containers[0].Lifecycle
	curl := toolDir(t, "curl", "sleep")

	good := kubeletEnv{hostIP: consulHostIP, podIP: consulPodIP, secrets: map[string]map[string]string{"consul-acl": {"token": token}}}
	code, stdout, stderr := runHook(t, lc.PostStart, good.environ(t, pod, "app", curl), t.TempDir())
	if code != 0 {
		t.Fatalf("postStart with the token exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if _, ok := agent.services(t)[consulID]; !ok {
		t.Fatalf("not registered with the token")
	}

	bad := kubeletEnv{hostIP: consulHostIP, podIP: consulPodIP, secrets: map[string]map[string]string{"consul-acl": {"token": "00000000-0000-4000-8000-000000000000"}}}
	for _, tools := range [][]string{{"curl", "sleep"}, {"wget", "sleep"}} {
		code, _, stderr = runHook(t, lc.PreStop, bad.environ(t, pod, "app", toolDir(t, tools...)), t.TempDir())
		if code == 0 || !strings.Contains(stderr, "ACL not found") || !strings.Contains(stderr, "gave up: web not deregistered after 2 attempts") {
			t.Errorf("preStop with a wrong token and %s: exit %d, stderr:\n%s", tools[0], code, stderr)
		}
		if _, ok := agent.services(t)[consulID]; !ok {
			t.Errorf("deregistered with a wrong token and %s", tools[0])
		}
	}

	code, stdout, stderr = runHook(t, lc.PreStop, good.environ(t, pod, "app", curl), t.TempDir())
	if code != 0 {
		t.Fatalf("preStop with the token exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if _, ok := agent.services(t)[consulID]; ok {
		t.Errorf("still registered after preStop with the token")
	}
}
