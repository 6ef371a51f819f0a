// Package e2e tests Celadon end to end: a real etcd, kube-apiserver and
// kube-controller-manager (internal/controlplane, binaries from bin/, built
// by `make controlplane`), Celadon running in-process through the same
// code path as `celadon serve` (server.NewServer and Server.Start) on
// 127.0.0.1, and webhook configurations generated from the served
// policies (controllers.Configurations) pointing the API server at it. Every
// outcome is asserted through the API server.
//
// One control plane and one Celadon server are started for the package in
// TestMain; the failure-policy test starts a second server of its own. Each
// test works in namespaces of its own. With -short, every test skips.
//
// Set CELADON_E2E_LOGS=1 to stream the control plane's and Celadon's logs
// to stderr; otherwise their last lines are printed when a test fails.
package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"celadon.io/celadon/internal/controlplane"
)

// Bounds of the waits. They are generous on purpose, for a loaded 2-core
// machine: they bound a test, they do not measure speed.
const (
	// startTimeout bounds starting the control plane.
	startTimeout = 5 * time.Minute
	// waitTimeout bounds waiting for the controllers or the API server to
	// act (pods of a StatefulSet, a namespace's service account, webhook
	// configurations taking effect).
	waitTimeout = 2 * time.Minute
	// reloadTimeout is the hot-reload promise: a policy edit is in force
	// within 5 s.
	reloadTimeout = 5 * time.Second
)

// suite is the environment shared by the tests.
var suite struct {
	// skip is why every test skips (-short), or "".
	skip string
	cp   *controlplane.ControlPlane
	c    client.Client
	// main is the Celadon server behind the "celadon-e2e" webhook
	// configurations, serving the shipped policies and testdata.
	main *celadon
	logs *logBuffer
	// auditLog is the API server's audit log (JSON lines): the create
	// requests of ConfigMaps, at level Metadata, with their annotations.
	auditLog string
}

// auditPolicy keeps the audit log small: ConfigMap creates only, which
// TestRoundTrip reads the admission annotations of.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
  verbs: [create]
  resources:
  - group: ""
    resources: [configmaps]
- level: None
`

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		suite.skip = "e2e: skipped in -short mode (needs a real control plane from bin/: `make test` builds it)"
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	suite.logs = &logBuffer{stream: os.Getenv("CELADON_E2E_LOGS") != ""}
	log := crzap.New(crzap.WriteTo(suite.logs), crzap.Level(zapcore.InfoLevel), crzap.StacktraceLevel(zapcore.DPanicLevel))
	ctrl.SetLogger(log)
	klog.SetLogger(log.WithName("klog"))
	defer func() {
		if code != 0 && !suite.logs.stream {
			fmt.Fprintf(os.Stderr, "--- last lines of the control plane's and Celadon's logs ---\n%s\n", suite.logs.tail(200))
		}
	}()

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	auditDir, err := os.MkdirTemp("", "celadon-e2e-audit-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(auditDir)
	if err := os.WriteFile(filepath.Join(auditDir, "policy.yaml"), []byte(auditPolicy), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	suite.auditLog = filepath.Join(auditDir, "audit.log")
	cp, err := controlplane.Start(ctx, controlplane.Options{
		WithControllerManager:   true,
		ServiceAccountAdmission: true,
		Out:                     suite.logs,
		APIServerArgs: map[string]string{
			"audit-policy-file": filepath.Join(auditDir, "policy.yaml"),
			"audit-log-path":    suite.auditLog,
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: starting the control plane: %v\n", err)
		return 1
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stopping the control plane: %v\n", err)
		}
	}()
	suite.cp = cp
	suite.c, err = client.New(cp.Config, client.Options{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}

	policies, err := mainPolicies()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	suite.main, err = startCeladon(ctx, "celadon-e2e", policies)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer suite.main.stop()
	fmt.Fprintf(os.Stderr, "e2e: control plane and Celadon (%s) ready in %v\n", suite.main.url(), time.Since(start).Round(time.Second))
	return m.Run()
}

// requireSuite skips t in -short mode.
func requireSuite(t *testing.T) {
	t.Helper()
	if suite.skip != "" {
		t.Skip(suite.skip)
	}
}

// logBuffer collects log lines, optionally streaming them to stderr.
type logBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	stream bool
}

const maxLogBytes = 8 << 20

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stream {
		_, _ = os.Stderr.Write(p)
	}
	if b.buf.Len()+len(p) > maxLogBytes {
		keep := b.buf.Bytes()[b.buf.Len()/2:]
		b.buf = *bytes.NewBuffer(append([]byte{}, keep...))
	}
	return b.buf.Write(p)
}

// tail returns the last n lines.
func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimRight(b.buf.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
