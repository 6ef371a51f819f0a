// Command demo is `make run`: Celadon on a real, embedded control plane.
//
// It starts etcd, kube-apiserver and kube-controller-manager from bin/
// (building the missing ones first), builds Celadon and runs `celadon
// serve` as a subprocess on 127.0.0.1 with the shipped policies/ copied
// into a ConfigMap-style directory (edit it: the server hot-reloads it),
// installs the webhook configurations generated from those policies,
// applies the objects of examples/_demo and prints what the webhook did to
// each. Then it keeps running, printing how to poke at the cluster, until
// Ctrl-C or SIGTERM, and stops everything it started.
//
//	go run ./hack/demo [-policies DIR] [-examples DIR] [-celadon BINARY] [-once] [-keep]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"celadon.io/celadon/controllers"
	"celadon.io/celadon/internal/controlplane"
	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/server"
)

// thenAnnotation on an example object asks the demo to do something with
// it once everything is applied; "delete" is the only action.
const thenAnnotation = "demo.celadon.io/then"

// waitTimeout bounds each wait for the cluster (generous: a busy machine).
const waitTimeout = 2 * time.Minute

type options struct {
	policies string
	examples string
	celadon  string
	once     bool
	keep     bool
}

func main() {
	var o options
	flag.StringVar(&o.policies, "policies", "policies", "policy directory to serve (copied into a ConfigMap-style directory)")
	flag.StringVar(&o.examples, "examples", "examples/_demo", "directory of example objects (*.yaml), applied in name order")
	flag.StringVar(&o.celadon, "celadon", "", "celadon binary to run (default: build ./cmd/celadon)")
	flag.BoolVar(&o.once, "once", false, "stop after reporting what the webhook did, instead of running until Ctrl-C")
	flag.BoolVar(&o.keep, "keep", false, "keep the working directory (policies, certificates, logs) on exit")
	flag.Parse()
	// Paths given on the command line are relative to the working
	// directory; the defaults, to the repository root, where run changes
	// directory.
	flag.Visit(func(f *flag.Flag) {
		for name, p := range map[string]*string{"policies": &o.policies, "examples": &o.examples, "celadon": &o.celadon} {
			if f.Name == name && *p != "" {
				if abs, err := filepath.Abs(*p); err == nil {
					*p = abs
				}
			}
		}
	})

	// client-go and controller-runtime log through these; the demo prints
	// its own lines.
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	ctrllog.SetLogger(klog.NewKlogr())

	// SIGPIPE too (`make run | head`): stop in order rather than die and
	// leave the working directories behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
	defer stop()
	d := &demo{opts: o}
	err := d.run(ctx)
	if cerr := d.cleanup(); err == nil {
		err = cerr
	}
	switch {
	case err == nil:
	case ctx.Err() != nil:
		// Interrupted during start-up: cleaned up, nothing to report.
		fmt.Fprintln(os.Stderr, "demo: interrupted")
		os.Exit(130)
	default:
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

// demo holds what run started, for cleanup.
type demo struct {
	opts    options
	root    string
	work    string
	cp      *controlplane.ControlPlane
	c       client.Client
	celadon *exec.Cmd
	exited  chan error // the celadon process's Wait result
	logPath string

	port             int
	metrics, health  string
	policyDir, certs string
	ca               *devenv.CA
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func step(format string, args ...any) { say("==> "+format, args...) }

func (d *demo) run(ctx context.Context) error {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	d.root = root
	if err := os.Chdir(root); err != nil {
		return err
	}
	if err := d.buildControlPlane(ctx); err != nil {
		return err
	}
	d.work, err = os.MkdirTemp("", "celadon-demo-")
	if err != nil {
		return err
	}
	celadonBin, err := d.buildCeladon(ctx)
	if err != nil {
		return err
	}

	step("starting etcd, kube-apiserver and kube-controller-manager (logs: %s)", filepath.Join(d.work, "controlplane.log"))
	cpLog, err := os.Create(filepath.Join(d.work, "controlplane.log"))
	if err != nil {
		return err
	}
	start := time.Now()
	d.cp, err = controlplane.Start(ctx, controlplane.Options{
		WithControllerManager:   true,
		ServiceAccountAdmission: true,
		Out:                     cpLog,
	})
	if err != nil {
		return err
	}
	say("    ready in %v; kubeconfig: %s", time.Since(start).Round(100*time.Millisecond), d.cp.KubeconfigPath)
	if d.c, err = client.New(d.cp.Config, client.Options{}); err != nil {
		return err
	}

	// Policies, ConfigMap-style, and certificates, Secret-style.
	files, err := devenv.ReadPolicyFiles(d.opts.policies)
	if err != nil {
		return err
	}
	d.policyDir = filepath.Join(d.work, "policies")
	if err := devenv.WriteAtomic(d.policyDir, files); err != nil {
		return err
	}
	step("policies: %s copied to %s", strings.Join(slices.Sorted(maps.Keys(files)), ", "), d.policyDir)
	say("    (laid out like a mounted ConfigMap; edit the files there and celadon reloads them)")
	d.certs = filepath.Join(d.work, "certs")
	if d.ca, _, err = devenv.GenerateCerts(d.certs, "celadon demo CA"); err != nil {
		return err
	}
	step("certificates: a demo CA and a serving certificate for 127.0.0.1 in %s", d.certs)

	if err := d.startCeladon(ctx, celadonBin); err != nil {
		return err
	}
	if err := d.installWebhooks(ctx); err != nil {
		return err
	}
	report, err := d.applyExamples(ctx)
	if err != nil {
		return err
	}
	step("what the webhook did")
	for _, line := range report {
		say("    %s", line)
	}
	if d.opts.once {
		return nil
	}
	d.printTryIt()
	return d.serve(ctx)
}

// buildControlPlane builds the missing control-plane binaries with
// hack/build-controlplane.sh, showing its progress.
func (d *demo) buildControlPlane(ctx context.Context) error {
	bin := filepath.Join(d.root, "bin")
	if v := os.Getenv("KUBEBUILDER_ASSETS"); v != "" {
		bin = v
	}
	var missing []string
	for _, name := range []string{controlplane.EtcdBinary, controlplane.APIServerBinary, controlplane.ControllerManagerBinary} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	step("building %s into %s from Go modules (first run only; several minutes on 2 cores)", strings.Join(missing, ", "), bin)
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join("hack", "build-controlplane.sh")}, missing...)...)
	cmd.Env = append(os.Environ(), "BIN_DIR="+bin)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the control plane: %w", err)
	}
	return nil
}

// buildCeladon returns the celadon binary to run, building it unless
// -celadon names one.
func (d *demo) buildCeladon(ctx context.Context) (string, error) {
	if d.opts.celadon != "" {
		return d.opts.celadon, nil
	}
	out := filepath.Join(d.work, "celadon")
	step("building celadon (go build ./cmd/celadon)")
	if err := devenv.BuildCeladon(ctx, ".", out); err != nil {
		return "", fmt.Errorf("building celadon: %w", err)
	}
	return out, nil
}

// startCeladon runs `celadon serve` and waits until it is ready.
func (d *demo) startCeladon(ctx context.Context, bin string) error {
	var ports [3]int
	for i := range ports {
		p, err := devenv.FreePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	d.port = ports[0]
	d.metrics = "127.0.0.1:" + strconv.Itoa(ports[1])
	d.health = "127.0.0.1:" + strconv.Itoa(ports[2])
	d.logPath = filepath.Join(d.work, "celadon.log")
	logFile, err := os.Create(d.logPath)
	if err != nil {
		return err
	}
	args := []string{"serve",
		"--policies", d.policyDir,
		"--cert-dir", d.certs,
		"--host", "127.0.0.1",
		"--port", strconv.Itoa(d.port),
		"--metrics-bind-address", d.metrics,
		// Plain HTTP on loopback, so the demo can curl it without a token.
		"--metrics-secure=false",
		"--health-probe-bind-address", d.health,
		"--kubeconfig", d.cp.KubeconfigPath,
		"--reload-interval", "2s",
		// celadon writes the webhook configurations generated from the
		// policies, and rewrites them after every edit that compiles.
		"--manage-webhooks",
		"--webhook-url", d.webhookURL(),
		"--leader-elect=false", // one replica
		"--log-format", "console",
	}
	step("starting celadon serve on https://127.0.0.1:%d (log: %s)", d.port, d.logPath)
	say("    %s %s", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting celadon: %w", err)
	}
	logFile.Close() // the child has its own descriptor
	d.celadon = cmd
	d.exited = make(chan error, 1)
	go func() { d.exited <- cmd.Wait() }()

	ready := make(chan error, 1)
	readyCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { ready <- devenv.WaitForHTTP(readyCtx, waitTimeout, "http://"+d.health+"/readyz") }()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("celadon did not become ready: %w%s", err, tailOf(d.logPath))
		}
	case err := <-d.exited:
		d.exited <- err
		return fmt.Errorf("celadon serve exited: %v%s", err, tailOf(d.logPath))
	}
	say("    ready: /readyz answers 200")
	return nil
}

// webhookURL is the address celadon serves at, written into the webhook
// configurations.
func (d *demo) webhookURL() string { return "https://127.0.0.1:" + strconv.Itoa(d.port) }

// installWebhooks waits for the webhook configurations celadon writes from
// the policies (--manage-webhooks), until the API server uses them, and
// prints them.
func (d *demo) installWebhooks(ctx context.Context) error {
	m, v, err := d.waitConfigurations(ctx, "")
	if err != nil {
		return err
	}
	if err := devenv.SyncWebhookConfigurations(ctx, d.c, metav1.NamespaceDefault, waitTimeout); err != nil {
		return err
	}
	step("webhook configurations %q written by celadon from the policies, calling %s:", m.Name, d.webhookURL())
	for _, w := range m.Webhooks {
		say("    mutating    %-26s %-16s %s", w.Name, urlPath(*w.ClientConfig.URL), describeRules(w.Rules))
	}
	for _, w := range v.Webhooks {
		say("    validating  %-26s %-16s %s", w.Name, urlPath(*w.ClientConfig.URL), describeRules(w.Rules))
	}
	return nil
}

// waitConfigurations waits until both webhook configurations exist and
// carry a resourceVersion other than after, and returns them.
func (d *demo) waitConfigurations(ctx context.Context, after string) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	m := &admissionregistrationv1.MutatingWebhookConfiguration{}
	v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	err := devenv.WaitFor(ctx, waitTimeout, "the webhook configurations celadon writes", func(ctx context.Context) (bool, error) {
		if err := d.c.Get(ctx, client.ObjectKey{Name: controllers.DefaultConfigName}, m); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if err := d.c.Get(ctx, client.ObjectKey{Name: controllers.DefaultConfigName}, v); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return configVersion(m, v) != after, nil
	})
	return m, v, err
}

// configVersion identifies the pair of configurations as written.
func configVersion(m *admissionregistrationv1.MutatingWebhookConfiguration, v *admissionregistrationv1.ValidatingWebhookConfiguration) string {
	return m.ResourceVersion + "/" + v.ResourceVersion
}

// urlPath returns the path of a webhook URL.
func urlPath(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.Index(u[i+3:], "/"); j >= 0 {
			return u[i+3+j:]
		}
	}
	return u
}

// describeRules renders rules as "CREATE pods; DELETE apps/deployments, services",
// one group of resources per set of operations.
func describeRules(rules []admissionregistrationv1.RuleWithOperations) string {
	byOps := map[string][]string{}
	var order []string
	for _, r := range rules {
		var ops []string
		for _, op := range r.Operations {
			ops = append(ops, string(op))
		}
		key := strings.Join(ops, ",")
		if _, seen := byOps[key]; !seen {
			order = append(order, key)
		}
		for _, g := range r.APIGroups {
			for _, name := range r.Resources {
				if g != "" {
					name = g + "/" + name
				}
				byOps[key] = append(byOps[key], name)
			}
		}
	}
	parts := make([]string, 0, len(order))
	for _, key := range order {
		res := byOps[key]
		sort.Strings(res)
		parts = append(parts, key+" "+strings.Join(res, ", "))
	}
	return strings.Join(parts, "; ")
}

// applyExamples creates the example objects and returns the report of
// what the webhook did.
func (d *demo) applyExamples(ctx context.Context) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(d.opts.examples, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no example objects (*.yaml) in %s", d.opts.examples)
	}
	sort.Strings(paths)
	step("applying %s", d.opts.examples)
	var objs []*unstructured.Unstructured
	for _, p := range paths {
		fileObjs, err := readObjects(p)
		if err != nil {
			return nil, err
		}
		for _, u := range fileObjs {
			if err := d.c.Create(ctx, u); err != nil {
				return nil, fmt.Errorf("%s: creating %s: %w", p, ref(u), err)
			}
			say("    created %s", ref(u))
			if u.GetKind() == "Namespace" {
				if err := d.waitServiceAccount(ctx, u.GetName()); err != nil {
					return nil, err
				}
			}
			objs = append(objs, u)
		}
	}

	var report []string
	for _, u := range objs {
		if u.GetKind() == "StatefulSet" {
			line, err := d.describeStatefulSet(ctx, u)
			if err != nil {
				return nil, err
			}
			report = append(report, line)
		}
	}
	for _, u := range objs {
		if u.GetAnnotations()[thenAnnotation] != "delete" {
			continue
		}
		err := d.c.Delete(ctx, u)
		switch {
		case err == nil:
			report = append(report, fmt.Sprintf("delete %s: allowed", ref(u)))
		case strings.Contains(err.Error(), "denied the request"):
			report = append(report, fmt.Sprintf("delete %s: denied: %s", ref(u), deniedMessage(err)))
		default:
			report = append(report, fmt.Sprintf("delete %s: error: %v", ref(u), err))
		}
	}
	return report, nil
}

// deniedMessage strips the API server's prefix from a webhook denial,
// naming the webhook instead.
func deniedMessage(err error) string {
	msg := err.Error()
	const marker = `admission webhook "`
	if i := strings.Index(msg, marker); i >= 0 {
		rest := msg[i+len(marker):]
		if j := strings.Index(rest, `" denied the request: `); j >= 0 {
			return rest[j+len(`" denied the request: `):] + " (" + rest[:j] + ")"
		}
	}
	return msg
}

// describeStatefulSet waits for the StatefulSet's pods and reports the
// INDEX each got.
func (d *demo) describeStatefulSet(ctx context.Context, u *unstructured.Unstructured) (string, error) {
	var sts appsv1.StatefulSet
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &sts); err != nil {
		return "", err
	}
	replicas := 1
	if sts.Spec.Replicas != nil {
		replicas = int(*sts.Spec.Replicas)
	}
	pods := make([]corev1.Pod, replicas)
	err := devenv.Retry(ctx, waitTimeout, fmt.Sprintf("the %d pods of %s", replicas, ref(u)), func(ctx context.Context) error {
		for i := range pods {
			key := client.ObjectKey{Namespace: sts.Namespace, Name: fmt.Sprintf("%s-%d", sts.Name, i)}
			if err := d.c.Get(ctx, key, &pods[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	var parts []string
	mutated := true
	for i, pod := range pods {
		value, everywhere := envInAllContainers(&pod, "INDEX")
		if value == "" {
			parts = append(parts, pod.Name+" (no INDEX)")
			mutated = false
			continue
		}
		parts = append(parts, pod.Name+" INDEX="+value)
		if !everywhere || value != strconv.Itoa(i) {
			mutated = false
		}
	}
	verdict := "(mutated: INDEX set in every container)"
	if !mutated {
		verdict = "(NOT mutated as expected: is celadon serving sts-index?)"
	}
	return fmt.Sprintf("%s pods: %s %s", ref(u), strings.Join(parts, ", "), verdict), nil
}

// envInAllContainers returns the value of name in the pod's first
// container that sets it, and whether every container sets it to that.
func envInAllContainers(pod *corev1.Pod, name string) (string, bool) {
	value, all := "", true
	for _, c := range pod.Spec.Containers {
		found := false
		for _, e := range c.Env {
			if e.Name == name {
				found = true
				if value == "" {
					value = e.Value
				} else if e.Value != value {
					all = false
				}
			}
		}
		all = all && found
	}
	return value, all
}

func (d *demo) waitServiceAccount(ctx context.Context, ns string) error {
	return devenv.Retry(ctx, waitTimeout, "the default service account of namespace "+ns, func(ctx context.Context) error {
		return d.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, &corev1.ServiceAccount{})
	})
}

// printTryIt prints how to use the running demo.
func (d *demo) printTryIt() {
	kubectl := "kubectl"
	note := ""
	if _, err := os.Stat(filepath.Join(d.root, "bin", "kubectl")); err == nil {
		kubectl = "bin/kubectl"
	} else {
		note = "   (no kubectl? `make bin/kubectl` builds one from the same Go modules)"
	}
	policy := filepath.Join(d.policyDir, "sts-index.yaml")
	say("")
	say("Celadon is running against the embedded control plane. Try, from %s:", d.root)
	say("  export KUBECONFIG=%s%s", d.cp.KubeconfigPath, note)
	say("  %s get pods -A", kubectl)
	say("  %s -n demo get pod web-0 -o jsonpath='{.spec.containers[*].env}'", kubectl)
	say("  %s -n demo delete deployment payments                      # denied by protect-delete", kubectl)
	say("  %s -n demo label deployment payments celadon.io/protected-  # then the delete is allowed", kubectl)
	say("  sed -i 's/name: INDEX/name: ORDINAL/' %s", policy)
	say("  %s -n demo scale statefulset web --replicas 4               # web-3 gets ORDINAL=3 (hot reload)", kubectl)
	say("  curl -s http://%s/status                                  # served policies, last reload error", d.metrics)
	say("  curl -s http://%s/metrics | grep ^celadon_", d.metrics)
	say("Logs: %s and %s", d.logPath, filepath.Join(d.work, "controlplane.log"))
	say("Policy edits that compile also regenerate the webhook configurations. Press Ctrl-C to stop.")
}

// serve runs until ctx is done or celadon exits, reporting each policy
// edit as celadon's /status and the webhook configurations show it.
func (d *demo) serve(ctx context.Context) error {
	last, lastErr := "", ""
	m, v, err := d.waitConfigurations(ctx, "")
	if err != nil {
		return err
	}
	written := configVersion(m, v)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			say("")
			step("stopping")
			return nil
		case err := <-d.exited:
			d.exited <- err
			return fmt.Errorf("celadon serve exited: %v%s", err, tailOf(d.logPath))
		case <-tick.C:
			if err := d.cp.Exited(); err != nil {
				return err
			}
			st, err := d.status(ctx)
			if err != nil {
				continue
			}
			if st.LastReloadError != nil {
				if msg := st.LastReloadError.Error(); msg != lastErr {
					lastErr = msg
					step("the policies do not compile; celadon keeps serving the last good set (see /status):\n%s", msg)
				}
				continue
			}
			lastErr = ""
			if last == "" || st.Hash == last {
				last = st.Hash
				continue
			}
			last = st.Hash
			if m, v, err = d.waitConfigurations(ctx, ""); err != nil {
				return err
			}
			if now := configVersion(m, v); now != written {
				written = now
				step("policies changed (hash %s, %d policies): celadon regenerated the webhook configurations", st.Hash, len(st.Policies))
			} else {
				step("policies changed (hash %s, %d policies); the webhook configurations they generate are unchanged", st.Hash, len(st.Policies))
			}
		}
	}
}

// status reads celadon's /status.
func (d *demo) status(ctx context.Context) (*server.Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.metrics+server.StatusPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	st := &server.Status{}
	return st, json.NewDecoder(resp.Body).Decode(st)
}

// cleanup stops celadon, then the control plane, and removes the working
// directory.
func (d *demo) cleanup() error {
	var errs []error
	if d.celadon != nil && d.celadon.Process != nil {
		select {
		case err := <-d.exited:
			d.exited <- err
		default:
			signalGroup(d.celadon, syscall.SIGTERM)
			select {
			case <-d.exited:
			case <-time.After(20 * time.Second):
				signalGroup(d.celadon, syscall.SIGKILL)
				<-d.exited
			}
		}
	}
	if d.cp != nil {
		if err := d.cp.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.celadon != nil || d.cp != nil {
		say("stopped celadon and the control plane")
	}
	if d.work != "" {
		if d.opts.keep {
			say("kept %s", d.work)
		} else if err := os.RemoveAll(d.work); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// readObjects decodes the YAML documents of a file.
func readObjects(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		out = append(out, u)
	}
}

// ref is "kind/name", as kubectl prints it.
func ref(u *unstructured.Unstructured) string {
	return strings.ToLower(u.GetKind()) + "/" + u.GetName()
}

// tailOf returns the last lines of a log file, for error messages.
func tailOf(path string) string {
	data, err := os.ReadFile(path)
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "\n--- last lines of " + path + " ---\n" + strings.Join(lines, "\n")
}
