package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// helmLabels are the labels the chart adds to every object's metadata,
// Helm's standard ones; the comparison with kustomize ignores them, and
// only them.
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// renderChart renders deploy/chart as `helm install --namespace ns
// celadon deploy/chart` with values would, through Helm's Go library:
// values coalesced with the chart's and checked against its schema, the
// templates rendered, the manifests split and sorted in install order,
// NOTES.txt left out.
func renderChart(ns string, values map[string]any) ([]*unstructured.Unstructured, error) {
	ch, err := loader.Load(filepath.Join(root, ChartDir))
	if err != nil {
		return nil, fmt.Errorf("loading the chart: %w", err)
	}
	vals, err := chartutil.ToRenderValuesWithSchemaValidation(ch, values,
		common.ReleaseOptions{Name: "celadon", Namespace: ns, Revision: 1, IsInstall: true}, nil, false)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	for name := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, err
	}
	if len(hooks) > 0 {
		return nil, fmt.Errorf("%d hooks: the chart has none", len(hooks))
	}
	var objs []*unstructured.Unstructured
	for _, m := range manifests {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(m.Content), &u.Object); err != nil {
			return nil, fmt.Errorf("%s: %v\n%s", m.Name, err, m.Content)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	return objs, nil
}

// mustRenderChart is renderChart, failing the test on an error.
func mustRenderChart(t *testing.T, ns string, values map[string]any) []*unstructured.Unstructured {
	t.Helper()
	objs, err := renderChart(ns, values)
	if err != nil {
		t.Fatalf("rendering the chart in %s with %v: %v", ns, values, err)
	}
	return objs
}

// chartCase is a choice of values and the kustomization making the same
// choice.
type chartCase struct {
	name   string
	ns     string
	values map[string]any
	// kustomization is the directory of the kustomize install to compare
	// with.
	kustomization string
	// withoutNamespace: the chart does not create the namespace, the
	// kustomization does.
	withoutNamespace bool
}

// chartCases are the choices the chart and deploy/ both offer.
func chartCases(t *testing.T) []chartCase {
	withNS := func(v map[string]any) map[string]any { v["createNamespace"] = true; return v }
	return []chartCase{
		{"cert-manager", Namespace, withNS(map[string]any{"certificates": "cert-manager"}), CertManagerOverlay, false},
		{"self-signed", Namespace, withNS(map[string]any{"certificates": "self-signed"}), SelfSignedOverlay, false},
		{"secret", Namespace, withNS(map[string]any{"certificates": "secret"}), "deploy/base", false},
		{"cert-manager+create-secret", Namespace, withNS(map[string]any{"certificates": "cert-manager", "createSecret": map[string]any{"enabled": true}}),
			tempOverlay(t, "namespace: "+Namespace+"\nresources:\n- {{deploy}}/overlays/cert-manager\ncomponents:\n- {{deploy}}/components/create-secret\n"), false},
		{"self-signed+create-secret", Namespace, withNS(map[string]any{"certificates": "self-signed", "createSecret": map[string]any{"enabled": true}}),
			tempOverlay(t, "namespace: "+Namespace+"\nresources:\n- {{deploy}}/overlays/self-signed\ncomponents:\n- {{deploy}}/components/create-secret\n"), false},
		{"policy-system", ExampleNamespace, withNS(map[string]any{"certificates": "cert-manager"}), ExampleNamespaceOverlay, false},
		{"policy-system self-signed", ExampleNamespace, withNS(map[string]any{"certificates": "self-signed"}),
			tempOverlay(t, "namespace: "+ExampleNamespace+"\nresources:\n- {{deploy}}/overlays/self-signed\n"), false},
		{"monitoring", Namespace, withNS(map[string]any{"certificates": "cert-manager",
			"serviceMonitor": map[string]any{"enabled": true}, "prometheusRule": map[string]any{"enabled": true}}), monitoringOverlay(t), false},
		// The chart's default: self-signed, the namespace left to Helm.
		{"defaults", Namespace, map[string]any{}, SelfSignedOverlay, true},
	}
}

// TestChartMatchesKustomize renders the chart for each choice deploy/
// offers too and compares the objects with the kustomization's, parsed,
// ignoring nothing but Helm's standard labels; a chart without
// createNamespace lacks only the Namespace. Each rendered install also
// passes the checks of a kustomize install (checkInstall).
func TestChartMatchesKustomize(t *testing.T) {
	for _, tc := range chartCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			got := mustRenderChart(t, tc.ns, tc.values)
			want := build(t, tc.kustomization)
			checked := got
			if tc.withoutNamespace {
				var ns []*unstructured.Unstructured
				want = slices.DeleteFunc(want, func(u *unstructured.Unstructured) bool {
					if u.GetKind() == "Namespace" {
						ns = append(ns, u)
						return true
					}
					return false
				})
				// The namespace Helm creates, for the checks.
				checked = append(slices.Clone(got), ns...)
			}
			b := built{t: t, dir: ChartDir + " (" + tc.name + ")", objs: checked, ns: tc.ns}
			checkInstall(b)
			if b.has("ServiceMonitor", "celadon") {
				checkMonitoring(b)
			}
			if tc.ns != Namespace {
				for _, m := range namespaceMentions(got, Namespace) {
					t.Errorf("the chart in %s still names the namespace %s: %s", tc.ns, Namespace, m)
				}
			}
			compareObjects(t, got, want)
		})
	}
}

// compareObjects fails the test unless got and want hold the same objects,
// by kind, namespace and name, equal once parsed (numbers as JSON
// numbers), but for Helm's standard labels.
func compareObjects(t *testing.T, got, want []*unstructured.Unstructured) {
	t.Helper()
	index := func(objs []*unstructured.Unstructured, strip bool) map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, u := range objs {
			key := u.GetObjectKind().GroupVersionKind().String() + " " + u.GetNamespace() + "/" + u.GetName()
			if _, dup := out[key]; dup {
				t.Errorf("%s twice", key)
			}
			out[key] = normalized(t, u, strip)
		}
		return out
	}
	g, w := index(got, true), index(want, false)
	var keys []string
	for k := range g {
		keys = append(keys, k)
	}
	for k := range w {
		if _, ok := g[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		gv, inChart := g[k]
		wv, inKustomize := w[k]
		switch {
		case !inChart:
			t.Errorf("%s: in the kustomization, not in the chart", k)
		case !inKustomize:
			t.Errorf("%s: in the chart, not in the kustomization", k)
		case !reflect.DeepEqual(gv, wv):
			gy, _ := yaml.Marshal(gv)
			wy, _ := yaml.Marshal(wv)
			t.Errorf("%s differs:\n--- chart\n%s\n--- kustomize\n%s", k, gy, wy)
		}
	}
}

// normalized returns u as JSON would decode it, without Helm's standard
// labels when strip.
func normalized(t *testing.T, u *unstructured.Unstructured, strip bool) map[string]any {
	t.Helper()
	b, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if strip {
		meta, _ := out["metadata"].(map[string]any)
		ls, _ := meta["labels"].(map[string]any)
		for _, l := range helmLabels {
			if _, ok := ls[l]; !ok {
				t.Errorf("%s %s: no label %s", u.GetKind(), u.GetName(), l)
			}
			delete(ls, l)
		}
		if len(ls) == 0 {
			delete(meta, "labels")
		}
	}
	return out
}

// TestChartValues checks what the values the kustomizations have no
// equivalent for do, and that wrong values are refused before anything is
// applied.
func TestChartValues(t *testing.T) {
	render := func(t *testing.T, values map[string]any) built {
		t.Helper()
		values["createNamespace"] = true
		return built{t: t, dir: ChartDir, objs: mustRenderChart(t, Namespace, values), ns: Namespace}
	}
	deployment := func(b built) appsv1.Deployment {
		var d appsv1.Deployment
		b.get("Deployment", "celadon", &d)
		return d
	}

	t.Run("replicas, resources, image", func(t *testing.T) {
		b := render(t, map[string]any{
			"replicas": 3,
			// Helm merges maps with the defaults: null removes a default.
			"resources": map[string]any{"requests": map[string]any{"cpu": "200m", "memory": "256Mi"}, "limits": map[string]any{"cpu": nil, "memory": "512Mi"}},
			"image":     map[string]any{"repository": "registry.example.com/celadon", "tag": "v1.2.3"},
		})
		d := deployment(b)
		c := d.Spec.Template.Spec.Containers[0]
		if *d.Spec.Replicas != 3 || c.Resources.Requests.Cpu().String() != "200m" || c.Resources.Limits.Memory().String() != "512Mi" ||
			c.Image != "registry.example.com/celadon:v1.2.3" {
			t.Errorf("replicas %d, resources %+v, image %s", *d.Spec.Replicas, c.Resources, c.Image)
		}
		if _, ok := c.Resources.Limits["cpu"]; ok {
			t.Errorf("a CPU limit though the values remove it: %v", c.Resources.Limits)
		}
	})

	t.Run("excluded namespaces", func(t *testing.T) {
		b := render(t, map[string]any{"excludeNamespaces": []any{"monitoring", "flux-system"}})
		checkInstall(b)
		args := deployment(b).Spec.Template.Spec.Containers[0].Args
		if !slices.Contains(args, "--exclude-namespace=monitoring,flux-system") {
			t.Errorf("args %q: want --exclude-namespace=monitoring,flux-system", args)
		}
	})

	t.Run("a priority class of one's own", func(t *testing.T) {
		b := render(t, map[string]any{"priorityClassName": "platform-critical", "priorityClass": map[string]any{"create": false}})
		if b.has("PriorityClass", "celadon") {
			t.Error("a PriorityClass celadon with priorityClass.create false")
		}
		if got := deployment(b).Spec.Template.Spec.PriorityClassName; got != "platform-critical" {
			t.Errorf("priorityClassName %q, want platform-critical", got)
		}
		b = render(t, map[string]any{"priorityClassName": "", "priorityClass": map[string]any{"create": false}})
		if got := deployment(b).Spec.Template.Spec.PriorityClassName; got != "" {
			t.Errorf("priorityClassName %q, want none", got)
		}
	})

	t.Run("autoscaling", func(t *testing.T) {
		if b := render(t, map[string]any{}); b.has("HorizontalPodAutoscaler", "celadon") {
			t.Error("a HorizontalPodAutoscaler by default")
		}
		b := render(t, map[string]any{"autoscaling": map[string]any{"enabled": true, "minReplicas": 3, "maxReplicas": 7, "targetCPUUtilizationPercentage": 60}})
		var hpa autoscalingv2.HorizontalPodAutoscaler
		b.get("HorizontalPodAutoscaler", "celadon", &hpa)
		d := deployment(b)
		ref := hpa.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != d.Name || ref.APIVersion != "apps/v1" || *hpa.Spec.MinReplicas != 3 || hpa.Spec.MaxReplicas != 7 ||
			len(hpa.Spec.Metrics) != 1 || hpa.Spec.Metrics[0].Resource == nil || hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU ||
			*hpa.Spec.Metrics[0].Resource.Target.AverageUtilization != 60 {
			t.Errorf("HorizontalPodAutoscaler %+v", hpa.Spec)
		}
		if d.Spec.Replicas != nil {
			t.Errorf("the Deployment sets replicas %d under an autoscaler: every upgrade would reset it", *d.Spec.Replicas)
		}
	})

	t.Run("monitoring off by default", func(t *testing.T) {
		b := render(t, map[string]any{})
		for _, kind := range []string{"ServiceMonitor", "PrometheusRule"} {
			if b.has(kind, "celadon") {
				t.Errorf("a %s by default", kind)
			}
		}
		b = render(t, map[string]any{"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "kps"},
			"scraper": map[string]any{"namespace": "observability", "serviceAccount": "prometheus"}},
			"networkPolicy":  map[string]any{"metricsNamespace": "observability"},
			"prometheusRule": map[string]any{"enabled": true, "labels": map[string]any{"release": "kps"}}})
		checkMonitoring(b)
		for _, kind := range []string{"ServiceMonitor", "PrometheusRule"} {
			for _, u := range b.objs {
				if u.GetKind() == kind && u.GetLabels()["release"] != "kps" {
					t.Errorf("%s labels %v: want release=kps", kind, u.GetLabels())
				}
			}
		}
	})

	t.Run("policies inline", func(t *testing.T) {
		own := "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata:\n  name: own\nspec:\n  match:\n    resources: [configmaps]\n    operations: [DELETE]\n  action: deny\n  with: {message: \"no\"}\n"
		for _, tc := range []struct {
			name    string
			shipped bool
			want    []string
		}{
			{"added", true, []string{"own.yaml", "protect-delete.yaml", "protect-namespace-contents.yaml", "sts-index.yaml"}},
			{"alone", false, []string{"own.yaml"}},
		} {
			b := render(t, map[string]any{"policies": map[string]any{"shipped": tc.shipped, "files": map[string]any{"own.yaml": own}}})
			var cm corev1.ConfigMap
			b.get("ConfigMap", PoliciesConfigMap, &cm)
			var keys []string
			for k := range cm.Data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if !slices.Equal(keys, tc.want) || cm.Data["own.yaml"] != own {
				t.Errorf("%s: ConfigMap keys %q (own.yaml %q), want %q with own.yaml as given", tc.name, keys, cm.Data["own.yaml"], tc.want)
			}
		}
		// A shipped file replaced.
		b := render(t, map[string]any{"policies": map[string]any{"files": map[string]any{"sts-index.yaml": own}}})
		var cm corev1.ConfigMap
		b.get("ConfigMap", PoliciesConfigMap, &cm)
		if cm.Data["sts-index.yaml"] != own || len(cm.Data) != 3 {
			t.Errorf("sts-index.yaml given inline: ConfigMap %d files, sts-index.yaml %q", len(cm.Data), cm.Data["sts-index.yaml"])
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			values map[string]any
			want   string
		}{
			{"unknown certificates", map[string]any{"certificates": "letsencrypt"}, "certificates"},
			{"a misspelt value", map[string]any{"replica": 3}, "replica"},
			{"no policy at all", map[string]any{"policies": map[string]any{"shipped": false}}, "no policy"},
			{"a policy file Celadon would not read", map[string]any{"policies": map[string]any{"files": map[string]any{"own.txt": "x"}}}, "own.txt"},
			{"a namespace that is no DNS label", map[string]any{"excludeNamespaces": []any{"Not_A_Namespace"}}, "Not_A_Namespace"},
			{"a system priority value", map[string]any{"priorityClass": map[string]any{"value": 2000000000}}, "priorityClass"},
		} {
			_, err := renderChart(Namespace, tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.want)
			}
		}
	})
}

// TestChartDryRun applies the chart's objects, for each choice and with
// every optional object on, server-side in dry-run to a real
// kube-apiserver with the CRDs of cert-manager and of the Prometheus
// Operator: the API server accepts every object, the CRD-backed ones
// included, as rendered.
func TestChartDryRun(t *testing.T) {
	c, _ := sharedControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cases := chartCases(t)
	cases = append(cases, chartCase{name: "everything", ns: "celadon-everything", values: map[string]any{
		"certificates": "cert-manager", "createNamespace": true, "createSecret": map[string]any{"enabled": true},
		"autoscaling": map[string]any{"enabled": true}, "serviceMonitor": map[string]any{"enabled": true},
		"prometheusRule": map[string]any{"enabled": true}, "excludeNamespaces": []any{"flux-system"},
	}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dryRun(ctx, t, c, ChartDir+" ("+tc.name+")", mustRenderChart(t, tc.ns, tc.values))
		})
	}
}
