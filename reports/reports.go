package reports

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"celadon.io/celadon/engine"
)

const (
	// Source is the source of every report and result Celadon writes.
	Source = "celadon"
	// ReportName names the Report of each namespace and the ClusterReport.
	ReportName = "celadon"
	// MaxResults bounds the results a report lists, so that a namespace
	// with many violating objects cannot make it larger than etcd accepts
	// (1.5 MiB); its summary still counts every result.
	MaxResults = 1000
	// PropertyTruncated is set on a report's last result when results were
	// left out, to how many.
	PropertyTruncated = "celadon.io/results-left-out"
	// PropertyException names the exception that turned a result into skip.
	PropertyException = "celadon.io/exception"
	// PropertyExceptionExpires is when that exception stops applying, RFC
	// 3339; PropertyExceptionExpiresSoon is "true" when that is within
	// ExpiresSoon of the result.
	PropertyExceptionExpires     = "celadon.io/exception-expires"
	PropertyExceptionExpiresSoon = "celadon.io/exception-expires-soon"
	// ExpiresSoon is how close an exception's expiry makes it "soon": the
	// week in which requesters are warned too.
	ExpiresSoon = 7 * 24 * time.Hour
)

// ExceptionProperties are the properties of a result an exception made:
// its name, and when it expires, if it does.
func ExceptionProperties(name string, expires, at time.Time) map[string]string {
	out := map[string]string{PropertyException: name}
	if !expires.IsZero() {
		out[PropertyExceptionExpires] = expires.UTC().Format(time.RFC3339)
		if expires.Sub(at) <= ExpiresSoon {
			out[PropertyExceptionExpiresSoon] = "true"
		}
	}
	return out
}

// GroupVersion is openreports.io/v1alpha1.
var GroupVersion = v1alpha1.SchemeGroupVersion

// Result is one policy's result on one object.
type Result struct {
	Policy  string
	State   engine.State
	Message string
	// Object is the object: APIVersion, Kind, Namespace ("" when
	// cluster-scoped), Name and UID.
	Object corev1.ObjectReference
	// Properties are extra key-value pairs, e.g. PropertyException.
	Properties map[string]string
	// Time is when the result was produced.
	Time time.Time
}

// Build groups results into the Report of each namespace and the
// ClusterReport, with results sorted by object then policy and summaries
// counted. A namespace or the cluster without results gets no report: the
// caller deletes it. Build keeps no state: the same results give the same
// reports.
func Build(results []Result) (namespaced map[string]*v1alpha1.Report, cluster *v1alpha1.ClusterReport) {
	byNS := map[string][]Result{}
	for _, r := range results {
		byNS[r.Object.Namespace] = append(byNS[r.Object.Namespace], r)
	}
	namespaced = map[string]*v1alpha1.Report{}
	for ns, rs := range byNS {
		summary, out := reportResults(rs)
		if ns == "" {
			cluster = &v1alpha1.ClusterReport{
				TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion.String(), Kind: "ClusterReport"},
				ObjectMeta: metav1.ObjectMeta{Name: ReportName, Labels: labels()},
				Source:     Source,
				Summary:    summary,
				Results:    out,
			}
			continue
		}
		namespaced[ns] = &v1alpha1.Report{
			TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion.String(), Kind: "Report"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ReportName, Labels: labels()},
			Source:     Source,
			Summary:    summary,
			Results:    out,
		}
	}
	return namespaced, cluster
}

// ManagedByLabel marks the reports Celadon writes.
const ManagedByLabel = "app.kubernetes.io/managed-by"

func labels() map[string]string { return map[string]string{ManagedByLabel: Source} }

func reportResults(rs []Result) (v1alpha1.ReportSummary, []v1alpha1.ReportResult) {
	slices.SortFunc(rs, func(a, b Result) int {
		return cmp.Or(
			cmp.Compare(a.Object.Kind, b.Object.Kind),
			cmp.Compare(a.Object.Name, b.Object.Name),
			cmp.Compare(a.Policy, b.Policy),
		)
	})
	var sum v1alpha1.ReportSummary
	out := make([]v1alpha1.ReportResult, 0, min(len(rs), MaxResults))
	for _, r := range rs {
		switch r.State {
		case engine.StatePass:
			sum.Pass++
		case engine.StateFail:
			sum.Fail++
		case engine.StateWarn:
			sum.Warn++
		case engine.StateError:
			sum.Error++
		case engine.StateSkip:
			sum.Skip++
		}
		if len(out) == MaxResults {
			continue
		}
		rr := v1alpha1.ReportResult{
			Source:      Source,
			Policy:      r.Policy,
			Result:      v1alpha1.Result(r.State),
			Description: r.Message,
			Subjects:    []corev1.ObjectReference{r.Object},
			Timestamp:   metav1.Timestamp{Seconds: r.Time.Unix()},
		}
		if len(r.Properties) > 0 {
			rr.Properties = make(map[string]string, len(r.Properties))
			for k, v := range r.Properties {
				rr.Properties[k] = v
			}
		}
		out = append(out, rr)
	}
	if left := len(rs) - len(out); left > 0 {
		last := &out[len(out)-1]
		if last.Properties == nil {
			last.Properties = map[string]string{}
		}
		last.Properties[PropertyTruncated] = strconv.Itoa(left)
	}
	return sum, out
}
