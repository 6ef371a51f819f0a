package server

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	admissionv1 "k8s.io/api/admission/v1"

	"celadon.io/celadon/engine"
)

// Decision logs: one info line per policy result an operator wants to see
// across the cluster (fail, warn, error, and a fail under Audit), and a
// sample of the pass results, with the request it was for:
//
//	{"level":"info","logger":"celadon.decision","msg":"policy decision","endpoint":"/validate/fail",
//	 "policy":"no-latest","state":"fail","enforcement":"Deny","message":"no latest images",
//	 "resource":"v1/pods","subResource":"","namespace":"shop","name":"web-0","operation":"CREATE",
//	 "user":"alice","dryRun":false,"uid":"…","denied":true}
//
// What the requester and the policies put in a line is theirs (a name, a
// user, a message built from the object), so every such value is made one
// line and bounded (logText), and an error's message is redacted as the
// requester's denial is: decision logs are meant to be shipped further
// than the server's own diagnostics, which keep the error whole. Lines
// beyond a rate per second are dropped, and counted.

const (
	// decisionLogMessage is the msg of every decision line.
	decisionLogMessage = "policy decision"
	// maxLogMessageBytes bounds a decision's message; maxLogFieldBytes
	// the request's names (namespace, name, user, uid, resource), which
	// the API server keeps far shorter but a hand-made review need not;
	// maxLogReasonBytes the whole error of the diagnostic line.
	maxLogMessageBytes = 1024
	maxLogFieldBytes   = 256
	maxLogReasonBytes  = 4096

	// DefaultDecisionLogRate is the default bound of decision lines per
	// second (Options.DecisionLogRate).
	DefaultDecisionLogRate = 1000
)

// decisionLogger writes the decision logs of every endpoint.
type decisionLogger struct {
	log logr.Logger
	// passEvery logs one pass result in passEvery; 0 none.
	passEvery uint64
	passes    atomic.Uint64
	// limit is the most lines of one second; 0 is no limit. used counts
	// the lines of the second window holds.
	limit   int64
	window  atomic.Int64
	used    atomic.Int64
	dropped prometheus.Counter
}

// newDecisionLogger returns the decision logger opts ask for; nil when
// decision logs are off.
func newDecisionLogger(opts *Options, dropped prometheus.Counter) *decisionLogger {
	if opts.DisableDecisionLogs {
		return nil
	}
	l := &decisionLogger{log: opts.DecisionLogger, passEvery: uint64(opts.DecisionLogPassSample), dropped: dropped}
	if opts.DecisionLogRate > 0 {
		l.limit = int64(opts.DecisionLogRate)
	}
	return l
}

// logged reports whether a result of state st gets a line; it counts the
// pass results to sample them.
func (l *decisionLogger) logged(st engine.State) bool {
	switch st {
	case engine.StateFail, engine.StateWarn, engine.StateError:
		return true
	case engine.StatePass:
		return l.passEvery > 0 && l.passes.Add(1)%l.passEvery == 0
	}
	return false
}

// take reports whether one more line fits in the second of now. The first
// line past the limit says so once, in the decision logger itself, so that
// whoever reads the decision logs knows some are missing; every dropped
// line is counted in MetricDecisionLogsDropped.
func (l *decisionLogger) take(now time.Time) bool {
	if l.limit == 0 {
		return true
	}
	sec := now.Unix()
	if w := l.window.Load(); w != sec && l.window.CompareAndSwap(w, sec) {
		l.used.Store(0) // a line counted by a racing request in between is forgiven
	}
	n := l.used.Add(1)
	if n <= l.limit {
		return true
	}
	l.dropped.Inc()
	if n == l.limit+1 {
		l.log.Info("decision logs over their rate: dropping the rest of this second's, counted in "+MetricDecisionLogsDropped, "limit", l.limit)
	}
	return false
}

// write logs the results of one decision that deserve a line, to log (the
// decision logger with its endpoint). It checks log's level before
// building anything, and the request's fields once a line is due. Over
// zap (`celadon serve`'s), a line is written through zap itself, its
// fields added by decisionLine without boxing each value: logr's
// key-value API costs a dozen allocations and a kilobyte a line
// (BENCHMARKS.md, Decision logs).
func (l *decisionLogger) write(log logr.Logger, now time.Time, req *admissionv1.AdmissionRequest, d *engine.Decision) {
	if l == nil || !log.Enabled() {
		return
	}
	var zl *zap.Logger
	if u, ok := log.GetSink().(zapr.Underlier); ok {
		zl = u.GetUnderlying()
	}
	var rf requestFields
	haveRF := false
	for i := range d.Results {
		r := &d.Results[i]
		if !l.logged(r.State) || !l.take(now) {
			continue
		}
		if !haveRF {
			rf, haveRF = newRequestFields(req), true
		}
		msg := r.Reason
		if r.State == engine.StateError {
			msg = engine.RedactAddresses(msg)
		}
		line := &decisionLine{requestFields: rf, r: r, message: logText(msg, maxLogMessageBytes), denied: !d.Allowed}
		if zl == nil {
			log.Info(decisionLogMessage, line.keysAndValues()...)
		} else if ce := zl.Check(zapcore.InfoLevel, decisionLogMessage); ce != nil {
			ce.Write(zap.Inline(line))
		}
	}
}

// requestFields are the request's values of a decision line, made one
// line and bounded once per request.
type requestFields struct {
	resource, subResource, namespace, name, operation, user, uid string
	dryRun                                                       bool
}

func newRequestFields(req *admissionv1.AdmissionRequest) requestFields {
	gvr := req.Resource.Version + "/" + req.Resource.Resource
	if req.Resource.Group != "" {
		gvr = req.Resource.Group + "/" + gvr
	}
	return requestFields{
		resource:    logText(gvr, maxLogFieldBytes),
		subResource: logText(req.SubResource, maxLogFieldBytes),
		namespace:   logText(req.Namespace, maxLogFieldBytes),
		name:        logText(req.Name, maxLogFieldBytes),
		operation:   logText(string(req.Operation), maxLogFieldBytes),
		user:        logText(req.UserInfo.Username, maxLogFieldBytes),
		uid:         logText(string(req.UID), maxLogFieldBytes),
		dryRun:      req.DryRun != nil && *req.DryRun,
	}
}

// decisionLine is one line's values, in the order they are written; both
// ways of writing it name the same keys.
type decisionLine struct {
	requestFields
	r       *engine.PolicyResult
	message string
	denied  bool
}

// MarshalLogObject adds the line's keys to a zap entry (zap.Inline).
func (d *decisionLine) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("policy", d.r.Policy)
	enc.AddString("state", string(d.r.State))
	enc.AddString("enforcement", string(d.r.Enforcement))
	enc.AddString("message", d.message)
	enc.AddString("resource", d.resource)
	enc.AddString("subResource", d.subResource)
	enc.AddString("namespace", d.namespace)
	enc.AddString("name", d.name)
	enc.AddString("operation", d.operation)
	enc.AddString("user", d.user)
	enc.AddBool("dryRun", d.dryRun)
	enc.AddString("uid", d.uid)
	enc.AddBool("denied", d.denied)
	return nil
}

// keysAndValues are the line's keys and values for a logr sink other than
// zap's.
func (d *decisionLine) keysAndValues() []any {
	return []any{
		"policy", d.r.Policy,
		"state", string(d.r.State),
		"enforcement", string(d.r.Enforcement),
		"message", d.message,
		"resource", d.resource,
		"subResource", d.subResource,
		"namespace", d.namespace,
		"name", d.name,
		"operation", d.operation,
		"user", d.user,
		"dryRun", d.dryRun,
		"uid", d.uid,
		"denied", d.denied,
	}
}

// logText returns s as one line of at most max bytes (and a short note of
// what was cut): each run of control characters and Unicode line or
// paragraph separators becomes one space (none at the end), each invalid
// byte U+FFFD, and
// what passes max is cut at a character boundary. JSON logs escape a
// newline anyway, but not every sink is JSON, and nothing escapes size: a
// message built from an object, or a name in a hand-made review, can be
// megabytes. s is returned as it is, without allocating, when it needs
// none of this.
func logText(s string, max int) string {
	if len(s) <= max && oneLine(s) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), max))
	space := -1           // where the line breaks not written yet start
	for i, r := range s { // an invalid byte ranges as utf8.RuneError, U+FFFD
		if breaksLine(r) {
			if space < 0 {
				space = i
			}
			continue
		}
		n, from := utf8.RuneLen(r), i
		if space >= 0 {
			n, from = n+1, space
		}
		if b.Len()+n > max {
			b.WriteString(" [" + strconv.Itoa(len(s)-from) + " more bytes]")
			break
		}
		if space >= 0 {
			b.WriteByte(' ')
			space = -1
		}
		b.WriteRune(r)
	}
	return b.String()
}

// oneLine reports whether s is valid UTF-8 without a rune that breaksLine:
// byte by byte while s is ASCII, as names and most messages are.
func oneLine(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c == 0x7f:
			return false
		case c >= utf8.RuneSelf:
			rest := s[i:]
			return utf8.ValidString(rest) && strings.IndexFunc(rest, breaksLine) < 0
		}
	}
	return true
}

// breaksLine reports whether r ends a line for some reader of logs.
func breaksLine(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}
