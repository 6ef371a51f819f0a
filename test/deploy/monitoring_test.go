package deploy

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/controllers"
	"celadon.io/celadon/server"
	"celadon.io/celadon/webhook"
)

// monitoringOverlay is an overlay of the cert-manager overlay with the
// monitoring component, as its kustomization.yaml tells users to write.
func monitoringOverlay(t *testing.T) string {
	return tempOverlay(t, "resources:\n- {{deploy}}/overlays/cert-manager\ncomponents:\n- {{deploy}}/components/monitoring\n")
}

// TestMonitoringComponent checks the monitoring component on top of an
// install: the ServiceMonitor scrapes the metrics Service (not the
// webhook's) on a port it has, over HTTPS with Prometheus's token; the
// ServiceAccount it binds to celadon-metrics-reader lives in the namespace
// the NetworkPolicy admits to the metrics port; the install is otherwise
// unchanged.
func TestMonitoringComponent(t *testing.T) {
	b := newBuilt(t, monitoringOverlay(t))
	checkInstall(b)
	checkMonitoring(b)
}

// checkMonitoring checks the ServiceMonitor and the metrics reader's
// binding of an install that has them.
func checkMonitoring(b built) {
	t := b.t
	t.Helper()
	var sm struct {
		Spec struct {
			Selector  metav1.LabelSelector `json:"selector"`
			Endpoints []struct {
				Port            string `json:"port"`
				Path            string `json:"path"`
				Scheme          string `json:"scheme"`
				BearerTokenFile string `json:"bearerTokenFile"`
				TLSConfig       struct {
					InsecureSkipVerify bool `json:"insecureSkipVerify"`
				} `json:"tlsConfig"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	b.get("ServiceMonitor", "celadon", &sm)
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var metrics, hook corev1.Service
	b.get("Service", "celadon-metrics", &metrics)
	b.get("Service", Service, &hook)
	if !sel.Matches(labels.Set(metrics.Labels)) || sel.Matches(labels.Set(hook.Labels)) {
		t.Errorf("ServiceMonitor selector %v: want the Service celadon-metrics (labels %v) and not %s (labels %v)", sel, metrics.Labels, Service, hook.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints %+v: want one", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if !slices.ContainsFunc(metrics.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
		t.Errorf("ServiceMonitor port %q: the Service celadon-metrics has no such port (%+v)", ep.Port, metrics.Spec.Ports)
	}
	if ep.Path != "/metrics" || ep.Scheme != "https" || ep.BearerTokenFile == "" || !ep.TLSConfig.InsecureSkipVerify {
		t.Errorf("ServiceMonitor endpoint %+v: want /metrics over https with the token, not verifying the in-memory certificate", ep)
	}

	var crb rbacv1.ClusterRoleBinding
	b.get("ClusterRoleBinding", "celadon-metrics-reader", &crb)
	if crb.RoleRef.Kind != "ClusterRole" || crb.RoleRef.Name != "celadon-metrics-reader" || len(crb.Subjects) != 1 || crb.Subjects[0].Kind != "ServiceAccount" {
		t.Fatalf("ClusterRoleBinding celadon-metrics-reader: %+v %+v, want celadon-metrics-reader for one ServiceAccount", crb.RoleRef, crb.Subjects)
	}
	var np networkingv1.NetworkPolicy
	b.get("NetworkPolicy", "celadon", &np)
	var d appsv1.Deployment
	b.get("Deployment", "celadon", &d)
	admitted := false
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port == nil || (p.Port.String() != "metrics" && p.Port.IntValue() != 8080) {
				continue
			}
			for _, f := range r.From {
				if f.NamespaceSelector != nil && f.NamespaceSelector.MatchLabels[corev1.LabelMetadataName] == crb.Subjects[0].Namespace {
					admitted = true
				}
			}
		}
	}
	if !admitted {
		t.Errorf("the NetworkPolicy does not admit the namespace %s of the scraper bound to celadon-metrics-reader to the metrics port", crb.Subjects[0].Namespace)
	}
}

// TestPrometheusRules checks the alerts of the PrometheusRule against what
// exports the series they read, so that they cannot silently select
// nothing:
//
//   - a celadon_* metric is one the server, the webhook or the self-signed
//     certificate manager registers (registered in-process here), of the
//     type the name implies (_bucket only of a histogram...), and the
//     labels an alert matches or groups by are that metric's or the
//     Prometheus Operator's target labels (but endpoint, which the target
//     label of that name hides);
//   - up is Prometheus's own;
//   - an apiserver_* metric is the API server's: against the real
//     kube-apiserver (not in -short mode), a webhook call to a Celadon that
//     does not run must produce a series every such selector of the
//     alerts matches.
//
// Every alert reads at least one metric.
func TestPrometheusRules(t *testing.T) {
	rules := prometheusRules(t, newBuilt(t, monitoringOverlay(t)))
	if len(rules) < 4 {
		t.Fatalf("%d alerts, want at least: Celadon down, reload failures, evaluation errors, denials spiking", len(rules))
	}
	registered := registeredMetrics(t)
	targetLabels := []string{"namespace", "pod", "job", "instance", "service", "container"}
	// Celadon's labels that a target label of the same name replaces
	// (exported_endpoint then holds Celadon's).
	shadowed := []string{"endpoint"}
	var apiserver []promSelector
	for _, r := range rules {
		sels, grouping := parsePromQL(r.Expr)
		if len(sels) == 0 {
			t.Errorf("alert %s: no metric in %q", r.Alert, r.Expr)
		}
		var known []string // the labels of the expression's metrics
		for _, s := range sels {
			switch {
			case s.metric == "up":
				known = append(known, targetLabels...)
			case strings.HasPrefix(s.metric, "apiserver_"):
				apiserver = append(apiserver, s)
				known = append(known, s.labelNames()...)
			case strings.HasPrefix(s.metric, "celadon_"):
				m, ok := registered[s.metric]
				if !ok {
					t.Errorf("alert %s: %s is not a metric Celadon registers (%s)", r.Alert, s.metric, strings.Join(sortedKeys(registered), ", "))
					continue
				}
				for _, l := range s.labelNames() {
					switch {
					case slices.Contains(shadowed, l):
						t.Errorf("alert %s: %s{%s=...}: the Prometheus Operator's target label %s hides Celadon's", r.Alert, s.metric, l, l)
					case !slices.Contains(m.labels, l) && !slices.Contains(targetLabels, l):
						t.Errorf("alert %s: %s has no label %s (it has %q)", r.Alert, s.metric, l, m.labels)
					}
				}
				for _, l := range m.labels {
					if !slices.Contains(shadowed, l) {
						known = append(known, l)
					}
				}
				known = append(known, targetLabels...)
			default:
				t.Errorf("alert %s: %s is neither Celadon's, the API server's nor Prometheus's up", r.Alert, s.metric)
			}
		}
		for _, l := range grouping {
			if !slices.Contains(known, l) {
				t.Errorf("alert %s: groups by %s, a label none of its metrics has", r.Alert, l)
			}
		}
	}
	if testing.Short() {
		t.Logf("not checking the API server's metrics %v in -short mode", apiserver)
		return
	}
	checkAPIServerMetrics(t, apiserver)
}

type promRule struct{ Alert, Expr string }

// prometheusRules returns the alerts of the PrometheusRule celadon of b.
func prometheusRules(t *testing.T, b built) []promRule {
	t.Helper()
	var pr struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert string `json:"alert"`
					Expr  string `json:"expr"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	b.get("PrometheusRule", "celadon", &pr)
	var out []promRule
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("PrometheusRule celadon: a rule %+v without alert or expr", r)
			}
			out = append(out, promRule{r.Alert, r.Expr})
		}
	}
	return out
}

type registeredMetric struct{ labels []string }

// recorder registers collectors and records the series names and labels
// they describe: a histogram's _bucket, _sum and _count, not its bare
// name.
type recorder struct {
	*prometheus.Registry
	names map[string]registeredMetric
}

var descRe = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

func (r *recorder) Register(c prometheus.Collector) error {
	suffixes := []string{""}
	switch c.(type) {
	case prometheus.Histogram, *prometheus.HistogramVec:
		suffixes = []string{"_bucket", "_sum", "_count"}
	case prometheus.Summary, *prometheus.SummaryVec:
		suffixes = []string{"", "_sum", "_count"}
	}
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		m := descRe.FindStringSubmatch(d.String())
		if m == nil {
			return fmt.Errorf("cannot read %s", d)
		}
		var ls []string
		if m[2] != "" {
			ls = strings.Split(m[2], ",")
		}
		for _, s := range suffixes {
			l := ls
			if s == "_bucket" {
				l = append(slices.Clone(ls), "le")
			}
			r.names[m[1]+s] = registeredMetric{labels: l}
		}
	}
	return r.Registry.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// registeredMetrics returns the series Celadon registers: the server's
// (webhook's included) as server.NewServer registers them for the shipped
// policies, and the self-signed certificate manager's.
func registeredMetrics(t *testing.T) map[string]registeredMetric {
	t.Helper()
	rec := &recorder{Registry: prometheus.NewRegistry(), names: map[string]registeredMetric{}}
	if _, err := server.NewServer(server.Options{
		PoliciesDir:       filepath.Join(root, PoliciesDir),
		Registry:          builtins.Registry(),
		MetricsRegisterer: rec,
	}); err != nil {
		t.Fatal(err)
	}
	controllers.NewCertManager(controllers.CertOptions{Metrics: rec}, nil, nil)
	// The names the packages export must be among them: the recorder sees
	// what registration does.
	for _, name := range []string{webhook.MetricRequests, server.MetricLastReloadFailed, server.MetricPolicyErrors, controllers.MetricCertificateExpiry} {
		if _, ok := rec.names[name]; !ok {
			t.Fatalf("%s was not seen registered: the recorder is broken", name)
		}
	}
	return rec.names
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// promSelector is a metric and the label matchers it is selected with.
type promSelector struct {
	metric   string
	matchers []promMatcher
}

type promMatcher struct{ label, op, value string }

func (s promSelector) labelNames() []string {
	var out []string
	for _, m := range s.matchers {
		out = append(out, m.label)
	}
	return out
}

// matches reports whether a series' labels satisfy every matcher.
func (s promSelector) matches(ls map[string]string) bool {
	for _, m := range s.matchers {
		v := ls[m.label]
		switch m.op {
		case "=":
			if v != m.value {
				return false
			}
		case "!=":
			if v == m.value {
				return false
			}
		case "=~", "!~":
			re, err := regexp.Compile("^(?:" + m.value + ")$")
			if err != nil || re.MatchString(v) != (m.op == "=~") {
				return false
			}
		}
	}
	return true
}

var (
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promSelRe    = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{((?:[^}"]|"(?:[^"\\]|\\.)*")*)\}`)
	promMatchRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	promNoise    = regexp.MustCompile(`\[[^\]]*\]|\boffset\s+\S+|\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]*\b`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*\s*\(?`)
	promKeywords = []string{"and", "or", "unless", "bool", "offset", "inf", "nan"}
)

// parsePromQL returns the metrics an expression reads, with their
// matchers, and the labels it groups or matches by. It is no PromQL
// parser, but knows the forms the alerts use: metric{matchers}, bare
// metrics, functions and aggregations, by/without/on/ignoring lists,
// ranges, offsets and numbers.
func parsePromQL(expr string) ([]promSelector, []string) {
	var grouping []string
	for _, m := range promGrouping.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				grouping = append(grouping, l)
			}
		}
	}
	expr = promGrouping.ReplaceAllString(expr, " ")
	var sels []promSelector
	for _, m := range promSelRe.FindAllStringSubmatch(expr, -1) {
		s := promSelector{metric: m[1]}
		for _, mm := range promMatchRe.FindAllStringSubmatch(m[2], -1) {
			s.matchers = append(s.matchers, promMatcher{mm[1], mm[2], strings.ReplaceAll(mm[3], `\\`, `\`)})
		}
		sels = append(sels, s)
	}
	expr = promSelRe.ReplaceAllString(expr, " ")
	expr = promNoise.ReplaceAllString(expr, " ")
	for _, id := range promIdent.FindAllString(expr, -1) {
		id = strings.TrimSpace(id)
		if strings.HasSuffix(id, "(") || slices.Contains(promKeywords, strings.ToLower(id)) {
			continue // a function, an aggregation, a keyword
		}
		sels = append(sels, promSelector{metric: id})
	}
	return sels, grouping
}

func TestParsePromQL(t *testing.T) {
	sels, grouping := parsePromQL(`sum by (namespace, pod) (rate(celadon_x_total{decision="denied",name=~".+[.]io"}[5m] offset 1d)) > 4 * (sum(rate(celadon_y_total[1d])) or vector(0)) and absent(up == 1) - time() < 7 * 86400`)
	var got []string
	for _, s := range sels {
		got = append(got, fmt.Sprintf("%s%v", s.metric, s.matchers))
	}
	want := []string{`celadon_x_total[{decision = denied} {name =~ .+[.]io}]`, "celadon_y_total[]", "up[]"}
	if !slices.Equal(got, want) || !slices.Equal(grouping, []string{"namespace", "pod"}) {
		t.Errorf("parsePromQL: %q by %q, want %q by [namespace pod]", got, grouping, want)
	}
	if !(promSelector{matchers: []promMatcher{{"name", "=~", ".+[.]celadon[.]io"}}}).matches(map[string]string{"name": "fail.validate.celadon.io"}) {
		t.Error("a regular expression matcher does not match")
	}
}

// checkAPIServerMetrics makes a real kube-apiserver fail to call Celadon
// (the configurations of the shipped policies pointing at a Service with no
// endpoint) for a Fail webhook (a DELETE refused) and an Ignore one (a Pod
// created anyway), then reads its /metrics: every selector must match a
// series there.
func checkAPIServerMetrics(t *testing.T, sels []promSelector) {
	c, cp := sharedControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns = "rules-probe"
	m, v := shippedConfigurations(t, ns)
	for _, obj := range []client.Object{m, v} {
		obj.SetName("celadon-rules-probe")
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.Delete(context.Background(), obj); client.IgnoreNotFound(err) != nil {
				t.Errorf("deleting %T %s: %v", obj, obj.GetName(), err)
			}
		})
	}
	victim := victims(ctx, t, c, "rules-probe-victims")
	if err := c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: victim, Name: "protected"}}); err == nil {
		t.Fatal("a protected Service was deleted though the Fail webhook could not be called")
	}
	// A StatefulSet's pod, which the Ignore webhook's matchCondition lets
	// through to the call.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: victim, Name: "p",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "s", UID: "0f6c6f2c-2b56-4d7e-9a37-6a4f0f5d0c11"}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}}}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatalf("creating a Pod while the Ignore webhook cannot be called: %v", err)
	}

	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatalf("GET /metrics of the API server: %v", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parsing the API server's /metrics: %v", err)
	}
	for _, s := range sels {
		f, ok := families[s.metric]
		if !ok {
			t.Errorf("the API server exports no %s", s.metric)
			continue
		}
		if !slices.ContainsFunc(f.GetMetric(), func(m *dto.Metric) bool {
			ls := map[string]string{}
			for _, lp := range m.GetLabel() {
				ls[lp.GetName()] = lp.GetValue()
			}
			return s.matches(ls)
		}) {
			var series []string
			for _, m := range f.GetMetric() {
				series = append(series, m.String())
			}
			t.Errorf("no series of %s matches %v after failed calls to Celadon; the series:\n%s", s.metric, s.matchers, strings.Join(series, "\n"))
		}
	}
}
