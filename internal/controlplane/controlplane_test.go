package controlplane

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// pollTimeout bounds every wait for the controllers to act. It is generous
// on purpose (a loaded 2-core CI machine) and is not a performance check.
const pollTimeout = 3 * time.Minute

func TestStartWithoutBinariesSaysHowToBuildThem(t *testing.T) {
	t.Setenv("KUBEBUILDER_ASSETS", "")
	_, err := Start(context.Background(), Options{BinDir: t.TempDir(), WithControllerManager: true})
	if err == nil {
		t.Fatal("Start succeeded with an empty BinDir")
	}
	if !strings.Contains(err.Error(), "make controlplane") {
		t.Fatalf("error does not say to run `make controlplane`: %v", err)
	}
}

// TestStartCleansUpOnFailure makes the controller manager fail after etcd
// and kube-apiserver are up, and checks that Start reports its output and
// stops everything it had started.
func TestStartCleansUpOnFailure(t *testing.T) {
	skipIfShort(t)
	fake := filepath.Join(t.TempDir(), "kube-controller-manager")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho boom: controller manager refuses to start >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_ASSET_KUBE_CONTROLLER_MANAGER", fake)
	before := childProcesses()
	cp, err := Start(context.Background(), Options{WithControllerManager: true})
	if err == nil {
		_ = cp.Stop()
		t.Fatal("Start succeeded with a controller manager that exits at once")
	}
	if !strings.Contains(err.Error(), "boom: controller manager refuses to start") {
		t.Errorf("error does not include the failing process's output: %v", err)
	}
	if left := childProcesses(); len(left) > len(before) {
		t.Errorf("child processes left after a failed Start:\n%s", strings.Join(left, "\n"))
	}
}

func TestServiceAccountAdmissionNeedsControllerManager(t *testing.T) {
	_, err := Start(context.Background(), Options{ServiceAccountAdmission: true})
	if err == nil || !strings.Contains(err.Error(), "WithControllerManager") {
		t.Fatalf("want an error about WithControllerManager, got %v", err)
	}
}

func TestStartSchedulerName(t *testing.T) {
	_, err := (&ControlPlane{}).StartScheduler(context.Background(), "My Scheduler")
	if err == nil || !strings.Contains(err.Error(), `scheduler name "My Scheduler"`) {
		t.Fatalf("want an error naming the invalid scheduler name, got %v", err)
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if got := modulePathOf(filepath.Join(root, "go.mod")); got != ModulePath {
		t.Fatalf("RepoRoot() = %s, whose module is %q", root, got)
	}
}

// TestControlPlane starts the real control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) and checks that the real
// controllers act on objects, then that Stop leaves no process behind.
func TestControlPlane(t *testing.T) {
	skipIfShort(t)
	logs := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	cp, err := Start(ctx, Options{
		WithControllerManager:   true,
		WithScheduler:           true,
		ServiceAccountAdmission: true,
		Out:                     logs,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	markers := processMarkers(cp)
	if _, err := os.Stat("/proc"); err == nil {
		// Make sure the leak check below would see the processes.
		if running := processesMatching(markers); len(running) != 4 {
			t.Errorf("want 4 control-plane processes running, found:\n%s", strings.Join(running, "\n"))
		}
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = cp.Stop()
		}
		if t.Failed() {
			t.Logf("last control-plane logs:\n%s", lastLines(logs.String(), 150))
		}
	}()

	c, err := client.New(cp.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cp.KubeconfigPath); err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}

	t.Run("StatefulSetCreatesPods", func(t *testing.T) {
		ns := createNamespace(ctx, t, c, "sts")
		// With ServiceAccount admission on, pods are rejected until the
		// serviceaccount controller has created "default".
		waitFor(ctx, t, "default service account in "+ns, func(ctx context.Context) (bool, error) {
			err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, &corev1.ServiceAccount{})
			return err == nil, client.IgnoreNotFound(err)
		})

		sts := &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec: appsv1.StatefulSetSpec{
				Replicas:    ptr(int32(3)),
				ServiceName: "web",
				// No kubelet runs, so pods never become Ready: the
				// default OrderedReady policy would stop at web-0.
				PodManagementPolicy: appsv1.ParallelPodManagement,
				Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Template:            podTemplate("web"),
			},
		}
		if err := c.Create(ctx, sts); err != nil {
			t.Fatal(err)
		}
		want := []string{"web-0", "web-1", "web-2"}
		waitFor(ctx, t, "pods "+strings.Join(want, ", "), func(ctx context.Context) (bool, error) {
			for _, name := range want {
				var pod corev1.Pod
				if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod); err != nil {
					return false, client.IgnoreNotFound(err)
				}
			}
			return true, nil
		})
		for _, name := range want {
			var pod corev1.Pod
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod); err != nil {
				t.Fatal(err)
			}
			if owner := metav1.GetControllerOf(&pod); owner == nil || owner.Kind != "StatefulSet" || owner.Name != "web" {
				t.Errorf("pod %s: controller = %+v, want StatefulSet web", name, owner)
			}
			if pod.Spec.ServiceAccountName != "default" {
				t.Errorf("pod %s: serviceAccountName = %q, want \"default\" (ServiceAccount admission)", name, pod.Spec.ServiceAccountName)
			}
		}

		// The garbage collector deletes the pods once their owner is gone.
		if err := c.Delete(ctx, sts, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, "garbage collection of the StatefulSet's pods", func(ctx context.Context) (bool, error) {
			var pods corev1.PodList
			if err := c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
				return false, err
			}
			return len(pods.Items) == 0, nil
		})
	})

	t.Run("DeploymentCreatesReplicaSetAndPods", func(t *testing.T) {
		ns := createNamespace(ctx, t, c, "deploy")
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api"},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr(int32(2)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}},
				Template: podTemplate("api"),
			},
		}
		if err := c.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, "2 pods of a ReplicaSet owned by Deployment api", func(ctx context.Context) (bool, error) {
			var pods corev1.PodList
			if err := c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app": "api"}); err != nil {
				return false, err
			}
			if len(pods.Items) != 2 {
				return false, nil
			}
			for i := range pods.Items {
				owner := metav1.GetControllerOf(&pods.Items[i])
				if owner == nil || owner.Kind != "ReplicaSet" {
					return false, nil
				}
				var rs appsv1.ReplicaSet
				if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: owner.Name}, &rs); err != nil {
					return false, client.IgnoreNotFound(err)
				}
				if o := metav1.GetControllerOf(&rs); o == nil || o.Kind != "Deployment" || o.Name != "api" {
					return false, nil
				}
			}
			return true, nil
		})
	})

	t.Run("NamespaceDeletionIsFinalized", func(t *testing.T) {
		ns := createNamespace(ctx, t, c, "gone")
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data"}}
		if err := c.Create(ctx, cm); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, "namespace "+ns+" to be deleted", func(ctx context.Context) (bool, error) {
			err := c.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		})
	})

	t.Run("SchedulerBindsPodToNode", func(t *testing.T) {
		ns := createNamespace(ctx, t, c, "sched")
		waitFor(ctx, t, "default service account in "+ns, func(ctx context.Context) (bool, error) {
			err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, &corev1.ServiceAccount{})
			return err == nil, client.IgnoreNotFound(err)
		})
		capacity := corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("4"),
			corev1.ResourceMemory: resource.MustParse("8Gi"),
			corev1.ResourcePods:   resource.MustParse("110"),
		}
		status := corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{
				Type:               corev1.NodeReady,
				Status:             corev1.ConditionTrue,
				Reason:             "KubeletReady",
				LastHeartbeatTime:  metav1.Now(),
				LastTransitionTime: metav1.Now(),
			}},
		}
		// Nodes keep the status given at creation (there is no kubelet to
		// report one). Controllers update the node right away (taints), so
		// set the status again on conflict if it did not stick.
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "fake-node"}, Status: status}
		if err := c.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil {
				return err
			}
			if len(node.Status.Allocatable) > 0 && len(node.Status.Conditions) > 0 {
				return nil
			}
			node.Status = status
			return c.Status().Update(ctx, node)
		})
		if err != nil {
			t.Fatal(err)
		}
		tmpl := podTemplate("solo")
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "solo", Labels: tmpl.Labels}, Spec: tmpl.Spec}
		// The node lifecycle controller taints a node without a kubelet as
		// unreachable after a while; tolerate that so the check does not
		// depend on timing.
		pod.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, "pod solo to be bound to fake-node", func(ctx context.Context) (bool, error) {
			if err := c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
				return false, err
			}
			return pod.Spec.NodeName == "fake-node", nil
		})
	})

	if err := cp.Exited(); err != nil {
		t.Errorf("before Stop: %v", err)
	}
	stopped = true
	if err := cp.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := cp.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	for _, p := range cp.procs {
		if !p.exited() {
			t.Errorf("%s still running after Stop", p.name)
		}
	}
	if left := processesMatching(markers); len(left) > 0 {
		t.Errorf("processes left after Stop:\n%s", strings.Join(left, "\n"))
	}
	if left := childProcesses(); len(left) > 0 {
		t.Errorf("child processes left after Stop:\n%s", strings.Join(left, "\n"))
	}
	if _, err := os.Stat(cp.dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s not removed: %v", cp.dir, err)
	}
}

// skipIfShort skips tests that start real processes under -short (`make
// unit`). Without -short they run, and fail if bin/ is not built.
func skipIfShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real control plane; run without -short (make test)")
	}
}

// createNamespace creates a namespace with a generated name.
func createNamespace(ctx context.Context, t *testing.T, c client.Client, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// podTemplate returns a minimal pod template labelled app=name. The image is
// never pulled: no kubelet runs.
func podTemplate(name string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: name, Image: "registry.invalid/celadon/" + name + ":test"}},
		},
	}
}

// waitFor polls cond every 250ms until it returns true, failing the test
// after pollTimeout.
func waitFor(ctx context.Context, t *testing.T, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, pollTimeout, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		if err != nil {
			lastErr = err // keep polling: the apiserver may be briefly busy
			return false, nil
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last error: %v)", what, err, lastErr)
	}
}

// processMarkers returns strings that appear on the command line of every
// process of cp (their private directories), to find leftovers.
func processMarkers(cp *ControlPlane) []string {
	markers := []string{cp.dir}
	if api := cp.Env.ControlPlane.APIServer; api != nil && api.CertDir != "" {
		markers = append(markers, api.CertDir)
	}
	if etcd := cp.Env.ControlPlane.Etcd; etcd != nil && etcd.DataDir != "" {
		markers = append(markers, etcd.DataDir)
	}
	return markers
}

// processesMatching lists running processes with an argument that is one
// of markers, names a file under one, or is a flag set to one (Linux
// /proc; nothing elsewhere).
func processesMatching(markers []string) []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var found []string
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if matchesAny(args, markers) {
			found = append(found, fmt.Sprintf("pid %s: %s", e.Name(), strings.Join(args, " ")))
		}
	}
	return found
}

func matchesAny(args, markers []string) bool {
	for _, a := range args {
		for _, m := range markers {
			if a == m || strings.HasSuffix(a, "="+m) || strings.Contains(a, m+"/") {
				return true
			}
		}
	}
	return false
}

// childProcesses lists the live child processes of this test binary
// (Linux /proc; nothing elsewhere). Every process the package starts,
// including envtest's etcd and kube-apiserver, is a direct child.
func childProcesses() []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := strconv.Itoa(os.Getpid())
	var found []string
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) >= 2 && fields[1] == self {
			found = append(found, fmt.Sprintf("pid %s %s state %s", e.Name(), stat[:i+1], fields[0]))
		}
	}
	return found
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func ptr[T any](v T) *T { return &v }
