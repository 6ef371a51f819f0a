// Package faults injects faults into a real `celadon serve` under load:
// certificate rotation, policy reloads good and broken, SIGTERM, a runaway
// policy, abusive clients, and a flood of bodies under the shipped memory
// limit. Each test starts its own server (a subprocess
// of the binary TestMain builds, on 127.0.0.1, with real TLS) against one
// shared etcd and kube-apiserver (bin/, for the server's namespace
// informer), drives it with the load tool's client (test/load/loadgen) at a
// bounded rate, injects the fault, and asserts that the normal traffic saw
// no failed request and that the fault had the right outcome.
//
// Latencies are logged, never asserted. With -short every test skips.
package faults

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"celadon.io/celadon/internal/controlplane"
	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/test/load/loadgen"
)

var suite struct {
	skip string // why every test skips, or ""
	root string // the repository
	bin  string // the celadon binary under test
	env  *loadgen.Env
	pod  []byte // engine/testdata/pod.json
}

func TestMain(m *testing.M) {
	flag.Parse()
	ctrllog.SetLogger(logr.Discard()) // envtest's start-up logs
	if testing.Short() {
		suite.skip = "faults: skipped in -short mode (needs a real kube-apiserver from bin/: `make test` builds it)"
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "faults: "+format+"\n", args...) }
	root, err := controlplane.RepoRoot()
	if err != nil {
		logf("%v", err)
		return 1
	}
	suite.root = root
	tmp, err := os.MkdirTemp("", "celadon-faults-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	suite.bin = filepath.Join(tmp, "celadon")
	if err := devenv.BuildCeladon(context.Background(), root, suite.bin); err != nil {
		logf("building celadon: %v", err)
		return 1
	}
	if suite.pod, err = loadgen.LoadPod(filepath.Join(root, "engine", "testdata", "pod.json")); err != nil {
		logf("%v", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	suite.env, err = loadgen.StartEnv(ctx, logf)
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer suite.env.Stop()
	return m.Run()
}

func requireSuite(t *testing.T) {
	t.Helper()
	if suite.skip != "" {
		t.Skip(suite.skip)
	}
}
