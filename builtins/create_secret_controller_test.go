package builtins

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"celadon.io/celadon/engine"
)

func TestSecretIssues(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := &secretController{cc: engine.ControllerContext{Namespace: "celadon"}, metrics: newSecretMetrics(reg)}
	if r.Status() != nil {
		t.Fatal("status before the reconciler started: want nil")
	}
	r.issues = map[string][]SecretIssue{}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	conflict := SecretIssue{Namespace: "team-b", Secret: "regcred", Policy: "pull-secret", Reason: SecretConflict, Message: "taken", Since: t0}
	missing := SecretIssue{Namespace: "team-a", Secret: "tls", Policy: "tls", Reason: SecretSourceNotFound, Message: "no source", Since: t0}
	if fresh := r.setIssues("team-b", []SecretIssue{conflict}); len(fresh) != 1 {
		t.Fatalf("fresh %v: want the conflict", fresh)
	}
	if fresh := r.setIssues("team-a", []SecretIssue{missing}); len(fresh) != 1 {
		t.Fatalf("fresh %v: want the missing source", fresh)
	}
	if got := gaugeValue(t, reg, MetricSecretIssues); got != 2 {
		t.Errorf("%s = %v, want 2", MetricSecretIssues, got)
	}
	// Seen again: not fresh, and it keeps its first time.
	again := conflict
	again.Since = t0.Add(time.Hour)
	if fresh := r.setIssues("team-b", []SecretIssue{again}); len(fresh) != 0 {
		t.Errorf("fresh %v: want none, the conflict is known", fresh)
	}
	st := r.Status().(*SecretStatus)
	if st.Namespace != "celadon" || len(st.Issues) != 2 || st.Issues[0] != missing || st.Issues[1] != conflict {
		t.Errorf("status %+v: want team-a's then team-b's issue, with their first times", st)
	}
	// Resolved: gone from the status and the gauge.
	r.setIssues("team-b", nil)
	if st := r.Status().(*SecretStatus); len(st.Issues) != 1 || st.Issues[0].Namespace != "team-a" {
		t.Errorf("status %+v after the conflict was resolved", st)
	}
	if got := gaugeValue(t, reg, MetricSecretIssues); got != 1 {
		t.Errorf("%s = %v, want 1", MetricSecretIssues, got)
	}
}

func TestDesiredSecret(t *testing.T) {
	copyPlan := &SecretPlan{Policy: "pull-secret", Namespace: "team-a", Name: "regcred",
		From: &SecretRef{Name: "regcred"}, Labels: map[string]string{"tier": "x"}, Annotations: map[string]string{"note": "n"}}
	source := &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{".dockerconfigjson": []byte("{}")}}
	got := desiredSecret(copyPlan, "celadon", source)
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "regcred",
			Labels:      map[string]string{"tier": "x", SecretManagedByLabel: SecretManagedByValue},
			Annotations: map[string]string{"note": "n", SecretPolicyAnnotation: "pull-secret", SecretSourceAnnotation: "celadon/regcred"}},
		Type: corev1.SecretTypeDockerConfigJson, Data: source.Data,
	}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("copy:\n%+v\nwant:\n%+v", got, want)
	}
	if copyPlan.Labels[SecretManagedByLabel] != "" {
		t.Error("desiredSecret changed the plan's labels")
	}
	inline := &SecretPlan{Policy: "cfg", Namespace: "team-a", Name: "cfg", Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"k": []byte("v")}}
	got = desiredSecret(inline, "celadon", nil)
	if got.Type != corev1.SecretTypeOpaque || string(got.Data["k"]) != "v" || got.Annotations[SecretSourceAnnotation] != "inline" {
		t.Errorf("inline: %+v", got)
	}
}

func TestSecretUpdate(t *testing.T) {
	plan := &SecretPlan{Policy: "pull-secret", Namespace: "team-a", Name: "regcred", From: &SecretRef{Name: "regcred"}}
	desired := desiredSecret(plan, "celadon", &corev1.Secret{Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"k": []byte("v2")}})
	managed := func(mod func(*corev1.Secret)) *corev1.Secret {
		s := desired.DeepCopy()
		s.ResourceVersion = "7"
		mod(s)
		return s
	}
	cases := []struct {
		name   string
		live   *corev1.Secret
		want   *corev1.Secret // nil: nothing to write
		reason string
		err    string
	}{
		{name: "up to date", live: managed(func(*corev1.Secret) {})},
		{
			name: "the source changed: new data, the rest kept",
			live: managed(func(s *corev1.Secret) {
				s.Data = map[string][]byte{"k": []byte("v1"), "old": []byte("x")}
				s.Labels["team"] = "a"
			}),
			want: managed(func(s *corev1.Secret) { s.Labels["team"] = "a" }),
		},
		{
			name: "Celadon's annotation removed: restored",
			live: managed(func(s *corev1.Secret) { delete(s.Annotations, SecretSourceAnnotation) }),
			want: managed(func(*corev1.Secret) {}),
		},
		{
			name:   "not managed: a conflict",
			live:   &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "regcred"}, Data: map[string][]byte{"k": []byte("theirs")}},
			reason: SecretConflict,
			err:    "Secret team-a/regcred exists and is not managed by Celadon",
		},
		{
			name:   "managed for another policy: a conflict",
			live:   managed(func(s *corev1.Secret) { s.Annotations[SecretPolicyAnnotation] = "other" }),
			reason: SecretConflict,
			err:    `Secret team-a/regcred is managed by policy "other", not pull-secret`,
		},
		{
			name:   "another type: an error, the type is immutable",
			live:   managed(func(s *corev1.Secret) { s.Type = corev1.SecretTypeTLS }),
			reason: SecretError,
			err:    "a Secret's type cannot change",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.live.DeepCopy()
			got, reason, err := secretUpdate(plan, desired, tc.live)
			if reason != tc.reason || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("reason %q, error %v; want %q, %q", reason, err, tc.reason, tc.err)
			}
			if !equality.Semantic.DeepEqual(got, tc.want) {
				t.Errorf("write:\n%+v\nwant:\n%+v", got, tc.want)
			}
			if !equality.Semantic.DeepEqual(tc.live, before) {
				t.Error("secretUpdate changed the live object")
			}
		})
	}
}

// gaugeValue returns the value of an unlabelled gauge of reg.
func gaugeValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
