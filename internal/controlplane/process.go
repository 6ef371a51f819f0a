package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// processStartTimeout bounds how long a subprocess may take to serve
	// /healthz, unless the ctx given to Start expires first.
	processStartTimeout = 90 * time.Second
	// processStopTimeout is how long a subprocess gets to exit after
	// SIGTERM before it is killed.
	processStopTimeout = 10 * time.Second
	// startAttempts is how often a subprocess is started when its free port
	// was taken by someone else in the meantime.
	startAttempts = 3
)

// process is a control-plane component run as a subprocess.
type process struct {
	name string
	cmd  *exec.Cmd
	tail *tail

	done chan struct{} // closed when cmd.Wait returned
	mu   sync.Mutex
	err  error // cmd.Wait's result
}

// startProcess starts the binary at path with the arguments args(port),
// port being a free loopback port for its secure (healthz) endpoint, and
// waits until https://127.0.0.1:port/healthz answers 200. It retries with a
// new port if the port was taken in the meantime.
func (c *ControlPlane) startProcess(ctx context.Context, name, path string, args func(port int) []string) (*process, error) {
	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("controlplane: finding a free port for %s: %w", name, err)
		}
		p := &process{name: name, tail: newTail(), done: make(chan struct{})}
		p.cmd = exec.Command(path, args(port)...)
		w := io.MultiWriter(c.out.writer(name), p.tail)
		p.cmd.Stdout, p.cmd.Stderr = w, w
		p.cmd.SysProcAttr = sysProcAttr()
		if err := p.cmd.Start(); err != nil {
			return nil, fmt.Errorf("controlplane: starting %s: %w", name, err)
		}
		go func() {
			err := p.cmd.Wait()
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			close(p.done)
		}()
		err = p.waitHealthy(ctx, port)
		if err == nil {
			return p, nil
		}
		stopErr := p.stop()
		lastErr = errors.Join(fmt.Errorf("controlplane: %s did not become healthy: %w%s", name, err, p.tail.describe(name)), stopErr)
		if ctx.Err() != nil || !strings.Contains(p.tail.String(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// waitHealthy polls the process's /healthz until it answers 200, the
// process exits, ctx ends or processStartTimeout passes.
func (p *process) waitHealthy(ctx context.Context, port int) error {
	ctx, cancel := context.WithTimeout(ctx, processStartTimeout)
	defer cancel()
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			// The component's serving cert is self-signed; only liveness
			// matters here.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // health check of a local test process
		},
	}
	defer client.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.waitErr())
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", url, ctx.Err())
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM to the process (and its process group), waits up to
// processStopTimeout, then kills it. A process that already exited is
// not an error: its exit status is not interesting at shutdown.
func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	signalGroup(p.cmd, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(processStopTimeout):
	}
	signalGroup(p.cmd, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(processStopTimeout):
		return fmt.Errorf("controlplane: %s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) waitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
