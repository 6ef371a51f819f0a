package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/server"
)

// TestExceptionAdmitsUntilItExpires: through the API server, a ConfigMap a
// policy denies is admitted once a team's exception lands in the
// exceptions directory (in the subdirectory of its namespace, as its
// ConfigMap would be mounted), with a warning that it expires; and denied
// again the moment it expires, with no reload. Before that, an exception
// that would reach the whole cluster is refused and changes nothing.
func TestExceptionAdmitsUntilItExpires(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	token := randomToken(t)
	scope := map[string]string{"e2e.celadon.io/exception": token}
	policies := map[string][]byte{"frozen.yaml": []byte(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-frozen
spec:
  match:
    resources: [configmaps]
    operations: [CREATE]
  action: deny
  with: {message: configmaps are frozen here}
`)}
	var exceptions string
	s := startScopedCeladon(ctx, t, "celadon-e2e-exception", policies, func(c *celadon, o *server.Options) {
		exceptions = filepath.Join(c.dir, "exceptions")
		if err := os.MkdirAll(exceptions, 0o755); err != nil {
			t.Fatal(err)
		}
		o.ExceptionsDir = exceptions
	}, &metav1.LabelSelector{MatchLabels: scope}, nil)
	ns := newNamespace(ctx, t, "exception", scope)
	c, warnings := warningClient(t)
	create := func() error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "settings-"}, Data: map[string]string{"k": "v"}}
		return c.Create(ctx, cm, client.DryRunAll)
	}
	denied := func(err error) bool { return err != nil && strings.Contains(err.Error(), "configmaps are frozen here") }
	if err := create(); !denied(err) {
		t.Fatalf("before any exception: %v, want the policy's denial", err)
	}

	// A team's exception for the whole cluster (no namespaces): refused,
	// reported, and the policy still denies.
	exception := func(name, namespaces string, expires time.Time) []byte {
		return fmt.Appendf(nil, `apiVersion: celadon.io/v1alpha1
kind: PolicyException
metadata:
  name: %s
spec:
  policies: [e2e-frozen]
  match:%s
  reason: the team migrates its settings
  owner: team-e2e@example.com
  expires: %s
`, name, namespaces, expires.UTC().Format(time.RFC3339))
	}
	if err := devenv.WriteAtomic(filepath.Join(exceptions, "everyone"), map[string][]byte{"x.yaml": exception("everyone", " {}", time.Now().Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the cluster-wide exception to be refused", func(ctx2 context.Context) (bool, error) {
		st, err := s.status(ctx2)
		return err == nil && st.LastExceptionsReloadError != nil, err
	})
	st, err := s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e := st.LastExceptionsReloadError.Errors[0]; e.Exception != "everyone" || !strings.Contains(e.Message, "match.namespaces: required in the exceptions directory") {
		t.Errorf("reported: %+v", e)
	}
	if err := create(); !denied(err) {
		t.Fatalf("with the refused exception: %v, want the policy's denial", err)
	}
	if err := os.RemoveAll(filepath.Join(exceptions, "everyone")); err != nil {
		t.Fatal(err)
	}

	// The team's own exception, in its namespace's directory, expiring
	// in a few seconds.
	expires := time.Now().Add(6 * time.Second).Truncate(time.Second).Add(time.Second)
	if err := devenv.WriteAtomic(filepath.Join(exceptions, ns), map[string][]byte{"exceptions.yaml": exception("settings-migration", "\n    namespaces: ["+ns+"]", expires)}); err != nil {
		t.Fatal(err)
	}
	warnings.take()
	waitFor(ctx, t, "the exception to admit the ConfigMap", func(context.Context) (bool, error) {
		err := create()
		if err != nil && !denied(err) {
			return false, err
		}
		return err == nil, nil
	})
	admitted := time.Now()
	if !admitted.Before(expires) {
		t.Fatalf("admitted at %s, after the expiry %s", admitted, expires)
	}
	want := `Celadon exception "settings-migration" (owner team-e2e@example.com) expires in less than a day (` + expires.UTC().Format(time.RFC3339) + `): policy e2e-frozen applies again then`
	if got := warnings.take(); !slices.Contains(got, want) {
		t.Errorf("warnings %q, want %q", got, want)
	}
	st, err = s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Exceptions) != 1 || st.Exceptions[0].Expired || st.LastExceptionsReloadError != nil {
		t.Fatalf("status: exceptions %+v, error %v", st.Exceptions, st.LastExceptionsReloadError)
	}
	hash := st.ExceptionsHash

	// At the expiry, denied again at once: no file changes, no reload.
	time.Sleep(time.Until(expires) + 50*time.Millisecond)
	if err := create(); !denied(err) {
		t.Fatalf("after the expiry: %v, want the policy's denial", err)
	}
	st, err = s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExceptionsHash != hash || len(st.Exceptions) != 1 || !st.Exceptions[0].Expired {
		t.Errorf("status after the expiry: hash %s (was %s), exceptions %+v", st.ExceptionsHash, hash, st.Exceptions)
	}
}
