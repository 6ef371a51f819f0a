package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"celadon.io/celadon/internal/controlplane"
)

// scanClusterPolicies are the policies of the live scans.
var scanClusterPolicies = map[string]string{
	"debug.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: no-debug
spec:
  match:
    resources: [configmaps]
    objectSelector: {matchLabels: {debug: "true"}}
  action: deny
  with:
    messageExpression: "'configmap ' + object.metadata.name + ' is a debug leftover'"
`,
	"owner.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: prod-owner
spec:
  match:
    resources: [configmaps]
    operations: [CREATE, UPDATE]
    namespaceSelector: {matchLabels: {env: prod}}
    conditions:
    - name: no-owner
      expression: "!('owner' in object.metadata.?annotations.orValue({}))"
  action: deny
  with: {message: "production ConfigMaps name their owner"}
  enforcement: Warn
`,
	"update-only.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: frozen
spec:
  match:
    resources: [configmaps]
    operations: [UPDATE]
  action: deny
  with: {message: frozen}
`,
	"no-crd.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: no-crd
spec:
  match:
    resources: [example.com/widgets]
  action: deny
  with: {message: never}
`,
	"ingress.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: ingress-backends
spec:
  match:
    resources: [networking.k8s.io/ingresses]
    operations: [CREATE, UPDATE]
  action: checkIngressBackends
`,
}

// scanDoc is what the tests read of -o json.
type scanDoc struct {
	Source  string
	Server  string
	Files   []string
	Notes   []string
	Summary struct {
		Objects, Evaluated, Allowed, Denied, ListRequests int
		Results                                           stateCounts
	}
	Policies []struct {
		Name          string
		Applicable    bool
		NotApplicable string
		Results       stateCounts
	}
	Resources []struct {
		Resource string
		Objects  int
	}
	NotScanned []struct{ Resource, Error string }
	Objects    []struct {
		APIVersion, Kind, Namespace, Name, UID, Source, File string
		Line                                                 int
		Allowed                                              bool
		Message                                              string
		Results                                              []struct{ Policy, State, Enforcement, Message string }
	}
}

func decodeScanDoc(t *testing.T, stdout string) scanDoc {
	t.Helper()
	var d scanDoc
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("-o json: %v\n%s", err, stdout)
	}
	return d
}

// results returns "policy=state" for each listed result of the object.
func (d scanDoc) results(namespace, kind, name string) []string {
	var out []string
	for _, o := range d.Objects {
		if o.Namespace == namespace && o.Kind == kind && o.Name == name {
			for _, r := range o.Results {
				out = append(out, r.Policy+"="+r.State)
			}
		}
	}
	return out
}

// TestScanCluster scans a real kube-apiserver in pages of 2: ConfigMaps
// that fail, warn, pass and skip across namespaces with labels, Ingresses
// whose backends exist or not (a builtin that looks Services up), a policy
// that does not apply and one naming a resource the cluster does not
// serve.
func TestScanCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real control plane from bin/ (`make controlplane`); skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var logs bytes.Buffer
	cp, err := controlplane.Start(ctx, controlplane.Options{Out: &logs})
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log (tail):\n%s", tail(logs.String(), 3000))
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	for name, env := range map[string]string{"shop": "prod", "dev": "dev"} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"env": env}}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	type cm struct {
		ns, name   string
		debug      bool
		owner      bool
		wantListed []string // policy=state, with --show-pass
	}
	cms := []cm{
		{"shop", "a", false, true, []string{"no-debug=skip", "prod-owner=skip"}},
		{"shop", "b", false, false, []string{"no-debug=skip", "prod-owner=warn"}},
		{"shop", "c", true, true, []string{"no-debug=fail", "prod-owner=skip"}},
		{"shop", "d", false, true, []string{"no-debug=skip", "prod-owner=skip"}},
		{"shop", "e", true, false, []string{"no-debug=fail", "prod-owner=warn"}},
		{"dev", "f", false, false, []string{"no-debug=skip", "prod-owner=skip"}},
		{"dev", "g", true, false, []string{"no-debug=fail", "prod-owner=skip"}},
	}
	for _, c := range cms {
		o := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: c.name}, Data: map[string]string{"k": "v"}}
		if c.debug {
			o.Labels = map[string]string{"debug": "true"}
		}
		if c.owner {
			o.Annotations = map[string]string{"owner": "team-a"}
		}
		if _, err := cs.CoreV1().ConfigMaps(c.ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	if _, err := cs.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, backend := range map[string]string{"good": "web", "broken": "cart"} {
		ing := &networkingv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec: networkingv1.IngressSpec{DefaultBackend: &networkingv1.IngressBackend{
				Service: &networkingv1.IngressServiceBackend{Name: backend, Port: networkingv1.ServiceBackendPort{Number: 80}},
			}},
		}
		if _, err := cs.NetworkingV1().Ingresses("shop").Create(ctx, ing, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir := writeFiles(t, scanClusterPolicies)

	t.Run("json", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "scan", "-p", dir, "--kubeconfig", cp.KubeconfigPath, "--chunk-size", "2", "--show-pass", "-o", "json")
		if code != 1 {
			t.Fatalf("exit %d, want 1 (ConfigMaps c, e, g and Ingress broken are denied)\n%s\n%s", code, stdout, stderr)
		}
		d := decodeScanDoc(t, stdout)
		if d.Source != "cluster" || strings.TrimSuffix(d.Server, "/") != strings.TrimSuffix(cp.Config.Host, "/") {
			t.Errorf("source %q, server %q; want cluster, %s", d.Source, d.Server, cp.Config.Host)
		}
		for _, c := range cms {
			if got := d.results(c.ns, "ConfigMap", c.name); !slices.Equal(got, c.wantListed) {
				t.Errorf("configmap %s/%s: %q, want %q (listed once: no page lost or read twice)", c.ns, c.name, got, c.wantListed)
			}
		}
		if got := d.results("shop", "Ingress", "broken"); !slices.Equal(got, []string{"ingress-backends=fail"}) {
			t.Errorf("ingress broken: %q", got)
		}
		if got := d.results("shop", "Ingress", "good"); !slices.Equal(got, []string{"ingress-backends=pass"}) {
			t.Errorf("ingress good: %q", got)
		}
		for _, o := range d.Objects {
			if o.APIVersion == "" || o.UID == "" || o.Source != "" || o.File != "" {
				t.Errorf("object %+v: want apiVersion and uid from the cluster, no source", o)
			}
			if o.Namespace == "shop" && o.Name == "e" && (o.Allowed || o.Message != "configmap e is a debug leftover") {
				t.Errorf("configmap e: allowed %v, message %q", o.Allowed, o.Message)
			}
		}
		// The apiserver's own ConfigMaps (kube-system) count too: at least
		// ours, in pages of 2, so several LISTs for configmaps alone.
		var cmObjects int
		for _, r := range d.Resources {
			if r.Resource == "v1/configmaps" {
				cmObjects = r.Objects
			}
		}
		if cmObjects < len(cms) || d.Summary.ListRequests < (cmObjects+1)/2+1 {
			t.Errorf("configmaps: %d objects in %d LIST requests of 2; want at least %d objects, each page read", cmObjects, d.Summary.ListRequests, len(cms))
		}
		if d.Summary.Denied != 4 || d.Summary.Results.Fail != 4 || d.Summary.Results.Warn != 2 {
			t.Errorf("summary %+v: want 4 denied, 4 fail, 2 warn", d.Summary)
		}
		for _, p := range d.Policies {
			if p.Name == "frozen" && (p.Applicable || !strings.Contains(p.NotApplicable, "UPDATE only")) {
				t.Errorf("policy frozen: %+v", p)
			}
		}
		if !strings.Contains(stderr, `policy "no-crd" matches example.com/widgets, which the API server does not serve`) {
			t.Errorf("stderr does not warn of the resource the cluster does not serve:\n%s", stderr)
		}
		if strings.Contains(stderr, "\r") {
			t.Errorf("a progress line on a stderr that is no terminal:\n%q", stderr)
		}
	})

	t.Run("table, one namespace", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "scan", "-p", dir, "--kubeconfig", cp.KubeconfigPath, "--chunk-size", "2", "-n", "dev")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s\n%s", code, stdout, stderr)
		}
		lines := splitLines(stdout)
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "NAMESPACE ") || !strings.Contains(lines[1], "configmap/g") || !strings.Contains(lines[1], "configmap g is a debug leftover") {
			t.Errorf("table:\n%s", stdout)
		}
		if strings.Contains(stdout, "shop") || strings.Contains(stdout, "kube-system") {
			t.Errorf("-n dev lists another namespace's objects:\n%s", stdout)
		}
		if want := "2 objects scanned, 2 matched by a policy: 1 allowed, 1 denied; results: 1 fail, 0 warn, 0 error, 0 pass, 3 skip"; lines[len(lines)-1] != want {
			t.Errorf("summary %q, want %q", lines[len(lines)-1], want)
		}
		if !strings.Contains(stdout, "  frozen  matches UPDATE only: a scan evaluates CREATE") {
			t.Errorf("the policy that does not apply is not listed:\n%s", stdout)
		}
	})

	t.Run("context", func(t *testing.T) {
		// A kubeconfig whose current context points nowhere: --context
		// picks the one that works.
		cfg, err := clientcmd.LoadFromFile(cp.KubeconfigPath)
		if err != nil {
			t.Fatal(err)
		}
		good := cfg.CurrentContext
		cfg.Clusters["nowhere"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1", InsecureSkipTLSVerify: true}
		cfg.Contexts["broken"] = &clientcmdapi.Context{Cluster: "nowhere", AuthInfo: cfg.Contexts[good].AuthInfo}
		cfg.CurrentContext = "broken"
		path := filepath.Join(t.TempDir(), "kubeconfig")
		if err := clientcmd.WriteToFile(*cfg, path); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI(t, "scan", "-p", dir, "--kubeconfig", path, "-n", "dev")
		if code != 2 || !strings.Contains(stderr, "cannot reach the API server at https://127.0.0.1:1") {
			t.Errorf("current context: exit %d, want 2 and cannot reach\n%s\n%s", code, stdout, stderr)
		}
		code, stdout, stderr = runCLI(t, "scan", "-p", dir, "--kubeconfig", path, "--context", good, "-n", "dev")
		if code != 1 || !strings.Contains(stdout, "configmap/g") {
			t.Errorf("--context %s: exit %d, want 1\n%s\n%s", good, code, stdout, stderr)
		}
		code, _, stderr = runCLI(t, "scan", "-p", dir, "--kubeconfig", path, "--context", "missing")
		if code != 2 || !strings.Contains(stderr, `"missing"`) {
			t.Errorf("--context missing: exit %d, want 2 naming it\n%s", code, stderr)
		}
	})

	t.Run("forbidden resource", func(t *testing.T) {
		// A user who may list namespaces and ConfigMaps but not
		// Ingresses: the ConfigMaps are scanned, the Ingresses are
		// reported as not scanned, and the scan exits 2 (incomplete)
		// with the results it has.
		path := scanUserKubeconfig(ctx, t, cp, cs, "scanner", []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces", "configmaps"}, Verbs: []string{"get", "list"}},
		})
		policies := writeFiles(t, map[string]string{"debug.yaml": scanClusterPolicies["debug.yaml"], "ingress.yaml": strings.Replace(scanClusterPolicies["ingress.yaml"], "action: checkIngressBackends", "action: deny\n  with: {message: no ingresses}", 1)})
		code, stdout, stderr := runCLI(t, "scan", "-p", policies, "--kubeconfig", path)
		if code != 2 {
			t.Fatalf("exit %d, want 2 (incomplete)\n%s\n%s", code, stdout, stderr)
		}
		if !strings.Contains(stdout, "configmap/g") || !strings.Contains(stdout, "not scanned:\n  networking.k8s.io/v1/ingresses: ") || !strings.Contains(stdout, "forbidden") {
			t.Errorf("table: want the ConfigMaps' results and the Ingresses not scanned:\n%s", stdout)
		}
		if !strings.Contains(stderr, "scan incomplete: 1 resource could not be listed") {
			t.Errorf("stderr:\n%s", stderr)
		}
	})

	t.Run("namespaces forbidden", func(t *testing.T) {
		// A user who may list ConfigMaps but not read namespaces: the
		// scan goes on, and the policy that needs namespace labels fails
		// on every ConfigMap, under its failurePolicy (Fail: denied),
		// rather than judging with labels it does not have.
		path := scanUserKubeconfig(ctx, t, cp, cs, "cm-reader", []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"}},
		})
		policies := writeFiles(t, map[string]string{"owner.yaml": scanClusterPolicies["owner.yaml"]})
		code, stdout, stderr := runCLI(t, "scan", "-p", policies, "--kubeconfig", path, "-o", "json")
		if code != 1 {
			t.Fatalf("exit %d, want 1 (errors under failurePolicy Fail)\n%s\n%s", code, stdout, stderr)
		}
		if !strings.Contains(stderr, "celadon: warning: ") || !strings.Contains(stderr, "forbidden") || !strings.Contains(stderr, "policies with a namespaceSelector fail on their objects") {
			t.Errorf("stderr does not warn that namespaces cannot be read:\n%s", stderr)
		}
		d := decodeScanDoc(t, stdout)
		if d.Summary.Results.Error != d.Summary.Evaluated || d.Summary.Evaluated < len(cms) || d.Summary.Results.Warn != 0 {
			t.Errorf("summary %+v: want an error for every ConfigMap", d.Summary)
		}
		if got := d.results("shop", "ConfigMap", "b"); !slices.Equal(got, []string{"prod-owner=error"}) {
			t.Errorf("shop/b: %q", got)
		}
	})
}

// scanUserKubeconfig writes a kubeconfig of a new user of the control
// plane, bound to a ClusterRole of rules.
func scanUserKubeconfig(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, cs kubernetes.Interface, name string, rules []rbacv1.PolicyRule) string {
	t.Helper()
	u, err := cp.Env.AddUser(envtest.User{Name: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("...%s", s[len(s)-n:])
}
