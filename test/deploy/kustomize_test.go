package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
)

// kustomization is a directory of deploy/ a user installs, relative to the
// repository root, and the namespace it installs into.
type kustomization struct{ dir, ns string }

// kustomizations are the directories of deploy/ a user installs.
var kustomizations = []kustomization{
	{"deploy/base", Namespace},
	{CertManagerOverlay, Namespace},
	{SelfSignedOverlay, Namespace},
	{ExampleNamespaceOverlay, ExampleNamespace},
}

// build runs `kustomize build dir` with kustomize's defaults, the load
// restrictor included (no file outside dir's root may be read).
func build(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, filepath.FromSlash(dir)))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		u, err := r.Map()
		if err != nil {
			t.Fatalf("kustomize build %s: %s: %v", dir, r.CurId(), err)
		}
		objs = append(objs, &unstructured.Unstructured{Object: u})
	}
	return objs
}

// built is the output of one kustomization, for lookups.
type built struct {
	t    *testing.T
	dir  string
	objs []*unstructured.Unstructured
	// ns is the namespace the kustomization installs into.
	ns string
}

// newBuilt builds dir, which installs into Namespace.
func newBuilt(t *testing.T, dir string) built { return newBuiltIn(t, dir, Namespace) }

// newBuiltIn builds dir, which installs into ns.
func newBuiltIn(t *testing.T, dir, ns string) built {
	return built{t: t, dir: dir, objs: build(t, dir), ns: ns}
}

// get converts the object of kind and name into out, failing the test if
// there is none.
func (b built) get(kind, name string, out any) {
	b.t.Helper()
	for _, u := range b.objs {
		if u.GetKind() == kind && u.GetName() == name {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
				b.t.Fatalf("%s: %s %s: %v", b.dir, kind, name, err)
			}
			return
		}
	}
	b.t.Fatalf("%s: no %s %s in the output", b.dir, kind, name)
}

func (b built) has(kind, name string) bool {
	for _, u := range b.objs {
		if u.GetKind() == kind && u.GetName() == name {
			return true
		}
	}
	return false
}

func TestKustomizations(t *testing.T) {
	for _, k := range kustomizations {
		t.Run(filepath.Base(k.dir), func(t *testing.T) {
			b := newBuiltIn(t, k.dir, k.ns)
			checkInstall(b)
			// Each overlay is the flavour it says.
			if got := slices.Contains(b.args(), "--self-signed-certs"); got != (k.dir == SelfSignedOverlay) {
				t.Errorf("--self-signed-certs in the args: %v, want it in %s only", got, SelfSignedOverlay)
			}
			if got := b.has("Certificate", ServingCertificate); got != (k.dir == CertManagerOverlay || k.dir == ExampleNamespaceOverlay) {
				t.Errorf("Certificate %s in the output: %v, want it in the cert-manager overlays only", ServingCertificate, got)
			}
		})
	}
}

// checkInstall checks what every install must be, and what its flavour of
// certificates adds.
func checkInstall(b built) {
	b.t.Helper()
	checkNamespaces(b)
	checkDeployment(b)
	checkManagedWebhooks(b)
	checkPoliciesConfigMap(b)
	checkPDB(b)
	checkServices(b)
	checkNetworkPolicy(b)
	checkBaseRBAC(b)
	checkMetricsReader(b)
	switch {
	case b.has("Certificate", ServingCertificate):
		checkCertManager(b)
	case slices.Contains(b.args(), "--self-signed-certs"):
		checkSelfSigned(b)
	}
}

// args returns the arguments of the Deployment's container.
func (b built) args() []string {
	b.t.Helper()
	var d appsv1.Deployment
	b.get("Deployment", "celadon", &d)
	return d.Spec.Template.Spec.Containers[0].Args
}

// clusterScoped are the kinds of the output that have no namespace.
var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "PriorityClass": true,
	"CustomResourceDefinition": true,
}

func checkNamespaces(b built) {
	t := b.t
	t.Helper()
	if !b.has("Namespace", b.ns) {
		t.Errorf("%s: no Namespace %s", b.dir, b.ns)
	}
	for _, u := range b.objs {
		want := b.ns
		if clusterScoped[u.GetKind()] {
			want = ""
		}
		if u.GetNamespace() != want {
			t.Errorf("%s: %s %s: namespace %q, want %q", b.dir, u.GetKind(), u.GetName(), u.GetNamespace(), want)
		}
	}
}

func checkDeployment(b built) {
	t := b.t
	t.Helper()
	var d appsv1.Deployment
	b.get("Deployment", "celadon", &d)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", d.Spec.Replicas)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the selector %v does not select the pod template's labels %v (%v)", d.Spec.Selector, d.Spec.Template.Labels, err)
	}
	pod := d.Spec.Template.Spec
	if pod.ServiceAccountName != "celadon" {
		t.Errorf("serviceAccountName %q, want celadon", pod.ServiceAccountName)
	}
	// A class of the install's own: above workloads (0), below the
	// system classes, which some clusters admit only in kube-system.
	var pc schedulingv1.PriorityClass
	b.get("PriorityClass", pod.PriorityClassName, &pc)
	if pc.Value <= 0 || pc.Value > highestUserDefinablePriority || pc.GlobalDefault ||
		(pc.PreemptionPolicy != nil && *pc.PreemptionPolicy != corev1.PreemptLowerPriority) {
		t.Errorf("PriorityClass %s: value %d, globalDefault %v, preemptionPolicy %v: want a positive value up to %d, no default, PreemptLowerPriority",
			pc.Name, pc.Value, pc.GlobalDefault, pc.PreemptionPolicy, highestUserDefinablePriority)
	}
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and seccompProfile RuntimeDefault", psc)
	}
	if a := pod.Affinity; a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 ||
		a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != corev1.LabelHostname ||
		len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Errorf("affinity %+v: want a preferred (not required) pod anti-affinity on %s", a, corev1.LabelHostname)
	} else {
		term := a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
		if s, err := metav1.LabelSelectorAsSelector(term.LabelSelector); err != nil || !s.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("the anti-affinity selector %v does not select Celadon's pods (%v)", term.LabelSelector, err)
		}
	}

	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if !strings.HasPrefix(c.Image, "celadon:") && !strings.Contains(c.Image, "/celadon:") {
		t.Errorf("image %q, want celadon:TAG", c.Image)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" ||
		!slices.Contains(c.Args, "--policies=/etc/celadon/policies") || !slices.Contains(c.Args, "--cert-dir=/etc/celadon/tls") {
		t.Errorf("args %q: want serve --policies=/etc/celadon/policies --cert-dir=/etc/celadon/tls", c.Args)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["POD_NAMESPACE"] != "metadata.namespace" || env["SERVICE_ACCOUNT"] != "spec.serviceAccountName" {
		t.Errorf("env %+v: want POD_NAMESPACE and SERVICE_ACCOUNT from the downward API", c.Env)
	}
	memLimit := false
	for _, e := range c.Env {
		memLimit = memLimit || e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
	}
	if !memLimit {
		t.Errorf("env %+v: want GOMEMLIMIT from limits.memory, as TestMemoryUnderBodyFlood runs the server", c.Env)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["webhook"] != 9443 || ports["metrics"] != 8080 || ports["health"] != 8081 {
		t.Errorf("ports %v: want webhook 9443, metrics 8080, health 8081", ports)
	}
	checkProbe := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || portNumber(p.HTTPGet.Port, ports) != 8081 {
			t.Errorf("%s probe %+v: want GET %s on 8081", what, p, path)
		}
	}
	checkProbe("liveness", c.LivenessProbe, "/healthz")
	checkProbe("readiness", c.ReadinessProbe, "/readyz")
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Errorf("no memory limit")
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
		(sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot) || (sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("container securityContext %+v: want allowPrivilegeEscalation false, readOnlyRootFilesystem, capabilities drop [ALL]", sc)
	}

	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	pm, ok := mounts["/etc/celadon/policies"]
	switch {
	case !ok:
		t.Errorf("nothing mounted at /etc/celadon/policies")
	case pm.SubPath != "" || pm.SubPathExpr != "":
		t.Errorf("the policies are mounted with subPath %q / subPathExpr %q: the kubelet never updates a subPath mount, so hot reload would not see edits", pm.SubPath, pm.SubPathExpr)
	case volumes[pm.Name].ConfigMap == nil || volumes[pm.Name].ConfigMap.Name != PoliciesConfigMap || len(volumes[pm.Name].ConfigMap.Items) != 0:
		t.Errorf("volume %q: %+v, want the whole ConfigMap %s (no items)", pm.Name, volumes[pm.Name], PoliciesConfigMap)
	}
	tm, ok := mounts["/etc/celadon/tls"]
	if !ok {
		t.Fatalf("nothing mounted at /etc/celadon/tls")
	}
	if tm.SubPath != "" {
		t.Errorf("the certificate is mounted with subPath %q: rotations would not be seen", tm.SubPath)
	}
	tls := volumes[tm.Name]
	if slices.Contains(c.Args, "--self-signed-certs") {
		if tls.EmptyDir == nil || tls.Secret != nil || tm.ReadOnly {
			t.Errorf("tls volume %+v mounted read-only %v: want a writable emptyDir for --self-signed-certs", tls, tm.ReadOnly)
		}
	} else if tls.Secret == nil || tls.Secret.SecretName != "celadon-tls" || tls.EmptyDir != nil {
		t.Errorf("tls volume %+v: want the Secret celadon-tls", tls)
	}
}

// highestUserDefinablePriority is the highest value of a PriorityClass
// that is not a system one (k8s.io/kubernetes/pkg/apis/scheduling).
const highestUserDefinablePriority = 1_000_000_000

// portNumber resolves a probe's port, a number or a container port's name.
func portNumber(p intstr.IntOrString, named map[string]int32) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	return named[p.StrVal]
}

// checkPoliciesConfigMap checks the ConfigMap holds every policy file of
// policies/, byte for byte, and nothing else.
func checkPoliciesConfigMap(b built) {
	t := b.t
	t.Helper()
	var cm corev1.ConfigMap
	b.get("ConfigMap", PoliciesConfigMap, &cm)
	files, err := engine.ReadFiles(filepath.Join(root, PoliciesDir))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		name := filepath.Base(f.Name)
		want = append(want, name)
		if got, ok := cm.Data[name]; !ok {
			t.Errorf("ConfigMap %s has no %s (policies/%s)", PoliciesConfigMap, name, name)
		} else if got != string(f.Data) {
			t.Errorf("ConfigMap %s: %s differs from policies/%s", PoliciesConfigMap, name, name)
		}
	}
	var got []string
	for k := range cm.Data {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) || len(cm.BinaryData) != 0 {
		t.Errorf("ConfigMap %s keys %q (binary %d), want exactly the policy files %q", PoliciesConfigMap, got, len(cm.BinaryData), want)
	}
	// Every entry of policies/ that celadon would not read is a mistake
	// (a policy with a wrong extension, say); directories are fine.
	entries, err := os.ReadDir(filepath.Join(root, PoliciesDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") && !slices.Contains(want, e.Name()) {
			t.Errorf("policies/%s is not a policy file (*.yaml, *.yml, *.json) and would not be served", e.Name())
		}
	}
}

func checkPDB(b built) {
	t := b.t
	t.Helper()
	var pdb policyv1.PodDisruptionBudget
	b.get("PodDisruptionBudget", "celadon", &pdb)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MinAvailable.Type != intstr.Int {
		t.Errorf("PodDisruptionBudget minAvailable %v, want 1", pdb.Spec.MinAvailable)
	}
	var d appsv1.Deployment
	b.get("Deployment", "celadon", &d)
	if s, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || s.Empty() || !s.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the PodDisruptionBudget's selector %v does not select Celadon's pods (%v)", pdb.Spec.Selector, err)
	}
}

func checkServices(b built) {
	t := b.t
	t.Helper()
	var d appsv1.Deployment
	b.get("Deployment", "celadon", &d)
	ports := map[string]int32{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, s := range []struct {
		name       string
		port, into int32
	}{{Service, 443, 9443}, {"celadon-metrics", 8080, 8080}} {
		var svc corev1.Service
		b.get("Service", s.name, &svc)
		if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Service %s: selector %v does not select Celadon's pods", s.name, svc.Spec.Selector)
		}
		found := false
		for _, p := range svc.Spec.Ports {
			if p.Port == s.port && portNumber(p.TargetPort, ports) == s.into {
				found = true
			}
		}
		if !found {
			t.Errorf("Service %s: ports %+v, want %d -> %d", s.name, svc.Spec.Ports, s.port, s.into)
		}
	}
}

// checkNetworkPolicy checks who may reach Celadon's pods: the webhook port
// from anywhere (the API server is rarely a pod a selector could name), the
// metrics port from the monitoring namespace only, the health port from no
// pod, and no other port at all.
func checkNetworkPolicy(b built) {
	t := b.t
	t.Helper()
	var d appsv1.Deployment
	b.get("Deployment", "celadon", &d)
	ports := map[string]int32{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = p.ContainerPort
	}
	var np networkingv1.NetworkPolicy
	b.get("NetworkPolicy", "celadon", &np)
	if s, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil || s.Empty() || !s.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("NetworkPolicy celadon: podSelector %v does not select Celadon's pods (%v)", np.Spec.PodSelector, err)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("NetworkPolicy celadon: policyTypes %v, want Ingress", np.Spec.PolicyTypes)
	}
	// from[port] lists who each rule admits to a port; "*" is anyone.
	from := map[int32][]string{}
	for i, r := range np.Spec.Ingress {
		if len(r.Ports) == 0 {
			t.Errorf("ingress rule %d has no ports: it opens every port", i)
		}
		who := []string{"*"}
		if len(r.From) > 0 {
			who = nil
			for _, p := range r.From {
				switch {
				case p.IPBlock != nil || p.PodSelector != nil || p.NamespaceSelector == nil:
					who = append(who, "other")
				default:
					who = append(who, "ns:"+p.NamespaceSelector.MatchLabels[corev1.LabelMetadataName])
					if len(p.NamespaceSelector.MatchLabels) != 1 || len(p.NamespaceSelector.MatchExpressions) != 0 {
						who = append(who, "other")
					}
				}
			}
		}
		for _, p := range r.Ports {
			if p.Port == nil || p.EndPort != nil {
				t.Errorf("ingress rule %d: port %+v, want one port", i, p)
				continue
			}
			n := portNumber(*p.Port, ports)
			from[n] = append(from[n], who...)
		}
	}
	want := map[int32][]string{ports["webhook"]: {"*"}, ports["metrics"]: {"ns:monitoring"}}
	if len(from) != len(want) || !slices.Equal(from[ports["webhook"]], want[ports["webhook"]]) || !slices.Equal(from[ports["metrics"]], want[ports["metrics"]]) {
		t.Errorf("NetworkPolicy celadon admits %v (by port), want %v: the webhook from anywhere, the metrics from the monitoring namespace, nothing else", from, want)
	}
}

// checkMetricsReader checks the ClusterRole a scraper is bound to: get on
// /metrics and /status, nothing else, and bound to no one by the install.
func checkMetricsReader(b built) {
	t := b.t
	t.Helper()
	var cr rbacv1.ClusterRole
	b.get("ClusterRole", "celadon-metrics-reader", &cr)
	if len(cr.Rules) != 1 || !slices.Equal(cr.Rules[0].NonResourceURLs, []string{"/metrics", "/status"}) ||
		!slices.Equal(cr.Rules[0].Verbs, []string{"get"}) || len(cr.Rules[0].Resources) != 0 {
		t.Errorf("ClusterRole celadon-metrics-reader: rules %+v, want get on /metrics and /status only", cr.Rules)
	}
	// Bound by the install only with the monitoring objects (to
	// Prometheus's ServiceAccount: checkMonitoring).
	monitoring := b.has("ServiceMonitor", "celadon")
	for _, u := range b.objs {
		switch name := u.GetName(); {
		case u.GetKind() != "ClusterRoleBinding", name == ClusterRoleName, strings.HasPrefix(name, ClusterRoleName+"-create-secret"),
			name == BackgroundScanRoleName && b.has("CustomResourceDefinition", "reports.openreports.io"):
		case name == "celadon-metrics-reader" && monitoring:
		default:
			t.Errorf("%s: unexpected ClusterRoleBinding %s", b.dir, u.GetName())
		}
	}
}

// checkBaseRBAC checks the base grants exactly what the server (with
// --manage-webhooks) and the builtins without a controller declare, and
// leader election in Celadon's namespace.
func checkBaseRBAC(b built) {
	t := b.t
	t.Helper()
	var cr rbacv1.ClusterRole
	b.get("ClusterRole", ClusterRoleName, &cr)
	want := BaseRules(builtins.Registry()) // what the server and the builtins declare
	if !equalRules(cr.Rules, want) {
		t.Errorf("ClusterRole celadon: rules %+v, want only %+v", cr.Rules, want)
	}
	var crb rbacv1.ClusterRoleBinding
	b.get("ClusterRoleBinding", ClusterRoleName, &crb)
	b.checkBinding(crb.RoleRef, crb.Subjects, "ClusterRole", ClusterRoleName)
	var role rbacv1.Role
	b.get("Role", ClusterRoleName, &role)
	if !equalRules(role.Rules, LeaderElectionRules()) {
		t.Errorf("Role celadon: rules %+v, want only leader election's %+v", role.Rules, LeaderElectionRules())
	}
	var rb rbacv1.RoleBinding
	b.get("RoleBinding", ClusterRoleName, &rb)
	b.checkBinding(rb.RoleRef, rb.Subjects, "Role", ClusterRoleName)
	selfSigned := slices.Contains(b.args(), "--self-signed-certs")
	for _, u := range b.objs {
		if u.GetKind() == "Role" && u.GetName() != ClusterRoleName && !(selfSigned && u.GetName() == SelfSignedRoleName) {
			t.Errorf("%s: unexpected Role %s", b.dir, u.GetName())
		}
	}
}

// checkBinding checks a binding gives the role to the ServiceAccount
// celadon of the install's namespace.
func (b built) checkBinding(ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, name string) {
	b.t.Helper()
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: ServiceAccount, Namespace: b.ns}}
	if ref.Kind != kind || ref.Name != name || !slices.Equal(subjects, want) {
		b.t.Errorf("binding of %s %s: roleRef %+v subjects %+v, want the ServiceAccount %s/%s", kind, name, ref, subjects, b.ns, ServiceAccount)
	}
}

func equalRules(a, b []rbacv1.PolicyRule) bool {
	return slices.EqualFunc(a, b, func(x, y rbacv1.PolicyRule) bool {
		return slices.Equal(x.APIGroups, y.APIGroups) && slices.Equal(x.Resources, y.Resources) &&
			slices.Equal(x.Verbs, y.Verbs) && slices.Equal(x.ResourceNames, y.ResourceNames) && len(x.NonResourceURLs) == 0
	})
}

// checkManagedWebhooks checks the install holds no webhook configuration
// and runs the server with --manage-webhooks for the Service celadon of its
// own namespace, as the kubelet expands the arguments: the configurations
// the server then writes call that Service and exclude its namespace.
func checkManagedWebhooks(b built) {
	t := b.t
	t.Helper()
	for _, u := range b.objs {
		if strings.HasSuffix(u.GetKind(), "WebhookConfiguration") {
			t.Errorf("%s: %s %s in the install: it would call Celadon before Celadon can answer; --manage-webhooks writes it once a replica is ready", b.dir, u.GetKind(), u.GetName())
		}
	}
	var d appsv1.Deployment
	b.get("Deployment", "celadon", &d)
	c := d.Spec.Template.Spec.Containers[0]
	args := expandArgs(c, b.ns, d.Spec.Template.Spec.ServiceAccountName)
	if !slices.Contains(args, "--manage-webhooks") {
		t.Errorf("args %q: want --manage-webhooks", c.Args)
	}
	var svc string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--webhook-service="); ok {
			svc = v
		}
	}
	if svc != b.ns+"/"+Service {
		t.Errorf("args %q: --webhook-service is %q in namespace %s, want %s/%s", c.Args, svc, b.ns, b.ns, Service)
	}
	excluded := controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: b.ns, Name: Service}}.ExcludedNamespaces()
	if !slices.Contains(excluded, b.ns) {
		t.Errorf("the generated configurations would not exclude Celadon's namespace %s: %q", b.ns, excluded)
	}
}

// expandArgs returns a container's arguments as the kubelet passes them:
// $(VAR) replaced by the container's variable VAR ($$ escapes a $), the
// downward API's metadata.namespace and spec.serviceAccountName given as
// namespace and sa.
func expandArgs(c corev1.Container, namespace, sa string) []string {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = namespace
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.serviceAccountName":
			env[e.Name] = sa
		}
	}
	out := make([]string, len(c.Args))
	for i, a := range c.Args {
		var sb strings.Builder
		for j := 0; j < len(a); j++ {
			switch {
			case strings.HasPrefix(a[j:], "$$"):
				sb.WriteByte('$')
				j++
			case strings.HasPrefix(a[j:], "$("):
				if end := strings.IndexByte(a[j:], ')'); end > 0 {
					if v, ok := env[a[j+2:j+end]]; ok {
						sb.WriteString(v)
						j += end
						continue
					}
				}
				sb.WriteByte(a[j])
			default:
				sb.WriteByte(a[j])
			}
		}
		out[i] = sb.String()
	}
	return out
}

// checkCertManager checks the chain of certificates: a serving
// certificate for the Service's names in the Secret the Deployment mounts,
// signed by a CA of the install's own.
func checkCertManager(b built) {
	t := b.t
	t.Helper()
	var cert struct {
		Spec struct {
			SecretName string   `json:"secretName"`
			DNSNames   []string `json:"dnsNames"`
			IsCA       bool     `json:"isCA"`
			IssuerRef  struct {
				Name string `json:"name"`
			} `json:"issuerRef"`
		} `json:"spec"`
	}
	b.get("Certificate", ServingCertificate, &cert)
	host := Service + "." + b.ns + ".svc"
	if cert.Spec.SecretName != "celadon-tls" || cert.Spec.IsCA ||
		!slices.Equal(cert.Spec.DNSNames, []string{host, host + ".cluster.local"}) {
		t.Errorf("Certificate %s: %+v, want a serving certificate for %s in Secret celadon-tls", ServingCertificate, cert.Spec, host)
	}
	// The chain: self-signed Issuer -> CA Certificate -> CA Issuer -> serving.
	issuer := cert.Spec.IssuerRef.Name
	var ca struct {
		Spec struct {
			CA *struct {
				SecretName string `json:"secretName"`
			} `json:"ca"`
		} `json:"spec"`
	}
	b.get("Issuer", issuer, &ca)
	if ca.Spec.CA == nil {
		t.Fatalf("Issuer %s is not a CA Issuer", issuer)
	}
	var caCert struct {
		Spec struct {
			SecretName string `json:"secretName"`
			IsCA       bool   `json:"isCA"`
			IssuerRef  struct {
				Name string `json:"name"`
			} `json:"issuerRef"`
		} `json:"spec"`
	}
	found := false
	for _, u := range b.objs {
		if u.GetKind() != "Certificate" || u.GetName() == ServingCertificate {
			continue
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &caCert); err != nil {
			t.Fatal(err)
		}
		if caCert.Spec.SecretName == ca.Spec.CA.SecretName {
			found = true
			if !caCert.Spec.IsCA {
				t.Errorf("Certificate %s is not isCA", u.GetName())
			}
			var self struct {
				Spec struct {
					SelfSigned *struct{} `json:"selfSigned"`
				} `json:"spec"`
			}
			b.get("Issuer", caCert.Spec.IssuerRef.Name, &self)
			if self.Spec.SelfSigned == nil {
				t.Errorf("Issuer %s of the CA is not selfSigned", caCert.Spec.IssuerRef.Name)
			}
		}
	}
	if !found {
		t.Errorf("no CA Certificate writing %s", ca.Spec.CA.SecretName)
	}
}

// checkSelfSigned checks the overlay runs --self-signed-certs and grants
// what it declares, in the install's namespace.
func checkSelfSigned(b built) {
	t := b.t
	t.Helper()
	var role rbacv1.Role
	b.get("Role", SelfSignedRoleName, &role)
	if !equalRules(role.Rules, SelfSignedRules()) {
		t.Errorf("Role %s: rules %+v, want only %+v", SelfSignedRoleName, role.Rules, SelfSignedRules())
	}
	var rb rbacv1.RoleBinding
	b.get("RoleBinding", SelfSignedRoleName, &rb)
	b.checkBinding(rb.RoleRef, rb.Subjects, "Role", SelfSignedRoleName)
}
