package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// sidecarPolicies are the policies of the injectSidecar test's server, by
// file name (they run in this order): testdata/sidecar-*.yaml.
var sidecarPolicies = []string{"sidecar-logs.yaml", "sidecar-mesh.yaml", "sidecar-xindex.yaml"}

// TestInjectSidecar runs testdata/sidecar-*.yaml on a server of its own,
// scoped to one namespace, and checks the pods the API server stores:
//
//   - a pod of a StatefulSet gets the native sidecar and the init container
//     first, the shared emptyDir mounted into its app containers, the
//     classic sidecar with its volume, and values from CEL templates;
//   - every container is there once although the pod went through
//     reinvocation twice: within the server (e2e-sidecar-index changes the
//     sidecars after the sidecar policies ran) and across webhooks (the
//     main server's sts-index gives the classic sidecar INDEX after this
//     server ran, so the API server calls this server again). The sidecar
//     policies fail closed on a conflict, so a sidecar taken for a
//     conflict would have denied the pod;
//   - an UPDATE of the pod reaches the server and injects nothing;
//   - a Deployment's pod, created by the real ReplicaSet controller, gets
//     the same sidecars.
func TestInjectSidecar(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	token := randomToken(t)
	scope := map[string]string{"e2e.celadon.io/sidecar": token}
	ns := newNamespace(ctx, t, "sidecar", scope)
	files := map[string][]byte{}
	for _, name := range sidecarPolicies {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = data
	}
	s := startScopedCeladon(ctx, t, "celadon-e2e-sidecar-"+token, files, nil, &metav1.LabelSelector{MatchLabels: scope}, nil)

	owner := createOwner(ctx, t, ns, "web")
	pod := ownedPod(owner, 0, map[string]string{"role": "web"})
	pod.Annotations = map[string]string{"config.example.com/profile": "blue"}
	pod.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "registry.invalid/migrate:1"}}
	if err := suite.c.Create(ctx, pod); err != nil {
		t.Fatalf("creating pod %s: %v", pod.Name, err)
	}
	checkSidecars(t, pod, []string{"render-config", "mesh-proxy", "migrate"}, []string{"app", "metrics", "log-shipper"})

	// The templates' values.
	proxy := containerNamed(pod.Spec.InitContainers, "mesh-proxy")
	if got, want := strings.Join(proxy.Args, " "), "--service-node web-0."+ns; got != want {
		t.Errorf("mesh-proxy args %q, want %q", got, want)
	}
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("mesh-proxy is not a native sidecar: restartPolicy %v", proxy.RestartPolicy)
	}
	if got := containerNamed(pod.Spec.InitContainers, "render-config").Args; len(got) == 0 || got[0] != "--profile=blue" {
		t.Errorf("render-config args %q, want --profile=blue first (from the pod's annotation)", got)
	}
	// What reinvocation added, next to what the templates set.
	for _, c := range []struct{ container, name, value string }{
		{"log-shipper", "MODE", "push"},
		{"log-shipper", "SIDECAR_INDEX", "0"},
		{"log-shipper", "INDEX", "0"}, // the main server, reinvoked after this one
		{"mesh-proxy", "SIDECAR_INDEX", "0"},
		{"render-config", "SIDECAR_INDEX", "0"},
		{"app", "INDEX", "0"},
		{"app", "SIDECAR_INDEX", "0"},
	} {
		if got, ok := containerEnv(pod, c.container, c.name); !ok || got != c.value {
			t.Errorf("container %s: %s=%q (set: %v), want %q: %s", c.container, c.name, got, ok, c.value, describeAllEnv(pod))
		}
	}

	// An UPDATE reaches the server (e2e-sidecar-mesh matches it) and
	// injects nothing: the API server would refuse a changed pod spec.
	before, err := policyEvaluations(ctx, s, "e2e-sidecar-mesh", "skip")
	if err != nil {
		t.Fatal(err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		pod.Labels["updated"] = "true"
		return suite.c.Update(ctx, pod)
	})
	if err != nil {
		t.Fatalf("updating pod %s: %v", pod.Name, err)
	}
	after, err := policyEvaluations(ctx, s, "e2e-sidecar-mesh", "skip")
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("the UPDATE did not reach e2e-sidecar-mesh: skips %v before, %v after", before, after)
	}
	checkSidecars(t, pod, []string{"render-config", "mesh-proxy", "migrate"}, []string{"app", "metrics", "log-shipper"})

	// A Deployment's pod, created by the ReplicaSet controller.
	labels := map[string]string{"app": "api"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"config.example.com/profile": "green"}},
				Spec:       podSpec(),
			},
		},
	}
	if err := suite.c.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	var depPod corev1.Pod
	waitFor(ctx, t, "the Deployment's pod", func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		if err := suite.c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
			return false, err
		}
		if len(pods.Items) == 0 {
			return false, nil
		}
		depPod = pods.Items[0]
		return true, nil
	})
	checkSidecars(t, &depPod, []string{"render-config", "mesh-proxy"}, []string{"app", "metrics", "log-shipper"})
	if got := containerNamed(depPod.Spec.InitContainers, "render-config").Args; len(got) == 0 || got[0] != "--profile=green" {
		t.Errorf("the Deployment's pod: render-config args %q, want --profile=green first", got)
	}
	// Admitted before the API server generated its name.
	if got, want := strings.Join(containerNamed(depPod.Spec.InitContainers, "mesh-proxy").Args, " "), "--service-node "+depPod.GenerateName+"."+ns; got != want {
		t.Errorf("the Deployment's pod: mesh-proxy args %q, want %q", got, want)
	}
}

// checkSidecars checks a stored pod against the sidecar policies: its init
// containers and containers in the order given, each once; the volumes
// app-config and app-logs, each once; the shared volumes mounted into the
// app containers.
func checkSidecars(t *testing.T, pod *corev1.Pod, inits, containers []string) {
	t.Helper()
	if got := containerNames(pod.Spec.InitContainers); strings.Join(got, ",") != strings.Join(inits, ",") {
		t.Errorf("pod %s: init containers %v, want %v", pod.Name, got, inits)
	}
	if got := containerNames(pod.Spec.Containers); strings.Join(got, ",") != strings.Join(containers, ",") {
		t.Errorf("pod %s: containers %v, want %v", pod.Name, got, containers)
	}
	volumes := map[string]int{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name]++
	}
	for _, name := range []string{"app-config", "app-logs"} {
		if volumes[name] != 1 {
			t.Errorf("pod %s: volume %s %d times, want once: %v", pod.Name, name, volumes[name], pod.Spec.Volumes)
		}
	}
	if v := volumeNamed(pod, "app-config"); v != nil && (v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory) {
		t.Errorf("pod %s: volume app-config is not a Memory emptyDir: %+v", pod.Name, v.VolumeSource)
	}
	for _, c := range []string{"app", "metrics"} {
		mounts := map[string]corev1.VolumeMount{}
		for _, m := range containerNamed(pod.Spec.Containers, c).VolumeMounts {
			if _, dup := mounts[m.MountPath]; dup {
				t.Errorf("pod %s container %s: %s mounted twice", pod.Name, c, m.MountPath)
			}
			mounts[m.MountPath] = m
		}
		if m := mounts["/etc/app"]; m.Name != "app-config" || !m.ReadOnly {
			t.Errorf("pod %s container %s: /etc/app mount %+v, want app-config read-only", pod.Name, c, m)
		}
		if m := mounts["/var/log/app"]; m.Name != "app-logs" {
			t.Errorf("pod %s container %s: /var/log/app mount %+v, want app-logs", pod.Name, c, m)
		}
	}
	if m := containerNamed(pod.Spec.InitContainers, "render-config").VolumeMounts; len(m) == 0 || m[0].Name != "app-config" || m[0].MountPath != "/work/config" {
		t.Errorf("pod %s: render-config mounts %+v, want app-config at /work/config", pod.Name, m)
	}
}

// containerNamed returns the container called name in list, or an empty one.
func containerNamed(list []corev1.Container, name string) corev1.Container {
	for _, c := range list {
		if c.Name == name {
			return c
		}
	}
	return corev1.Container{}
}

func containerNames(list []corev1.Container) []string {
	names := make([]string, len(list))
	for i, c := range list {
		names[i] = c.Name
	}
	return names
}

func volumeNamed(pod *corev1.Pod, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

// containerEnv is env for init containers too, and tells whether the
// variable is set exactly once.
func containerEnv(pod *corev1.Pod, name, variable string) (string, bool) {
	var vars []corev1.EnvVar
	switch {
	case containerNamed(pod.Spec.Containers, name).Name != "":
		vars = containerNamed(pod.Spec.Containers, name).Env
	default:
		vars = containerNamed(pod.Spec.InitContainers, name).Env
	}
	found, value := 0, ""
	for _, e := range vars {
		if e.Name == variable {
			found++
			value = e.Value
		}
	}
	return value, found == 1
}

// describeAllEnv is describeEnv for init containers too.
func describeAllEnv(pod *corev1.Pod) string {
	init := corev1.Pod{Spec: corev1.PodSpec{Containers: pod.Spec.InitContainers}}
	return "init: " + describeEnv(&init) + "; containers: " + describeEnv(pod)
}

// policyEvaluations reads celadon_policy_evaluations_total of one policy
// and state from the server's /metrics.
func policyEvaluations(ctx context.Context, s *celadon, policy, state string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.metrics+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	prefix := fmt.Sprintf("celadon_policy_evaluations_total{policy=%q,state=%q} ", policy, state)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, sc.Err() // absent: never counted
}
