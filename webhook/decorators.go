package webhook

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Decorator wraps a Handler with one concern.
type Decorator func(Handler) Handler

// Chain applies decorators to h; the first is the outermost.
func Chain(h Handler, ds ...Decorator) Handler {
	for i := len(ds) - 1; i >= 0; i-- {
		h = ds[i](h)
	}
	return h
}

// WithLogging logs each request and its answer at V(1); at the default
// verbosity it costs one check.
func WithLogging(log logr.Logger) Decorator {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req admission.Request) Response {
			l := log.V(1)
			if !l.Enabled() {
				return next.Handle(ctx, req)
			}
			start := time.Now()
			resp := next.Handle(ctx, req)
			kv := []any{
				"uid", req.UID, "operation", req.Operation,
				"resource", req.Resource.Resource, "subResource", req.SubResource,
				"namespace", req.Namespace, "name", req.Name, "user", req.UserInfo.Username,
				"dryRun", req.DryRun != nil && *req.DryRun,
				"allowed", resp.Allowed(), "patchOperations", len(resp.Patch()), "duration", time.Since(start).String(),
			}
			if resp.Message() != "" {
				kv = append(kv, "code", resp.Code(), "message", resp.Message())
			}
			l.Info("admission request", kv...)
			return resp
		})
	}
}

// WithBypass allows requests from username untouched, without evaluating
// any policy, so that Celadon never blocks its own service account.
func WithBypass(username string) Decorator {
	return func(next Handler) Handler {
		if username == "" {
			return next
		}
		return HandlerFunc(func(ctx context.Context, req admission.Request) Response {
			if req.UserInfo.Username == username {
				return Allowed()
			}
			return next.Handle(ctx, req)
		})
	}
}

// Limiter bounds the number of concurrent evaluations.
type Limiter struct {
	slots chan struct{}
}

// NewLimiter returns a limiter of n slots.
func NewLimiter(n int) *Limiter { return &Limiter{slots: make(chan struct{}, max(n, 1))} }

// Size is the number of slots.
func (l *Limiter) Size() int { return cap(l.slots) }

// Acquire waits for a slot until ctx is done. It returns false when no slot
// freed up in time.
func (l *Limiter) Acquire(ctx context.Context) bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	select {
	case l.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// Release frees a slot taken by Acquire.
func (l *Limiter) Release() { <-l.slots }

// WithLimit runs next within a slot of l. A request waits for a slot until
// its deadline (90% of the API server's timeout, see ReviewHandler), so a
// burst is absorbed; one that finds none gets NotEvaluated with code 429
// (Too Many Requests), and one whose deadline passed as it got its slot
// gets NotEvaluated with code 503, rather than policies that would each
// report "not evaluated". Either is written as an HTTP error, a failed
// call, so the API server applies the webhook's failurePolicy: an Ignore
// webhook admits the object unchanged, a Fail one refuses it. A review
// with allowed: false would be a denial whatever the failurePolicy (see
// NotEvaluated). Both count as throttled.
func WithLimit(l *Limiter, throttled prometheus.Counter, inFlight prometheus.Gauge) Decorator {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req admission.Request) Response {
			if !l.Acquire(ctx) {
				if throttled != nil {
					throttled.Inc()
				}
				return NotEvaluated(http.StatusTooManyRequests, fmt.Errorf(
					"celadon: too many concurrent admission requests (limit %d): no evaluation slot freed up before the deadline (%v)", l.Size(), context.Cause(ctx)))
			}
			defer l.Release()
			if err := ctx.Err(); err != nil {
				if throttled != nil {
					throttled.Inc()
				}
				return NotEvaluated(http.StatusServiceUnavailable, fmt.Errorf(
					"celadon: the deadline passed before the request could be evaluated (%v)", context.Cause(ctx)))
			}
			if inFlight != nil {
				inFlight.Inc()
				defer inFlight.Dec()
			}
			return next.Handle(ctx, req)
		})
	}
}
