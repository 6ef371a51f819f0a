package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/controlplane"
)

// The CRDs of the objects the installs may hold besides Kubernetes' own.
// Their modules are downloaded from the module proxy with `go mod download`
// and only their CRD files are read: they are no dependency of
// celadon.io/celadon.
const (
	// certManagerModule is the cert-manager release whose CRDs the
	// cert-manager overlay is checked against (deploy/crds/).
	certManagerModule = "github.com/cert-manager/cert-manager@v1.21.2"
	// prometheusOperatorModule is the Prometheus Operator release whose
	// ServiceMonitor and PrometheusRule CRDs the monitoring objects are
	// checked against (example/prometheus-operator-crd/).
	prometheusOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
)

// shared is the package's control plane for the tests that apply installs
// side by side (dry-run, or for real but inert): etcd and kube-apiserver
// only, with cert-manager's and the Prometheus Operator's CRDs. Started by
// the first test that needs it, stopped by TestMain. The install tests that
// run the server start fresh ones (newInstallEnv).
var shared struct {
	once sync.Once
	cp   *controlplane.ControlPlane
	c    client.Client
	err  error
	logs bytes.Buffer
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.cp != nil {
		if err := shared.cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// sharedControlPlane returns a client of the shared control plane (admin),
// starting it if needed; it skips the test in -short mode.
func sharedControlPlane(t *testing.T) (client.Client, *controlplane.ControlPlane) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real control plane from bin/ (`make controlplane`); skipped in -short mode")
	}
	shared.once.Do(func() {
		shared.err = func() error {
			certManager, err := moduleDir(certManagerModule)
			if err != nil {
				return err
			}
			prom, err := moduleDir(prometheusOperatorModule)
			if err != nil {
				return err
			}
			crds := []string{filepath.Join(certManager, "deploy", "crds")}
			for _, f := range []string{"monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml"} {
				crds = append(crds, filepath.Join(prom, "example", "prometheus-operator-crd", f))
			}
			for _, p := range crds {
				if _, err := os.Stat(p); err != nil {
					return fmt.Errorf("CRDs: %w", err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cp, err := controlplane.Start(ctx, controlplane.Options{CRDDirectoryPaths: crds, Out: &shared.logs})
			if err != nil {
				return fmt.Errorf("starting the control plane: %w", err)
			}
			shared.cp = cp
			shared.c, err = client.New(cp.Config, client.Options{})
			return err
		}()
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log (tail):\n%s", tail(shared.logs.String(), 4000))
		}
	})
	return shared.c, shared.cp
}

// moduleDir returns the directory of module@version in the module cache,
// downloading it if needed. The download runs outside this module so that
// it never touches go.mod or go.sum.
func moduleDir(module string) (string, error) {
	dir, err := os.MkdirTemp("", "celadon-mod")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %v\n%s%s", module, err, out, stderr.Bytes())
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return "", fmt.Errorf("go mod download %s: %v\n%s", module, err, out)
	}
	if mod.Error != "" || mod.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", module, mod.Error)
	}
	return mod.Dir, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("...%s", s[len(s)-n:])
}
