// Package consulagent runs a real Consul agent in -dev mode on loopback
// (bin/consul, built from Go modules by `make bin/consul`), and runs pods'
// exec lifecycle hooks with the environment the kubelet would give them:
// what the tests of the consulLifecycle builtin need.
package consulagent

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
	"time"

	corev1 "k8s.io/api/core/v1"

	"celadon.io/celadon/internal/controlplane"
)

// Wait bounds each wait on the agent or a hook; generous, because the
// machine may be busy.
const Wait = 2 * time.Minute

// Binary returns the path of bin/consul, or an error saying how to build it.
func Binary() (string, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return "", err
	}
	path := filepath.Join(root, "bin", "consul")
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("the Consul agent %s is missing: build it with `make bin/consul` (make test does): %w", path, err)
	}
	return path, nil
}

// FreePorts returns n loopback ports that were free a moment ago.
// (internal/devenv has the like, but the builtins' tests, which use this
// package, cannot import it: it imports webhook, which imports builtins.)
func FreePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("consulagent: %w", err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	return ports, nil
}

// Poll calls cond every 100ms until it returns true or an error, or Wait
// has passed; the error names what was awaited.
func Poll(what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(Wait)
	for {
		ok, err := cond()
		switch {
		case err != nil:
			return fmt.Errorf("waiting for %s: %w", what, err)
		case ok:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("waiting for %s: gave up after %v", what, Wait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Agent is a Consul agent in -dev mode on loopback. A -dev agent keeps
// nothing on disk.
type Agent struct {
	// HTTPPort is the port of its HTTP API on 127.0.0.1.
	HTTPPort int
	// Token is sent with every request when set: the management token of
	// an agent that enforces ACLs.
	Token string

	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
}

// ACLConfig is the HCL of an agent that enforces ACLs, denying by default,
// with token as its management token: pass both to Start.
func ACLConfig(token string) string {
	return `acl { enabled = true, default_policy = "deny", tokens { initial_management = "` + token + `" } }`
}

// Start starts an agent whose HTTP API listens on httpPort and every other
// listener (DNS, Serf LAN and WAN, server RPC, gRPC) on a free port, so
// that parallel runs cannot collide, with extra HCL configuration (may be
// ""), and waits until it has elected itself leader. token is the
// management token when hcl enables ACLs.
func Start(httpPort int, hcl, token string) (*Agent, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	var lastErr error
	// A free port can be taken before the agent binds it: try again then.
	for attempt := 0; attempt < 3; attempt++ {
		p, err := FreePorts(5)
		if err != nil {
			return nil, err
		}
		args := []string{"agent", "-dev", "-node", "celadon-test",
			"-bind", "127.0.0.1", "-client", "127.0.0.1", "-http-port", strconv.Itoa(httpPort),
			"-dns-port", strconv.Itoa(p[0]), "-serf-lan-port", strconv.Itoa(p[1]), "-serf-wan-port", strconv.Itoa(p[2]),
			"-server-port", strconv.Itoa(p[3]), "-grpc-port", strconv.Itoa(p[4])}
		if hcl != "" {
			args = append(args, "-hcl", hcl)
		}
		a := &Agent{HTTPPort: httpPort, Token: token, done: make(chan struct{})}
		a.cmd = exec.Command(bin, args...)
		a.cmd.Stdout, a.cmd.Stderr = &a.out, &a.out
		a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := a.cmd.Start(); err != nil {
			return nil, fmt.Errorf("consulagent: starting %s: %w", bin, err)
		}
		go func() { _ = a.cmd.Wait(); close(a.done) }()
		if lastErr = a.waitLeader(); lastErr == nil {
			return a, nil
		}
		a.Stop()
		if !strings.Contains(a.Output(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("consulagent: the agent did not start: %w", lastErr)
}

// waitLeader waits until the agent answers with a leader, or exits.
func (a *Agent) waitLeader() error {
	var last error
	err := Poll("the Consul agent's leader", func() (bool, error) {
		select {
		case <-a.done:
			return false, errors.New("the agent exited")
		default:
		}
		var leader string
		last = a.Get("/v1/status/leader", &leader)
		return last == nil && leader != "", nil
	})
	if err != nil {
		return fmt.Errorf("%w (last answer: %v)\nagent output:\n%s", err, last, a.Output())
	}
	return nil
}

// Stop kills the agent and waits for it to exit.
func (a *Agent) Stop() {
	_ = a.cmd.Process.Kill()
	<-a.done
}

// Output is what the agent printed so far.
func (a *Agent) Output() string { return a.out.String() }

// Get GETs path from the agent's HTTP API and decodes the JSON answer
// into v.
func (a *Agent) Get(path string, v any) error {
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", a.HTTPPort, path), nil)
	if err != nil {
		return err
	}
	if a.Token != "" {
		req.Header.Set("X-Consul-Token", a.Token)
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

// Service is an entry of /v1/agent/services.
type Service struct {
	ID, Service, Address string
	Port                 int
	Tags                 []string
	Meta                 map[string]string
}

// Services returns /v1/agent/services, by service ID.
func (a *Agent) Services() (map[string]Service, error) {
	var s map[string]Service
	err := a.Get("/v1/agent/services", &s)
	return s, err
}

// Check is an entry of /v1/agent/checks.
type Check struct {
	CheckID, Name, Status, ServiceID, ServiceName, Type, Output string
}

// Checks returns /v1/agent/checks, by check ID.
func (a *Agent) Checks() (map[string]Check, error) {
	var c map[string]Check
	err := a.Get("/v1/agent/checks", &c)
	return c, err
}

// CatalogService is an entry of /v1/catalog/service/<name>.
type CatalogService struct {
	ServiceID, ServiceName, ServiceAddress string
	ServicePort                            int
	ServiceTags                            []string
}

// WaitCatalog waits until /v1/catalog/service/name lists the service id
// (listed true) or does not (false), and returns the entries: the agent
// syncs its services to the catalog in the background.
func (a *Agent) WaitCatalog(name, id string, listed bool) ([]CatalogService, error) {
	var entries []CatalogService
	err := Poll(fmt.Sprintf("catalog service %s to list %s: %v", name, id, listed), func() (bool, error) {
		entries = nil
		if err := a.Get("/v1/catalog/service/"+name, &entries); err != nil {
			return false, err
		}
		found := false
		for _, e := range entries {
			found = found || e.ServiceID == id
		}
		return found == listed, nil
	})
	return entries, err
}

// Kubelet is what the kubelet knows of a running pod: its addresses and
// the Secrets its env refers to.
type Kubelet struct {
	HostIP, PodIP string
	Secrets       map[string]map[string]string // name -> key -> value
}

// Environ returns the environment the kubelet gives container of pod,
// resolving the downward API and Secret references, with PATH set to path.
// Literal values are used as they are: $(VAR) references are not expanded.
func (k Kubelet) Environ(pod *corev1.Pod, container, path string) ([]string, error) {
	env := []string{"PATH=" + path}
	for _, c := range pod.Spec.Containers {
		if c.Name != container {
			continue
		}
		for _, e := range c.Env {
			value := e.Value
			switch {
			case e.ValueFrom == nil:
			case e.ValueFrom.FieldRef != nil:
				switch e.ValueFrom.FieldRef.FieldPath {
				case "status.hostIP":
					value = k.HostIP
				case "status.podIP":
					value = k.PodIP
				case "metadata.name":
					value = pod.Name
				case "metadata.namespace":
					value = pod.Namespace
				default:
					return nil, fmt.Errorf("env %s: field %s is not handled here", e.Name, e.ValueFrom.FieldRef.FieldPath)
				}
			case e.ValueFrom.SecretKeyRef != nil:
				ref := e.ValueFrom.SecretKeyRef
				v, ok := k.Secrets[ref.Name][ref.Key]
				if !ok {
					return nil, fmt.Errorf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
				}
				value = v
			default:
				return nil, fmt.Errorf("env %s: valueFrom %+v is not handled here", e.Name, e.ValueFrom)
			}
			env = append(env, e.Name+"="+value)
		}
		return env, nil
	}
	return nil, fmt.Errorf("pod %s has no container %s", pod.Name, container)
}

// Hook is an exec lifecycle hook running as the kubelet runs it in the
// container: the command, with the container's env.
type Hook struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	err            error
}

// StartHook starts the exec hook h with env in dir.
func StartHook(h *corev1.LifecycleHandler, env []string, dir string) (*Hook, error) {
	if h == nil || h.Exec == nil || len(h.Exec.Command) == 0 {
		return nil, fmt.Errorf("not an exec hook: %+v", h)
	}
	r := &Hook{done: make(chan struct{})}
	r.cmd = exec.Command(h.Exec.Command[0], h.Exec.Command[1:]...)
	r.cmd.Env, r.cmd.Dir = env, dir
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	return r, nil
}

// Done is closed when the hook has exited.
func (r *Hook) Done() <-chan struct{} { return r.done }

// Stdout and Stderr are what the hook printed so far.
func (r *Hook) Stdout() string { return r.stdout.String() }

// Stderr: see Stdout.
func (r *Hook) Stderr() string { return r.stderr.String() }

// Wait waits up to Wait for the hook to exit and returns its exit code; a
// hook still running then is killed.
func (r *Hook) Wait() (int, error) {
	select {
	case <-r.done:
	case <-time.After(Wait):
		r.Kill()
		return -1, fmt.Errorf("the hook did not finish in %v\nstdout:\n%s\nstderr:\n%s", Wait, r.Stdout(), r.Stderr())
	}
	var exit *exec.ExitError
	switch {
	case r.err == nil:
		return 0, nil
	case errors.As(r.err, &exit):
		return exit.ExitCode(), nil
	}
	return -1, r.err
}

// Kill kills the hook if it still runs, and waits for it.
func (r *Hook) Kill() {
	select {
	case <-r.done:
	default:
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// RunHook runs the exec hook h with env in dir to the end and returns its
// exit code and output.
func RunHook(h *corev1.LifecycleHandler, env []string, dir string) (code int, stdout, stderr string, err error) {
	r, err := StartHook(h, env, dir)
	if err != nil {
		return -1, "", "", err
	}
	code, err = r.Wait()
	return code, r.Stdout(), r.Stderr(), err
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
