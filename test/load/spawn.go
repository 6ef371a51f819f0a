package main

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

// `celadon serve` cannot run without an API server: webhook.Options.
// Namespaces is settable only in-process, so the binary always starts a
// Namespace informer, and /readyz waits for it to sync. Spawn mode therefore
// starts a real etcd and kube-apiserver (internal/controlplane, binaries in
// bin/) and creates the namespaces the requests name.

// Namespaces the requests name, with the labels the policies select on.
var loadNamespaces = map[string]map[string]string{
	"shop": {"team": "shop"},
}

// env is a spawned control plane and the servers started against it.
type env struct {
	dir     string
	cp      *controlplane.ControlPlane
	servers []*server
}

// server is a running `celadon serve`.
type server struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error         // set before exited is closed
	PID     int
	BaseURL string // https://127.0.0.1:PORT
	CAFile  string
	LogPath string
}

func startEnv(ctx context.Context, logf func(string, ...any)) (*env, error) {
	dir, err := os.MkdirTemp("", "celadon-load-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir}
	cpLog, err := os.Create(filepath.Join(dir, "controlplane.log"))
	if err != nil {
		return nil, err
	}
	defer cpLog.Close()
	logf("starting etcd and kube-apiserver (log: %s)", cpLog.Name())
	start := time.Now()
	e.cp, err = controlplane.Start(ctx, controlplane.Options{Out: cpLog})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf("control plane ready in %v", time.Since(start).Round(100*time.Millisecond))
	cs, err := kubernetes.NewForConfig(e.cp.Config)
	if err != nil {
		e.stop()
		return nil, err
	}
	for name, labels := range loadNamespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			e.stop()
			return nil, fmt.Errorf("creating namespace %s: %w", name, err)
		}
	}
	return e, nil
}

// startServer runs `bin serve` on 127.0.0.1 with policiesDir and waits for
// /readyz.
func (e *env) startServer(ctx context.Context, bin, policiesDir, name string, extra []string, logf func(string, ...any)) (*server, error) {
	var ports [3]int
	for i := range ports {
		p, err := devenv.FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	certs := filepath.Join(e.dir, name+"-certs")
	if _, _, err := devenv.GenerateCerts(certs, "celadon load CA"); err != nil {
		return nil, err
	}
	health := "127.0.0.1:" + strconv.Itoa(ports[2])
	args := append([]string{"serve",
		"--policies", policiesDir,
		"--cert-dir", certs,
		"--host", "127.0.0.1",
		"--port", strconv.Itoa(ports[0]),
		"--metrics-bind-address", "127.0.0.1:" + strconv.Itoa(ports[1]),
		"--health-probe-bind-address", health,
		"--kubeconfig", e.cp.KubeconfigPath,
		"--log-format", "json",
	}, extra...)
	s := &server{
		BaseURL: "https://127.0.0.1:" + strconv.Itoa(ports[0]),
		CAFile:  filepath.Join(certs, devenv.CAFile),
		LogPath: filepath.Join(e.dir, name+".log"),
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
	go func() { ready <- devenv.WaitForHTTP(rctx, 60*time.Second, "http://"+health+"/readyz") }()
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

func (s *server) stop() {
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

// stop stops the servers, then the control plane, and removes the temp
// directory unless keep.
func (e *env) stop() {
	for _, s := range e.servers {
		s.stop()
	}
	if e.cp != nil {
		_ = e.cp.Stop()
	}
	if os.Getenv("CELADON_LOAD_KEEP") == "" {
		os.RemoveAll(e.dir)
	}
}
