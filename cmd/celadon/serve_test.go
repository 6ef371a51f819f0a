package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/spf13/pflag"

	"celadon.io/celadon/controllers"
)

const brokenServePolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: broken
spec:
  match:
    resources: [pods]
    conditions:
    - expression: "object.metadata.name =="
  action: deny
  with: {message: broken}
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: unknown
spec:
  match: {resources: [pods]}
  action: nosuchbuiltin
`

const goodServePolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: no-bad-pods
spec:
  match:
    resources: [pods]
    conditions:
    - expression: "object.metadata.name == 'bad'"
  action: deny
  with: {message: bad pods are not allowed}
`

func writeServeDir(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serve runs a fresh serve command (not rootCmd, whose flags would carry
// over between tests) and returns its error.
func serve(ctx context.Context, stderr *syncBuffer, args ...string) error {
	cmd := newServeCmd()
	cmd.SetArgs(args)
	cmd.SetOut(stderr)
	cmd.SetErr(stderr)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	return cmd.ExecuteContext(ctx)
}

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestServeFailsFastOnBrokenPolicies(t *testing.T) {
	dir := writeServeDir(t, brokenServePolicy)
	var stderr syncBuffer
	err := serve(context.Background(), &stderr, "--policies", dir, "--log-format", "json")
	if exitCode(err) != 2 {
		t.Fatalf("exit code %d (%v), want 2", exitCode(err), err)
	}
	file := filepath.Join(dir, "policy.yaml")
	for _, want := range []string{"(2 errors)", file + ":9:43: policy \"broken\"", file + ":19:3: policy \"unknown\": unknown builtin \"nosuchbuiltin\""} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// Through main's run, the exit status is 2 too.
	if code := run([]string{"serve", "--policies", dir, "--metrics-bind-address", "0", "--health-probe-bind-address", "0"}); code != 2 {
		t.Errorf("run() = %d, want 2", code)
	}
}

func TestServeUsageErrors(t *testing.T) {
	dir := writeServeDir(t, goodServePolicy)
	cases := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--log-format", "xml"}, `--log-format "xml"`},
		{nil, []string{"--log-level", "loud"}, `--log-level "loud"`},
		{nil, []string{"--service-account", "nobody"}, `service account "nobody"`},
		{nil, []string{"--port", "70000"}, "--port 70000"},
		{map[string]string{"CELADON_PORT": "https"}, nil, `$CELADON_PORT="https": invalid value for --port`},
		{map[string]string{"CELADON_RELOAD_INTERVAL": "often"}, nil, `$CELADON_RELOAD_INTERVAL="often"`},
		{nil, []string{"extra-arg"}, `unknown command "extra-arg"`},
		{nil, []string{"--manage-webhooks"}, "--manage-webhooks needs exactly one of --webhook-service and --webhook-url"},
		{nil, []string{"--decision-log-pass-sample", "-1"}, "--decision-log-pass-sample -1: want 0"},
		{nil, []string{"--decision-log-rate", "-5"}, "--decision-log-rate -5"},
		{nil, []string{"--manage-webhooks", "--webhook-service", "x"}, "--webhook-service: want NAMESPACE/NAME[:PORT]"},
		// pprof is never served beyond loopback.
		{nil, []string{"--pprof-bind-address", "0.0.0.0:6060"}, `--pprof-bind-address: "0.0.0.0:6060" is not a loopback address`},
		{nil, []string{"--pprof-bind-address", ":6060"}, `--pprof-bind-address: ":6060" is not a loopback address`},
		{map[string]string{"CELADON_PPROF_BIND_ADDRESS": "10.1.2.3:6060"}, nil, `--pprof-bind-address: "10.1.2.3:6060" is not a loopback address`},
	}
	for _, c := range cases {
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		var stderr syncBuffer
		err := serve(context.Background(), &stderr, append([]string{"--policies", dir}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: error %v, want %q", c.env, c.args, err, c.want)
		}
		if code := exitCode(err); code != 2 && code != -1 { // -1: cobra's own usage error, exit 2 through run
			t.Errorf("%v %v: exit code %d, want 2", c.env, c.args, code)
		}
		for k := range c.env {
			os.Unsetenv(k)
		}
	}
}

func TestServeFlagsFromEnvironment(t *testing.T) {
	t.Setenv("CELADON_POLICIES", "/from/env")
	t.Setenv("CELADON_PORT", "9555")
	t.Setenv("CELADON_RELOAD_INTERVAL", "3s")
	t.Setenv("CELADON_MAX_CONCURRENT", "7")
	t.Setenv("CELADON_METRICS_BIND_ADDRESS", "0")
	t.Setenv("CELADON_ALLOW_EMPTY_POLICIES", "true")
	t.Setenv("CELADON_DECISION_LOG_PASS_SAMPLE", "10")
	cmd := newServeCmd()
	if err := cmd.ParseFlags([]string{"--port", "9444"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(cmd.Flags(), serveEnv); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"policies":                  "/from/env",
		"port":                      "9444", // the command line wins
		"reload-interval":           "3s",
		"max-concurrent":            "7",
		"allow-empty-policies":      "true",
		"decision-log-pass-sample":  "10",
		"decision-log":              "true", // default
		"decision-log-rate":         "1000",
		"metrics-bind-address":      "0",
		"health-probe-bind-address": ":8081", // default
		"cert-dir":                  defaultCertDir,
	} {
		if got := cmd.Flags().Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	// Every flag but --kubeconfig has an environment twin, shown in --help.
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "kubeconfig" || f.Name == "help" {
			return
		}
		env, ok := serveEnv[f.Name]
		if !ok || !strings.Contains(f.Usage, "[$"+env+"]") {
			t.Errorf("--%s has no environment variable in its help: %q", f.Name, f.Usage)
		}
	})
}

func TestServeOptions(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "celadon-system")
	t.Setenv("SERVICE_ACCOUNT", "celadon")
	o := &serveOptions{policies: "/p", certDir: "/c", port: 9443, metricsAddr: ":8080", probeAddr: ":8081",
		reloadInterval: time.Second, shutdownTimeout: time.Minute, maxConcurrent: 3, kubeconfig: "/k", allowEmpty: true}
	opts, err := o.options(testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if opts.ServiceAccount != "system:serviceaccount:celadon-system:celadon" {
		t.Errorf("service account from the environment = %q", opts.ServiceAccount)
	}
	if opts.PoliciesDir != "/p" || opts.CertDir != "/c" || opts.Port != 9443 || opts.MaxConcurrent != 3 ||
		opts.ReloadInterval != time.Second || opts.GracefulShutdownTimeout != time.Minute || opts.Kubeconfig != "/k" || !opts.AllowEmpty {
		t.Errorf("options = %+v", opts)
	}
	if !opts.DisableDecisionLogs || opts.DecisionLogPassSample != 0 || opts.DecisionLogRate != -1 {
		t.Errorf("decision logs of --decision-log=false --decision-log-rate=0: disabled %v, pass sample %d, rate %d; want off, 0, no limit (-1)", opts.DisableDecisionLogs, opts.DecisionLogPassSample, opts.DecisionLogRate)
	}
	o.decisionLog, o.decisionPassSample, o.decisionLogRate = true, 5, 200
	if opts, _ := o.options(testr.New(t)); opts.DisableDecisionLogs || opts.DecisionLogPassSample != 5 || opts.DecisionLogRate != 200 {
		t.Errorf("decision logs: disabled %v, pass sample %d, rate %d; want on, 5, 200", opts.DisableDecisionLogs, opts.DecisionLogPassSample, opts.DecisionLogRate)
	}
	if opts.PprofBindAddress != "" {
		t.Errorf("PprofBindAddress %q by default, want \"\" (off)", opts.PprofBindAddress)
	}
	o.pprofAddr = "127.0.0.1:6060"
	if opts, err := o.options(testr.New(t)); err != nil || opts.PprofBindAddress != "127.0.0.1:6060" {
		t.Errorf("--pprof-bind-address 127.0.0.1:6060: PprofBindAddress %q, %v", opts.PprofBindAddress, err)
	}
	o.serviceAccount = "other/sa" // the flag wins over the environment
	if opts, _ := o.options(testr.New(t)); opts.ServiceAccount != "system:serviceaccount:other:sa" {
		t.Errorf("service account from the flag = %q", opts.ServiceAccount)
	}
}

func TestServeManageWebhooksOptions(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "celadon-system")
	o := &serveOptions{policies: "/p", certDir: "/c", port: 9443, shutdownTimeout: time.Minute,
		manageWebhooks: true, webhookConfigName: "celadon", webhookService: "celadon-system/celadon:8443", caBundle: "/ca.pem"}
	opts, err := o.options(testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if !opts.ManageWebhooks || opts.WebhookConfigName != "celadon" || opts.CABundleFile != "/ca.pem" ||
		opts.WebhookService == nil || *opts.WebhookService != (controllers.ServiceRef{Namespace: "celadon-system", Name: "celadon", Port: 8443}) {
		t.Errorf("options = %+v", opts)
	}
	// Leader election follows --manage-webhooks unless given; its namespace
	// defaults to the Pod's.
	if !opts.LeaderElection || opts.LeaderElectionNamespace != "celadon-system" {
		t.Errorf("leader election %v in %q, want on in celadon-system", opts.LeaderElection, opts.LeaderElectionNamespace)
	}
	o.leaderElectSet, o.leaderElect, o.leaderElectionNS = true, false, "other"
	if opts, _ := o.options(testr.New(t)); opts.LeaderElection || opts.LeaderElectionNamespace != "other" {
		t.Errorf("--leader-elect=false --leader-election-namespace other: %v in %q", opts.LeaderElection, opts.LeaderElectionNamespace)
	}
	o.manageWebhooks, o.leaderElectSet = false, false
	if opts, _ := o.options(testr.New(t)); opts.LeaderElection {
		t.Error("leader election on without --manage-webhooks")
	}
	o.manageWebhooks, o.excludeNamespaces = true, []string{"monitoring", "flux-system"}
	if opts, _ := o.options(testr.New(t)); !slices.Equal(opts.ExcludeNamespaces, []string{"monitoring", "flux-system"}) {
		t.Errorf("--exclude-namespace monitoring,flux-system: ExcludeNamespaces %q", opts.ExcludeNamespaces)
	}
	o.webhookURL = "https://127.0.0.1:9443"
	if _, err := o.options(testr.New(t)); err == nil {
		t.Error("both --webhook-service and --webhook-url: want an error")
	}
}

func TestLogFormat(t *testing.T) {
	var buf syncBuffer
	log, err := newLogger("debug", "", &buf) // not a terminal: JSON
	if err != nil {
		t.Fatal(err)
	}
	log.V(1).Info("hello", "k", "v")
	log.V(2).Info("hidden")
	if out := buf.String(); !strings.HasPrefix(out, "{") || !strings.Contains(out, `"msg":"hello"`) || strings.Contains(out, "hidden") {
		t.Errorf("JSON log at debug:\n%s", out)
	}
	buf = syncBuffer{}
	log, _ = newLogger("info", "console", &buf)
	log.Info("hello")
	log.V(1).Info("hidden")
	if out := buf.String(); strings.HasPrefix(out, "{") || !strings.Contains(out, "hello") || strings.Contains(out, "hidden") {
		t.Errorf("console log at info:\n%s", out)
	}
}

// TestDecisionLoggerIsNotSampled: the loggers controller-runtime builds
// sample at info level (past 100 lines of one message in a second, one in
// 100), which would silently drop decision lines, all of which share a
// message. The decision logger writes them all, encoded as the other
// logger's lines are, and follows --log-level.
func TestDecisionLoggerIsNotSampled(t *testing.T) {
	const n = 300
	var general, decisions syncBuffer
	log, err := newLogger("info", "json", &general)
	if err != nil {
		t.Fatal(err)
	}
	dlog, err := newDecisionLogger("info", "json", &decisions)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		log.Info("policy decision", "i", i)
		dlog.WithName("celadon").WithName("decision").Info("policy decision", "i", i)
	}
	lines := strings.Split(strings.TrimSuffix(decisions.String(), "\n"), "\n")
	if len(lines) != n {
		t.Errorf("the decision logger wrote %d lines of %d", len(lines), n)
	}
	// Why it exists: were controller-runtime to stop sampling, it could go.
	if got := strings.Count(general.String(), "\n"); got >= n {
		t.Errorf("the general logger wrote %d lines of %d: no longer sampled", got, n)
	}
	var d, g map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &d); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(strings.SplitN(general.String(), "\n", 2)[0]), &g); err != nil {
		t.Fatal(err)
	}
	if d["logger"] != "celadon.decision" || d["level"] != "info" || d["msg"] != "policy decision" || fmt.Sprintf("%T", d["ts"]) != fmt.Sprintf("%T", g["ts"]) {
		t.Errorf("decision line %v, general line %v", d, g)
	}
	for _, level := range []string{"error", "info"} {
		var b syncBuffer
		dlog, _ := newDecisionLogger(level, "console", &b)
		dlog.Info("policy decision")
		if got := b.String(); (level == "error") != (got == "") || strings.HasPrefix(got, "{") {
			t.Errorf("console decision logger at %s wrote %q", level, got)
		}
	}
	if _, err := newDecisionLogger("info", "xml", &decisions); err == nil {
		t.Error("--log-format xml: no error")
	}
}

// TestServeRunsUntilSIGTERM runs `celadon serve` in-process against an API
// server address where nothing listens: the webhook serves regardless (the
// namespace cache just never syncs, so /readyz stays unready), and SIGTERM
// stops it cleanly.
func TestServeRunsUntilSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server")
	}
	dir := writeServeDir(t, goodServePolicy)
	certDir := t.TempDir()
	writeSelfSigned(t, certDir)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	t.Setenv("CELADON_CERT_DIR", certDir)

	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- serve(context.Background(), &stderr, "--policies", dir, "--host", "127.0.0.1", "--port", port,
			"--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-format", "json")
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve returned early: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook never listened: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The real builtins answer over HTTPS.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",` +
		`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},` +
		`"namespace":"default","name":"bad","operation":"CREATE","userInfo":{"username":"alice"},` +
		`"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad","namespace":"default"}}}}`
	resp, err := client.Post("https://"+addr+"/validate?timeout=5s", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(out), `"uid":"u1","allowed":false`) || !strings.Contains(string(out), "bad pods are not allowed") {
		t.Errorf("HTTP %d: %s", resp.StatusCode, out)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not stop after SIGTERM\n%s", stderr.String())
	}
	t.Logf("log:\n%s", stderr.String())
	if out := stderr.String(); !strings.Contains(out, `"msg":"policies loaded"`) || !strings.Contains(out, `"msg":"shut down"`) {
		t.Errorf("log:\n%s", out)
	}
}

func writeSelfSigned(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "celadon.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestServeSecretOptions(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "celadon-system")
	o := &serveOptions{policies: "/p", certDir: "/c", port: 9443, shutdownTimeout: time.Minute}
	opts, err := o.options(testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	// Without --leader-elect, a createSecret policy turns it on.
	if !opts.ElectForControllers || opts.LeaderElection || opts.Namespace != "celadon-system" {
		t.Errorf("ElectForControllers %v, LeaderElection %v, Namespace %q; want true, false, celadon-system", opts.ElectForControllers, opts.LeaderElection, opts.Namespace)
	}
	o.leaderElectSet, o.namespace = true, "shared"
	if opts, _ := o.options(testr.New(t)); opts.ElectForControllers || opts.Namespace != "shared" {
		t.Errorf("--leader-elect=false --namespace shared: ElectForControllers %v, Namespace %q", opts.ElectForControllers, opts.Namespace)
	}
}

func TestServeSelfSignedOptions(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "celadon-system")
	t.Setenv("CELADON_SELF_SIGNED_CERTS", "true")
	t.Setenv("CELADON_CERT_DNS_NAMES", "a.example,10.0.0.1")
	cmd := newServeCmd()
	if err := cmd.ParseFlags([]string{"--cert-validity", "720h", "--cert-renew-before", "240h"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(cmd.Flags(), serveEnv); err != nil {
		t.Fatal(err)
	}
	o := &serveOptions{policies: "/p", certDir: "/c", port: 9443, shutdownTimeout: time.Minute, certSecret: controllers.DefaultCertSecretName,
		caValidity: controllers.DefaultCAValidity, certCheckInterval: time.Minute}
	o.selfSignedCerts, _ = cmd.Flags().GetBool("self-signed-certs")
	o.certDNSNames, _ = cmd.Flags().GetStringSlice("cert-dns-names")
	o.certValidity, _ = cmd.Flags().GetDuration("cert-validity")
	o.certRenewBefore, _ = cmd.Flags().GetDuration("cert-renew-before")
	opts, err := o.options(testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if !opts.SelfSignedCerts || opts.CertSecretNamespace != "celadon-system" || opts.CertSecretName != "celadon-tls" ||
		strings.Join(opts.CertDNSNames, " ") != "a.example 10.0.0.1" || opts.CertValidity != 720*time.Hour ||
		opts.CertRenewBefore != 240*time.Hour || opts.CAValidity != controllers.DefaultCAValidity || opts.CertCheckInterval != time.Minute {
		t.Errorf("options = %+v", opts)
	}
	o.certSecret = "other/tls"
	if opts, _ := o.options(testr.New(t)); opts.CertSecretNamespace != "other" || opts.CertSecretName != "tls" {
		t.Errorf("--cert-secret other/tls: %s/%s", opts.CertSecretNamespace, opts.CertSecretName)
	}

	// Bad input is a usage error naming the flag.
	dir := writeServeDir(t, goodServePolicy)
	os.Unsetenv("CELADON_CERT_DNS_NAMES")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--cert-secret", "a/b/c", "--webhook-service", "celadon-system/celadon"}, `--cert-secret: "a/b/c": want [NAMESPACE/]NAME`},
		{[]string{"--cert-secret", "/tls", "--webhook-service", "celadon-system/celadon"}, `--cert-secret: "/tls": want [NAMESPACE/]NAME`},
		{[]string{"--cert-check-interval", "-1s", "--webhook-service", "celadon-system/celadon"}, "--cert-check-interval -1s"},
		{[]string{"--cert-validity", "10m", "--webhook-service", "celadon-system/celadon"}, "certificate validity 10m0s: want at least 1h"},
		{[]string{"--webhook-url", "https://127.0.0.1:9443", "--manage-webhooks", "--ca-bundle", "/ca.pem"}, "--ca-bundle cannot be used with --self-signed-certs"},
		{nil, "--self-signed-certs needs the certificate's names: --webhook-service, --webhook-url or --cert-dns-names"},
		{[]string{"--cert-dns-names", "https://x", "--webhook-service", "celadon-system/celadon"}, `certificate name "https://x"`},
	} {
		var stderr syncBuffer
		err := serve(context.Background(), &stderr, append([]string{"--policies", dir}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || exitCode(err) != 2 {
			t.Errorf("%v: error %v (exit %d), want %q, exit 2", c.args, err, exitCode(err), c.want)
		}
	}
	t.Setenv("POD_NAMESPACE", "")
	var stderr syncBuffer
	if err := serve(context.Background(), &stderr, "--policies", dir, "--webhook-service", "x/y"); err == nil || !strings.Contains(err.Error(), `"celadon-tls": no namespace`) {
		t.Errorf("no namespace for the Secret: error %v", err)
	}
}

// Metrics are served securely unless --metrics-secure=false, and
// --client-ca reaches the server's options.
func TestServeReachFlags(t *testing.T) {
	cmd := newServeCmd()
	if got := cmd.Flags().Lookup("metrics-secure").DefValue; got != "true" {
		t.Errorf("--metrics-secure defaults to %s, want true", got)
	}
	if got := cmd.Flags().Lookup("client-ca").DefValue; got != "" {
		t.Errorf("--client-ca defaults to %q, want none", got)
	}
	o := &serveOptions{policies: "/p", port: 9443, shutdownTimeout: time.Minute, metricsSecure: true, clientCA: "/ca.pem"}
	opts, err := o.options(testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if opts.InsecureMetrics || opts.ClientCAFile != "/ca.pem" {
		t.Errorf("InsecureMetrics %v, ClientCAFile %q; want false, /ca.pem", opts.InsecureMetrics, opts.ClientCAFile)
	}
	o.metricsSecure = false
	if opts, _ := o.options(testr.New(t)); !opts.InsecureMetrics {
		t.Error("--metrics-secure=false: InsecureMetrics false")
	}
}

func TestParseBodyBytes(t *testing.T) {
	for v, want := range map[string]int64{"": 0, "32Mi": 32 << 20, "64Mi": 64 << 20, "100000000": 100000000} {
		if got, err := parseBodyBytes(v); err != nil || got != want {
			t.Errorf("parseBodyBytes(%q) = %d, %v; want %d", v, got, err, want)
		}
	}
	for _, v := range []string{"1Mi", "7Mi", "lots", "-1"} {
		if _, err := parseBodyBytes(v); err == nil {
			t.Errorf("parseBodyBytes(%q): no error; want one (at least 8Mi)", v)
		}
	}
}
