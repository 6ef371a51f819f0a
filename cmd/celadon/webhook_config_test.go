package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/test/deploy"
)

// runWebhookConfig runs `celadon webhook-config args...` in-process through
// runCLI, with the command built afresh: cobra keeps flag values between
// runs of the same command.
func runWebhookConfig(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var old []*cobra.Command
	for _, c := range rootCmd.Commands() {
		if c.Name() == "webhook-config" {
			old = append(old, c)
		}
	}
	rootCmd.RemoveCommand(old...)
	rootCmd.AddCommand(newWebhookConfigCmd())
	return runCLI(t, append([]string{"webhook-config"}, args...)...)
}

// decodeConfigs reads the YAML stream webhook-config prints, strictly.
func decodeConfigs(t *testing.T, out string) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
	t.Helper()
	docs := strings.Split(out, "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("want 2 YAML documents, got %d:\n%s", len(docs), out)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &mwc); err != nil {
		t.Fatalf("first document: %v", err)
	}
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &vwc); err != nil {
		t.Fatalf("second document: %v", err)
	}
	if mwc.Kind != "MutatingWebhookConfiguration" || vwc.Kind != "ValidatingWebhookConfiguration" ||
		mwc.APIVersion != "admissionregistration.k8s.io/v1" || vwc.APIVersion != "admissionregistration.k8s.io/v1" {
		t.Fatalf("documents are %s %s and %s %s", mwc.APIVersion, mwc.Kind, vwc.APIVersion, vwc.Kind)
	}
	return &mwc, &vwc
}

// TestWebhookConfigGolden generates the configurations of the shipped
// policies; testdata/webhook-config.golden.yaml is the expected output
// (UPDATE_GOLDEN=1 rewrites it).
func TestWebhookConfigGolden(t *testing.T) {
	code, stdout, stderr := runWebhookConfig(t, "-p", "../../policies", "--service", "celadon/celadon")
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "warning: no --ca-bundle or --cert-manager-inject-from") {
		t.Errorf("no warning about the missing CA bundle; stderr:\n%s", stderr)
	}
	golden := filepath.Join("testdata", "webhook-config.golden.yaml")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v: create it with\n  UPDATE_GOLDEN=1 go test ./cmd/celadon -run TestWebhookConfigGolden\nand read it", err)
	}
	if stdout != string(want) {
		t.Errorf("output differs from %s (UPDATE_GOLDEN=1 regenerates it):\n%s", golden, unifiedDiff(golden, "got", string(want), stdout))
	}
	mwc, vwc := decodeConfigs(t, stdout)
	if len(mwc.Webhooks) != 1 || mwc.Webhooks[0].Name != "ignore.mutate.celadon.io" ||
		len(vwc.Webhooks) != 1 || vwc.Webhooks[0].Name != "fail.validate.celadon.io" {
		t.Errorf("webhooks: %d mutating, %d validating", len(mwc.Webhooks), len(vwc.Webhooks))
	}

	// The same again gives the same bytes.
	if _, again, _ := runWebhookConfig(t, "-p", "../../policies", "--service", "celadon/celadon"); again != stdout {
		t.Errorf("a second run differs:\n%s", unifiedDiff("first", "second", stdout, again))
	}
}

func TestWebhookConfigFlags(t *testing.T) {
	dir := writeFiles(t, map[string]string{"policies/a.yaml": denyLatestPolicy, "policies/b.yaml": labelPodsPolicy})
	writeSelfSigned(t, dir)
	ca, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	policies := filepath.Join(dir, "policies")

	t.Run("url, CA bundle, name, timeout, exclusions", func(t *testing.T) {
		code, stdout, stderr := runWebhookConfig(t, "-p", policies, "--url", "https://127.0.0.1:9443",
			"--ca-bundle", filepath.Join(dir, "tls.crt"), "--name", "celadon-e2e", "--timeout-seconds", "10",
			"--exclude-namespace", "monitoring", "--exclude-namespace", "a,b")
		if code != 0 {
			t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
		}
		if stderr != "" {
			t.Errorf("stderr:\n%s", stderr)
		}
		mwc, vwc := decodeConfigs(t, stdout)
		if mwc.Name != "celadon-e2e" || vwc.Name != "celadon-e2e" {
			t.Errorf("names %q, %q", mwc.Name, vwc.Name)
		}
		if len(mwc.Webhooks) != 1 || len(vwc.Webhooks) != 1 {
			t.Fatalf("webhooks: %d mutating, %d validating", len(mwc.Webhooks), len(vwc.Webhooks))
		}
		m, v := mwc.Webhooks[0], vwc.Webhooks[0]
		for _, w := range []struct {
			name, url   string
			cc          admissionregistrationv1.WebhookClientConfig
			timeout     int32
			nsSelectors []string
		}{
			{m.Name, "https://127.0.0.1:9443/mutate/ignore", m.ClientConfig, *m.TimeoutSeconds, m.NamespaceSelector.MatchExpressions[0].Values},
			{v.Name, "https://127.0.0.1:9443/validate/fail", v.ClientConfig, *v.TimeoutSeconds, v.NamespaceSelector.MatchExpressions[0].Values},
		} {
			if w.cc.URL == nil || *w.cc.URL != w.url || w.cc.Service != nil {
				t.Errorf("%s: clientConfig %+v, want url %s", w.name, w.cc, w.url)
			}
			if !bytes.Equal(w.cc.CABundle, ca) {
				t.Errorf("%s: caBundle %q, want the file's content", w.name, w.cc.CABundle)
			}
			if w.timeout != 10 {
				t.Errorf("%s: timeoutSeconds %d", w.name, w.timeout)
			}
			if want := []string{"a", "b", "kube-node-lease", "kube-system", "monitoring"}; !reflect.DeepEqual(w.nsSelectors, want) {
				t.Errorf("%s: excluded namespaces %q, want %q", w.name, w.nsSelectors, want)
			}
		}
	})

	t.Run("service with a port, cert-manager", func(t *testing.T) {
		code, stdout, stderr := runWebhookConfig(t, "-p", policies, "--service", "policy/celadon-webhook:8443",
			"--cert-manager-inject-from", "policy/celadon-serving")
		if code != 0 {
			t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
		}
		if stderr != "" {
			t.Errorf("stderr:\n%s", stderr)
		}
		mwc, vwc := decodeConfigs(t, stdout)
		want := map[string]string{"cert-manager.io/inject-ca-from": "policy/celadon-serving"}
		if !reflect.DeepEqual(mwc.Annotations, want) || !reflect.DeepEqual(vwc.Annotations, want) {
			t.Errorf("annotations %v, %v; want %v", mwc.Annotations, vwc.Annotations, want)
		}
		s := vwc.Webhooks[0].ClientConfig.Service
		if s == nil || s.Namespace != "policy" || s.Name != "celadon-webhook" || *s.Port != 8443 || *s.Path != "/validate/fail" {
			t.Errorf("service %+v", s)
		}
		if len(vwc.Webhooks[0].ClientConfig.CABundle) != 0 {
			t.Error("caBundle set without --ca-bundle")
		}
		if got := vwc.Webhooks[0].NamespaceSelector.MatchExpressions[0].Values; !reflect.DeepEqual(got, []string{"kube-node-lease", "kube-system", "policy"}) {
			t.Errorf("excluded namespaces %q", got)
		}
	})
}

func TestWebhookConfigErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"policies/a.yaml": denyLatestPolicy,
		"empty.pem":       "\n",
		"key.pem":         "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
		"broken/p.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: broken
spec:
  match:
    resources: [pods]
    operations: [CREATE, PATCH]
  action: deny
  with:
    message: x
`,
	})
	policies := filepath.Join(dir, "policies")
	for _, tc := range []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"no policies", []string{"--service", "celadon/celadon"}, []string{"-p/--policies is required"}},
		{"missing policies", []string{"-p", filepath.Join(dir, "nope"), "--service", "celadon/celadon"}, []string{"no such file"}},
		{"neither service nor url", []string{"-p", policies}, []string{"--service NAMESPACE/NAME[:PORT] or --url URL is required"}},
		{"service and url", []string{"-p", policies, "--service", "celadon/celadon", "--url", "https://x"}, []string{"--service and --url are exclusive"}},
		{"empty url", []string{"-p", policies, "--url", ""}, []string{"--url must not be empty"}},
		{"service without namespace", []string{"-p", policies, "--service", "celadon"}, []string{`--service: want NAMESPACE/NAME[:PORT], not "celadon"`}},
		{"service with a bad port", []string{"-p", policies, "--service", "celadon/celadon:https"}, []string{`--service: port "https"`}},
		{"service with port 0", []string{"-p", policies, "--service", "celadon/celadon:0"}, []string{`--service: port "0"`}},
		{"service with a bad name", []string{"-p", policies, "--service", "celadon/Celadon"}, []string{`service name "Celadon"`}},
		{"http url", []string{"-p", policies, "--url", "http://127.0.0.1:9443"}, []string{"scheme must be https"}},
		{"timeout", []string{"-p", policies, "--service", "celadon/celadon", "--timeout-seconds", "31"}, []string{"--timeout-seconds 31: must be between 1 and 30"}},
		{"timeout not a number", []string{"-p", policies, "--service", "celadon/celadon", "--timeout-seconds", "soon"}, []string{"invalid argument"}},
		{"empty name", []string{"-p", policies, "--service", "celadon/celadon", "--name", ""}, []string{"--name must not be empty"}},
		{"bad name", []string{"-p", policies, "--service", "celadon/celadon", "--name", "Celadon"}, []string{`name "Celadon"`}},
		{"bad excluded namespace", []string{"-p", policies, "--service", "celadon/celadon", "--exclude-namespace", "Dev"}, []string{`excluded namespace "Dev"`}},
		{"missing CA bundle", []string{"-p", policies, "--service", "celadon/celadon", "--ca-bundle", filepath.Join(dir, "nope.pem")}, []string{"--ca-bundle:", "no such file"}},
		{"empty CA bundle", []string{"-p", policies, "--service", "celadon/celadon", "--ca-bundle", filepath.Join(dir, "empty.pem")}, []string{"--ca-bundle:", "is empty"}},
		{"CA bundle of a key", []string{"-p", policies, "--service", "celadon/celadon", "--ca-bundle", filepath.Join(dir, "key.pem")}, []string{"caBundle: PEM block 1 is EC PRIVATE KEY, want CERTIFICATE"}},
		{"bad cert-manager reference", []string{"-p", policies, "--service", "celadon/celadon", "--cert-manager-inject-from", "celadon-serving"}, []string{`--cert-manager-inject-from: want NAMESPACE/CERTIFICATE, not "celadon-serving"`}},
		{"arguments", []string{"-p", policies, "--service", "celadon/celadon", "extra"}, []string{"unknown command"}},
		{"policy errors", []string{"-p", filepath.Join(dir, "broken"), "--service", "celadon/celadon"},
			[]string{filepath.Join(dir, "broken", "p.yaml") + `:8:26: policy "broken": `, `unknown operation "PATCH"`, "1 error in policies"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runWebhookConfig(t, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if stdout != "" {
				t.Errorf("stdout:\n%s", stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestWebhookConfigExample runs the first example of webhook-config --help
// on the shipped policies: it must name the Service and the Certificate
// that deploy/overlays/cert-manager creates, for an operator applying the
// configurations themselves.
func TestWebhookConfigExample(t *testing.T) {
	example := newWebhookConfigCmd().Example
	wantFlags := "--service " + deploy.Namespace + "/" + deploy.Service + " --cert-manager-inject-from " + deploy.Namespace + "/" + deploy.ServingCertificate
	// The command line: from "celadon" to the pipe, continued lines joined.
	line := strings.ReplaceAll(example, "\\\n", " ")
	var args []string
	for _, l := range strings.Split(line, "\n") {
		l, _, _ = strings.Cut(strings.TrimSpace(l), " | ")
		if f := strings.Fields(l); len(f) > 2 && f[0] == "celadon" && f[1] == "webhook-config" {
			args = f[2:]
			break
		}
	}
	if !strings.Contains(strings.Join(args, " "), wantFlags) {
		t.Fatalf("the first example %q lacks %q:\n%s", args, wantFlags, example)
	}
	for i, a := range args {
		if a == "-p" && i+1 < len(args) {
			args[i+1] = filepath.Join("../..", args[i+1])
		}
	}
	code, stdout, stderr := runWebhookConfig(t, args...)
	if code != 0 {
		t.Fatalf("webhook-config %q: exit %d\n%s", args, code, stderr)
	}
	if want := "cert-manager.io/inject-ca-from: " + deploy.Namespace + "/" + deploy.ServingCertificate; !strings.Contains(stdout, want) {
		t.Errorf("the example's output lacks %q:\n%s", want, stdout)
	}
}

// A validating pod policy's webhook also covers the pod controllers, so
// that the API server sends Celadon their pod templates.
func TestWebhookConfigAutogen(t *testing.T) {
	dir := t.TempDir()
	policy := `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: no-latest}
spec:
  match:
    resources: [pods]
    operations: [CREATE, UPDATE, DELETE]
    conditions:
    - expression: object.spec.containers.exists(c, c.image.endsWith(":latest"))
  action: deny
  with: {message: pin the image}
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: team-label}
spec:
  match: {resources: [pods], operations: [CREATE]}
  action: mutate
  with:
    mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: 'Object{metadata: Object.metadata{labels: {"example.com/team": "unassigned"}}}'
`
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runWebhookConfig(t, "-p", dir, "--service", "celadon/celadon")
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
	}
	var cfg admissionregistrationv1.ValidatingWebhookConfiguration
	var mcfg admissionregistrationv1.MutatingWebhookConfiguration
	for _, doc := range strings.Split(stdout, "\n---\n") {
		switch {
		case strings.Contains(doc, "kind: ValidatingWebhookConfiguration"):
			if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
				t.Fatal(err)
			}
		case strings.Contains(doc, "kind: MutatingWebhookConfiguration"):
			if err := yaml.Unmarshal([]byte(doc), &mcfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A mutating pod policy is extended to the controllers too, with its
	// own operations.
	if len(mcfg.Webhooks) != 1 {
		t.Fatalf("mutating webhooks: %+v\n%s", mcfg.Webhooks, stdout)
	}
	mgot := map[string]string{}
	for _, r := range mcfg.Webhooks[0].Rules {
		for _, res := range r.Resources {
			mgot[r.APIGroups[0]+"/"+res] = fmt.Sprint(r.Operations)
		}
	}
	mwant := map[string]string{
		"/pods": "[CREATE]", "apps/deployments": "[CREATE]", "apps/statefulsets": "[CREATE]", "apps/daemonsets": "[CREATE]",
		"apps/replicasets": "[CREATE]", "batch/jobs": "[CREATE]", "batch/cronjobs": "[CREATE]",
	}
	if !reflect.DeepEqual(mgot, mwant) {
		t.Errorf("mutating rules:\n got %v\nwant %v", mgot, mwant)
	}
	if len(cfg.Webhooks) != 1 {
		t.Fatalf("validating webhooks: %+v\n%s", cfg.Webhooks, stdout)
	}
	got := map[string]string{}
	for _, r := range cfg.Webhooks[0].Rules {
		for _, res := range r.Resources {
			got[r.APIGroups[0]+"/"+res] = fmt.Sprint(r.Operations)
		}
	}
	want := map[string]string{
		"/pods":             "[CREATE DELETE UPDATE]",
		"apps/deployments":  "[CREATE UPDATE]",
		"apps/statefulsets": "[CREATE UPDATE]",
		"apps/daemonsets":   "[CREATE UPDATE]",
		"apps/replicasets":  "[CREATE UPDATE]",
		"batch/jobs":        "[CREATE UPDATE]",
		"batch/cronjobs":    "[CREATE UPDATE]",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rules:\n got %v\nwant %v", got, want)
	}
}
