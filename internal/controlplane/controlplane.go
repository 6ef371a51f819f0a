package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ModulePath is the Go module path of the repository whose bin/ directory
// holds the control-plane binaries by default.
const ModulePath = "celadon.io/celadon"

// Binary names, as built into bin/ by hack/build-controlplane.sh.
const (
	EtcdBinary              = "etcd"
	APIServerBinary         = "kube-apiserver"
	ControllerManagerBinary = "kube-controller-manager"
	SchedulerBinary         = "kube-scheduler"
)

// ServiceClusterIPRange is the service CIDR given to the apiserver and the
// controller manager.
const ServiceClusterIPRange = "10.0.0.0/24"

// defaultStartTimeout bounds how long each envtest process (etcd,
// kube-apiserver) may take to become healthy, unless
// KUBEBUILDER_CONTROLPLANE_START_TIMEOUT says otherwise. envtest's own
// default (20s) is tight for a 2-core machine running other tests.
const defaultStartTimeout = 90 * time.Second

// Options configures Start. The zero value starts etcd and kube-apiserver
// only, with binaries from the repository's bin/ directory.
type Options struct {
	// BinDir is the directory holding etcd, kube-apiserver,
	// kube-controller-manager and kube-scheduler. Empty means the bin/
	// directory at the root of the celadon.io/celadon module containing the
	// working directory. KUBEBUILDER_ASSETS and TEST_ASSET_<NAME> take
	// precedence, as in envtest.
	BinDir string

	// WithControllerManager also runs the real kube-controller-manager
	// with all default controllers (deployment, replicaset, statefulset,
	// job, namespace, serviceaccount, garbage collector, ...).
	WithControllerManager bool

	// WithScheduler also runs the real kube-scheduler. Without nodes, pods
	// stay Pending; create Node objects to have pods bound to them.
	WithScheduler bool

	// ServiceAccountAdmission turns the apiserver's ServiceAccount admission
	// plugin back on (envtest disables it). Pods then get
	// spec.serviceAccountName and a projected token volume, as in a real
	// cluster, and are rejected until the namespace's "default" service
	// account exists, so it requires WithControllerManager.
	ServiceAccountAdmission bool

	// Out receives the logs of every process, each line prefixed with the
	// process name. Nil discards them (the last lines of a process that
	// fails to start are still included in Start's error).
	Out io.Writer

	// WebhookInstallOptions is passed to envtest: it installs webhook
	// configurations pointing at a local webhook server. After Start, the
	// filled-in values (serving host, port, cert dir) are in
	// ControlPlane.Env.WebhookInstallOptions.
	WebhookInstallOptions envtest.WebhookInstallOptions

	// CRDDirectoryPaths lists directories or files of CRDs to install.
	CRDDirectoryPaths []string

	// APIServerArgs are further kube-apiserver flags, name to value, e.g.
	// "runtime-config": "api/all=true" to serve every API version.
	APIServerArgs map[string]string
}

// EveryAPI is the APIServerArgs of a control plane that serves every API
// version, alpha and beta included, as some cluster may: what the
// generators of the built-in resource list and schemas read.
func EveryAPI() map[string]string {
	return map[string]string{"runtime-config": "api/all=true", "feature-gates": "AllAlpha=true,AllBeta=true"}
}

// ControlPlane is a running control plane started by Start.
type ControlPlane struct {
	// Env is the envtest environment running etcd and kube-apiserver.
	Env *envtest.Environment
	// Config is an admin (system:masters) REST config for the apiserver.
	Config *rest.Config
	// KubeconfigPath is an admin kubeconfig file for the apiserver, e.g. for
	// kubectl. It is removed by Stop.
	KubeconfigPath string
	// BinDir is the directory the binaries were taken from (empty when every
	// binary came from a TEST_ASSET_<NAME> override).
	BinDir string

	dir   string     // temporary working directory, removed by Stop
	procs []*process // subprocesses started by this package, in start order
	out   *logMux

	stopOnce sync.Once
	stopErr  error
}

// Start starts etcd and kube-apiserver through envtest and then, as asked by
// o, kube-controller-manager and kube-scheduler. It returns once every
// component reports healthy. On error, everything already started has been
// stopped. ctx bounds the start-up of the subprocesses started here; it
// does not stop the control plane once Start has returned: call Stop.
func Start(ctx context.Context, o Options) (_ *ControlPlane, retErr error) {
	if o.ServiceAccountAdmission && !o.WithControllerManager {
		return nil, errors.New("controlplane: ServiceAccountAdmission requires WithControllerManager (nothing would create the default service accounts)")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	binDir, err := resolveBinDir(o.BinDir)
	if err != nil {
		return nil, err
	}
	need := []string{EtcdBinary, APIServerBinary}
	if o.WithControllerManager {
		need = append(need, ControllerManagerBinary)
	}
	if o.WithScheduler {
		need = append(need, SchedulerBinary)
	}
	paths := map[string]string{}
	var missing []string
	for _, name := range need {
		p := binPath(name, binDir)
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			missing = append(missing, p)
			continue
		}
		paths[name] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("controlplane: missing control-plane binaries %s: run `make controlplane` "+
			"(or `bash hack/build-controlplane.sh`) from the repository root to build them", strings.Join(missing, ", "))
	}

	dir, err := os.MkdirTemp("", "celadon-controlplane-")
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	cp := &ControlPlane{BinDir: binDir, dir: dir, out: newLogMux(o.Out)}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, cp.Stop())
		}
	}()

	env := &envtest.Environment{
		// Never let USE_EXISTING_CLUSTER turn this into a client of some
		// other cluster: the controller manager needs our own apiserver.
		UseExistingCluster:    &[]bool{false}[0],
		BinaryAssetsDirectory: binDir,
		WebhookInstallOptions: o.WebhookInstallOptions,
		CRDDirectoryPaths:     o.CRDDirectoryPaths,
		ErrorIfCRDPathMissing: len(o.CRDDirectoryPaths) > 0,
	}
	if os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		env.ControlPlaneStartTimeout = defaultStartTimeout
	}
	// envtest starts etcd and kube-apiserver without a parent-death
	// signal; run them through a wrapper that sets one, so that they do
	// not outlive a test binary killed by `go test -timeout`.
	wrapDir := filepath.Join(dir, "wrappers")
	if err := os.MkdirAll(wrapDir, 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	etcdTail, apiTail := newTail(), newTail()
	env.ControlPlane.Etcd = &envtest.Etcd{
		Path: dieWithParent(wrapDir, paths[EtcdBinary]),
		Out:  io.MultiWriter(cp.out.writer(EtcdBinary), etcdTail),
		Err:  io.MultiWriter(cp.out.writer(EtcdBinary), etcdTail),
	}
	api := &envtest.APIServer{
		Path: dieWithParent(wrapDir, paths[APIServerBinary]),
		Out:  io.MultiWriter(cp.out.writer(APIServerBinary), apiTail),
		Err:  io.MultiWriter(cp.out.writer(APIServerBinary), apiTail),
	}
	args := api.Configure()
	// Advertise loopback: the apiserver otherwise picks the address of the
	// default route's interface (and fails on hosts without one). The
	// endpoint reconciler would then try to publish that loopback address as
	// the "kubernetes" service's endpoint, which validation rejects, so
	// turn it off: nothing here uses that service.
	args.Set("advertise-address", "127.0.0.1")
	args.Set("endpoint-reconciler-type", "none")
	if o.ServiceAccountAdmission {
		args.Disable("disable-admission-plugins")
	}
	for k, v := range o.APIServerArgs {
		args.Set(k, v)
	}
	env.ControlPlane.APIServer = api
	cp.Env = env

	cfg, err := env.Start()
	if err != nil {
		// envtest does not stop what it started when a late step fails;
		// the deferred cp.Stop does.
		return nil, fmt.Errorf("controlplane: starting envtest (etcd, kube-apiserver): %w%s%s", err,
			etcdTail.describe(EtcdBinary), apiTail.describe(APIServerBinary))
	}
	cp.Config = cfg
	cp.KubeconfigPath = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(cp.KubeconfigPath, env.KubeConfig, 0o600); err != nil {
		return nil, fmt.Errorf("controlplane: writing kubeconfig: %w", err)
	}

	certDir := api.CertDir
	caFile := filepath.Join(dir, "apiserver-ca.crt")
	if err := os.WriteFile(caFile, api.SecureServing.CA, 0o600); err != nil {
		return nil, fmt.Errorf("controlplane: writing apiserver CA: %w", err)
	}

	if o.WithControllerManager {
		kubeconfig, err := cp.writeUserKubeconfig("system:kube-controller-manager", "kube-controller-manager.kubeconfig")
		if err != nil {
			return nil, err
		}
		kcmDir := filepath.Join(dir, "kube-controller-manager")
		if err := os.MkdirAll(kcmDir, 0o700); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		p, err := cp.startProcess(ctx, ControllerManagerBinary, paths[ControllerManagerBinary], func(port int) []string {
			return []string{
				"--kubeconfig=" + kubeconfig,
				// Run every controller that is on by default; leader
				// election is pointless with a single instance and only
				// delays start-up.
				"--controllers=*",
				"--leader-elect=false",
				// All controllers use this process's own (system:masters)
				// credentials instead of per-controller service account
				// tokens, which would need the token machinery to be up
				// before any controller can work.
				"--use-service-account-credentials=false",
				// The key envtest's apiserver verifies service account
				// tokens with (--service-account-key-file is its public
				// half), and the CA that signs the apiserver's serving
				// cert: the token and root-CA publisher controllers need
				// them.
				"--service-account-private-key-file=" + filepath.Join(certDir, "sa-signer.key"),
				"--root-ca-file=" + caFile,
				"--service-cluster-ip-range=" + ServiceClusterIPRange,
				// Serve healthz on loopback only, on a free port, with
				// self-signed certs in our temp dir.
				"--bind-address=127.0.0.1",
				fmt.Sprintf("--secure-port=%d", port),
				"--cert-dir=" + kcmDir,
				// Tests create objects quickly; don't throttle controllers.
				"--kube-api-qps=200",
				"--kube-api-burst=400",
			}
		})
		if err != nil {
			return nil, err
		}
		cp.procs = append(cp.procs, p)
	}

	if o.WithScheduler {
		if _, err := cp.StartScheduler(ctx, DefaultSchedulerName); err != nil {
			return nil, err
		}
	}
	return cp, nil
}

// DefaultSchedulerName is the scheduler name of pods that do not set
// spec.schedulerName: the profile of the scheduler WithScheduler starts.
const DefaultSchedulerName = "default-scheduler"

// Scheduler is a kube-scheduler started by StartScheduler.
type Scheduler struct {
	// Name is its profile's schedulerName: it binds only the pods whose
	// spec.schedulerName is Name.
	Name string
	cp   *ControlPlane
	p    *process
}

// Stop stops the scheduler, which Exited then no longer reports. The
// control plane's Stop stops it too.
func (s *Scheduler) Stop() error {
	s.cp.procs = slices.DeleteFunc(s.cp.procs, func(p *process) bool { return p == s.p })
	return s.p.stop()
}

// StartScheduler starts a real kube-scheduler with one profile, named
// name, and waits until it is healthy. A name other than
// DefaultSchedulerName gives a scheduler of its own to the pods that ask
// for it (spec.schedulerName), leaving every other pod alone: a test can
// have its pods scheduled without the pods of other tests being bound.
func (c *ControlPlane) StartScheduler(ctx context.Context, name string) (*Scheduler, error) {
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return nil, fmt.Errorf("controlplane: scheduler name %q: %s", name, strings.Join(msgs, "; "))
	}
	path := binPath(SchedulerBinary, c.BinDir)
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return nil, fmt.Errorf("controlplane: missing control-plane binary %s: run `make controlplane` from the repository root to build it", path)
	}
	base := SchedulerBinary // its log prefix, files and directory
	if name != DefaultSchedulerName {
		base += "-" + name
	}
	kubeconfig, err := c.writeUserKubeconfig("system:kube-scheduler", base+".kubeconfig")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.dir, base)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	// A configuration file, as profiles have no flags; with it, the
	// deprecated client and leader-election flags are ignored.
	config := filepath.Join(dir, "config.yaml")
	data := fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: 200
  burst: 400
leaderElection:
  leaderElect: false
profiles:
- schedulerName: %q
`, kubeconfig, name)
	if err := os.WriteFile(config, []byte(data), 0o600); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	p, err := c.startProcess(ctx, base, path, func(port int) []string {
		return []string{
			"--config=" + config,
			"--bind-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", port),
			"--cert-dir=" + dir,
		}
	})
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return &Scheduler{Name: name, cp: c, p: p}, nil
}

// writeUserKubeconfig provisions a client-certificate user in the
// system:masters group and writes a kubeconfig for it into the temp dir.
func (c *ControlPlane) writeUserKubeconfig(user, file string) (string, error) {
	u, err := c.Env.AddUser(envtest.User{Name: user, Groups: []string{"system:masters"}}, &rest.Config{QPS: 200, Burst: 400})
	if err != nil {
		return "", fmt.Errorf("controlplane: provisioning user %s: %w", user, err)
	}
	data, err := u.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("controlplane: kubeconfig for %s: %w", user, err)
	}
	path := filepath.Join(c.dir, file)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("controlplane: writing %s: %w", path, err)
	}
	return path, nil
}

// Stop stops kube-scheduler and kube-controller-manager, then
// kube-apiserver and etcd, and removes the temporary files. It is safe to
// call more than once; later calls return the first call's result.
func (c *ControlPlane) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		for i := len(c.procs) - 1; i >= 0; i-- {
			if err := c.procs[i].stop(); err != nil {
				errs = append(errs, err)
			}
		}
		if c.Env != nil {
			// Not c.Env.Stop(): it returns before stopping the processes
			// when the webhook cleanup fails.
			if err := c.Env.WebhookInstallOptions.Cleanup(); err != nil {
				errs = append(errs, fmt.Errorf("controlplane: webhook cleanup: %w", err))
			}
			if err := c.Env.ControlPlane.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("controlplane: stopping etcd and kube-apiserver: %w", err))
			}
		}
		if c.dir != "" {
			if err := os.RemoveAll(c.dir); err != nil {
				errs = append(errs, fmt.Errorf("controlplane: %w", err))
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// Exited reports the first subprocess started by this package (controller
// manager or scheduler) that has exited since Start, or nil if all are
// still running. Useful to fail fast in long-running demos.
func (c *ControlPlane) Exited() error {
	for _, p := range c.procs {
		if p.exited() {
			return fmt.Errorf("controlplane: %s exited unexpectedly: %v%s", p.name, p.waitErr(), p.tail.describe(p.name))
		}
	}
	return nil
}

// resolveBinDir returns o.BinDir, or the bin/ directory of the enclosing
// celadon.io/celadon module. It only fails when neither is available and no
// KUBEBUILDER_ASSETS is set.
func resolveBinDir(dir string) (string, error) {
	if v := os.Getenv("KUBEBUILDER_ASSETS"); v != "" {
		return v, nil
	}
	if dir != "" {
		return filepath.Abs(dir)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin"), nil
}

// binPath finds a binary as envtest would: $TEST_ASSET_<NAME>, then
// binDir (which already reflects $KUBEBUILDER_ASSETS). Empty variables are
// ignored.
func binPath(name, binDir string) string {
	env := "TEST_ASSET_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	if v := os.Getenv(env); v != "" {
		return v
	}
	return filepath.Join(binDir, name)
}

// RepoRoot walks up from the working directory to the directory whose
// go.mod declares module celadon.io/celadon.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("controlplane: %w", err)
	}
	for dir := wd; ; {
		if modulePathOf(filepath.Join(dir, "go.mod")) == ModulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("controlplane: no go.mod for module %s in %s or its parents; set Options.BinDir or KUBEBUILDER_ASSETS", ModulePath, wd)
		}
		dir = parent
	}
}

// modulePathOf returns the module path declared in a go.mod file, or "".
func modulePathOf(gomod string) string {
	f, err := os.Open(gomod)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// logMux serializes the log lines of several processes onto one writer,
// prefixing each line with the process name.
type logMux struct {
	mu  sync.Mutex
	out io.Writer // nil discards
}

func newLogMux(out io.Writer) *logMux { return &logMux{out: out} }

// writer returns an io.Writer for one process's output.
func (m *logMux) writer(name string) io.Writer {
	if m.out == nil {
		return io.Discard
	}
	return &prefixWriter{mux: m, prefix: []byte("[" + name + "] ")}
}

// prefixWriter buffers partial lines and writes whole, prefixed lines.
type prefixWriter struct {
	mux    *logMux
	prefix []byte
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := w.buf[:i+1]
		w.mux.mu.Lock()
		_, _ = w.mux.out.Write(append(append([]byte{}, w.prefix...), line...))
		w.mux.mu.Unlock()
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// tail keeps the last bytes written to it, to explain start-up failures.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 4 << 10

func newTail() *tail { return &tail{} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailSize {
		t.buf = append([]byte{}, t.buf[len(t.buf)-tailSize:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// describe formats the tail for an error message ("" when empty).
func (t *tail) describe(name string) string {
	s := strings.TrimSpace(t.String())
	if s == "" {
		return ""
	}
	return fmt.Sprintf("\n--- last output of %s ---\n%s", name, s)
}
