package loadgen

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"celadon.io/celadon/internal/controlplane"
	"celadon.io/celadon/internal/devenv"
)

// `celadon serve` cannot run without an API server: server.Options.
// Namespaces is settable only in-process, so the binary always starts a
// Namespace informer, and /readyz waits for it to sync. Spawn mode therefore
// starts a real etcd and kube-apiserver (internal/controlplane, binaries in
// bin/) and creates the namespaces the requests name.

// Namespaces the requests name, with the labels the policies select on.
var Namespaces = map[string]map[string]string{
	"shop": {"team": "shop"},
}

// Env is a spawned control plane and the servers started against it.
type Env struct {
	Dir     string // temporary directory of logs, certificates and policies
	CP      *controlplane.ControlPlane
	servers []*Server
}

// Server is a running `celadon serve`.
type Server struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error         // set before exited is closed
	PID     int
	BaseURL string // https://127.0.0.1:PORT
	// MetricsURL and HealthURL are http://127.0.0.1:PORT of /metrics and
	// /status, and of /healthz and /readyz.
	MetricsURL, HealthURL string
	CertDir               string // tls.crt, tls.key and ca.crt, written with devenv.WriteCerts
	CAFile                string
	LogPath               string
}

// StartEnv starts etcd and kube-apiserver and creates Namespaces. Stop it
// with Stop.
func StartEnv(ctx context.Context, logf func(string, ...any)) (*Env, error) {
	dir, err := os.MkdirTemp("", "celadon-load-")
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: dir}
	cpLog, err := os.Create(filepath.Join(dir, "controlplane.log"))
	if err != nil {
		return nil, err
	}
	defer cpLog.Close()
	logf("starting etcd and kube-apiserver (log: %s)", cpLog.Name())
	start := time.Now()
	e.CP, err = controlplane.Start(ctx, controlplane.Options{Out: cpLog})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf("control plane ready in %v", time.Since(start).Round(100*time.Millisecond))
	cs, err := kubernetes.NewForConfig(e.CP.Config)
	if err != nil {
		e.Stop()
		return nil, err
	}
	for name, labels := range Namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			e.Stop()
			return nil, fmt.Errorf("creating namespace %s: %w", name, err)
		}
	}
	return e, nil
}

// StartServer runs `bin serve` on 127.0.0.1 with policiesDir and extra
// flags, and waits for /readyz.
func (e *Env) StartServer(ctx context.Context, bin, policiesDir, name string, extra []string, logf func(string, ...any)) (*Server, error) {
	var ports [3]int
	for i := range ports {
		p, err := devenv.FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	certs := filepath.Join(e.Dir, name+"-certs")
	if _, _, err := devenv.GenerateCerts(certs, "celadon load CA"); err != nil {
		return nil, err
	}
	metrics := "127.0.0.1:" + strconv.Itoa(ports[1])
	health := "127.0.0.1:" + strconv.Itoa(ports[2])
	args := append([]string{"serve",
		"--policies", policiesDir,
		"--cert-dir", certs,
		"--host", "127.0.0.1",
		"--port", strconv.Itoa(ports[0]),
		"--metrics-bind-address", metrics,
		"--metrics-secure=false", // scraped over plain HTTP on loopback
		"--health-probe-bind-address", health,
		"--kubeconfig", e.CP.KubeconfigPath,
		"--log-format", "json",
	}, extra...)
	s := &Server{
		BaseURL:    "https://127.0.0.1:" + strconv.Itoa(ports[0]),
		MetricsURL: "http://" + metrics,
		HealthURL:  "http://" + health,
		CertDir:    certs,
		CAFile:     filepath.Join(certs, devenv.CAFile),
		LogPath:    filepath.Join(e.Dir, name+".log"),
	}
	logFile, err := os.Create(s.LogPath)
	if err != nil {
		return nil, err
	}
	logf("starting %s %s", bin, strings.Join(args, " "))
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	logFile.Close()
	s.PID = s.cmd.Process.Pid
	s.exited = make(chan struct{})
	go func() { s.waitErr = s.cmd.Wait(); close(s.exited) }()
	e.servers = append(e.servers, s)

	ready := make(chan error, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { ready <- devenv.WaitForHTTP(rctx, 60*time.Second, s.HealthURL+"/readyz") }()
	select {
	case err := <-ready:
		if err != nil {
			return nil, fmt.Errorf("celadon serve not ready: %w (log: %s)", err, s.LogPath)
		}
	case <-s.exited:
		return nil, fmt.Errorf("celadon serve exited: %v (log: %s)", s.waitErr, s.LogPath)
	}
	logf("celadon serve ready: pid %d, %s", s.PID, s.BaseURL)
	return s, nil
}

// Signal sends sig to the server process.
func (s *Server) Signal(sig syscall.Signal) error { return s.cmd.Process.Signal(sig) }

// Exited is closed when the process has exited; Wait then returns how.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Wait waits for the process to exit and returns its exit error.
func (s *Server) Wait() error {
	<-s.exited
	return s.waitErr
}

// Stop sends SIGTERM and waits for the exit, killing the process after 10s.
func (s *Server) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// Stop stops the servers, then the control plane, and removes the temp
// directory unless CELADON_LOAD_KEEP is set.
func (e *Env) Stop() {
	for _, s := range e.servers {
		s.Stop()
	}
	if e.CP != nil {
		_ = e.CP.Stop()
	}
	if os.Getenv("CELADON_LOAD_KEEP") == "" {
		os.RemoveAll(e.Dir)
	}
}
