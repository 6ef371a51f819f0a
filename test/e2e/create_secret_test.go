package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/internal/controlplane"
	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/server"
	"celadon.io/celadon/test/load/loadgen"
)

// secretsLabel selects the namespaces of TestCreateSecret's policies; its
// value is the test's own home namespace, so no other namespace matches.
const secretsLabel = "e2e.celadon.io/secrets"

// secretPolicies are TestCreateSecret's policies, for namespaces labelled
// secretsLabel=value: a copy of the image-pull secret regcred of Celadon's
// namespace, added to the default ServiceAccount, and a Secret from a
// template.
func secretPolicies(value string) map[string][]byte {
	return map[string][]byte{"secrets.yaml": fmt.Appendf(nil, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-pull-secret
spec:
  match:
    resources: [namespaces]
    operations: [CREATE, UPDATE]
    namespaceSelector:
      matchLabels: {%[1]s: %[2]s}
  action: createSecret
  with:
    name: regcred
    from: {name: regcred}
    addToServiceAccount: default
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-team-config
spec:
  match:
    resources: [namespaces]
    operations: [CREATE, UPDATE]
    namespaceSelector:
      matchLabels: {%[1]s: %[2]s}
  action: createSecret
  with:
    name: team-config
    stringData:
      namespace: "${{ object.metadata.name }}"
    labels: {e2e.celadon.io/kind: config}
`, secretsLabel, value)}
}

// TestCreateSecret runs a server of its own with createSecret policies,
// under leader election, its webhook configurations limited to namespaces
// labelled for it, and checks through the API server that: a namespace
// created before the server ran gets its Secrets; so does a new one, within
// the wait, with the default ServiceAccount listing the pull secret and the
// namespace annotated at admission; an unselected namespace gets nothing; a
// change to the source reaches the copies; a deleted copy comes back; a
// Secret Celadon does not manage is left alone and reported (Event, /status,
// metric); a dry-run namespace creation leaves nothing behind; a policy
// added by a reload reaches existing namespaces; and of two servers sharing
// the Lease only one runs the reconciler, the other taking over when it
// stops.
func TestCreateSecret(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)

	// Celadon's namespace: the source Secret and the Lease.
	home := newNamespace(ctx, t, "secrets-home", nil)
	source := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: home, Name: "regcred"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"dXNlcjp2MQ=="}}}`)},
	}
	if err := suite.c.Create(ctx, source); err != nil {
		t.Fatal(err)
	}
	selected := map[string]string{secretsLabel: home}
	early := newNamespace(ctx, t, "secrets-early", selected) // before Celadon runs

	const name = "celadon-e2e-secrets"
	// The servers run as Celadon's ServiceAccount in home, with the RBAC
	// of deploy/base and deploy/components/create-secret.
	cfg := installCreateSecretRBAC(ctx, t, home)
	configure := func(_ *celadon, o *server.Options) {
		o.Config = cfg
		o.Namespace = home
		o.LeaderElection = true
		o.LeaderElectionNamespace = home // the Lease celadon-webhooks, as deployed
	}
	// The generated configurations, limited to the test's namespaces.
	s := startScopedCeladon(ctx, t, name, secretPolicies(home), configure, nil, &metav1.LabelSelector{MatchLabels: selected})
	if names := webhookNames(t, s); names != "ignore.mutate.celadon.io" {
		t.Fatalf("generated webhooks %q, want one mutating webhook (createSecret is mutating)", names)
	}

	getSecret := func(ctx context.Context, ns, name string) (*corev1.Secret, error) {
		sec := &corev1.Secret{}
		err := suite.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, sec)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return sec, err
	}
	// waitCopy waits until ns holds a managed copy of the source with data.
	waitCopy := func(t *testing.T, ns string, data []byte) *corev1.Secret {
		t.Helper()
		var got *corev1.Secret
		waitFor(ctx, t, "Secret regcred in "+ns+" with the source's data", func(ctx context.Context) (bool, error) {
			sec, err := getSecret(ctx, ns, "regcred")
			got = sec
			return sec != nil && bytes.Equal(sec.Data[corev1.DockerConfigJsonKey], data), err
		})
		if got.Type != corev1.SecretTypeDockerConfigJson ||
			got.Labels[builtins.SecretManagedByLabel] != builtins.SecretManagedByValue ||
			got.Annotations[builtins.SecretPolicyAnnotation] != "e2e-pull-secret" ||
			got.Annotations[builtins.SecretSourceAnnotation] != home+"/regcred" {
			t.Errorf("copy in %s: type %s, labels %v, annotations %v", ns, got.Type, got.Labels, got.Annotations)
		}
		return got
	}
	v1 := source.Data[corev1.DockerConfigJsonKey]

	t.Run("a namespace created before the server gets its Secrets", func(t *testing.T) {
		waitCopy(t, early, v1)
	})

	// Namespaces of the whole test: the unselected one first.
	unselected := newNamespace(ctx, t, "secrets-unselected", nil)
	team := newNamespace(ctx, t, "secrets-team", selected)
	t.Run("a new namespace gets its Secrets and its ServiceAccount lists the pull secret", func(t *testing.T) {
		waitCopy(t, team, v1)
		waitFor(ctx, t, "Secret team-config in "+team, func(ctx context.Context) (bool, error) {
			sec, err := getSecret(ctx, team, "team-config")
			return sec != nil, err
		})
		cfg, err := getSecret(ctx, team, "team-config")
		if err != nil {
			t.Fatal(err)
		}
		if got := string(cfg.Data["namespace"]); got != team || cfg.Type != corev1.SecretTypeOpaque || cfg.Labels["e2e.celadon.io/kind"] != "config" {
			t.Errorf("team-config: type %s, data namespace=%q (want %q), labels %v", cfg.Type, got, team, cfg.Labels)
		}
		waitFor(ctx, t, "regcred in the imagePullSecrets of "+team+"/default", func(ctx context.Context) (bool, error) {
			sa := &corev1.ServiceAccount{}
			if err := suite.c.Get(ctx, client.ObjectKey{Namespace: team, Name: "default"}, sa); err != nil {
				return false, err
			}
			return slices.Contains(sa.ImagePullSecrets, corev1.LocalObjectReference{Name: "regcred"}), nil
		})
		// Admission recorded the intent on the namespace.
		ns := &corev1.Namespace{}
		if err := suite.c.Get(ctx, client.ObjectKey{Name: team}, ns); err != nil {
			t.Fatal(err)
		}
		if got := ns.Annotations[builtins.NamespaceSecretsAnnotation]; got != "e2e-pull-secret/regcred,e2e-team-config/team-config" {
			t.Errorf("annotation %s = %q", builtins.NamespaceSecretsAnnotation, got)
		}
	})

	t.Run("an unselected namespace gets nothing", func(t *testing.T) {
		// It was created before the selected one, whose Secrets are there.
		var list corev1.SecretList
		if err := suite.c.List(ctx, &list, client.InNamespace(unselected)); err != nil {
			t.Fatal(err)
		}
		for _, sec := range list.Items {
			if sec.Labels[builtins.SecretManagedByLabel] == builtins.SecretManagedByValue || sec.Name == "regcred" || sec.Name == "team-config" {
				t.Errorf("unselected namespace %s holds Secret %s", unselected, sec.Name)
			}
		}
		ns := &corev1.Namespace{}
		if err := suite.c.Get(ctx, client.ObjectKey{Name: unselected}, ns); err != nil {
			t.Fatal(err)
		}
		if _, ok := ns.Annotations[builtins.NamespaceSecretsAnnotation]; ok {
			t.Errorf("unselected namespace annotated: %v", ns.Annotations)
		}
	})

	t.Run("an update of the source reaches every copy", func(t *testing.T) {
		v2 := []byte(`{"auths":{"registry.example.com":{"auth":"dXNlcjp2Mg=="}}}`)
		src := &corev1.Secret{}
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(source), src); err != nil {
			t.Fatal(err)
		}
		src.Data[corev1.DockerConfigJsonKey] = v2
		if err := suite.c.Update(ctx, src); err != nil {
			t.Fatal(err)
		}
		v1 = v2
		waitCopy(t, early, v2)
		waitCopy(t, team, v2)
	})

	t.Run("a deleted copy comes back", func(t *testing.T) {
		old, err := getSecret(ctx, team, "regcred")
		if err != nil || old == nil {
			t.Fatalf("copy: %v, %v", old, err)
		}
		if err := suite.c.Delete(ctx, old); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, "a new regcred in "+team, func(ctx context.Context) (bool, error) {
			sec, err := getSecret(ctx, team, "regcred")
			return sec != nil && sec.UID != old.UID, err
		})
		waitCopy(t, team, v1)
	})

	t.Run("a Secret Celadon does not manage is left alone and reported", func(t *testing.T) {
		ns := newNamespace(ctx, t, "secrets-conflict", nil)
		theirs := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "regcred"},
			Data:       map[string][]byte{"token": []byte("theirs")},
		}
		if err := suite.c.Create(ctx, theirs); err != nil {
			t.Fatal(err)
		}
		// Selected now: UPDATE through the webhook, then the reconciler.
		obj := &corev1.Namespace{}
		if err := suite.c.Get(ctx, client.ObjectKey{Name: ns}, obj); err != nil {
			t.Fatal(err)
		}
		obj.Labels[secretsLabel] = home
		if err := suite.c.Update(ctx, obj); err != nil {
			t.Fatal(err)
		}
		// The other policy's Secret is created: the namespace was seen.
		waitFor(ctx, t, "Secret team-config in "+ns, func(ctx context.Context) (bool, error) {
			sec, err := getSecret(ctx, ns, "team-config")
			return sec != nil, err
		})
		var issue *builtins.SecretIssue
		waitFor(ctx, t, "the conflict at /status", func(ctx context.Context) (bool, error) {
			st, err := s.status(ctx)
			if err != nil || secretsOf(t, st) == nil {
				return false, err
			}
			for i, is := range secretsOf(t, st).Issues {
				if is.Namespace == ns && is.Secret == "regcred" {
					issue = &secretsOf(t, st).Issues[i]
				}
			}
			return issue != nil, nil
		})
		if issue.Reason != builtins.SecretConflict || issue.Policy != "e2e-pull-secret" || !strings.Contains(issue.Message, "not managed by Celadon") {
			t.Errorf("issue %+v", issue)
		}
		waitFor(ctx, t, "a SecretConflict Event on namespace "+ns, func(ctx context.Context) (bool, error) {
			var events eventsv1.EventList
			if err := suite.c.List(ctx, &events, client.InNamespace(metav1.NamespaceDefault)); err != nil {
				return false, err
			}
			for _, e := range events.Items {
				if e.Regarding.Kind == "Namespace" && e.Regarding.Name == ns && e.Reason == builtins.SecretConflict &&
					e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, "regcred") {
					return true, nil
				}
			}
			return false, nil
		})
		got, err := getSecret(ctx, ns, "regcred")
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Data["token"]) != "theirs" || len(got.Data) != 1 || got.Labels[builtins.SecretManagedByLabel] != "" ||
			got.Annotations[builtins.SecretPolicyAnnotation] != "" || got.ResourceVersion != theirs.ResourceVersion {
			t.Errorf("the unmanaged Secret was touched: %+v", got)
		}
		sa := &corev1.ServiceAccount{}
		if err := suite.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, sa); err != nil {
			t.Fatal(err)
		}
		if len(sa.ImagePullSecrets) != 0 {
			t.Errorf("the ServiceAccount lists %v: a conflicting Secret must not be added", sa.ImagePullSecrets)
		}
		if n := metricValue(t, s, builtins.MetricSecretConflicts, `policy="e2e-pull-secret"`); n < 1 {
			t.Errorf("%s = %v, want at least 1", builtins.MetricSecretConflicts, n)
		}
	})

	t.Run("a dry-run namespace creation leaves nothing behind", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "e2e-secrets-dry-" + home[len(home)-5:], Labels: selected}}
		if err := suite.c.Create(ctx, ns, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		// The webhook ran (dry run included: sideEffects None, for
		// createSecret's controller creates the Secrets, not admission).
		if got := ns.Annotations[builtins.NamespaceSecretsAnnotation]; got != "e2e-pull-secret/regcred,e2e-team-config/team-config" {
			t.Errorf("dry-run response: annotation %q", got)
		}
		err := suite.c.Get(ctx, client.ObjectKey{Name: ns.Name}, &corev1.Namespace{})
		if !apierrors.IsNotFound(err) {
			t.Fatalf("namespace %s after a dry run: %v, want NotFound", ns.Name, err)
		}
		var list corev1.SecretList
		if err := suite.c.List(ctx, &list, client.InNamespace(ns.Name)); err != nil {
			t.Fatal(err)
		}
		st, err := s.status(ctx)
		if err != nil || secretsOf(t, st) == nil {
			t.Fatalf("status: %+v, %v", st, err)
		}
		if len(list.Items) != 0 {
			t.Errorf("Secrets in %s: %d", ns.Name, len(list.Items))
		}
		for _, is := range secretsOf(t, st).Issues {
			if is.Namespace == ns.Name {
				t.Errorf("issue for the dry-run namespace: %+v", is)
			}
		}
	})

	t.Run("a policy added by a reload reaches existing namespaces", func(t *testing.T) {
		files := secretPolicies(home)
		files["extra.yaml"] = fmt.Appendf(nil, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-extra
spec:
  match:
    resources: [namespaces]
    namespaceSelector:
      matchLabels: {%s: %s}
  action: createSecret
  with:
    name: extra
    data: {greeting: aGVsbG8=}
`, secretsLabel, home)
		s.setPolicies(t, files)
		for _, ns := range []string{early, team} {
			waitFor(ctx, t, "Secret extra in "+ns, func(ctx context.Context) (bool, error) {
				sec, err := getSecret(ctx, ns, "extra")
				return sec != nil && string(sec.Data["greeting"]) == "hello", err
			})
		}
	})

	t.Run("of two servers sharing the Lease, one reconciles", func(t *testing.T) {
		s2, err := runCeladon(ctx, name+"-2", secretPolicies(home), configure)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.stop()
		// The first holds the Lease: the second's reconciler never starts.
		st2, err := s2.status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if secretsOf(t, st2) != nil {
			t.Fatalf("the second server runs the reconciler while the first leads: %+v", secretsOf(t, st2))
		}
		st1, err := s.status(ctx)
		if err != nil || secretsOf(t, st1) == nil {
			t.Fatalf("the first server's reconciler: %+v, %v", st1, err)
		}
		// The leader stops, handing the Lease over: the second takes over.
		if err := s.stop(); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, "the second server's reconciler", func(ctx context.Context) (bool, error) {
			st, err := s2.status(ctx)
			return err == nil && secretsOf(t, st) != nil, err
		})
		ns := newNamespace(ctx, t, "secrets-takeover", selected)
		waitCopy(t, ns, v1)
	})
}

// metricValue returns the value of the series of metric whose labels
// include labels (as written in /metrics, e.g. `policy="p"`), from the
// server's /metrics; 0 when absent.
func metricValue(t *testing.T, s *celadon, metric, labels string) float64 {
	t.Helper()
	v, _, err := loadgen.ScrapeMetric("http://"+s.metrics+"/metrics", metric, labels)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// installCreateSecretRBAC applies the RBAC of deploy/base and of
// deploy/components/create-secret for a ServiceAccount celadon in ns (the
// cluster-wide objects renamed after ns, removed when the test ends),
// checks what it allows and what it does not, and returns a configuration
// acting as that ServiceAccount.
func installCreateSecretRBAC(ctx context.Context, t *testing.T, ns string) *rest.Config {
	t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var objs []*unstructured.Unstructured
	for _, file := range []string{"deploy/base/rbac.yaml", "deploy/components/create-secret/rbac.yaml"} {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(u.Object) > 0 {
				objs = append(objs, u)
			}
		}
	}
	for _, u := range objs {
		switch u.GetKind() {
		case "ClusterRole", "ClusterRoleBinding":
			u.SetName(u.GetName() + "-" + ns)
		default:
			u.SetNamespace(ns)
		}
		if strings.HasSuffix(u.GetKind(), "Binding") {
			if u.GetKind() == "ClusterRoleBinding" {
				ref, _, _ := unstructured.NestedString(u.Object, "roleRef", "name")
				_ = unstructured.SetNestedField(u.Object, ref+"-"+ns, "roleRef", "name")
			}
			_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"kind": "ServiceAccount", "name": "celadon", "namespace": ns}}, "subjects")
		}
		if err := suite.c.Create(ctx, u); err != nil {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		if u.GetNamespace() == "" {
			t.Cleanup(func() {
				if err := suite.c.Delete(context.Background(), u); err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("deleting %s %s: %v", u.GetKind(), u.GetName(), err)
				}
			})
		}
	}
	user := "system:serviceaccount:" + ns + ":celadon"
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	for _, tc := range []struct {
		verb, group, resource, ns string
		allowed                   bool
	}{
		{"create", "", "secrets", "default", true},
		{"update", "", "secrets", "default", true},
		{"watch", "", "secrets", "", true},
		{"patch", "", "serviceaccounts", "default", true},
		{"create", "events.k8s.io", "events", "default", true},
		{"create", "coordination.k8s.io", "leases", ns, true},
		{"delete", "", "secrets", "default", false},
		{"patch", "", "secrets", "default", false},
		{"update", "", "serviceaccounts", "default", false},
		{"get", "", "configmaps", "default", false},
		{"patch", "", "namespaces", "", false},
		{"create", "coordination.k8s.io", "leases", "default", false},
	} {
		// The grants are checked first, with retries until the authorizer
		// has the new bindings; the refusals after them are then meaningful.
		err := devenv.Retry(ctx, waitTimeout, "a SubjectAccessReview", func(ctx context.Context) error {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: user, Groups: groups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: tc.verb, Group: tc.group, Resource: tc.resource, Namespace: tc.ns},
			}}
			if err := suite.c.Create(ctx, sar); err != nil {
				return err
			}
			if sar.Status.Allowed != tc.allowed {
				return fmt.Errorf("%s %s %s in %q: allowed %v, want %v", tc.verb, tc.group, tc.resource, tc.ns, sar.Status.Allowed, tc.allowed)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	cfg := rest.CopyConfig(suite.cp.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return cfg
}

// TestCreateSecretArrivesByReload starts a server, without leader election,
// whose policies have no createSecret: its reconciler stays idle (nothing at
// /status). A reload that brings a createSecret policy starts it, and the
// namespaces that policy selects get their Secret.
func TestCreateSecretArrivesByReload(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	home := newNamespace(ctx, t, "secrets-reload", nil)
	cfg := installCreateSecretRBAC(ctx, t, home)
	selected := map[string]string{secretsLabel: home}
	ns := newNamespace(ctx, t, "secrets-reload-team", selected)
	none := map[string][]byte{"deny.yaml": []byte(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-reload-nothing
spec:
  match:
    resources: [configmaps]
    objectSelector: {matchLabels: {e2e.celadon.io/never: "true"}}
  action: deny
  with: {message: never}
  failurePolicy: Ignore
`)}
	s, err := runCeladon(ctx, "celadon-e2e-secrets-reload", none, func(_ *celadon, o *server.Options) {
		o.Config = cfg
		o.Namespace = home
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	st, err := s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if secretsOf(t, st) != nil {
		t.Fatalf("the reconciler runs with no createSecret policy: %+v", secretsOf(t, st))
	}
	files := map[string][]byte{"secrets.yaml": fmt.Appendf(nil, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-reload-secret
spec:
  match:
    resources: [namespaces]
    namespaceSelector:
      matchLabels: {%s: %s}
  action: createSecret
  with:
    name: greeting
    stringData: {text: "hello ${{ object.metadata.name }}"}
`, secretsLabel, home)}
	s.setPolicies(t, files)
	waitFor(ctx, t, "Secret greeting in "+ns, func(ctx context.Context) (bool, error) {
		sec := &corev1.Secret{}
		err := suite.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "greeting"}, sec)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && string(sec.Data["text"]) == "hello "+ns, err
	})
	if st, err := s.status(ctx); err != nil || secretsOf(t, st) == nil || len(secretsOf(t, st).Issues) != 0 {
		t.Errorf("status after the reload: %+v, %v; want the reconciler running, no issues", st, err)
	}
}

// secretsOf returns createSecret's controller status from /status; nil
// when the controller does not run on that replica.
func secretsOf(t *testing.T, st *server.Status) *builtins.SecretStatus {
	t.Helper()
	raw, ok := st.Controllers["createSecret"]
	if !ok || raw == nil {
		return nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	out := &builtins.SecretStatus{}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("createSecret status %s: %v", b, err)
	}
	return out
}

// TestCreateSecretWritesWhereAdmissionLooks: createSecret's reconciler
// writes nothing where no webhook is called (kube-system, Celadon's own
// namespace), nor into kube-public, even when a policy selects them; and it
// copies a source Secret only from Celadon's namespace and those the
// operator allowed, so that whoever edits the policies cannot read any
// Secret of the cluster through a copy. The servers run with the RBAC of
// deploy/, which lets them write Secrets everywhere: the limits are
// Celadon's own.
func TestCreateSecretWritesWhereAdmissionLooks(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	home := newNamespace(ctx, t, "secrets-where", nil)
	cfg := installCreateSecretRBAC(ctx, t, home)
	elsewhere := newNamespace(ctx, t, "secrets-elsewhere", nil)
	if err := suite.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: elsewhere, Name: "db-password"}, StringData: map[string]string{"password": "hunter2"}}); err != nil {
		t.Fatal(err)
	}
	// The reconciler has one worker and starts with every namespace in
	// name order: once this one, named after all the others, has its
	// Secret, the others have been reconciled too.
	team := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "zz-e2e-secrets-where-"}}
	if err := suite.c.Create(ctx, team); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = suite.c.Delete(context.Background(), team) })
	targets := []string{metav1.NamespaceSystem, metav1.NamespacePublic, home, team.Name}
	policies := map[string][]byte{"secrets.yaml": fmt.Appendf(nil, `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-marker
spec:
  match:
    resources: [namespaces]
    namespaceSelector:
      matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [%[1]s]}]
  action: createSecret
  with:
    name: e2e-marker-%[2]s
    stringData: {here: "${{ object.metadata.name }}"}
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-copy-elsewhere
spec:
  match:
    resources: [namespaces]
    namespaceSelector:
      matchLabels: {kubernetes.io/metadata.name: %[3]s}
  action: createSecret
  with:
    name: stolen-%[2]s
    from: {namespace: %[4]s, name: db-password}
`, strings.Join(targets, ", "), home, team.Name, elsewhere)}
	s, err := runCeladon(ctx, "celadon-e2e-secrets-where", policies, func(_ *celadon, o *server.Options) {
		o.Config = cfg
		o.Namespace = home
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	marker := "e2e-marker-" + home
	waitFor(ctx, t, "Secret "+marker+" in "+team.Name, func(ctx context.Context) (bool, error) {
		err := suite.c.Get(ctx, client.ObjectKey{Namespace: team.Name, Name: marker}, &corev1.Secret{})
		return err == nil, client.IgnoreNotFound(err)
	})
	for _, ns := range []string{metav1.NamespaceSystem, metav1.NamespacePublic, home} {
		err := suite.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: marker}, &corev1.Secret{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s in %s: %v, want none: createSecret must not write where admission never looks", marker, ns, err)
			_ = suite.c.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: marker}})
		}
	}
	waitFor(ctx, t, "the refused copy reported in /status", func(ctx context.Context) (bool, error) {
		st, err := s.status(ctx)
		if err != nil {
			return false, err
		}
		secrets := secretsOf(t, st)
		if secrets == nil {
			return false, nil
		}
		for _, is := range secrets.Issues {
			if is.Namespace == team.Name && is.Reason == builtins.SecretSourceNotAllowed {
				return true, nil
			}
		}
		return false, nil
	})
	if err := suite.c.Get(ctx, client.ObjectKey{Namespace: team.Name, Name: "stolen-" + home}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("a copy of %s/db-password in %s: %v, want none", elsewhere, team.Name, err)
	}
}
