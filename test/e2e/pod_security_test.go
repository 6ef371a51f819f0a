package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/webhook"
)

// TestPodSecurityAgreement: the library's Pod Security Standards policies
// (policies/library/pss-baseline.yaml, and pss-restricted.yaml with it)
// allow and deny the same pods as the API server's own Pod Security
// admission, at the baseline and the restricted level. Every pod of the
// corpus is created with a server-side dry run in namespaces labelled
// pod-security.kubernetes.io/enforce=privileged (it must be a valid pod),
// baseline and restricted, and evaluated by Celadon's engine in-process;
// ephemeral containers, which a pod cannot be created with, are added to
// a created pod through pods/ephemeralcontainers, dry run too.
func TestPodSecurityAgreement(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	snaps := map[string]*engine.Snapshot{
		"baseline":   librarySnapshot(t, "pss-baseline.yaml"),
		"restricted": librarySnapshot(t, "pss-baseline.yaml", "pss-restricted.yaml"),
	}
	slow := map[string]*engine.Snapshot{
		"baseline":   librarySnapshotWith(t, true, "pss-baseline.yaml"),
		"restricted": librarySnapshotWith(t, true, "pss-baseline.yaml", "pss-restricted.yaml"),
	}
	sameWithoutFastPath := func(t *testing.T, level string, fast, full *engine.Decision) {
		t.Helper()
		if fast.Allowed != full.Allowed || fast.Message != full.Message {
			t.Errorf("%s: the compliant fast path decides allowed=%v (%s), the validations alone allowed=%v (%s)", level, fast.Allowed, fast.Message, full.Allowed, full.Message)
		}
	}
	nss := map[string]string{}
	for _, level := range []string{"privileged", "baseline", "restricted"} {
		nss[level] = newNamespace(ctx, t, "pss-"+level, map[string]string{
			"pod-security.kubernetes.io/enforce":         level,
			"pod-security.kubernetes.io/enforce-version": "latest",
		})
	}
	corpus := podSecurityCorpus()
	if len(corpus) < 50 {
		t.Fatalf("the corpus has %d pods, want at least 50", len(corpus))
	}
	denied := map[string]int{}
	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			pod := tc.pod()
			if err := apiServerAdmits(ctx, nss["privileged"], pod); err != nil {
				t.Fatalf("not a valid pod (the privileged level denies nothing): %v", err)
			}
			for _, level := range []string{"baseline", "restricted"} {
				apiErr := apiServerAdmits(ctx, nss[level], tc.pod())
				if apiErr != nil && !strings.Contains(apiErr.Error(), "violates PodSecurity") {
					t.Fatalf("%s: the API server refused the pod for another reason: %v", level, apiErr)
				}
				d := celadonDecision(ctx, t, snaps[level], nss[level], tc.pod())
				sameWithoutFastPath(t, level, d, celadonDecision(ctx, t, slow[level], nss[level], tc.pod()))
				for _, r := range d.Results {
					if r.State == engine.StateError {
						t.Errorf("%s: policy %s errored: %s", level, r.Policy, r.Reason)
					}
				}
				if apiAllowed := apiErr == nil; apiAllowed != d.Allowed {
					t.Errorf("%s: the API server allowed=%v (%v), Celadon allowed=%v (%s)", level, apiAllowed, apiErr, d.Allowed, d.Message)
				}
				if !d.Allowed {
					denied[level]++
					if got, want := celadonReasons(d.Message, level), apiReasons(apiErr); got != want {
						t.Errorf("%s: Celadon denied for %s, the API server for %s:\n  Celadon: %s\n  API server: %v", level, got, want, d.Message, apiErr)
					}
					// The answer's code and reason too: Pod Security's
					// 403 Forbidden, as the library's validations say.
					resp := webhook.FromDecision(d)
					if st := apierrors.APIStatus(nil); !errors.As(apiErr, &st) || resp.Code() != st.Status().Code || resp.Reason() != st.Status().Reason {
						t.Errorf("%s: Celadon answers %d %s, the API server %v", level, resp.Code(), resp.Reason(), apiErr)
					}
				}
			}
		})
	}
	// Ephemeral containers are added to a running pod through
	// pods/ephemeralcontainers, an UPDATE both check.
	ephemeral := 0
	for _, ec := range []struct {
		name string
		sc   *corev1.SecurityContext
	}{
		{"ephemeral restricted", &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}},
		{"ephemeral no security context", nil},
		{"ephemeral privileged", &corev1.SecurityContext{Privileged: ptr.To(true)}},
		{"ephemeral add SYS_PTRACE", &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"SYS_PTRACE"}}}},
		{"ephemeral runAsUser 0", &corev1.SecurityContext{RunAsUser: ptr.To(int64(0)), AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}},
	} {
		ephemeral++
		t.Run(ec.name, func(t *testing.T) {
			for _, level := range []string{"baseline", "restricted"} {
				old := restrictedPod()
				old.Name = "pss-" + strings.NewReplacer(" ", "-", "_", "-").Replace(strings.ToLower(ec.name))
				old.Namespace = nss[level]
				if err := suite.c.Create(ctx, old); err != nil {
					t.Fatalf("%s: creating the pod: %v", level, err)
				}
				pod := old.DeepCopy()
				pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{{
					EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "registry.invalid/debug:1", SecurityContext: ec.sc},
					TargetContainerName:      "app",
				}}
				apiErr := suite.c.SubResource("ephemeralcontainers").Update(ctx, pod.DeepCopy(), client.DryRunAll)
				if apiErr != nil && !strings.Contains(apiErr.Error(), "violates PodSecurity") {
					t.Fatalf("%s: the API server refused the ephemeral container for another reason: %v", level, apiErr)
				}
				d := celadonRequest(ctx, t, snaps[level], admissionv1.Update, "ephemeralcontainers", pod, old)
				sameWithoutFastPath(t, level, d, celadonRequest(ctx, t, slow[level], admissionv1.Update, "ephemeralcontainers", pod, old))
				for _, r := range d.Results {
					if r.State != engine.StatePass && r.State != engine.StateFail {
						t.Errorf("%s: policy %s: %s %s, want pass or fail", level, r.Policy, r.State, r.Reason)
					}
				}
				if apiAllowed := apiErr == nil; apiAllowed != d.Allowed {
					t.Errorf("%s: the API server allowed=%v (%v), Celadon allowed=%v (%s)", level, apiAllowed, apiErr, d.Allowed, d.Message)
				}
				if !d.Allowed {
					denied[level]++
				}
			}
		})
	}
	// The corpus is built to hit every control: most pods are denied at
	// restricted, fewer at baseline, and neither level denies everything.
	t.Logf("%d pods and %d ephemeral containers: Celadon denied %d at baseline, %d at restricted", len(corpus), ephemeral, denied["baseline"], denied["restricted"])
	if n := len(corpus) + ephemeral; denied["baseline"] < 20 || denied["restricted"] <= denied["baseline"] || denied["restricted"] == n {
		t.Errorf("denied %d at baseline and %d at restricted of %d requests: the corpus does not exercise both levels", denied["baseline"], denied["restricted"], n)
	}
}

// apiReasons returns the controls a Pod Security denial names: the
// "reason (detail)" items after `violates PodSecurity "<level>:latest": `,
// joined by ", ", as normalised reasons.
func apiReasons(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, `:latest": `); i >= 0 {
		msg = msg[i+len(`:latest": `):]
	}
	return reasons(strings.Split(msg, "), "))
}

// celadonReasons does the same for Celadon's denial, whose validations are
// joined by "; ". At restricted, pss-baseline also names the baseline
// controls that the API server's restricted checks replace (capabilities,
// hostPath volumes, seccomp: restricted names them too); they are left out.
func celadonReasons(msg, level string) string {
	var items []string
	for _, item := range strings.Split(msg, "); ") {
		if level == "restricted" && (strings.HasPrefix(item, "non-default capabilities (") || strings.HasPrefix(item, "hostPath volumes (")) {
			continue
		}
		items = append(items, item)
	}
	return reasons(items)
}

// reasons returns the sorted, distinct reasons of "reason (detail)" items,
// without plural endings ("forbidden AppArmor profile(s)").
func reasons(items []string) string {
	set := map[string]bool{}
	for _, item := range items {
		r, _, _ := strings.Cut(item, " (")
		set[strings.TrimSuffix(r, "s")] = true
	}
	var out []string
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// librarySnapshot compiles policies of policies/library.
func librarySnapshot(t *testing.T, names ...string) *engine.Snapshot {
	return librarySnapshotWith(t, false, names...)
}

// compliantVariable is the PSS policies' fast path: one expression that
// passes a pod every validation would pass.
var compliantVariable = regexp.MustCompile(`(?m)^  - name: compliant\n    expression: >-\n(?:      .*\n)+`)

// librarySnapshotWith compiles the library's policies; withoutFastPath
// sets their compliant variable to false, so that every validation runs
// in full. The two must decide alike: compliant is the validations'
// conditions written a second time, and a term it lost would let a pod by.
func librarySnapshotWith(t *testing.T, withoutFastPath bool, names ...string) *engine.Snapshot {
	t.Helper()
	var files []engine.File
	for _, n := range names {
		path := filepath.Join("..", "..", "policies", "library", n)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if withoutFastPath {
			if !compliantVariable.Match(data) {
				t.Fatalf("%s has no compliant variable to turn off", path)
			}
			data = compliantVariable.ReplaceAll(data, []byte("  - name: compliant\n    expression: 'false'\n"))
		}
		files = append(files, engine.File{Name: path, Data: data})
	}
	snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatalf("compiling %v: %v", names, err)
	}
	return snap
}

// apiServerAdmits creates pod in ns with a server-side dry run.
func apiServerAdmits(ctx context.Context, ns string, pod *corev1.Pod) error {
	pod.Namespace = ns
	return suite.c.Create(ctx, pod, client.DryRunAll)
}

// celadonDecision evaluates the CREATE of pod in ns.
func celadonDecision(ctx context.Context, t *testing.T, snap *engine.Snapshot, ns string, pod *corev1.Pod) *engine.Decision {
	t.Helper()
	pod.Namespace = ns
	return celadonRequest(ctx, t, snap, admissionv1.Create, "", pod, nil)
}

// celadonRequest evaluates an operation on pod (and its subresource), with
// old as the old object unless nil.
func celadonRequest(ctx context.Context, t *testing.T, snap *engine.Snapshot, op admissionv1.Operation, subresource string, pod, old *corev1.Pod) *engine.Decision {
	t.Helper()
	encode := func(p *corev1.Pod) runtime.RawExtension {
		if p == nil {
			return runtime.RawExtension{}
		}
		p = p.DeepCopy()
		p.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		raw, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: raw}
	}
	d, err := snap.Evaluate(ctx, &admissionv1.AdmissionRequest{
		UID:         types.UID("pss-" + pod.Name),
		Kind:        metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:    metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		SubResource: subresource,
		Name:        pod.Name,
		Namespace:   pod.Namespace,
		Operation:   op,
		Object:      encode(pod),
		OldObject:   encode(old),
	}, engine.EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type pssCase struct {
	name string
	pod  func() *corev1.Pod
}

// restrictedPod is a pod every level admits: an init container and two
// containers, each restricted.
func restrictedPod() *corev1.Pod {
	sc := func() *corev1.SecurityContext {
		return &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pss"},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			InitContainers: []corev1.Container{{Name: "init", Image: "registry.invalid/init:1", SecurityContext: sc()}},
			Containers: []corev1.Container{
				{Name: "app", Image: "registry.invalid/app:1", SecurityContext: sc()},
				{Name: "metrics", Image: "registry.invalid/metrics:1", SecurityContext: sc()},
			},
		},
	}
}

// podSecurityCorpus is the restricted pod and one change of it per control
// and edge case.
func podSecurityCorpus() []pssCase {
	var cases []pssCase
	add := func(name string, change func(p *corev1.Pod)) {
		cases = append(cases, pssCase{name, func() *corev1.Pod {
			p := restrictedPod()
			p.Name = "pss-" + strings.NewReplacer(" ", "-", "_", "-", "=", "-").Replace(strings.ToLower(name))
			if len(p.Name) > 63 {
				p.Name = p.Name[:63]
			}
			change(p)
			return p
		}})
	}
	app := func(p *corev1.Pod) *corev1.SecurityContext { return p.Spec.Containers[0].SecurityContext }
	initC := func(p *corev1.Pod) *corev1.SecurityContext { return p.Spec.InitContainers[0].SecurityContext }
	pod := func(p *corev1.Pod) *corev1.PodSecurityContext { return p.Spec.SecurityContext }
	linuxOff := func(p *corev1.Pod) { // what a Windows pod may not set
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}
		for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
			for i := range cs {
				cs[i].SecurityContext = nil
			}
		}
	}

	add("restricted", func(p *corev1.Pod) {})
	add("no security context", func(p *corev1.Pod) {
		p.Spec.SecurityContext = nil
		for i := range p.Spec.Containers {
			p.Spec.Containers[i].SecurityContext = nil
		}
		p.Spec.InitContainers[0].SecurityContext = nil
	})
	// Host namespaces.
	add("hostNetwork", func(p *corev1.Pod) { p.Spec.HostNetwork = true })
	add("hostPID", func(p *corev1.Pod) { p.Spec.HostPID = true })
	add("hostIPC", func(p *corev1.Pod) { p.Spec.HostIPC = true })
	// Privileged.
	add("privileged", func(p *corev1.Pod) { app(p).Privileged, app(p).AllowPrivilegeEscalation = ptr.To(true), nil })
	add("privileged false", func(p *corev1.Pod) { app(p).Privileged = ptr.To(false) })
	add("privileged init container", func(p *corev1.Pod) { initC(p).Privileged, initC(p).AllowPrivilegeEscalation = ptr.To(true), nil })
	// Capabilities: each of baseline's, and two others.
	for _, c := range []corev1.Capability{"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
		"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT", "SYS_ADMIN", "NET_RAW"} {
		add("add "+string(c), func(p *corev1.Pod) { app(p).Capabilities.Add = []corev1.Capability{c} })
	}
	add("add SYS_ADMIN init container", func(p *corev1.Pod) { initC(p).Capabilities.Add = []corev1.Capability{"SYS_ADMIN"} })
	add("no drop", func(p *corev1.Pod) { app(p).Capabilities = nil })
	add("drop lowercase all", func(p *corev1.Pod) { app(p).Capabilities.Drop = []corev1.Capability{"all"} })
	add("drop NET_RAW not ALL", func(p *corev1.Pod) { initC(p).Capabilities.Drop = []corev1.Capability{"NET_RAW"} })
	// Volumes.
	add("hostPath", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}}}
	})
	add("allowed volume types", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{
			{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}},
			{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
			{Name: "empty", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "pvc", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}},
			{Name: "dapi", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{}}},
			{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}},
			{Name: "csi", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "csi.example.com"}}},
		}
	})
	add("nfs volume", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "nfs", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example.com", Path: "/x"}}}}
	})
	add("iscsi volume", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "iscsi", VolumeSource: corev1.VolumeSource{ISCSI: &corev1.ISCSIVolumeSource{TargetPortal: "10.0.0.1:3260", IQN: "iqn.2001-04.com.example:storage", Lun: 0}}}}
	})
	// Ports.
	add("hostPort", func(p *corev1.Pod) {
		p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: 8080}}
	})
	add("containerPort only", func(p *corev1.Pod) { p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 8080}} })
	// AppArmor.
	add("apparmor unconfined container", func(p *corev1.Pod) {
		app(p).AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
	})
	add("apparmor unconfined pod", func(p *corev1.Pod) {
		pod(p).AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
	})
	add("apparmor runtime default pod", func(p *corev1.Pod) {
		pod(p).AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}
	})
	add("apparmor localhost container", func(p *corev1.Pod) {
		app(p).AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost, LocalhostProfile: ptr.To("k8s-app")}
	})
	add("apparmor annotation unconfined", func(p *corev1.Pod) {
		p.Annotations = map[string]string{"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
	})
	add("apparmor annotation runtime default", func(p *corev1.Pod) {
		p.Annotations = map[string]string{"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}
	})
	// SELinux.
	for _, typ := range []string{"container_t", "container_init_t", "container_kvm_t", "container_engine_t", "spc_t"} {
		add("selinux type "+typ, func(p *corev1.Pod) { app(p).SELinuxOptions = &corev1.SELinuxOptions{Type: typ} })
	}
	add("selinux user pod", func(p *corev1.Pod) { pod(p).SELinuxOptions = &corev1.SELinuxOptions{User: "system_u"} })
	add("selinux role init container", func(p *corev1.Pod) { initC(p).SELinuxOptions = &corev1.SELinuxOptions{Role: "system_r"} })
	add("selinux level only", func(p *corev1.Pod) { pod(p).SELinuxOptions = &corev1.SELinuxOptions{Level: "s0:c123,c456"} })
	// /proc mount.
	add("procMount default", func(p *corev1.Pod) { app(p).ProcMount = ptr.To(corev1.DefaultProcMount) })
	add("procMount unmasked user namespace", func(p *corev1.Pod) {
		p.Spec.HostUsers = ptr.To(false)
		app(p).ProcMount = ptr.To(corev1.UnmaskedProcMount)
	})
	// Seccomp.
	add("seccomp unconfined pod", func(p *corev1.Pod) { pod(p).SeccompProfile.Type = corev1.SeccompProfileTypeUnconfined })
	add("seccomp unconfined container", func(p *corev1.Pod) {
		app(p).SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
	})
	add("seccomp localhost container only", func(p *corev1.Pod) {
		pod(p).SeccompProfile = nil
		for _, sc := range []*corev1.SecurityContext{initC(p), app(p), p.Spec.Containers[1].SecurityContext} {
			sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr.To("profiles/app.json")}
		}
	})
	add("seccomp missing on init container", func(p *corev1.Pod) {
		pod(p).SeccompProfile = nil
		for _, sc := range []*corev1.SecurityContext{app(p), p.Spec.Containers[1].SecurityContext} {
			sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
		}
	})
	add("seccomp unset", func(p *corev1.Pod) { pod(p).SeccompProfile = nil })
	add("seccomp annotation unconfined", func(p *corev1.Pod) {
		pod(p).SeccompProfile = nil
		p.Annotations = map[string]string{"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}
	})
	// Sysctls.
	for _, s := range []string{"net.ipv4.tcp_rmem", "net.ipv4.ip_unprivileged_port_start", "kernel.shm_rmid_forced", "kernel.msgmax", "net.ipv4.ip_forward"} {
		add("sysctl "+strings.ReplaceAll(s, ".", "-"), func(p *corev1.Pod) { pod(p).Sysctls = []corev1.Sysctl{{Name: s, Value: "1"}} })
	}
	// Probe and lifecycle hosts.
	add("liveness httpGet host", func(p *corev1.Pod) {
		p.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "10.0.0.1", Port: intstr.FromInt32(80)}}}
	})
	add("readiness tcpSocket host", func(p *corev1.Pod) {
		p.Spec.Containers[1].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Host: "example.com", Port: intstr.FromInt32(80)}}}
	})
	add("readiness httpGet no host", func(p *corev1.Pod) {
		p.Spec.Containers[1].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(80)}}}
	})
	add("preStop httpGet host", func(p *corev1.Pod) {
		p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Host: "10.0.0.1", Port: intstr.FromInt32(80)}}}
	})
	// Privilege escalation.
	add("allowPrivilegeEscalation true", func(p *corev1.Pod) { app(p).AllowPrivilegeEscalation = ptr.To(true) })
	add("allowPrivilegeEscalation unset", func(p *corev1.Pod) { initC(p).AllowPrivilegeEscalation = nil })
	// Running as non-root.
	add("runAsNonRoot false pod", func(p *corev1.Pod) { pod(p).RunAsNonRoot = ptr.To(false) })
	add("runAsNonRoot on every container", func(p *corev1.Pod) {
		pod(p).RunAsNonRoot = nil
		for _, sc := range []*corev1.SecurityContext{initC(p), app(p), p.Spec.Containers[1].SecurityContext} {
			sc.RunAsNonRoot = ptr.To(true)
		}
	})
	add("runAsNonRoot on one container", func(p *corev1.Pod) {
		pod(p).RunAsNonRoot = nil
		app(p).RunAsNonRoot = ptr.To(true)
	})
	add("runAsNonRoot false container", func(p *corev1.Pod) { app(p).RunAsNonRoot = ptr.To(false) })
	add("runAsNonRoot false user namespace", func(p *corev1.Pod) {
		p.Spec.HostUsers = ptr.To(false)
		pod(p).RunAsNonRoot = ptr.To(false)
	})
	// runAsUser.
	add("runAsUser 0 pod", func(p *corev1.Pod) { pod(p).RunAsUser = ptr.To(int64(0)) })
	add("runAsUser 0 container", func(p *corev1.Pod) { app(p).RunAsUser = ptr.To(int64(0)) })
	add("runAsUser 1000", func(p *corev1.Pod) { pod(p).RunAsUser = ptr.To(int64(1000)) })
	add("runAsUser 0 user namespace", func(p *corev1.Pod) {
		p.Spec.HostUsers = ptr.To(false)
		app(p).RunAsUser = ptr.To(int64(0))
	})
	// Windows pods.
	add("windows restricted", linuxOff)
	add("windows without runAsNonRoot", func(p *corev1.Pod) {
		linuxOff(p)
		p.Spec.SecurityContext = nil
	})
	add("windows hostProcess", func(p *corev1.Pod) {
		linuxOff(p)
		p.Spec.HostNetwork = true
		p.Spec.SecurityContext.WindowsOptions = &corev1.WindowsSecurityContextOptions{HostProcess: ptr.To(true)}
	})
	return cases
}
