package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/utils/ptr"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"celadon.io/celadon/engine"
)

// lockedBuffer is a bytes.Buffer safe for the logger and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// jsonLogger is a zap JSON logger at info level writing to w, with no
// sampling, as `celadon serve` builds the decision logger.
func jsonLogger(w io.Writer) logr.Logger {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(w), zapcore.InfoLevel)
	return zapr.NewLogger(zap.New(core))
}

// decisionLines returns the decision lines written to buf, decoded; it
// fails the test on a line that is not one JSON object.
func decisionLines(t *testing.T, buf *lockedBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not a JSON object: %v\n%s", err, line)
		}
		if m["msg"] == decisionLogMessage {
			out = append(out, m)
		}
	}
	return out
}

// decisionPolicies: on a pod, one policy of each state but skip.
var decisionPolicies = map[string]string{
	"p.yaml": handlerPolicies["10-label.yaml"] + "---\n" + handlerPolicies["20-deny.yaml"] + "---\n" +
		policy("warn-pods", "  match: {resources: [pods]}\n  action: violate\n  with: {message: pods are watched}\n  enforcement: Warn\n") + "---\n" +
		policy("audit-pods", "  match: {resources: [pods]}\n  action: violate\n  with: {message: pods are audited}\n  enforcement: Audit\n") + "---\n" +
		// An error naming an address, as a failed API call does.
		policy("broken", "  match: {resources: [pods]}\n  action: gate\n  with: {gate: \"https://10.96.0.1:443/api\"}\n  failurePolicy: Ignore\n") + "---\n" +
		policy("other-pods", "  match:\n    resources: [pods]\n    conditions: [{expression: \"object.metadata.name == 'other'\"}]\n  action: violate\n  with: {message: never}\n"),
}

func TestDecisionLogs(t *testing.T) {
	var buf lockedBuffer
	s, _ := newTestServer(t, decisionPolicies, func(o *Options) { o.DecisionLogger = jsonLogger(&buf) })

	out := mustReview(t, post(s.Handler("/validate"), "/validate", review(v1, "uid-1", named("bad"), func(r *admissionv1.AdmissionRequest) {
		r.DryRun = ptr.To(true)
	}), "application/json")).Response
	if out.Allowed {
		t.Fatal("the bad pod was allowed")
	}
	lines := decisionLines(t, &buf)
	want := map[string]map[string]any{
		"no-bad-pods": {"state": "fail", "enforcement": "Deny", "message": "bad pods are not allowed"},
		"warn-pods":   {"state": "warn", "enforcement": "Warn", "message": "pods are watched"},
		"audit-pods":  {"state": "fail", "enforcement": "Audit", "message": "pods are audited"},
		// Redacted, as the requester would read it.
		"broken": {"state": "error", "enforcement": "Deny", "message": `no gate "<redacted>"`},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d decision lines, want %d (no pass, no skip):\n%s", len(lines), len(want), buf.String())
	}
	for _, l := range lines {
		w, ok := want[l["policy"].(string)]
		if !ok {
			t.Errorf("a line for %v", l["policy"])
			continue
		}
		for k, v := range map[string]any{
			"logger": "", "endpoint": "/validate", "resource": "v1/pods", "subResource": "", "namespace": "default", "name": "bad",
			"operation": "CREATE", "user": "alice", "dryRun": true, "uid": "uid-1", "denied": true,
			"state": w["state"], "enforcement": w["enforcement"], "message": w["message"],
		} {
			if k == "logger" {
				continue // jsonLogger has no name; serve's is celadon.decision
			}
			if l[k] != v {
				t.Errorf("%s: %s = %#v, want %#v", l["policy"], k, l[k], v)
			}
		}
		if l["level"] != "info" {
			t.Errorf("%s: level %v", l["policy"], l["level"])
		}
	}
	if !strings.Contains(buf.String(), `"resource":"v1/pods"`) {
		t.Errorf("resource not group/version/resource:\n%s", buf.String())
	}

	// A group's resource, allowed: denied false.
	buf = lockedBuffer{}
	s2, _ := newTestServer(t, map[string]string{"p.yaml": policy("warn-deploys", "  match: {resources: [apps/deployments/scale]}\n  action: violate\n  with: {message: watched}\n  enforcement: Warn\n")},
		func(o *Options) { o.DecisionLogger = jsonLogger(&buf) })
	mustReview(t, post(s2.Handler("/validate/fail"), "/validate/fail", review(v1, "uid-2", func(r *admissionv1.AdmissionRequest) {
		r.Resource.Group, r.Resource.Version, r.Resource.Resource, r.SubResource = "apps", "v1", "deployments", "scale"
		r.Operation = admissionv1.Update
	}), "application/json"))
	lines = decisionLines(t, &buf)
	if len(lines) != 1 || lines[0]["resource"] != "apps/v1/deployments" || lines[0]["subResource"] != "scale" ||
		lines[0]["denied"] != false || lines[0]["endpoint"] != "/validate/fail" || lines[0]["operation"] != "UPDATE" {
		t.Errorf("decision lines %v", lines)
	}
}

// TestDecisionLogPassSample: pass results are logged never (the default),
// always, or one in N; skips never.
func TestDecisionLogPassSample(t *testing.T) {
	for _, c := range []struct{ sample, requests, want int }{{0, 4, 0}, {1, 4, 4}, {3, 7, 2}} {
		var buf lockedBuffer
		s, _ := newTestServer(t, handlerPolicies, func(o *Options) {
			o.DecisionLogger = jsonLogger(&buf)
			o.DecisionLogPassSample = c.sample
		})
		for range c.requests {
			mustReview(t, post(s.MutateHandler(), "/mutate", review(v1, "u"), "application/json"))
		}
		lines := decisionLines(t, &buf)
		if len(lines) != c.want {
			t.Errorf("sample %d, %d requests: %d lines, want %d", c.sample, c.requests, len(lines), c.want)
		}
		for _, l := range lines {
			if l["state"] != "pass" || l["policy"] != "label" || l["denied"] != false {
				t.Errorf("sample %d: line %v", c.sample, l)
			}
		}
	}
	if _, err := NewServer(Options{PoliciesDir: writePolicies(t, handlerPolicies), Registry: testRegistry(), DecisionLogPassSample: -1}); err == nil ||
		!strings.Contains(err.Error(), "DecisionLogPassSample -1") {
		t.Errorf("a negative pass sample: %v", err)
	}
}

// TestDecisionLogsOff: DisableDecisionLogs, or a logger whose level is
// above info, writes no decision line.
func TestDecisionLogsOff(t *testing.T) {
	var buf lockedBuffer
	s, _ := newTestServer(t, decisionPolicies, func(o *Options) {
		o.DecisionLogger = jsonLogger(&buf)
		o.DisableDecisionLogs = true
	})
	mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "u", named("bad")), "application/json"))
	errorsOnly := zapr.NewLogger(zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zapcore.ErrorLevel)))
	s, _ = newTestServer(t, decisionPolicies, func(o *Options) { o.DecisionLogger = errorsOnly })
	mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "u", named("bad")), "application/json"))
	if buf.String() != "" {
		t.Errorf("decision logs written:\n%s", buf.String())
	}
}

// TestDecisionLogRate: past DecisionLogRate lines in one second, the rest
// of that second's are dropped, said once and counted; the next second
// logs again.
func TestDecisionLogRate(t *testing.T) {
	var buf lockedBuffer
	s, reg := newTestServer(t, denyAll("no"), func(o *Options) {
		o.DecisionLogger = jsonLogger(&buf)
		o.DecisionLogRate = 3
	})
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	for range 10 {
		denialOf(t, s)
	}
	if n := len(decisionLines(t, &buf)); n != 3 {
		t.Errorf("%d lines in one second, want 3", n)
	}
	if c := strings.Count(buf.String(), "decision logs over their rate"); c != 1 {
		t.Errorf("the drop said %d times, want once:\n%s", c, buf.String())
	}
	if got := counter(t, reg, MetricDecisionLogsDropped, nil); got != 7 {
		t.Errorf("%s = %v, want 7", MetricDecisionLogsDropped, got)
	}
	now = now.Add(time.Second)
	denialOf(t, s)
	if n := len(decisionLines(t, &buf)); n != 4 {
		t.Errorf("%d lines after a second more, want 4", n)
	}

	// A negative rate is no limit.
	buf = lockedBuffer{}
	s, _ = newTestServer(t, denyAll("no"), func(o *Options) {
		o.DecisionLogger = jsonLogger(&buf)
		o.DecisionLogRate = -1
	})
	s.now = func() time.Time { return now }
	for range 20 {
		denialOf(t, s)
	}
	if n := len(decisionLines(t, &buf)); n != 20 {
		t.Errorf("no limit: %d lines, want 20", n)
	}
}

// TestDecisionLogsAreBounded tries what a careless policy author and a
// hand-made review can put in a line: a message of 100 KB over many lines,
// a name, a user and a uid with newlines, control characters and invalid
// UTF-8, megabytes long. Each result is one line, every value one line and
// bounded.
func TestDecisionLogsAreBounded(t *testing.T) {
	huge := strings.Repeat("line of a message\n", 6000)
	var buf lockedBuffer
	s, _ := newTestServer(t, map[string]string{
		"p.yaml": policy("huge", "  match: {resources: [pods]}\n  action: violate\n  with:\n    message: "+strconvQuote(huge)+"\n  enforcement: Warn\n") + "---\n" +
			policy("broken", "  match: {resources: [pods]}\n  action: gate\n  with: {gate: "+strconvQuote("a\nforged\x1b[2J"+strings.Repeat("x", 10000))+"}\n  failurePolicy: Ignore\n"),
	}, func(o *Options) {
		o.DecisionLogger = jsonLogger(&buf)
		o.Logger = jsonLogger(&buf)
	})
	forged := "web\n{\"level\":\"info\",\"msg\":\"policy decision\",\"denied\":false}\r\u2028\xff" + strings.Repeat("é", 1<<18)
	mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, forged, func(r *admissionv1.AdmissionRequest) {
		r.Name, r.Namespace, r.UserInfo.Username = forged, forged, forged
	}), "application/json"))

	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	decisions := decisionLines(t, &buf)
	if len(decisions) != 2 {
		t.Fatalf("%d decision lines, want 2:\n%.2000s", len(decisions), buf.String())
	}
	for _, line := range lines {
		if len(line) > 3*maxLogReasonBytes {
			t.Errorf("a log line of %d bytes: %.300s...", len(line), line)
		}
	}
	for _, d := range decisions {
		for _, k := range []string{"message", "name", "namespace", "user", "uid"} {
			v, _ := d[k].(string)
			max := maxLogFieldBytes
			if k == "message" {
				max = maxLogMessageBytes
			}
			if len(v) > max+32 || !strings.HasSuffix(v, " more bytes]") {
				t.Errorf("%s: %s of %d bytes, not cut to %d: %.100q", d["policy"], k, len(v), max, v)
			}
			if i := strings.IndexFunc(v, func(r rune) bool { return unicode.IsControl(r) || r == '\u2028' }); i >= 0 || !utf8.ValidString(v) {
				t.Errorf("%s: %s holds a line break or invalid UTF-8: %.100q", d["policy"], k, v)
			}
		}
	}
	if !strings.HasPrefix(decisions[0]["name"].(string), `web {"level":"info"`) {
		t.Errorf("name %.60q: the forged line should be folded into the value", decisions[0]["name"])
	}
	// The diagnostic line keeps the error unredacted, but bounded too.
	diagnosed := false
	for _, line := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "policy evaluation failed; its failurePolicy decided" {
			reason, _ := m["reason"].(string)
			diagnosed = strings.HasPrefix(reason, `no gate "a\nforged`) && strings.HasSuffix(reason, " more bytes]") && len(reason) < maxLogReasonBytes+32
		}
	}
	if !diagnosed {
		t.Errorf("no bounded diagnostic line of the error:\n%.3000s", buf.String())
	}
}

func TestLogText(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"a\nb\r\n\tc", 10, "a b c"},
		{"x\u2028y\u2029z\u0085", 10, "x y z"},
		{"bad\xffbyte", 20, "bad\uFFFDbyte"},
		{"0123456789abc", 10, "0123456789 [3 more bytes]"},
		{"ééééé", 5, "éé [6 more bytes]"}, // cut at a character, never inside one
		{"ab\n\ncd", 3, "ab [4 more bytes]"},
		{"aé\nb\x7f", 10, "aé b"},       // ASCII, then not: the rest is checked rune by rune
		{"del\x7fhere", 10, "del here"}, // DEL is a control too
		{"名前\u2028", 10, "名前"},          // a trailing break leaves nothing
	} {
		if got := logText(c.in, c.max); got != c.want {
			t.Errorf("logText(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = logText("a clean message, é", 100) }); n != 0 {
		t.Errorf("logText of a clean string allocates %v times", n)
	}
}

// strconvQuote quotes s as a YAML double-quoted scalar (JSON's escapes).
func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// BenchmarkDecisionLog measures what decision logs add to a Pod CREATE
// that one policy denies, at /validate: "off" with decision logs disabled,
// "on" with every line written, unbounded by a rate, through zap's JSON
// encoder to io.Discard, as `celadon serve` builds the decision logger;
// "on-logr" the same through logr's key-value API, as over any other logr
// sink.
// Both run the server's other logs through a real zap logger at info, as
// serve does. Run with -count so that the two interleave, and compare them
// within a run (BENCHMARKS.md): cpu-ns/op, the process's CPU time per
// request, moves less than ns/op when other work shares the cores.
func BenchmarkDecisionLog(b *testing.B) {
	dir := b.TempDir()
	if err := writeFile(dir+"/p.yaml", handlerPolicies["10-label.yaml"]+"---\n"+handlerPolicies["20-deny.yaml"]); err != nil {
		b.Fatal(err)
	}
	general := crzap.New(crzap.WriteTo(io.Discard), crzap.Level(zapcore.InfoLevel), crzap.StacktraceLevel(zapcore.DPanicLevel), crzap.JSONEncoder())
	core := zapcore.NewCore(&crzap.KubeAwareEncoder{Encoder: zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())}, zapcore.AddSync(io.Discard), zapcore.InfoLevel)
	decisions := zapr.NewLogger(zap.New(core)).WithName("celadon").WithName("decision")
	body := review(v1, "bench", named("bad"))
	for _, c := range []struct {
		name string
		off  bool
		log  logr.Logger
	}{{"off", true, decisions}, {"on", false, decisions}, {"on-logr", false, logr.New(notZap{decisions.GetSink()})}} {
		b.Run(c.name, func(b *testing.B) {
			s, err := NewServer(Options{PoliciesDir: dir, Registry: testRegistry(), Namespaces: staticNamespaces{}, MetricsRegisterer: prometheus.NewRegistry(),
				Logger: general.WithName("celadon"), DecisionLogger: c.log, DisableDecisionLogs: c.off, DecisionLogRate: -1})
			if err != nil {
				b.Fatal(err)
			}
			h := s.ValidateHandler()
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, "/validate?timeout=10s", bytes.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 || !bytes.Contains(w.Body.Bytes(), []byte(`"allowed":false`)) {
					b.Fatalf("HTTP %d %s, want a denial", w.Code, w.Body)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkDecisionLine measures one decision line alone: the request's
// fields and one fail result, through zap's JSON encoder to io.Discard;
// "zap" as the server writes it over zap, "logr" as over any other logr
// sink (logr's key-value API, which zap's sink turns into fields).
func BenchmarkDecisionLine(b *testing.B) {
	core := zapcore.NewCore(&crzap.KubeAwareEncoder{Encoder: zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())}, zapcore.AddSync(io.Discard), zapcore.InfoLevel)
	zlog := zapr.NewLogger(zap.New(core)).WithName("celadon").WithName("decision").WithValues("endpoint", "/validate")
	var ar struct {
		Request *admissionv1.AdmissionRequest `json:"request"`
	}
	if err := json.Unmarshal(review(v1, "bench", named("bad")), &ar); err != nil {
		b.Fatal(err)
	}
	d := &engine.Decision{Results: []engine.PolicyResult{{Policy: "no-bad-pods", Action: "violate", State: engine.StateFail, Reason: "bad pods are not allowed", Enforcement: engine.Deny}}}
	now := time.Now()
	for _, c := range []struct {
		name string
		log  logr.Logger
	}{{"zap", zlog}, {"logr", logr.New(notZap{zlog.GetSink()})}} {
		b.Run(c.name, func(b *testing.B) {
			l := &decisionLogger{log: c.log, dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})}
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				l.write(c.log, now, ar.Request, d)
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// notZap hides that a sink is zap's, as any other logr sink would, in
// the loggers derived from it too.
type notZap struct{ logr.LogSink }

func (n notZap) WithValues(kv ...any) logr.LogSink { return notZap{n.LogSink.WithValues(kv...)} }
func (n notZap) WithName(name string) logr.LogSink { return notZap{n.LogSink.WithName(name)} }

// TestDecisionLogKeysWithoutZap: over a logr sink other than zap's
// (funcr's), a decision line has the same keys and values.
func TestDecisionLogKeysWithoutZap(t *testing.T) {
	var zapBuf, otherBuf lockedBuffer
	lines := map[string]map[string]any{}
	for _, dl := range []logr.Logger{
		jsonLogger(&zapBuf),
		funcr.NewJSON(func(obj string) { _, _ = otherBuf.Write([]byte(obj + "\n")) }, funcr.Options{}),
	} {
		s, _ := newTestServer(t, decisionPolicies, func(o *Options) { o.DecisionLogger = dl })
		mustReview(t, post(s.ValidateHandler(), "/validate", review(v1, "u", named("bad")), "application/json"))
	}
	for name, buf := range map[string]*lockedBuffer{"zap": &zapBuf, "other": &otherBuf} {
		ls := decisionLines(t, buf)
		if len(ls) != 4 {
			t.Fatalf("%s: %d lines, want 4", name, len(ls))
		}
		for _, k := range []string{"ts", "level", "logger"} { // the sinks' own
			delete(ls[0], k)
		}
		lines[name] = ls[0]
	}
	if fmt.Sprint(lines["zap"]) != fmt.Sprint(lines["other"]) {
		t.Errorf("lines differ:\n zap: %v\nlogr: %v", lines["zap"], lines["other"])
	}
}
