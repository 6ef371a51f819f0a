package builtins

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"celadon.io/celadon/engine"
)

// sidecarPolicy is an injectSidecar policy for pods on CREATE; with is the
// body of spec.with, indented by four. spec.with is line 10.
func sidecarPolicy(with string) string {
	return `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: sidecar
spec:
  match:
    resources: [pods]
    operations: [CREATE]
  action: injectSidecar
  with:
` + with
}

// sidecarPod is pod web-0 with extra metadata lines (indented by two) and
// spec as its spec (indented by two).
func sidecarPod(meta, spec string) string {
	return `apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {app: web}
` + meta + `spec:
` + spec
}

// sidecarLogShipper is a sidecar template, with a shared volume mounted
// into the app containers.
const sidecarLogShipper = `    containers:
    - name: log-shipper
      image: registry.example.com/fluent-bit:3.1
      args: [--config, /etc/fluent-bit/fluent-bit.conf]
      resources:
        requests: {cpu: 0.05, memory: 32Mi}
      volumeMounts:
      - {name: logs, mountPath: /var/log/app, readOnly: true}
    volumes:
    - name: logs
      emptyDir: {}
    volumeMounts:
    - mount: {name: logs, mountPath: /var/log/app}
`

func TestInjectSidecar(t *testing.T) {
	const twoApps = `  containers:
  - name: app
    image: app:1
  - name: worker
    image: worker:1
    volumeMounts:
    - {name: data, mountPath: /data}
  volumes:
  - name: data
    emptyDir: {}
`
	cases := []struct {
		name     string
		with     string
		meta     string
		spec     string
		wantSpec string // "" when the pod must not change
		state    engine.State
		reason   string
		warning  string
	}{
		{
			name: "a sidecar, its volume, mounted into every app container",
			with: sidecarLogShipper,
			spec: twoApps,
			wantSpec: `  containers:
  - name: app
    image: app:1
    volumeMounts:
    - {name: logs, mountPath: /var/log/app}
  - name: worker
    image: worker:1
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: logs, mountPath: /var/log/app}
  - name: log-shipper
    image: registry.example.com/fluent-bit:3.1
    args: [--config, /etc/fluent-bit/fluent-bit.conf]
    resources:
      requests: {cpu: 0.05, memory: 32Mi}
    volumeMounts:
    - {name: logs, mountPath: /var/log/app, readOnly: true}
  volumes:
  - name: data
    emptyDir: {}
  - name: logs
    emptyDir: {}
`,
			state:  engine.StatePass,
			reason: "injected container log-shipper, volume logs, mount logs at /var/log/app in app, worker",
		},
		{
			name: "already present as the API server stores it: nothing to do",
			with: sidecarLogShipper,
			spec: `  containers:
  - name: app
    image: app:1
    volumeMounts:
    - {name: logs, mountPath: /var/log/app}
  - name: log-shipper
    image: registry.example.com/fluent-bit:3.1
    args: [--config, /etc/fluent-bit/fluent-bit.conf]
    imagePullPolicy: IfNotPresent
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
    resources:
      requests: {cpu: 50m, memory: "33554432"}
    volumeMounts:
    - {name: logs, mountPath: /var/log/app, readOnly: true}
  volumes:
  - name: logs
    emptyDir: {}
`,
			state:  engine.StatePass,
			reason: "already injected: container log-shipper, volume logs, mount logs at /var/log/app in app",
		},
		{
			name: "init containers go last by default, after the pod's own",
			with: `    initContainers:
    - {name: fetch-config, image: "curl:8", command: [sh, -c, "curl -o /config/app.yaml http://config/app"]}
`,
			spec: `  initContainers:
  - {name: migrate, image: "migrate:2"}
  containers:
  - {name: app, image: "app:1"}
`,
			wantSpec: `  initContainers:
  - {name: migrate, image: "migrate:2"}
  - {name: fetch-config, image: "curl:8", command: [sh, -c, "curl -o /config/app.yaml http://config/app"]}
  containers:
  - {name: app, image: "app:1"}
`,
			state:  engine.StatePass,
			reason: "injected init container fetch-config (last)",
		},
		{
			name: "initContainerPlacement first: before the pod's own, in template order",
			with: `    initContainerPlacement: first
    initContainers:
    - {name: a, image: "a:1"}
    - {name: b, image: "b:1"}
`,
			spec: `  initContainers:
  - {name: migrate, image: "migrate:2"}
  containers:
  - {name: app, image: "app:1"}
`,
			wantSpec: `  initContainers:
  - {name: a, image: "a:1"}
  - {name: b, image: "b:1"}
  - {name: migrate, image: "migrate:2"}
  containers:
  - {name: app, image: "app:1"}
`,
			state:  engine.StatePass,
			reason: "injected init container a, b (first)",
		},
		{
			name: "initContainerPlacement first without init containers: the list is created",
			with: `    initContainerPlacement: first
    initContainers:
    - {name: a, image: "a:1"}
`,
			spec:     "  containers:\n  - {name: app, image: \"app:1\"}\n",
			wantSpec: "  initContainers:\n  - {name: a, image: \"a:1\"}\n  containers:\n  - {name: app, image: \"app:1\"}\n",
			state:    engine.StatePass,
			reason:   "injected init container a (first)",
		},
		{
			name: "nativeSidecar: the sidecar is an init container with restartPolicy Always, after injected init containers",
			with: `    nativeSidecar: true
    initContainerPlacement: first
    containers:
    - {name: proxy, image: "envoy:1.31"}
    initContainers:
    - {name: iptables, image: "init:1"}
`,
			spec: `  initContainers:
  - {name: migrate, image: "migrate:2"}
  containers:
  - {name: app, image: "app:1"}
`,
			wantSpec: `  initContainers:
  - {name: iptables, image: "init:1"}
  - {name: proxy, image: "envoy:1.31", restartPolicy: Always}
  - {name: migrate, image: "migrate:2"}
  containers:
  - {name: app, image: "app:1"}
`,
			state:  engine.StatePass,
			reason: "injected init container iptables, proxy (first)",
		},
		{
			name: "an init container with restartPolicy Always is a native sidecar",
			with: `    initContainers:
    - {name: proxy, image: "envoy:1.31", restartPolicy: Always}
`,
			spec:     "  containers:\n  - {name: app, image: \"app:1\"}\n",
			wantSpec: "  initContainers:\n  - {name: proxy, image: \"envoy:1.31\", restartPolicy: Always}\n  containers:\n  - {name: app, image: \"app:1\"}\n",
			state:    engine.StatePass,
			reason:   "injected init container proxy (last)",
		},
		{
			name: "native sidecar already present: nothing to do",
			with: `    nativeSidecar: true
    containers:
    - {name: proxy, image: "envoy:1.31"}
`,
			spec:   "  initContainers:\n  - {name: proxy, image: \"envoy:1.31\", restartPolicy: Always, imagePullPolicy: IfNotPresent}\n  containers:\n  - {name: app, image: \"app:1\"}\n",
			state:  engine.StatePass,
			reason: "already injected: init container proxy",
		},
		{
			name: "a native sidecar template meets a classic sidecar of that name: conflict",
			with: `    nativeSidecar: true
    containers:
    - {name: proxy, image: "envoy:1.31"}
`,
			spec:    "  containers:\n  - {name: app, image: \"app:1\"}\n  - {name: proxy, image: \"envoy:1.31\"}\n",
			state:   engine.StateSkip,
			reason:  "nothing injected: init container proxy: the pod has a container of that name in spec.containers",
			warning: "sidecar: nothing injected: init container proxy: the pod has a container of that name in spec.containers",
		},
		{
			name: "a container of that name with another image: skipped with a warning, nothing injected",
			with: sidecarLogShipper,
			spec: `  containers:
  - {name: app, image: "app:1"}
  - {name: log-shipper, image: "registry.example.com/fluent-bit:2.0", args: [--config, /etc/fluent-bit/fluent-bit.conf]}
`,
			state:   engine.StateSkip,
			reason:  "nothing injected: container log-shipper: the pod's differs from the template in image, resources, volumeMounts",
			warning: "sidecar: nothing injected: container log-shipper: the pod's differs from the template in image, resources, volumeMounts",
		},
		{
			name: "a volume of that name with another source: conflict",
			with: sidecarLogShipper,
			spec: `  containers:
  - {name: app, image: "app:1"}
  volumes:
  - {name: logs, hostPath: {path: /var/log}}
`,
			state:   engine.StateSkip,
			reason:  "nothing injected: volume logs: the pod's differs from the template in emptyDir",
			warning: "sidecar: nothing injected: volume logs: the pod's differs from the template in emptyDir",
		},
		{
			name: "a mount at that path of another volume: conflict",
			with: sidecarLogShipper,
			spec: `  containers:
  - name: app
    image: app:1
    volumeMounts: [{name: data, mountPath: /var/log/app}]
  volumes:
  - {name: data, emptyDir: {}}
`,
			state:   engine.StateSkip,
			reason:  "nothing injected: mount at /var/log/app in container app: the pod's differs from the template in name",
			warning: "sidecar: nothing injected: mount at /var/log/app in container app: the pod's differs from the template in name",
		},
		{
			name: "quantities compare by value; a template that sets null wants the field absent",
			with: `    containers:
    - name: s
      image: s:1
      command: null
      resources: {limits: {memory: 1Gi, cpu: 1}}
`,
			spec:   "  containers:\n  - {name: app, image: \"app:1\"}\n  - {name: s, image: \"s:1\", resources: {limits: {memory: \"1073741824\", cpu: 1000m}, requests: {memory: 1Gi, cpu: \"1\"}}}\n",
			state:  engine.StatePass,
			reason: "already injected: container s",
		},
		{
			name: "mounts into named containers, init containers included; missing names are reported",
			with: `    volumes:
    - {name: ca, configMap: {name: trusted-ca}}
    volumeMounts:
    - containers: [worker, migrate, ghost]
      mount: {name: ca, mountPath: /etc/ssl/certs, readOnly: true}
`,
			spec: `  initContainers:
  - {name: migrate, image: "migrate:2"}
  containers:
  - {name: app, image: "app:1"}
  - {name: worker, image: "worker:1"}
`,
			wantSpec: `  initContainers:
  - name: migrate
    image: migrate:2
    volumeMounts: [{name: ca, mountPath: /etc/ssl/certs, readOnly: true}]
  containers:
  - {name: app, image: "app:1"}
  - name: worker
    image: worker:1
    volumeMounts: [{name: ca, mountPath: /etc/ssl/certs, readOnly: true}]
  volumes:
  - {name: ca, configMap: {name: trusted-ca}}
`,
			state:  engine.StatePass,
			reason: "injected volume ca, mount ca at /etc/ssl/certs in worker, migrate; no container named ghost",
		},
		{
			name: "a mount of a volume the pod has: only the mount",
			with: `    volumeMounts:
    - mount: {name: data, mountPath: /shared, subPath: web}
`,
			spec:     twoApps,
			wantSpec: strings.Replace(strings.Replace(twoApps, "    image: app:1\n", "    image: app:1\n    volumeMounts: [{name: data, mountPath: /shared, subPath: web}]\n", 1), "    - {name: data, mountPath: /data}\n", "    - {name: data, mountPath: /data}\n    - {name: data, mountPath: /shared, subPath: web}\n", 1),
			state:    engine.StatePass,
			reason:   "injected mount data at /shared in app, worker",
		},
		{
			name: "templates: CEL in strings, mixed with text, and an escaped ${{",
			with: `    containers:
    - name: agent
      image: ${{ object.metadata.annotations['agent.example.com/image'] }}
      args:
      - --service=${{ object.metadata.labels.app }}.${{ request.namespace }}
      - --literal=$${{ not an expression }}
      env:
      - name: POD
        value: "${{ object.metadata.name }}"
`,
			meta: "  annotations: {agent.example.com/image: \"agent:7\"}\n",
			spec: "  containers:\n  - {name: app, image: \"app:1\"}\n",
			wantSpec: `  containers:
  - {name: app, image: "app:1"}
  - name: agent
    image: agent:7
    args: [--service=web.shop, "--literal=${{ not an expression }}"]
    env: [{name: POD, value: web-0}]
`,
			state:  engine.StatePass,
			reason: "injected container agent",
		},
		{
			name: "the shared volume: an init container prepares files the app reads",
			with: `    initContainers:
    - name: render-config
      image: registry.example.com/confd:0.16
      args: [-onetime, -backend, env, -confdir, /work]
      volumeMounts: [{name: config, mountPath: /work/out}]
    volumes:
    - {name: config, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
    volumeMounts:
    - mount: {name: config, mountPath: /etc/app, readOnly: true}
`,
			spec: "  containers:\n  - {name: app, image: \"app:1\"}\n",
			wantSpec: `  initContainers:
  - name: render-config
    image: registry.example.com/confd:0.16
    args: [-onetime, -backend, env, -confdir, /work]
    volumeMounts: [{name: config, mountPath: /work/out}]
  containers:
  - name: app
    image: app:1
    volumeMounts: [{name: config, mountPath: /etc/app, readOnly: true}]
  volumes:
  - {name: config, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
`,
			state:  engine.StatePass,
			reason: "injected init container render-config (last), volume config, mount config at /etc/app in app",
		},
		{
			name: "present, its env and ports extended by another policy or webhook: still the same sidecar",
			with: `    containers:
    - name: agent
      image: agent:1
      env: [{name: MODE, value: push}]
      ports: [{containerPort: 8125}]
`,
			spec: `  containers:
  - {name: app, image: "app:1"}
  - name: agent
    image: agent:1
    env: [{name: TRACE, value: "1"}, {name: MODE, value: push}, {name: INDEX, value: "0"}]
    ports: [{containerPort: 8125, protocol: UDP}]
`,
			state:  engine.StatePass,
			reason: "already injected: container agent",
		},
		{
			name: "present, with the service account token mounted by the API server on reinvocation: still the same sidecar",
			with: sidecarLogShipper,
			spec: `  containers:
  - name: app
    image: app:1
    volumeMounts:
    - {name: kube-api-access-x7k2p, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
    - {name: logs, mountPath: /var/log/app}
  - name: log-shipper
    image: registry.example.com/fluent-bit:3.1
    args: [--config, /etc/fluent-bit/fluent-bit.conf]
    resources:
      requests: {cpu: 50m, memory: 32Mi}
    volumeMounts:
    - {name: logs, mountPath: /var/log/app, readOnly: true}
    - {name: kube-api-access-x7k2p, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
  volumes:
  - {name: kube-api-access-x7k2p, projected: {sources: [{serviceAccountToken: {path: token}}]}}
  - name: logs
    emptyDir: {}
`,
			state:  engine.StatePass,
			reason: "already injected: container log-shipper, volume logs, mount logs at /var/log/app in app",
		},
		{
			name: "present with a template's env variable changed: conflict",
			with: `    containers:
    - name: agent
      image: agent:1
      env: [{name: MODE, value: push}, {name: LEVEL, value: info}]
`,
			spec: `  containers:
  - {name: app, image: "app:1"}
  - name: agent
    image: agent:1
    env: [{name: MODE, value: pull}, {name: LEVEL, value: info}]
`,
			state:   engine.StateSkip,
			reason:  "nothing injected: container agent: the pod's differs from the template in env[0].value",
			warning: "sidecar: nothing injected: container agent: the pod's differs from the template in env[0].value",
		},
		{
			name: "present with the template's env in another order: conflict",
			with: `    containers:
    - name: agent
      image: agent:1
      env: [{name: A, value: "1"}, {name: B, value: "$(A)"}]
`,
			spec: `  containers:
  - {name: app, image: "app:1"}
  - name: agent
    image: agent:1
    env: [{name: B, value: "$(A)"}, {name: A, value: "1"}, {name: C, value: "3"}]
`,
			state:   engine.StateSkip,
			reason:  "nothing injected: container agent: the pod's differs from the template in env",
			warning: "sidecar: nothing injected: container agent: the pod's differs from the template in env",
		},
		{
			name: "partly present: only what is missing is added",
			with: sidecarLogShipper,
			spec: `  containers:
  - {name: app, image: "app:1"}
  volumes:
  - {name: logs, emptyDir: {}}
`,
			wantSpec: `  containers:
  - name: app
    image: app:1
    volumeMounts: [{name: logs, mountPath: /var/log/app}]
  - name: log-shipper
    image: registry.example.com/fluent-bit:3.1
    args: [--config, /etc/fluent-bit/fluent-bit.conf]
    resources:
      requests: {cpu: 0.05, memory: 32Mi}
    volumeMounts:
    - {name: logs, mountPath: /var/log/app, readOnly: true}
  volumes:
  - {name: logs, emptyDir: {}}
`,
			state:  engine.StatePass,
			reason: "injected container log-shipper, mount logs at /var/log/app in app; already present: volume logs",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := compilePolicies(t, sidecarPolicy(c.with))
			in := yamlJSON(t, sidecarPod(c.meta, c.spec))
			req := admissionRequest(t, admissionv1.Create, in, nil)
			d := evaluate(t, snap, req, engine.EvalOptions{})
			if len(d.Results) != 1 {
				t.Fatalf("results %+v", d.Results)
			}
			r := d.Results[0]
			if r.State != c.state || !d.Allowed {
				t.Fatalf("state %s allowed %v (%s); want %s", r.State, d.Allowed, r.Reason, c.state)
			}
			if r.Reason != c.reason {
				t.Errorf("reason\n%q, want\n%q", r.Reason, c.reason)
			}
			checkWarnings(t, d, c.warning)
			if c.wantSpec == "" {
				checkUnchanged(t, d)
				return
			}
			checkMutation(t, snap, req, d, yamlJSON(t, sidecarPod(c.meta, c.wantSpec)), engine.EvalOptions{})
		})
	}
}

// TestInjectSidecarOps pins the exact operations: targeted, in an order
// whose indices hold, and values holding only the fields the user wrote.
func TestInjectSidecarOps(t *testing.T) {
	snap := compilePolicies(t, sidecarPolicy(`    initContainerPlacement: first
    initContainers:
    - {name: setup, image: "setup:1"}
    containers:
    - {name: proxy, image: "envoy:1", ports: [{containerPort: 15001}]}
    volumes:
    - {name: shared, emptyDir: {}}
    volumeMounts:
    - containers: [migrate, app]
      mount: {name: shared, mountPath: /shared}
`))
	pod := sidecarPod("", `  initContainers:
  - {name: migrate, image: "m:1"}
  containers:
  - {name: app, image: "a:1", volumeMounts: [{name: x, mountPath: /x}]}
  volumes:
  - {name: x, emptyDir: {}}
`)
	d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil), engine.EvalOptions{})
	got, err := d.PatchJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"add","path":"/spec/volumes/-","value":{"name":"shared","emptyDir":{}}},` +
		`{"op":"add","path":"/spec/initContainers/0/volumeMounts","value":[{"name":"shared","mountPath":"/shared"}]},` +
		`{"op":"add","path":"/spec/containers/0/volumeMounts/-","value":{"name":"shared","mountPath":"/shared"}},` +
		`{"op":"add","path":"/spec/containers/-","value":{"name":"proxy","image":"envoy:1","ports":[{"containerPort":15001}]}},` +
		`{"op":"add","path":"/spec/initContainers/0","value":{"name":"setup","image":"setup:1"}}]`
	if !sameJSON(t, got, []byte(want)) {
		t.Fatalf("patch\n%s\nwant\n%s", got, want)
	}
	if r := d.Results[0].Reason; r != "injected container proxy, init container setup (first), volume shared, mount shared at /shared in migrate, app" {
		t.Errorf("reason %q", r)
	}
}

// TestInjectSidecarGenerateName: a pod of a controller is admitted with
// generateName and no name (the API server names it afterwards), so a
// template reading object.metadata.name errors; the optional form falls
// back to generateName.
func TestInjectSidecarGenerateName(t *testing.T) {
	pod := strings.Replace(sidecarPod("", "  containers:\n  - {name: app, image: \"app:1\"}\n"), "  name: web-0\n", "  generateName: web-7d4f9-\n", 1)
	for _, c := range []struct{ expr, reason string }{
		{"object.metadata.name", "with.containers[0].args[0]: no such key: name"},
		{"object.metadata.?name.orValue(object.metadata.generateName)", "injected container agent"},
	} {
		t.Run(c.expr, func(t *testing.T) {
			snap := compilePolicies(t, sidecarPolicy("    containers:\n    - {name: agent, image: \"agent:1\", args: [\"--node=${{ "+c.expr+" }}\"]}\n"))
			req := admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil)
			d := evaluate(t, snap, req, engine.EvalOptions{})
			if r := d.Results[0]; r.Reason != c.reason {
				t.Fatalf("state %s reason %q; want %q", r.State, r.Reason, c.reason)
			}
			if len(d.Patch) > 0 {
				want := strings.Replace(pod, "  - {name: app, image: \"app:1\"}\n", "  - {name: app, image: \"app:1\"}\n  - {name: agent, image: \"agent:1\", args: [--node=web-7d4f9-]}\n", 1)
				checkMutation(t, snap, req, d, yamlJSON(t, want), engine.EvalOptions{})
			}
		})
	}
}

// TestInjectSidecarReinvoked: a later policy adds a variable to every
// container, the injected sidecar included, so the sidecar policy runs
// again on the final object (reinvocation). It must find its sidecar in
// place: no second copy, and no conflict, even under onConflict: fail with
// failurePolicy: Fail, which would deny the pod.
func TestInjectSidecarReinvoked(t *testing.T) {
	policies := sidecarPolicy(`    onConflict: fail
    nativeSidecar: true
    containers:
    - name: agent
      image: agent:1
      env: [{name: MODE, value: push}]
    volumes: [{name: spool, emptyDir: {}}]
    volumeMounts: [{mount: {name: spool, mountPath: /spool}}]
`) + "  failurePolicy: Fail\n---\n" + `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: index
spec:
  match:
    resources: [pods]
    operations: [CREATE]
  action: injectEnvIndex
  with: {initContainers: true}
`
	snap := compilePolicies(t, policies)
	const owner = "  ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: web, uid: 5c3c2b8e}]\n"
	req := admissionRequest(t, admissionv1.Create, yamlJSON(t, sidecarPod(owner, "  containers:\n  - {name: app, image: \"app:1\"}\n")), nil)
	d := evaluate(t, snap, req, engine.EvalOptions{})
	if !d.Allowed || len(d.Warnings) != 0 {
		t.Fatalf("allowed %v (%s), warnings %q; results %s", d.Allowed, d.Message, d.Warnings, statesOf(d))
	}
	if got := statesOf(d); got != "sidecar=pass,index=pass" {
		t.Fatalf("results %s", got)
	}
	want := sidecarPod(owner, `  initContainers:
  - name: agent
    image: agent:1
    restartPolicy: Always
    env: [{name: MODE, value: push}, {name: INDEX, value: "0"}]
  containers:
  - name: app
    image: app:1
    volumeMounts: [{name: spool, mountPath: /spool}]
    env: [{name: INDEX, value: "0"}]
  volumes: [{name: spool, emptyDir: {}}]
`)
	checkMutation(t, snap, req, d, yamlJSON(t, want), engine.EvalOptions{})
}

// TestInjectSidecarFailures covers onConflict: fail, CEL errors at run time
// and malformed pods: errors under failurePolicy, never panics.
func TestInjectSidecarFailures(t *testing.T) {
	cases := []struct {
		name     string
		with     string
		failure  string // spec.failurePolicy
		meta     string
		spec     string
		reason   string
		denied   string // the denial message, under failurePolicy Fail
		panicked bool
	}{
		{
			name:    "onConflict fail, failurePolicy Fail: denied",
			with:    "    onConflict: fail\n    containers: [{name: s, image: \"s:2\"}]\n",
			failure: "Fail",
			spec:    "  containers:\n  - {name: app, image: \"app:1\"}\n  - {name: s, image: \"s:1\"}\n",
			reason:  "nothing injected: container s: the pod's differs from the template in image",
			denied:  `policy "sidecar" failed: nothing injected: container s: the pod's differs from the template in image`,
		},
		{
			name:   "onConflict fail, failurePolicy Ignore: admitted unchanged",
			with:   "    onConflict: fail\n    containers: [{name: s, image: \"s:2\"}]\n",
			spec:   "  containers:\n  - {name: app, image: \"app:1\"}\n  - {name: s, image: \"s:1\"}\n",
			reason: "nothing injected: container s: the pod's differs from the template in image",
		},
		{
			name:   "a CEL error at run time",
			with:   "    containers: [{name: s, image: \"${{ object.metadata.annotations['image'] }}\"}]\n",
			spec:   "  containers:\n  - {name: app, image: \"app:1\"}\n",
			reason: "with.containers[0].image: no such key: annotations",
		},
		{
			name:   "a mount of a volume that exists nowhere",
			with:   "    volumeMounts: [{mount: {name: cache, mountPath: /cache}}]\n",
			spec:   "  containers:\n  - {name: app, image: \"app:1\"}\n",
			reason: `volume "cache", mounted at /cache, is neither in the pod nor in with.volumes`,
		},
		{
			name:   "containers not a list",
			with:   sidecarLogShipper,
			spec:   "  containers: {name: app}\n",
			reason: "spec.containers is a map[string]interface {}, not a list",
		},
		{
			name:   "a container not an object",
			with:   sidecarLogShipper,
			spec:   "  containers: [app]\n",
			reason: "spec.containers[0] is a string, not an object",
		},
		{
			name:   "volumeMounts not a list",
			with:   sidecarLogShipper,
			spec:   "  containers: [{name: app, volumeMounts: /x}]\n",
			reason: "spec.containers[0].volumeMounts is a string, not a list",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			policy := sidecarPolicy(c.with)
			if c.failure != "" {
				policy += "  failurePolicy: " + c.failure + "\n"
			}
			snap := compilePolicies(t, policy)
			d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, yamlJSON(t, sidecarPod(c.meta, c.spec)), nil), engine.EvalOptions{})
			r := d.Results[0]
			if r.State != engine.StateError || r.Reason != c.reason || r.Panicked {
				t.Fatalf("state %s reason %q panicked %v; want error %q", r.State, r.Reason, r.Panicked, c.reason)
			}
			if c.denied != "" {
				if d.Allowed || d.Message != c.denied {
					t.Errorf("allowed %v message %q; want denied with %q", d.Allowed, d.Message, c.denied)
				}
			} else if !d.Allowed {
				t.Errorf("denied: %s", d.Message)
			}
			if len(d.Patch) != 0 {
				t.Errorf("patched: %v", d.Patch)
			}
		})
	}
}

// TestInjectSidecarSkips covers requests the builtin does not apply to.
func TestInjectSidecarSkips(t *testing.T) {
	policy := strings.Replace(sidecarPolicy(sidecarLogShipper), "[CREATE]", "['*']", 1)
	snap := compilePolicies(t, strings.Replace(policy, "[pods]", "['*']", 1))
	pod := sidecarPod("", "  containers: [{name: app, image: app}]\n")
	cases := []struct {
		name   string
		req    *admissionv1.AdmissionRequest
		reason string
	}{
		{"UPDATE", admissionRequest(t, admissionv1.Update, yamlJSON(t, pod), yamlJSON(t, pod)), "containers can only be added when a pod is created, not on UPDATE"},
		{"DELETE", admissionRequest(t, admissionv1.Delete, nil, yamlJSON(t, pod)), "containers can only be added when a pod is created, not on DELETE"},
		{"not a pod", admissionRequest(t, admissionv1.Create, yamlJSON(t, "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"), nil), "the object is a Service, not a Pod"},
		{"no spec", admissionRequest(t, admissionv1.Create, yamlJSON(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"), nil), "the pod has no spec"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := evaluate(t, snap, c.req, engine.EvalOptions{})
			r := d.Results[0]
			if r.State != engine.StateSkip || r.Reason != c.reason {
				t.Fatalf("state %s reason %q; want skip %q", r.State, r.Reason, c.reason)
			}
		})
	}
}

// TestInjectSidecarConcurrent runs one compiled templated policy from many
// goroutines (meaningful under -race): renders must not share values.
func TestInjectSidecarConcurrent(t *testing.T) {
	snap := compilePolicies(t, sidecarPolicy(`    containers:
    - name: agent
      image: agent:1
      env: [{name: POD, value: "${{ object.metadata.name }}"}]
    volumes: [{name: v, emptyDir: {}}]
    volumeMounts: [{mount: {name: v, mountPath: /v}}]
`))
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod := strings.Replace(sidecarPod("", "  containers: [{name: app, image: app}]\n"), "name: web-0", fmt.Sprintf("name: web-%d", i), 1)
			d, err := snap.Evaluate(t.Context(), admissionRequest(t, admissionv1.Create, yamlJSON(t, pod), nil), engine.EvalOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			p, _ := d.PatchJSON()
			if want := fmt.Sprintf(`"value":"web-%d"`, i); !strings.Contains(string(p), want) {
				t.Errorf("patch %s lacks %s", p, want)
			}
		}()
	}
	wg.Wait()
}

// TestInjectSidecarLoadErrors checks that bad templates and arguments are
// load errors at the line of the offending field.
func TestInjectSidecarLoadErrors(t *testing.T) {
	const p = `p.yaml:`
	cases := []struct {
		name, with, want string
	}{
		{"no with", "", p + `9:3: policy "sidecar": with: at least one of containers, initContainers, volumes or volumeMounts is required`},
		{"empty with", "    {}\n", p + `10:3: policy "sidecar": with: at least one of containers, initContainers, volumes or volumeMounts is required`},
		{"unknown argument", "    container: []\n", p + `11:5: policy "sidecar": with.container: unknown field`},
		{"unknown container field", "    containers:\n    - name: s\n      image: s\n      imagePullPolicyy: Always\n", p + `14:7: policy "sidecar": with.containers[0].imagePullPolicyy: unknown field`},
		{"unknown nested field", "    containers:\n    - name: s\n      image: s\n      ports: [{port: 80}]\n", p + `14:16: policy "sidecar": with.containers[0].ports[0].port: unknown field`},
		{"wrong type in a container", "    containers:\n    - name: s\n      image: s\n      ports: http\n", p + `14:7: policy "sidecar": with.containers[0].ports: expected a list, got a string`},
		{"a string field given a list", "    containers:\n    - name: s\n      image: s\n      imagePullPolicy: [Always]\n", p + `14:7: policy "sidecar": with.containers[0].imagePullPolicy: expected a string, got a list`},
		{"a number field given a string", "    containers:\n    - name: s\n      image: s\n      ports: [{containerPort: http}]\n", p + `14:16: policy "sidecar": with.containers[0].ports[0].containerPort: expected a number, got a string`},
		{"a bool field given a string", "    volumeMounts:\n    - mount: {name: v, mountPath: /v, readOnly: \"yes\"}\n", p + `12:39: policy "sidecar": with.volumeMounts[0].mount.readOnly: expected a boolean, got a string`},
		{"a container not an object", "    containers: [sidecar]\n", p + `11:18: policy "sidecar": with.containers[0]: expected an object, got a string`},
		{"containers not a list", "    containers: {name: s}\n", p + `11:5: policy "sidecar": with.containers: expected a list, got an object`},
		{"bad quantity", "    containers:\n    - name: s\n      image: s\n      resources: {limits: {cpu: lots}}\n", p + `12:7: policy "sidecar": with.containers[0]: quantities must match the regular expression`},
		{"a templated quantity", "    containers:\n    - name: s\n      image: s\n      resources: {limits: {cpu: \"${{ 'x' }}\"}}\n", p + `12:7: policy "sidecar": with.containers[0]: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (${{ }} templates are allowed in string fields only: not in quantities, numbers or booleans)`},
		{"no name", "    containers:\n    - image: s\n", p + `12:7: policy "sidecar": with.containers[0].name: is required`},
		{"a templated name", "    containers:\n    - name: ${{ object.metadata.name }}\n      image: s\n", p + `12:7: policy "sidecar": with.containers[0].name: cannot be templated`},
		{"a bad name", "    initContainers:\n    - name: Setup\n      image: s\n", p + `12:7: policy "sidecar": with.initContainers[0].name: "Setup" is not a valid container name`},
		{"no image", "    containers:\n    - name: s\n", p + `12:7: policy "sidecar": with.containers[0].image: is required`},
		{"a name twice", "    containers:\n    - {name: s, image: s}\n    initContainers:\n    - {name: s, image: s}\n", p + `14:8: policy "sidecar": with.initContainers[0].name: container "s" is defined twice`},
		{"nativeSidecar without containers", "    nativeSidecar: true\n    initContainers: [{name: s, image: s}]\n", p + `11:5: policy "sidecar": with.nativeSidecar: applies to with.containers, which is empty`},
		{"nativeSidecar with another restartPolicy", "    nativeSidecar: true\n    containers:\n    - {name: s, image: s, restartPolicy: Never}\n", p + `13:27: policy "sidecar": with.containers[0].restartPolicy: must be Always (or absent) with nativeSidecar: true, not "Never"`},
		{"bad placement", "    initContainerPlacement: middle\n    initContainers: [{name: s, image: s}]\n", p + `11:5: policy "sidecar": with.initContainerPlacement: must be first or last, not "middle"`},
		{"bad onConflict", "    onConflict: replace\n    initContainers: [{name: s, image: s}]\n", p + `11:5: policy "sidecar": with.onConflict: must be skip or fail, not "replace"`},
		{"a volume without source", "    volumes:\n    - name: v\n", p + `12:7: policy "sidecar": with.volumes[0]: volume "v" has no source; give exactly one, e.g. emptyDir: {}`},
		{"a volume with two sources", "    volumes:\n    - name: v\n      emptyDir: {}\n      hostPath: {path: /x}\n", p + `12:7: policy "sidecar": with.volumes[0]: volume "v" has 2 sources (hostPath, emptyDir); give exactly one`},
		{"a volume twice", "    volumes:\n    - {name: v, emptyDir: {}}\n    - {name: v, emptyDir: {}}\n", p + `13:8: policy "sidecar": with.volumes[1].name: volume "v" is defined twice`},
		{"a mount without mount", "    volumeMounts:\n    - containers: [app]\n", p + `12:7: policy "sidecar": with.volumeMounts[0].mount: is required`},
		{"a mount without mountPath", "    volumeMounts:\n    - mount: {name: v}\n", p + `12:7: policy "sidecar": with.volumeMounts[0].mount.mountPath: is required`},
		{"an unknown mount field", "    volumeMounts:\n    - mount:\n        name: v\n        path: /x\n", p + `14:9: policy "sidecar": with.volumeMounts[0].mount.path: unknown field`},
		{"a mount into a sidecar", "    containers: [{name: s, image: s}]\n    volumeMounts:\n    - containers: [app, s]\n      mount: {name: v, mountPath: /v}\n", p + `13:25: policy "sidecar": with.volumeMounts[0].containers[1]: container "s" is injected by this policy: give the mount in its template`},
		{"two mounts at one path", "    volumeMounts:\n    - mount: {name: v, mountPath: /v}\n    - containers: [app]\n      mount: {name: w, mountPath: /v}\n", p + `14:24: policy "sidecar": with.volumeMounts[1].mount.mountPath: "/v" is also the mountPath of volumeMounts[0] in the same container`},
		{"empty mount containers", "    volumeMounts:\n    - containers: []\n      mount: {name: v, mountPath: /v}\n", p + `12:7: policy "sidecar": with.volumeMounts[0].containers: is empty; omit it to mount into every app container`},
		{"a CEL syntax error", "    containers:\n    - name: s\n      image: \"${{ object.metadata.name + }}\"\n", p + `13:41: policy "sidecar": with.containers[0].image: CEL: Syntax error`},
		{"a CEL type error", "    containers:\n    - name: s\n      image: s\n      args: [\"${{ 1 + 2 }}\"]\n", p + `14:19: policy "sidecar": with.containers[0].args[0]: CEL: must evaluate to string, not int`},
		{"an unterminated template", "    containers:\n    - name: s\n      image: \"${{ object.metadata.name\"\n", p + `13:7: policy "sidecar": with.containers[0].image: "${{ object.metadata.name" has no closing }}`},
		{"an empty template", "    volumes:\n    - name: v\n      configMap: {name: \"${{ }}\"}\n", p + `13:19: policy "sidecar": with.volumes[0].configMap.name: ${{ }} holds no expression`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			policy := sidecarPolicy(c.with)
			if c.with == "" {
				policy = strings.TrimSuffix(policy, "  with:\n")
			}
			checkLoadError(t, compileErrors(t, policy), c.want)
		})
	}
}

// TestInjectSidecarParse pins the template syntax.
func TestInjectSidecarParse(t *testing.T) {
	cases := []struct {
		in, want  string
		templated bool
	}{
		{"plain", "[plain]", false},
		{"", "[]", false},
		{"${{ a }}", "[{a}]", true},
		{"x-${{a}}-y", "[x- {a} -y]", true},
		{"$${{ a }}", "[${{ a }}]", false},
		{"${{a}}${{ b }}", "[{a} {b}]", true},
		{"$ {{a}} $$", "[$ {{a}} $$]", false},
	}
	for _, c := range cases {
		parts, templated, err := sidecarParse(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		var got []string
		for _, p := range parts {
			if p.src != "" {
				got = append(got, "{"+p.src+"}")
			} else if p.lit != "" {
				got = append(got, p.lit)
			}
		}
		if s := "[" + strings.Join(got, " ") + "]"; s != c.want || templated != c.templated {
			t.Errorf("%q: %s templated %v; want %s %v", c.in, s, templated, c.want, c.templated)
		}
	}
}

// TestInjectSidecarNeutralised covers pods that declare the sidecar
// themselves, equal to the template on every field it sets but with fields
// added that change what runs: not the template's sidecar, so onConflict
// decides (here fail), never "already injected".
func TestInjectSidecarNeutralised(t *testing.T) {
	const with = `    onConflict: fail
    containers:
    - name: log-shipper
      image: registry.example.com/fluent-bit:3.1
      env: [{name: MODE, value: push}]
      volumeMounts:
      - {name: logs, mountPath: /var/log/app, readOnly: true}
    initContainers:
    - {name: setup, image: "setup:1"}
    volumes:
    - {name: logs, emptyDir: {}}
    - {name: conf, configMap: {name: shipper}}
    - {name: token, projected: {sources: [{serviceAccountToken: {path: token}}]}}
    volumeMounts:
    - mount: {name: logs, mountPath: /var/log/app}
`
	// present is the pod as the builtin leaves it, with what the API
	// server adds (defaults, the service account token): "already injected".
	const present = `  initContainers:
  - {name: setup, image: "setup:1", imagePullPolicy: IfNotPresent}
  containers:
  - name: app
    image: app:1
    volumeMounts:
    - {name: logs, mountPath: /var/log/app}
  - name: log-shipper
    image: registry.example.com/fluent-bit:3.1
    imagePullPolicy: IfNotPresent
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
    resources: {requests: {cpu: 100m}}
    env: [{name: MODE, value: push}, {name: INDEX, value: "0"}]
    ports: [{containerPort: 2020}]
    volumeMounts:
    - {name: logs, mountPath: /var/log/app, readOnly: true}
    - {name: kube-api-access-x7k2p, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
  volumes:
  - {name: logs, emptyDir: {}}
  - {name: conf, configMap: {name: shipper, defaultMode: 420}}
  - {name: token, projected: {sources: [{serviceAccountToken: {path: token}}], defaultMode: 420}}
`
	snap := compilePolicies(t, sidecarPolicy(with))
	run := func(t *testing.T, spec string) engine.PolicyResult {
		t.Helper()
		d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, yamlJSON(t, sidecarPod("", spec)), nil), engine.EvalOptions{})
		if len(d.Patch) != 0 {
			t.Errorf("patched: %v", d.Patch)
		}
		return d.Results[0]
	}
	t.Run("the pod as injected and defaulted: already injected", func(t *testing.T) {
		r := run(t, present)
		want := "already injected: container log-shipper, init container setup, volume logs, volume conf, volume token, mount logs at /var/log/app in app"
		if r.State != engine.StatePass || r.Reason != want {
			t.Fatalf("state %s reason %q; want pass %q", r.State, r.Reason, want)
		}
	})
	edit := func(old, new string) string {
		if !strings.Contains(present, old) {
			t.Fatalf("%q is not in the pod", old)
		}
		return strings.Replace(present, old, new, 1)
	}
	const shipper = "    image: registry.example.com/fluent-bit:3.1\n"
	cases := []struct{ name, spec, reason string }{
		{"command: sleep infinity", edit(shipper, shipper+"    command: [sleep, infinity]\n"),
			"container log-shipper: the pod's differs from the template in command (not in the template)"},
		{"args", edit(shipper, shipper+"    args: [--dry-run]\n"),
			"container log-shipper: the pod's differs from the template in args (not in the template)"},
		{"securityContext and workingDir", edit(shipper, shipper+"    workingDir: /tmp\n    securityContext: {runAsUser: 0}\n"),
			"container log-shipper: the pod's differs from the template in securityContext (not in the template), workingDir (not in the template)"},
		{"lifecycle", edit(shipper, shipper+"    lifecycle: {postStart: {exec: {command: [kill, '1']}}}\n"),
			"container log-shipper: the pod's differs from the template in lifecycle (not in the template)"},
		{"envFrom", edit(shipper, shipper+"    envFrom: [{configMapRef: {name: override}}]\n"),
			"container log-shipper: the pod's differs from the template in envFrom (not in the template)"},
		{"a probe that kills it", edit(shipper, shipper+"    livenessProbe: {exec: {command: ['false']}}\n"),
			"container log-shipper: the pod's differs from the template in livenessProbe (not in the template)"},
		{"the template's env variable set again, later", edit("{name: INDEX, value: \"0\"}", "{name: MODE, value: \"off\"}"),
			"container log-shipper: the pod's differs from the template in env[1] (sets MODE again)"},
		{"a subPath in the sidecar's mount", edit("{name: logs, mountPath: /var/log/app, readOnly: true}", "{name: logs, mountPath: /var/log/app, readOnly: true, subPath: empty}"),
			"container log-shipper: the pod's differs from the template in volumeMounts[0].subPath (not in the template)"},
		{"an init container made a sidecar", edit(`imagePullPolicy: IfNotPresent}`, `imagePullPolicy: IfNotPresent, restartPolicy: Always}`),
			"init container setup: the pod's differs from the template in restartPolicy (not in the template)"},
		{"a volume's items", edit("defaultMode: 420}}\n  - {name: token", "defaultMode: 420, items: [{key: empty, path: fluent-bit.yaml}]}}\n  - {name: token"),
			"volume conf: the pod's differs from the template in configMap.items (not in the template)"},
		{"a volume's mode other than the default", edit("{name: shipper, defaultMode: 420}", "{name: shipper, defaultMode: 511}"),
			"volume conf: the pod's differs from the template in configMap.defaultMode (not in the template)"},
		{"a projected source added", edit("sources: [{serviceAccountToken: {path: token}}]", "sources: [{serviceAccountToken: {path: token}}, {configMap: {name: other}}]"),
			"volume token: the pod's differs from the template in projected.sources (more items than the template's)"},
		{"a subPath in the app's mount", edit("    - {name: logs, mountPath: /var/log/app}\n", "    - {name: logs, mountPath: /var/log/app, subPath: x}\n"),
			"mount at /var/log/app in container app: the pod's differs from the template in subPath (not in the template)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, c.spec)
			if want := "nothing injected: " + c.reason; r.State != engine.StateError || r.Reason != want {
				t.Fatalf("state %s reason %q; want error %q", r.State, r.Reason, want)
			}
		})
	}
}
