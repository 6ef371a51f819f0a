package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/devenv"
)

// overcommitLabel scopes the overcommit test: its namespace, pods and
// nodes carry it, with the test's token as value; its webhook
// configurations select it, its nodes are tainted with it and its pods
// tolerate that taint, so that no other pod lands on its nodes and its pods
// land nowhere else.
const overcommitLabel = "e2e.celadon.io/overcommit"

// overcommitNodeLabel names a node, for the pods' nodeSelector.
const overcommitNodeLabel = "e2e.celadon.io/node"

// nodeLeaseInterval is how often the test renews its nodes' Leases, as a
// kubelet does (every 10s by default; the node lifecycle controller's grace
// period is 50s).
const nodeLeaseInterval = 5 * time.Second

// nodeWriteBackoff spaces the retries of a node status write that
// conflicts with another writer, over about 5s in all.
var nodeWriteBackoff = wait.Backoff{Steps: 8, Duration: 20 * time.Millisecond, Factor: 2, Jitter: 0.1}

// The nodes' real allocatable, and each pod's requests: more cpu than a
// node really has, but less than twice as much (the policy inflates cpu
// × 2), and more than twice as much as half of it (the policy halves
// requests).
var (
	nodeCPU    = resource.MustParse("1")
	nodeMemory = resource.MustParse("1Gi")
	nodePods   = resource.MustParse("10")
	podCPU     = resource.MustParse("1500m")
	podMemory  = resource.MustParse("256Mi")
)

// TestOvercommit runs testdata/overcommit.yaml on a server of its own and
// a real kube-scheduler of its own (its own scheduler name: it binds only
// this test's pods), with two Node objects and no kubelet: the test writes
// node status as a kubelet would and renews the nodes' Leases.
//
//   - inflateAllocatable: a status UPDATE of the labelled node is stored
//     with cpu × 2 and memory × 1.5 and the real values in an annotation;
//     a kubelet's resend of the real values, a write leaving allocatable
//     alone and a status PATCH are each inflated once. The other node,
//     not labelled for the policy, keeps its real values.
//   - The scheduler binds a pod too large for the node's real cpu to the
//     inflated node; the same pod for the other node stays Unschedulable.
//   - scaleRequests: in the test's namespace, the same pod is stored with
//     its requests halved and the originals in an annotation, and is bound
//     to the node that is not inflated. (The pod in the other namespace,
//     which the webhook does not select, shows it would not fit there.)
func TestOvercommit(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	token := randomToken(t)
	scope := map[string]string{overcommitLabel: token}
	scaledNS := newNamespace(ctx, t, "overcommit", scope)
	plainNS := newNamespace(ctx, t, "overcommit-off", nil)
	data, err := os.ReadFile(filepath.Join("testdata", "overcommit.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	selector := &metav1.LabelSelector{MatchLabels: scope}
	startScopedCeladon(ctx, t, "celadon-e2e-overcommit-"+token, map[string][]byte{"overcommit.yaml": data}, nil, selector, selector)

	inflated := createOvercommitNode(ctx, t, "e2e-overcommit-"+token+"-inflated", token, map[string]string{"celadon.io/overcommit": "true"})
	plain := createOvercommitNode(ctx, t, "e2e-overcommit-"+token+"-plain", token, nil)
	realAlloc := corev1.ResourceList{corev1.ResourceCPU: nodeCPU, corev1.ResourceMemory: nodeMemory, corev1.ResourcePods: nodePods}
	wantInflated := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1536Mi"), corev1.ResourcePods: nodePods}
	const (
		realRecord     = `{"cpu":"1","memory":"1Gi"}`
		inflatedRecord = `{"cpu":"2","memory":"1536Mi"}`
	)

	// The kubelet's first status write: an UPDATE of nodes/status.
	node := writeNodeStatus(ctx, t, inflated, realAlloc)
	checkAllocatable(t, node, wantInflated, realRecord, inflatedRecord, "the first status UPDATE")
	node = writeNodeStatus(ctx, t, plain, realAlloc)
	checkAllocatable(t, node, realAlloc, "", "", "the first status UPDATE of the node the policy does not select")

	// The kubelet sends its real values again (they differ from the stored
	// ones): inflated once more from them, not from the stored values.
	node = writeNodeStatus(ctx, t, inflated, realAlloc)
	checkAllocatable(t, node, wantInflated, realRecord, inflatedRecord, "the kubelet's resend of its real values")
	// A write that leaves allocatable as stored: the values stay.
	node = writeNodeStatus(ctx, t, inflated, nil)
	checkAllocatable(t, node, wantInflated, realRecord, inflatedRecord, "a status write leaving allocatable alone")
	// The kubelet's own way: a strategic-merge PATCH of nodes/status.
	node = patchNodeStatus(ctx, t, inflated, realAlloc)
	checkAllocatable(t, node, wantInflated, realRecord, inflatedRecord, "a status PATCH with the real values")

	waitSchedulable(ctx, t, inflated)
	waitSchedulable(ctx, t, plain)
	sched, err := suite.cp.StartScheduler(ctx, "e2e-overcommit-"+token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sched.Stop(); err != nil {
			t.Errorf("stopping the scheduler: %v", err)
		}
	})

	// Unscaled (the webhook does not select plainNS), for each node.
	fits := createOvercommitPod(ctx, t, plainNS, "fits-inflated", inflated, sched.Name, token)
	tooLarge := createOvercommitPod(ctx, t, plainNS, "too-large", plain, sched.Name, token)
	// Scaled, for the node that is not inflated.
	scaled := createOvercommitPod(ctx, t, scaledNS, "scaled", plain, sched.Name, token)

	for _, pod := range []*corev1.Pod{fits, tooLarge} {
		r := pod.Spec.Containers[0].Resources.Requests
		if r.Cpu().Cmp(podCPU) != 0 || r.Memory().Cmp(podMemory) != 0 || pod.Annotations["celadon.io/original-requests"] != "" {
			t.Errorf("pod %s/%s was scaled (requests %v, annotations %v): the webhook does not select its namespace", pod.Namespace, pod.Name, r, pod.Annotations)
		}
	}
	r := scaled.Spec.Containers[0].Resources.Requests
	if r.Cpu().Cmp(resource.MustParse("750m")) != 0 || r.Memory().Cmp(resource.MustParse("128Mi")) != 0 {
		t.Errorf("pod %s/%s: requests %v, want cpu 750m and memory 128Mi", scaled.Namespace, scaled.Name, r)
	}
	if got, want := scaled.Annotations["celadon.io/original-requests"], `{"app":{"cpu":"1500m","memory":"256Mi"}}`; got != want {
		t.Errorf("pod %s/%s: celadon.io/original-requests %q, want %q", scaled.Namespace, scaled.Name, got, want)
	}

	waitBound(ctx, t, fits, inflated)
	waitBound(ctx, t, scaled, plain)
	waitUnschedulable(ctx, t, tooLarge, "Insufficient cpu")
}

// createOvercommitNode creates a Node called name, as a kubelet registers
// one (with no status yet), labelled and tainted for the test, and renews
// its Lease until the test ends; the node and its Lease are deleted then.
func createOvercommitNode(ctx context.Context, t *testing.T, name, token string, labels map[string]string) string {
	t.Helper()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{overcommitLabel: token, overcommitNodeLabel: name}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{
			Key: overcommitLabel, Value: token, Effect: corev1.TaintEffectNoSchedule,
		}}},
	}
	for k, v := range labels {
		node.Labels[k] = v
	}
	if err := suite.c.Create(ctx, node); err != nil {
		t.Fatalf("creating node %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := suite.c.Delete(ctx, node); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting node %s: %v", name, err)
		}
	})
	renewNodeLease(t, name)
	return name
}

// renewNodeLease keeps the node's Lease in kube-node-lease renewed until
// the test ends, as a kubelet does. Without it, the node lifecycle
// controller of kube-controller-manager takes the node for dead once its
// grace period has passed since the last status write: it sets Ready to
// Unknown and taints the node node.kubernetes.io/unreachable, and the
// scheduler no longer binds pods to it.
func renewNodeLease(t *testing.T, node string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: node},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(node),
			LeaseDurationSeconds: ptr.To(int32(40)),
			RenewTime:            ptr.To(metav1.NewMicroTime(time.Now())),
		},
	}
	if err := suite.c.Create(ctx, lease); err != nil {
		cancel()
		t.Fatalf("creating the Lease of node %s: %v", node, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(nodeLeaseInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// Errors are retried at the next tick, as a kubelet does.
			_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
				if err := suite.c.Get(ctx, client.ObjectKeyFromObject(lease), lease); err != nil {
					return err
				}
				lease.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
				return suite.c.Update(ctx, lease)
			})
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := suite.c.Delete(ctx, lease); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting the Lease of node %s: %v", node, err)
		}
	})
}

// writeNodeStatus writes the node's status as a kubelet does, with an UPDATE
// of nodes/status: the stored node with a fresh Ready heartbeat and, unless
// allocatable is nil, capacity and allocatable set to it. It returns the
// node as stored.
func writeNodeStatus(ctx context.Context, t *testing.T, name string, allocatable corev1.ResourceList) *corev1.Node {
	t.Helper()
	node := &corev1.Node{}
	// The node lifecycle controller updates the node too (its taints).
	err := retry.RetryOnConflict(nodeWriteBackoff, func() error {
		if err := suite.c.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
			return err
		}
		if allocatable != nil {
			node.Status.Capacity = allocatable.DeepCopy()
			node.Status.Allocatable = allocatable.DeepCopy()
		}
		setNodeReady(node)
		return suite.c.Status().Update(ctx, node)
	})
	if err != nil {
		t.Fatalf("updating the status of node %s: %v", name, err)
	}
	return node
}

// setNodeReady sets the node's Ready condition, its heartbeat now.
func setNodeReady(node *corev1.Node) {
	now := metav1.Now()
	ready := corev1.NodeCondition{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
	}
	for i, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				ready.LastTransitionTime = c.LastTransitionTime
			}
			node.Status.Conditions[i] = ready
			return
		}
	}
	node.Status.Conditions = append(node.Status.Conditions, ready)
}

// patchNodeStatus writes the node's status as the kubelet really does: a
// strategic-merge PATCH of nodes/status carrying its real allocatable and
// a fresh heartbeat of the Ready condition. It returns the node as stored.
func patchNodeStatus(ctx context.Context, t *testing.T, name string, allocatable corev1.ResourceList) *corev1.Node {
	t.Helper()
	now := metav1.Now()
	patch, err := json.Marshal(map[string]any{"status": map[string]any{
		"capacity":    allocatable,
		"allocatable": allocatable,
		"conditions": []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := suite.c.Status().Patch(ctx, node, client.RawPatch(types.StrategicMergePatchType, patch)); err != nil {
		t.Fatalf("patching the status of node %s: %v", name, err)
	}
	return node
}

// checkAllocatable checks a stored node's allocatable and the records of
// inflateAllocatable ("": none).
func checkAllocatable(t *testing.T, node *corev1.Node, want corev1.ResourceList, realRecord, inflatedRecord, after string) {
	t.Helper()
	for res, q := range want {
		if got := node.Status.Allocatable[res]; got.Cmp(q) != 0 {
			t.Errorf("node %s after %s: allocatable %s %s, want %s", node.Name, after, res, got.String(), q.String())
		}
	}
	if got := node.Status.Capacity[corev1.ResourceCPU]; got.Cmp(nodeCPU) != 0 {
		t.Errorf("node %s after %s: capacity cpu %s, want the real %s (inflateCapacity is off)", node.Name, after, got.String(), nodeCPU.String())
	}
	for key, want := range map[string]string{"celadon.io/real-allocatable": realRecord, "celadon.io/inflated-allocatable": inflatedRecord} {
		if got := node.Annotations[key]; got != want {
			t.Errorf("node %s after %s: annotation %s %q, want %q", node.Name, after, key, got, want)
		}
	}
}

// waitSchedulable waits until the node lifecycle controller has removed
// the not-ready taint the API server gives a new node
// (TaintNodesByCondition), and no unreachable taint is set: until then the
// scheduler would not use the node.
func waitSchedulable(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	var node corev1.Node
	waitFor(ctx, t, "node "+name+" to be Ready, without not-ready or unreachable taints", func(ctx context.Context) (bool, error) {
		if err := suite.c.Get(ctx, client.ObjectKey{Name: name}, &node); err != nil {
			return false, err
		}
		for _, taint := range node.Spec.Taints {
			switch taint.Key {
			case corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable, corev1.TaintNodeUnschedulable:
				return false, nil
			}
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
}

// createOvercommitPod creates a pod requesting podCPU and podMemory, for
// the test's scheduler and node only, and returns it as stored. It is
// deleted at once when the test ends: with no kubelet, a pod bound to a
// node would otherwise never finish terminating.
func createOvercommitPod(ctx context.Context, t *testing.T, ns, name, node, scheduler, token string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{overcommitLabel: token}},
		Spec: corev1.PodSpec{
			SchedulerName: scheduler,
			NodeSelector:  map[string]string{overcommitNodeLabel: node},
			Tolerations: []corev1.Toleration{{
				Key: overcommitLabel, Operator: corev1.TolerationOpEqual, Value: token, Effect: corev1.TaintEffectNoSchedule,
			}},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "registry.invalid/app:1",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: podCPU, corev1.ResourceMemory: podMemory,
				}},
			}},
		},
	}
	if err := suite.c.Create(ctx, pod); err != nil {
		t.Fatalf("creating pod %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := suite.c.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting pod %s/%s: %v", ns, name, err)
		}
	})
	return pod
}

// waitBound waits until the scheduler has bound the pod to node.
func waitBound(ctx context.Context, t *testing.T, pod *corev1.Pod, node string) {
	t.Helper()
	err := waitPod(ctx, pod, "pod "+pod.Namespace+"/"+pod.Name+" to be bound to node "+node, func(p *corev1.Pod) (bool, error) {
		if p.Spec.NodeName != "" && p.Spec.NodeName != node {
			return false, fmt.Errorf("bound to node %s", p.Spec.NodeName)
		}
		return p.Spec.NodeName == node, nil
	})
	if err != nil {
		t.Error(err)
		return
	}
	t.Logf("pod %s/%s bound to node %s", pod.Namespace, pod.Name, node)
}

// waitUnschedulable waits until the scheduler has given up on the pod
// (PodScheduled False, reason Unschedulable, as with a FailedScheduling
// event) for want, e.g. "Insufficient cpu", and checks that it is still
// unbound.
func waitUnschedulable(ctx context.Context, t *testing.T, pod *corev1.Pod, want string) {
	t.Helper()
	var message string
	err := waitPod(ctx, pod, "pod "+pod.Namespace+"/"+pod.Name+" to be Unschedulable for "+want, func(p *corev1.Pod) (bool, error) {
		if p.Spec.NodeName != "" {
			return false, fmt.Errorf("bound to node %s", p.Spec.NodeName)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				message = c.Message
				return strings.Contains(c.Message, want), nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Error(err)
		return
	}
	t.Logf("pod %s/%s unschedulable: %s", pod.Namespace, pod.Name, message)
}

// waitPod polls the pod until cond holds, returning cond's error or a
// timeout that shows the pod's scheduling state.
func waitPod(ctx context.Context, pod *corev1.Pod, what string, cond func(*corev1.Pod) (bool, error)) error {
	var p corev1.Pod
	err := devenv.WaitFor(ctx, waitTimeout, what, func(ctx context.Context) (bool, error) {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(pod), &p); err != nil {
			return false, err
		}
		return cond(&p)
	})
	if err != nil {
		return fmt.Errorf("%w; node %q, conditions %+v", err, p.Spec.NodeName, p.Status.Conditions)
	}
	return nil
}
