package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/prom"
	"celadon.io/celadon/webhook"
)

// Metric names of the policies (webhook's are the requests'). They are
// registered in controller-runtime's registry
// (sigs.k8s.io/controller-runtime/pkg/metrics.Registry) unless
// Options.MetricsRegisterer says otherwise, and served at /metrics on the
// metrics bind address.
const (
	MetricPolicyEvals      = "celadon_policy_evaluations_total"
	MetricPolicyErrors     = "celadon_policy_errors_total"
	MetricPolicyPanics     = "celadon_policy_panics_total"
	MetricPolicyDuration   = "celadon_policy_evaluation_duration_seconds"
	MetricReloads          = "celadon_policy_reloads_total"
	MetricPolicySetInfo    = "celadon_policy_set_info"
	MetricPoliciesLoaded   = "celadon_policies_loaded"
	MetricLastReloadTime   = "celadon_policy_set_last_reload_timestamp_seconds"
	MetricLastReloadFailed = "celadon_policy_reload_last_failed"

	MetricExceptionReloads    = "celadon_exception_reloads_total"
	MetricExceptionLastFailed = "celadon_exception_reload_last_failed"
	MetricExceptionsLoaded    = "celadon_exceptions_loaded"
	MetricExceptionExpiry     = "celadon_exception_expiry_timestamp_seconds"
	MetricExceptionsApplied   = "celadon_exceptions_applied_total"
	// MetricDecisionLogsDropped counts the decision log lines dropped
	// over Options.DecisionLogRate.
	MetricDecisionLogsDropped = "celadon_decision_logs_dropped_total"
)

// Reload result label values of MetricReloads.
const (
	reloadSuccess = "success"
	reloadFailure = "failure"
)

// metrics holds the server's collectors: the requests', and the policies'.
type metrics struct {
	*webhook.Metrics
	policyEvals    *prometheus.CounterVec
	policyErrors   *prometheus.CounterVec
	policyPanics   *prometheus.CounterVec
	policyDuration *prometheus.HistogramVec
	reloads        *prometheus.CounterVec
	setInfo        *prometheus.GaugeVec
	policiesLoaded prometheus.Gauge
	lastReload     prometheus.Gauge
	lastFailed     prometheus.Gauge

	exceptionReloads    *prometheus.CounterVec
	exceptionLastFailed prometheus.Gauge
	exceptionsLoaded    prometheus.Gauge
	exceptionExpiry     *prometheus.GaugeVec
	exceptionsApplied   *prometheus.CounterVec
	exMu                sync.Mutex
	exApplied           map[string]bool // exceptions with applied counts
	decisionsLost       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		Metrics: webhook.NewMetrics(reg),
		policyEvals: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricPolicyEvals,
			Help: "Policy evaluations by policy and result state (pass, fail, warn, error, skip).",
		}, []string{"policy", "state"})),
		policyErrors: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricPolicyErrors,
			Help: "Policy evaluations that ended in a CEL or builtin error; the policy's failurePolicy decided.",
		}, []string{"policy"})),
		policyPanics: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricPolicyPanics,
			Help: "Builtin panics recovered by the engine, by policy; the policy's failurePolicy decided.",
		}, []string{"policy"})),
		policyDuration: prom.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricPolicyDuration,
			Help:    "Time spent evaluating one policy for one request: selectors, conditions and action.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"policy"})),
		reloads: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricReloads,
			Help: "Policy reloads that found changed content, by result (success, failure). Unchanged content is not counted.",
		}, []string{"result"})),
		setInfo: prom.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricPolicySetInfo,
			Help: "The loaded policy set: always 1, labelled with the set's content hash.",
		}, []string{"hash"})),
		policiesLoaded: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricPoliciesLoaded,
			Help: "Number of policies in the loaded set.",
		})),
		lastReload: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricLastReloadTime,
			Help: "Unix time at which the loaded policy set was swapped in.",
		})),
		lastFailed: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricLastReloadFailed,
			Help: "1 when the newest policy content on disk failed to load and an older set is being served, else 0.",
		})),
		exceptionReloads: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricExceptionReloads,
			Help: "Loads of the exceptions directory that found changed content, by result (success, failure).",
		}, []string{"result"})),
		exceptionLastFailed: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricExceptionLastFailed,
			Help: "1 when the newest content of the exceptions directory failed to load and older exceptions (or none) are served, else 0.",
		})),
		exceptionsLoaded: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricExceptionsLoaded,
			Help: "Number of exceptions served, of the policy files and of the exceptions directory, expired ones included.",
		})),
		exceptionExpiry: prom.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricExceptionExpiry,
			Help: "Unix time at which a served exception expires, by exception and origin (policies, exceptions); absent for those that never expire.",
		}, []string{"exception", "origin"})),
		exceptionsApplied: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricExceptionsApplied,
			Help: "Policy results turned into skip by an exception, by exception and policy.",
		}, []string{"exception", "policy"})),
		exApplied: map[string]bool{},
		decisionsLost: prom.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricDecisionLogsDropped,
			Help: "Decision log lines dropped because more than the decision log rate (--decision-log-rate) were due in one second.",
		})),
	}
}

// policyObservers are what the server keeps of one policy across the sets
// that hold it: its collectors, made on its first evaluation, and its
// counts of the last hour for /status. A policy never evaluated has no
// series: eager series cost ≈ 5 KB per policy.
type policyObservers struct {
	name   string
	series atomic.Pointer[policySeries]
	mu     sync.Mutex // orders making the series against forgetting them
	gone   bool       // the policy left the set; under mu
	recent *lazyResults
}

// policySeries are one policy's collectors, resolved once so that the
// request path does no label lookups.
type policySeries struct {
	states   [5]prometheus.Counter // by stateIndex
	errors   prometheus.Counter
	panics   prometheus.Counter
	duration prometheus.Observer
}

var allStates = []engine.State{engine.StatePass, engine.StateFail, engine.StateWarn, engine.StateError, engine.StateSkip}

// observersFor returns the observers of snap's policies: those of prev
// (the set snap replaces; nil at first) for the policies it holds too, so
// that they keep their series and counts.
func (m *metrics) observersFor(snap *engine.Snapshot, prev map[string]*policyObservers) map[string]*policyObservers {
	obs := make(map[string]*policyObservers, len(snap.Policies))
	for _, p := range snap.Policies {
		name := p.Name()
		o := prev[name]
		if o == nil {
			o = &policyObservers{name: name, recent: new(lazyResults)}
		}
		obs[name] = o
	}
	return obs
}

// seriesOf returns o's collectors, making them on first use; nil once the
// policy has left the set, so that a request still on the old set does not
// bring back the series forgetPolicies deleted.
func (m *metrics) seriesOf(o *policyObservers) *policySeries {
	if s := o.series.Load(); s != nil {
		return s
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if s := o.series.Load(); s != nil || o.gone {
		return s
	}
	s := &policySeries{
		errors:   m.policyErrors.WithLabelValues(o.name),
		panics:   m.policyPanics.WithLabelValues(o.name),
		duration: m.policyDuration.WithLabelValues(o.name),
	}
	for _, st := range allStates {
		s.states[stateIndex(st)] = m.policyEvals.WithLabelValues(o.name, string(st))
	}
	o.series.Store(s)
	return s
}

// forgetPolicies drops the series of policies that left the set.
func (m *metrics) forgetPolicies(old, cur map[string]*policyObservers) {
	for name, o := range old {
		if _, ok := cur[name]; ok {
			continue
		}
		o.mu.Lock()
		o.gone = true
		o.series.Store(nil)
		o.mu.Unlock()
		l := prometheus.Labels{"policy": name}
		m.policyEvals.DeletePartialMatch(l)
		m.policyErrors.DeletePartialMatch(l)
		m.policyPanics.DeletePartialMatch(l)
		m.policyDuration.DeletePartialMatch(l)
	}
}

// observeResults records the per-policy results of one decision, made at
// now.
func (m *metrics) observeResults(set *policySet, results []engine.PolicyResult, now time.Time) {
	for i := range results {
		r := &results[i]
		o := set.observers[r.Policy]
		if o == nil { // cannot happen: results name policies of the set
			continue
		}
		o.recent.get().record(now, r.State)
		if r.Panicked {
			m.Panics.WithLabelValues(webhook.PanicBuiltin).Inc()
		}
		if r.Exception != "" {
			m.exMu.Lock()
			m.exApplied[r.Exception] = true
			m.exceptionsApplied.WithLabelValues(r.Exception, r.Policy).Inc()
			m.exMu.Unlock()
		}
		s := m.seriesOf(o)
		if s == nil { // the policy left the set while this request ran
			continue
		}
		if i := stateIndex(r.State); i >= 0 {
			s.states[i].Inc()
		} else {
			m.policyEvals.WithLabelValues(r.Policy, string(r.State)).Inc()
		}
		s.duration.Observe(r.Duration.Seconds())
		if r.State == engine.StateError {
			s.errors.Inc()
		}
		if r.Panicked {
			s.panics.Inc()
		}
	}
}

// setLoaded records a newly swapped-in set.
func (m *metrics) setLoaded(snap *engine.Snapshot, at time.Time) {
	m.setInfo.Reset()
	m.setInfo.WithLabelValues(snap.Hash).Set(1)
	m.policiesLoaded.Set(float64(len(snap.Policies)))
	m.lastReload.Set(float64(at.UnixNano()) / 1e9)
}
