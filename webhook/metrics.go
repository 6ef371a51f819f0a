package webhook

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"celadon.io/celadon/internal/prom"
)

// Metric names of the requests. They are registered where the server says
// (controller-runtime's registry by default) and served at /metrics.
const (
	MetricRequests        = "celadon_admission_requests_total"
	MetricRequestDuration = "celadon_admission_request_duration_seconds"
	MetricThrottled       = "celadon_admission_throttled_total"
	MetricInFlight        = "celadon_admission_evaluations_in_flight"
	MetricBodyBytes       = "celadon_admission_body_bytes_in_flight"
	MetricPanics          = "celadon_panics_total"
)

// Decision label values of MetricRequests.
const (
	DecisionAllowed = "allowed"
	DecisionDenied  = "denied"
	DecisionPatched = "patched"
	DecisionError   = "error"
)

// Where label values of MetricPanics.
const (
	PanicBuiltin = "builtin" // recovered by the engine, decided by the policy's failurePolicy
	PanicEngine  = "engine"  // answering a decoded request, outside a builtin: decided by the candidates' failurePolicy
	PanicHTTP    = "http"    // before the review is decoded
)

// Metrics are the collectors of admission requests.
type Metrics struct {
	Requests        *prometheus.CounterVec
	RequestDuration *prometheus.HistogramVec
	Throttled       *prometheus.CounterVec
	InFlight        prometheus.Gauge
	BodyBytes       prometheus.Gauge
	Panics          *prometheus.CounterVec
}

// NewMetrics registers the request collectors with reg, or finds them
// registered already.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	return &Metrics{
		Requests: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequests,
			Help: "Admission requests by endpoint, decision (allowed, denied, patched, error) and HTTP status code.",
		}, []string{"endpoint", "decision", "code"})),
		RequestDuration: prom.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricRequestDuration,
			Help:    "Time to answer an admission request, from the first byte read to the last written.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"endpoint"})),
		Throttled: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricThrottled,
			Help: "Admission requests not evaluated for want of room: no free evaluation slot before their deadline, or no room in the body budget (HTTP 429 or 503).",
		}, []string{"endpoint"})),
		InFlight: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricInFlight,
			Help: "Policy evaluations running now.",
		})),
		BodyBytes: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricBodyBytes,
			Help: "Bytes of request bodies held now, out of the body budget (--max-body-bytes-in-flight), taken as they arrive.",
		})),
		Panics: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricPanics,
			Help: "Recovered panics, by where they happened: builtin, engine or http.",
		}, []string{"where"})),
	}
}

// codeLabel avoids an allocation for the usual status codes.
func codeLabel(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 405:
		return "405"
	case 413:
		return "413"
	case 429:
		return "429"
	case 500:
		return "500"
	}
	return strconv.Itoa(code)
}
