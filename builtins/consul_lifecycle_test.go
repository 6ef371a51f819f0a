package builtins

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/engine"
)

// consulPolicy is a consulLifecycle policy on pod CREATE with the given
// spec.with (YAML lines indented by four) and failurePolicy.
func consulPolicy(with, failurePolicy string) string {
	p := `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: consul
spec:
  match:
    resources: [pods]
    operations: [CREATE]
  action: consulLifecycle
`
	if failurePolicy != "" {
		p += "  failurePolicy: " + failurePolicy + "\n"
	}
	if with != "" {
		p += "  with:\n" + with
	}
	return p
}

// consulPod is pod web-0 in namespace shop with the given annotations
// (lines indented by four) and spec (indented by two).
func consulPod(annotations, spec string) string {
	p := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-0\n  namespace: shop\n"
	if annotations != "" {
		p += "  annotations:\n" + annotations
	}
	return p + "spec:\n" + spec
}

// consulDefaultAgent is the hooks' scheme, port and retry parameters under
// the defaults.
var consulDefaultAgent = []string{"http", "8500", "10", "1", "8"}

// consulTCPCheck is the check parameters of a TCP check on port under the
// default timings.
func consulTCPCheck(port int) (head, tail string) {
	return `"TCP":"`, fmt.Sprintf(`:%d","Interval":"10s","Timeout":"5s","DeregisterCriticalServiceAfter":"1m"`, port)
}

// registerCmd is the postStart command for agent parameters, the service
// and the registration parameters, chaining own.
func registerCmd(agent []string, service, members, checkHead, checkTail string, own ...string) []string {
	argv := append([]string{"/bin/sh", "-c", consulRegisterScript, consulRegisterMarker}, agent...)
	return append(append(argv, service, members, checkHead, checkTail), own...)
}

// deregisterCmd is the preStop command for agent parameters and the
// service, chaining own.
func deregisterCmd(agent []string, service string, own ...string) []string {
	argv := append([]string{"/bin/sh", "-c", consulDeregisterScript, consulDeregisterMarker}, agent...)
	return append(append(argv, service), own...)
}

// lifecycleJSON is a lifecycle with exec hooks running post and pre.
func lifecycleJSON(post, pre []string) string {
	b, _ := json.Marshal(map[string]any{
		"postStart": map[string]any{"exec": map[string]any{"command": post}},
		"preStop":   map[string]any{"exec": map[string]any{"command": pre}},
	})
	return string(b)
}

// consulEnvYAML is the env entry of each downward-API variable the hooks read.
var consulEnvYAML = map[string]string{
	"HOST_IP":       "{name: HOST_IP, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: status.hostIP}}}",
	"POD_IP":        "{name: POD_IP, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: status.podIP}}}",
	"POD_NAME":      "{name: POD_NAME, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.name}}}",
	"POD_NAMESPACE": "{name: POD_NAMESPACE, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}}",
}

// consulEnv is a YAML flow list of the named downward-API entries, then
// extra ones.
func consulEnv(names []string, extra ...string) string {
	var items []string
	for _, n := range names {
		items = append(items, consulEnvYAML[n])
	}
	return "[" + strings.Join(append(items, extra...), ", ") + "]"
}

// consulAllEnv lists every downward-API variable, in the order added.
var consulAllEnv = []string{"HOST_IP", "POD_IP", "POD_NAME", "POD_NAMESPACE"}

func TestConsulLifecycle(t *testing.T) {
	tcpHead, tcpTail8080 := consulTCPCheck(8080)
	_, tcpTail9090 := consulTCPCheck(9090)
	webMembers := `"Name":"web","Port":8080,"Tags":[],"Meta":{}`
	basicHooks := lifecycleJSON(
		registerCmd(consulDefaultAgent, "web", webMembers, tcpHead, tcpTail8080),
		deregisterCmd(consulDefaultAgent, "web"))
	const appWithPort = "  containers:\n  - name: app\n    image: app\n    ports: [{name: http, containerPort: 8080}]\n"

	cases := []struct {
		name          string
		with          string
		failurePolicy string
		annotations   string
		spec          string
		wantSpec      string // "" when the pod must not change
		state         engine.State
		reason        string // the whole reason, or with error state a part of it
	}{
		{
			name: "basic: hooks and the downward-API env",
			with: "    service: web\n    port: 8080\n",
			spec: "  containers:\n  - {name: app, image: app}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    lifecycle: " + basicHooks +
				"\n    env: " + consulEnv(consulAllEnv) + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers app",
		},
		{
			name: "the port defaults to the first containerPort of the hooked container",
			with: "    service: web\n",
			spec: "  containers:\n  - {name: app, image: app, ports: [{containerPort: 8080}, {containerPort: 9090}]}\n  - {name: metrics, image: m, ports: [{containerPort: 9100}]}\n",
			wantSpec: "  containers:\n  - {name: app, image: app, ports: [{containerPort: 8080}, {containerPort: 9090}], lifecycle: " + basicHooks +
				", env: " + consulEnv(consulAllEnv) + "}\n  - {name: metrics, image: m, ports: [{containerPort: 9100}]}\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers app",
		},
		{
			name: "a port name is looked up in every container",
			with: "    service: web\n    port: metrics\n",
			spec: "  containers:\n  - {name: app, image: app}\n  - {name: exporter, image: e, ports: [{name: metrics, containerPort: 9090}]}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    lifecycle: " + lifecycleJSON(
				registerCmd(consulDefaultAgent, "web", `"Name":"web","Port":9090,"Tags":[],"Meta":{}`, tcpHead, tcpTail9090),
				deregisterCmd(consulDefaultAgent, "web")) +
				"\n    env: " + consulEnv(consulAllEnv) + "\n  - {name: exporter, image: e, ports: [{name: metrics, containerPort: 9090}]}\n",
			state:  engine.StatePass,
			reason: "Consul service web port 9090, TCP check: hooks added to containers app",
		},
		{
			name:   "a port name no container has is an error",
			with:   "    service: web\n    port: grpc\n",
			spec:   appWithPort,
			state:  engine.StateError,
			reason: `no container of the pod has a port named "grpc"`,
		},
		{
			name:   "no port anywhere is an error",
			with:   "    service: web\n",
			spec:   "  containers:\n  - {name: app, image: app}\n",
			state:  engine.StateError,
			reason: "no service port: container app declares no containerPort; set with.port or the annotation consul.celadon.io/port",
		},
		{
			name: "an HTTP check on another port, with timings, tags, meta and agent settings",
			with: `    service: web
    port: http
    tags: [v2, "canary \"blue\""]
    meta: {version: 2.4.0, team: shop}
    agentPort: 18500
    agentScheme: https
    retry: {attempts: 3, backoff: 2s, maxBackoff: 4s}
    check: {http: "/healthz?full=1&x=y", port: admin, interval: 5s, timeout: 1s, deregisterCriticalServiceAfter: 90s}
`,
			spec: "  containers:\n  - {name: app, image: app, ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 8081}]}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 8081}]\n    lifecycle: " + lifecycleJSON(
				registerCmd([]string{"https", "18500", "3", "2", "4"}, "web",
					`"Name":"web","Port":8080,"Tags":["v2","canary \"blue\""],"Meta":{"team":"shop","version":"2.4.0"}`,
					`"HTTP":"http://`, `:8081/healthz?full=1\u0026x=y","Interval":"5s","Timeout":"1s","DeregisterCriticalServiceAfter":"90s"`),
				deregisterCmd([]string{"https", "18500", "3", "2", "4"}, "web")) +
				"\n    env: " + consulEnv(consulAllEnv) + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, HTTP /healthz?full=1&x=y check: hooks added to containers app",
		},
		{
			name: "the policy is authoritative: a pod's annotations do not override the service it names",
			with: "    service: web\n    port: 8080\n",
			annotations: `    consul.celadon.io/service: checkout
    consul.celadon.io/port: admin
    consul.celadon.io/tags: canary
    consul.celadon.io/meta-x: y
`,
			spec: "  containers:\n  - {name: app, image: app, ports: [{name: admin, containerPort: 9090}]}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    ports: [{name: admin, containerPort: 9090}]\n    lifecycle: " + basicHooks +
				"\n    env: " + consulEnv(consulAllEnv) + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers app",
		},
		{
			name: "allowAnnotations true: annotations override service, port, tags and meta",
			with: "    service: web\n    port: 8080\n    tags: [v1]\n    meta: {team: shop, tier: front}\n    allowAnnotations: true\n",
			annotations: `    consul.celadon.io/service: checkout
    consul.celadon.io/port: admin
    consul.celadon.io/tags: "blue, canary,,"
    consul.celadon.io/meta-tier: back
    consul.celadon.io/meta-build: "1234"
    unrelated.example.com/x: y
`,
			spec: "  containers:\n  - {name: app, image: app, ports: [{name: admin, containerPort: 9090}]}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    ports: [{name: admin, containerPort: 9090}]\n    lifecycle: " + lifecycleJSON(
				registerCmd(consulDefaultAgent, "checkout", `"Name":"checkout","Port":9090,"Tags":["blue","canary"],"Meta":{"build":"1234","team":"shop","tier":"back"}`, tcpHead, tcpTail9090),
				deregisterCmd(consulDefaultAgent, "checkout")) +
				"\n    env: " + consulEnv(consulAllEnv) + "\n",
			state:  engine.StatePass,
			reason: "Consul service checkout port 9090, TCP check: hooks added to containers app",
		},
		{
			name:        "allowAnnotations false ignores them",
			with:        "    service: web\n    port: 8080\n    allowAnnotations: false\n",
			annotations: "    consul.celadon.io/service: checkout\n    consul.celadon.io/meta-x: y\n",
			spec:        "  containers:\n  - {name: app, image: app}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    lifecycle: " + basicHooks +
				"\n    env: " + consulEnv(consulAllEnv) + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers app",
		},
		{
			name:        "no with.service: the annotation names the service",
			with:        "    port: 8080\n",
			annotations: "    consul.celadon.io/service: web\n",
			spec:        "  containers:\n  - {name: app, image: app}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    lifecycle: " + basicHooks +
				"\n    env: " + consulEnv(consulAllEnv) + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers app",
		},
		{
			name:   "no with.service and no annotation: skipped",
			with:   "    port: 8080\n",
			spec:   "  containers:\n  - {name: app, image: app}\n",
			state:  engine.StateSkip,
			reason: "no service name: with.service is not set and the pod has no annotation consul.celadon.io/service",
		},
		{
			name:        "a malformed service annotation is an error",
			with:        "    service: web\n    allowAnnotations: true\n",
			annotations: "    consul.celadon.io/service: Web_1\n",
			spec:        appWithPort,
			state:       engine.StateError,
			reason:      `annotation consul.celadon.io/service: "Web_1" is not a valid Consul service name`,
		},
		{
			name:        "a malformed port annotation is an error",
			with:        "    service: web\n    allowAnnotations: true\n",
			annotations: "    consul.celadon.io/port: \"70000\"\n",
			spec:        appWithPort,
			state:       engine.StateError,
			reason:      "annotation consul.celadon.io/port: 70000 is not a port number (1-65535)",
		},
		{
			name:        "a reserved meta key from an annotation is an error",
			with:        "    service: web\n    allowAnnotations: true\n",
			annotations: "    consul.celadon.io/meta-consul-version: \"1\"\n",
			spec:        appWithPort,
			state:       engine.StateError,
			reason:      `key "consul-version": the prefix consul- is reserved by Consul`,
		},
		{
			name: "only the first container by default; listed containers otherwise",
			with: "    service: web\n    port: 8080\n    containers: [b, c]\n",
			spec: "  containers:\n  - {name: a, image: a}\n  - {name: b, image: b}\n  - {name: c, image: c, env: [{name: MODE, value: x}]}\n",
			wantSpec: "  containers:\n  - {name: a, image: a}\n  - {name: b, image: b, lifecycle: " + basicHooks + ", env: " + consulEnv(consulAllEnv) + "}\n" +
				"  - {name: c, image: c, lifecycle: " + basicHooks + ", env: " + consulEnv(nil, "{name: MODE, value: x}", consulEnvYAML["HOST_IP"], consulEnvYAML["POD_IP"], consulEnvYAML["POD_NAME"], consulEnvYAML["POD_NAMESPACE"]) + "}\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers b, c",
		},
		{
			name:   "none of the listed containers: skipped",
			with:   "    service: web\n    port: 8080\n    containers: [sidecar]\n",
			spec:   "  containers:\n  - {name: app, image: app}\n",
			state:  engine.StateSkip,
			reason: "the pod has no container named sidecar",
		},
		{
			name: "variables the container sets itself are kept",
			with: "    service: web\n    port: 8080\n",
			spec: "  containers:\n  - {name: app, image: app, env: [{name: POD_IP, value: 10.0.0.9}, {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    lifecycle: " + basicHooks + "\n    env: " +
				consulEnv(nil, "{name: POD_IP, value: 10.0.0.9}", "{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}", consulEnvYAML["HOST_IP"], consulEnvYAML["POD_NAMESPACE"]) + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers app",
		},
		{
			name: "the ACL token comes from a Secret",
			with: "    service: web\n    port: 8080\n    aclTokenSecret: {name: consul-token, key: token}\n",
			spec: "  containers:\n  - {name: app, image: app}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    lifecycle: " + basicHooks + "\n    env: " +
				consulEnv(consulAllEnv, "{name: CONSUL_HTTP_TOKEN, valueFrom: {secretKeyRef: {name: consul-token, key: token}}}") + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers app",
		},
		{
			name: "existing exec hooks are chained",
			with: "    service: web\n    port: 8080\n",
			spec: `  containers:
  - name: app
    image: app
    lifecycle:
      postStart: {exec: {command: [/app/warm-up, --cache]}}
      preStop: {exec: {command: [/bin/sh, -c, "sleep 5; kill -TERM 1"]}}
`,
			wantSpec: "  containers:\n  - name: app\n    image: app\n    lifecycle: " + lifecycleJSON(
				registerCmd(consulDefaultAgent, "web", webMembers, tcpHead, tcpTail8080, "/app/warm-up", "--cache"),
				deregisterCmd(consulDefaultAgent, "web", "/bin/sh", "-c", "sleep 5; kill -TERM 1")) +
				"\n    env: " + consulEnv(consulAllEnv) + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers app (chained with its postStart and preStop)",
		},
		{
			name: "a sleep preStop is chained as sleep; a missing postStart is added",
			with: "    service: web\n    port: 8080\n",
			spec: "  containers:\n  - {name: app, image: app, lifecycle: {preStop: {sleep: {seconds: 5}}}}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    lifecycle: " + lifecycleJSON(
				registerCmd(consulDefaultAgent, "web", webMembers, tcpHead, tcpTail8080),
				deregisterCmd(consulDefaultAgent, "web", "sleep", "5")) +
				"\n    env: " + consulEnv(consulAllEnv) + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers app (chained with its preStop)",
		},
		{
			name:          "an httpGet hook cannot be chained",
			with:          "    service: web\n    port: 8080\n",
			failurePolicy: "Fail",
			spec:          "  containers:\n  - {name: app, image: app, lifecycle: {preStop: {httpGet: {path: /drain, port: 8080}}}}\n",
			state:         engine.StateError,
			reason:        "container app already has a preStop hook of kind httpGet, which cannot run inside an exec hook",
		},
		{
			name:          "existingHooks refuse: any hook is an error",
			with:          "    service: web\n    port: 8080\n    existingHooks: refuse\n",
			failurePolicy: "Fail",
			spec:          "  containers:\n  - {name: app, image: app, lifecycle: {postStart: {exec: {command: [/app/warm-up]}}}}\n",
			state:         engine.StateError,
			reason:        "container app already has a postStart hook (exec) and existingHooks is refuse",
		},
		{
			name: "existingHooks refuse: an empty lifecycle is no hook",
			with: "    service: web\n    port: 8080\n    existingHooks: refuse\n",
			spec: "  containers:\n  - {name: app, image: app, lifecycle: {}}\n",
			wantSpec: "  containers:\n  - name: app\n    image: app\n    lifecycle: " + basicHooks +
				"\n    env: " + consulEnv(consulAllEnv) + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: hooks added to containers app",
		},
		{
			name:   "a pod that has the hooks already gets no patch",
			with:   "    service: web\n    port: 8080\n    existingHooks: refuse\n",
			spec:   "  containers:\n  - name: app\n    image: app\n    lifecycle: " + basicHooks + "\n    env: " + consulEnv(consulAllEnv) + "\n",
			state:  engine.StatePass,
			reason: "Consul service web port 8080, TCP check: already in containers app",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := compilePolicies(t, consulPolicy(c.with, c.failurePolicy))
			in := yamlJSON(t, consulPod(c.annotations, c.spec))
			req := admissionRequest(t, admissionv1.Create, in, nil)
			d := evaluate(t, snap, req, engine.EvalOptions{})
			if len(d.Results) != 1 {
				t.Fatalf("results %+v", d.Results)
			}
			r := d.Results[0]
			if r.State != c.state {
				t.Fatalf("state %s (%s); want %s", r.State, r.Reason, c.state)
			}
			if c.state == engine.StateError {
				if !strings.Contains(r.Reason, c.reason) {
					t.Errorf("reason\n%q, want it to contain\n%q", r.Reason, c.reason)
				}
				if wantAllowed := c.failurePolicy != "Fail"; d.Allowed != wantAllowed || len(d.Patch) != 0 {
					t.Errorf("allowed %v with %d ops; want %v with none", d.Allowed, len(d.Patch), wantAllowed)
				}
				if !d.Allowed && !strings.Contains(d.Message, c.reason) {
					t.Errorf("denial %q does not carry the reason", d.Message)
				}
				return
			}
			if !d.Allowed {
				t.Fatalf("denied: %s", d.Message)
			}
			if r.Reason != c.reason {
				t.Errorf("reason\n%q, want\n%q", r.Reason, c.reason)
			}
			if c.wantSpec == "" {
				checkUnchanged(t, d)
				return
			}
			checkMutation(t, snap, req, d, yamlJSON(t, consulPod(c.annotations, c.wantSpec)), engine.EvalOptions{})
			checkConsulBodies(t, applyDecision(t, in, d))
		})
	}
}

// checkConsulBodies assembles the registration body of every postStart
// hook of pod as its script does, for an IPv4 and an IPv6 address, and
// checks that it is JSON with the fields Consul reads.
func checkConsulBodies(t *testing.T, podJSON []byte) {
	t.Helper()
	var pod corev1.Pod
	if err := json.Unmarshal(podJSON, &pod); err != nil {
		t.Fatal(err)
	}
	for _, c := range pod.Spec.Containers {
		if c.Lifecycle == nil || c.Lifecycle.PostStart == nil || c.Lifecycle.PostStart.Exec == nil {
			continue
		}
		argv := c.Lifecycle.PostStart.Exec.Command
		if len(argv) < 13 || argv[3] != consulRegisterMarker {
			t.Fatalf("container %s: postStart %q is not ours", c.Name, argv)
		}
		members, head, tail := argv[10], argv[11], argv[12]
		for _, ip := range []struct{ addr, inCheck string }{{"10.1.2.3", "10.1.2.3"}, {"fd00::3", "[fd00::3]"}} {
			body := `{"ID":"web.shop.web-0","Address":"` + ip.addr + `",` + members + `,"Check":{` + head + ip.inCheck + tail + `}}`
			var reg struct {
				ID, Name, Address string
				Port              int
				Tags              []string
				Meta              map[string]string
				Check             struct{ HTTP, TCP, Interval, Timeout, DeregisterCriticalServiceAfter string }
			}
			if err := json.Unmarshal([]byte(body), &reg); err != nil {
				t.Fatalf("container %s: the registration is not JSON: %v\n%s", c.Name, err, body)
			}
			target := reg.Check.TCP + reg.Check.HTTP
			if reg.Name == "" || reg.Port == 0 || reg.Address != ip.addr || !strings.Contains(target, ip.inCheck+":") || reg.Check.DeregisterCriticalServiceAfter == "" {
				t.Errorf("container %s: registration %+v from\n%s", c.Name, reg, body)
			}
		}
	}
}

// TestConsulLifecycleSkips: other operations and kinds are left alone.
func TestConsulLifecycleSkips(t *testing.T) {
	snap := compilePolicies(t, strings.Replace(consulPolicy("    service: web\n    port: 8080\n", ""), "operations: [CREATE]", `operations: ["*"]`, 1))
	pod := yamlJSON(t, consulPod("", "  containers:\n  - {name: app, image: app}\n"))
	d := evaluate(t, snap, admissionRequest(t, admissionv1.Update, pod, pod), engine.EvalOptions{})
	if r := d.Results[0]; r.State != engine.StateSkip || r.Reason != "lifecycle hooks can only be added when a pod is created, not on UPDATE" || len(d.Patch) != 0 {
		t.Errorf("UPDATE: %s %q, %d ops", r.State, r.Reason, len(d.Patch))
	}
	snap = compilePolicies(t, strings.Replace(consulPolicy("    service: web\n", ""), "resources: [pods]", "resources: [configmaps]", 1))
	cm := yamlJSON(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: shop}\n")
	d = evaluate(t, snap, admissionRequest(t, admissionv1.Create, cm, nil), engine.EvalOptions{})
	if r := d.Results[0]; r.State != engine.StateSkip || r.Reason != "the object is a ConfigMap, not a Pod" {
		t.Errorf("ConfigMap: %s %q", r.State, r.Reason)
	}
}

// TestConsulLifecycleDefaults: an explicit with holding every default
// gives the same hooks as the defaults.
func TestConsulLifecycleDefaults(t *testing.T) {
	pod := yamlJSON(t, consulPod("", "  containers:\n  - {name: app, image: app, ports: [{containerPort: 8080}]}\n  - {name: b, image: b}\n"))
	var first string
	for _, with := range []string{
		"    service: web\n",
		"    service: web\n    containers: [app]\n    agentPort: 8500\n    agentScheme: http\n    allowAnnotations: true\n    existingHooks: chain\n" +
			"    retry: {attempts: 10, backoff: 1s, maxBackoff: 8s}\n    check: {tcp: true, interval: 10s, timeout: 5s, deregisterCriticalServiceAfter: 1m}\n",
		"    service: web\n    port: 8080\n    tags: []\n    meta: {}\n    retry: {}\n    agentScheme: \"\"\n",
	} {
		snap := compilePolicies(t, consulPolicy(with, ""))
		d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, pod, nil), engine.EvalOptions{})
		p, _ := d.PatchJSON()
		got := string(p)
		if first == "" {
			first = got
			if len(d.Patch) != 2 {
				t.Fatalf("defaults: %s", got)
			}
		} else if got != first {
			t.Errorf("with\n%s: %s\nwant %s", with, got, first)
		}
	}
}

func TestConsulLifecycleLoadErrors(t *testing.T) {
	head := consulPolicy("", "") + "  with:\n" // with: is line 10
	cases := []struct {
		name, with, want string
	}{
		{"unknown field", "    service: web\n    servce: web\n", `p.yaml:12:5: policy "consul": with.servce: unknown field`},
		{"bad service", "    service: Web_App\n", `p.yaml:11:5: policy "consul": with.service: "Web_App" is not a valid Consul service name`},
		{"port out of range", "    service: web\n    port: 0\n", `p.yaml:12:5: policy "consul": with.port: 0 is not a port number (1-65535)`},
		{"bad port name", "    service: web\n    port: http_port\n", `p.yaml:12:5: policy "consul": with.port: "http_port" is neither a port number nor a port name`},
		{"empty tag", "    service: web\n    tags: [a, \" \"]\n", `p.yaml:12:5: policy "consul": with.tags: [1]: tag " " is empty`},
		{"control character in a tag", "    service: web\n    tags: [\"a\\nb\"]\n", `p.yaml:12:5: policy "consul": with.tags: [0]: tag "a\nb" holds a control character`},
		{"bad meta key", "    service: web\n    meta: {\"a.b\": x}\n", `p.yaml:12:5: policy "consul": with.meta: key "a.b" must be 1 to 128 letters, digits, '_' or '-'`},
		{"reserved meta key", "    service: web\n    meta: {consul-x: y}\n", `p.yaml:12:5: policy "consul": with.meta: key "consul-x": the prefix consul- is reserved by Consul`},
		{"empty containers", "    service: web\n    containers: []\n", `p.yaml:12:5: policy "consul": with.containers: is empty; omit it to hook the first container`},
		{"agent port", "    service: web\n    agentPort: 70000\n", `p.yaml:12:5: policy "consul": with.agentPort: 70000 is not a port number (1-65535)`},
		{"agent scheme", "    service: web\n    agentScheme: grpc\n", `p.yaml:12:5: policy "consul": with.agentScheme: must be http or https, not "grpc"`},
		{"existing hooks", "    service: web\n    existingHooks: replace\n", `p.yaml:12:5: policy "consul": with.existingHooks: must be chain or refuse, not "replace"`},
		{"check: both", "    service: web\n    check: {http: /h, tcp: true}\n", `p.yaml:12:5: policy "consul": with.check: set one of http and tcp, not both`},
		{"check: neither", "    service: web\n    check: {interval: 5s}\n", `p.yaml:12:5: policy "consul": with.check: set http (a path) or tcp: true`},
		{"check: a path with a quote", "    service: web\n    check: {http: \"/a\\\"b\"}\n", `p.yaml:12:13: policy "consul": with.check.http: "/a\"b" is not a URL path`},
		{"check: a relative path", "    service: web\n    check: {http: healthz}\n", `p.yaml:12:13: policy "consul": with.check.http: "healthz" is not a URL path`},
		{"check: bad interval", "    service: web\n    check: {tcp: true, interval: often}\n", `p.yaml:12:24: policy "consul": with.check.interval: "often" is not a positive duration such as 10s or 1m`},
		{"check: bad port", "    service: web\n    check: {tcp: true, port: 65536}\n", `p.yaml:12:24: policy "consul": with.check.port: 65536 is not a port number (1-65535)`},
		{"secret name", "    service: web\n    aclTokenSecret: {name: Consul_Token, key: token}\n", `p.yaml:12:22: policy "consul": with.aclTokenSecret.name: "Consul_Token" is not a valid Secret name`},
		{"secret key", "    service: web\n    aclTokenSecret: {name: consul, key: \"a/b\"}\n", `p.yaml:12:36: policy "consul": with.aclTokenSecret.key: "a/b" is not a valid Secret key`},
		{"retry attempts", "    service: web\n    retry: {attempts: -1}\n", `p.yaml:12:13: policy "consul": with.retry.attempts: -1 is not between 1 and 1000`},
		{"retry backoff", "    service: web\n    retry: {backoff: 500ms}\n", `p.yaml:12:13: policy "consul": with.retry.backoff: "500ms" is not a whole number of seconds between 1s and 1h`},
		{"retry max below backoff", "    service: web\n    retry: {backoff: 4s, maxBackoff: 2s}\n", `p.yaml:12:26: policy "consul": with.retry.maxBackoff: 2s is less than backoff 4s`},
		{"wrong type", "    service: web\n    tags: v1\n", `p.yaml:12:5: policy "consul": with.tags: expected a list, got a string`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkLoadError(t, compileErrors(t, head+c.with), c.want)
		})
	}
}

// TestConsulLifecycleSecondPolicy: a second consulLifecycle policy finds
// the first one's hooks and leaves them alone, so one pod never gets two
// registrations in one container.
func TestConsulLifecycleSecondPolicy(t *testing.T) {
	first := consulPolicy("    service: web\n    port: 8080\n", "")
	second := strings.Replace(consulPolicy("    service: other\n    port: 9090\n    existingHooks: refuse\n", "Fail"), "name: consul", "name: consul-other", 1)
	snap := compilePolicies(t, first+"---\n"+second)
	pod := yamlJSON(t, consulPod("", "  containers:\n  - {name: app, image: app}\n"))
	req := admissionRequest(t, admissionv1.Create, pod, nil)
	d := evaluate(t, snap, req, engine.EvalOptions{})
	if !d.Allowed || statesOf(d) != "consul=pass,consul-other=pass" {
		t.Fatalf("allowed %v, %s: %s", d.Allowed, statesOf(d), d.Message)
	}
	var got corev1.Pod
	if err := json.Unmarshal(applyDecision(t, pod, d), &got); err != nil {
		t.Fatal(err)
	}
	if argv := got.Spec.Containers[0].Lifecycle.PostStart.Exec.Command; argv[9] != "web" {
		t.Errorf("postStart registers %q, want the first policy's web", argv[9])
	}
	again := *req
	again.Object = runtime.RawExtension{Raw: applyDecision(t, pod, d)}
	if d2 := evaluate(t, snap, &again, engine.EvalOptions{}); len(d2.Patch) != 0 {
		t.Errorf("not idempotent: %d ops", len(d2.Patch))
	}
}
