package faults

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/internal/devenv"
	celadonserver "celadon.io/celadon/server"
	"celadon.io/celadon/test/load/loadgen"
	"celadon.io/celadon/webhook"
)

// podTemplate is a CREATE review of the pod fixture renamed to name,
// changed by edit, as template kind.
func podTemplate(t *testing.T, kind, name string, edit func(pod map[string]any)) *loadgen.Template {
	t.Helper()
	var pod map[string]any
	if err := json.Unmarshal(suite.pod, &pod); err != nil {
		t.Fatal(err)
	}
	md := pod["metadata"].(map[string]any)
	md["name"] = name
	if edit != nil {
		edit(pod)
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return reviewTemplate(t, kind, admissionv1.AdmissionRequest{
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Name:      name,
		Namespace: md["namespace"].(string),
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: "alice@example.com"},
		Object:    runtime.RawExtension{Raw: raw},
	})
}

func reviewTemplate(t *testing.T, kind string, req admissionv1.AdmissionRequest) *loadgen.Template {
	t.Helper()
	tpl, err := loadgen.NewTemplate(kind, kind, false, req)
	if err != nil {
		t.Fatal(err)
	}
	return tpl
}

func allowedPatched(r *loadgen.Review) error {
	if !r.Allowed || len(r.Patch) == 0 {
		return fmt.Errorf("allowed=%v patch=%q (%s), want allowed and patched", r.Allowed, r.Patch, r.Message)
	}
	return nil
}

// TestCertRotationUnderLoad swaps the serving certificate for one from a
// new CA the way the kubelet updates a mounted Secret (a "..data" symlink
// swap), while the load tool, trusting both CAs, sends reviews: no request
// fails, the new certificate is served from then on, and a client trusting
// only the new CA is answered.
func TestCertRotationUnderLoad(t *testing.T) {
	s := startServer(t, nil)
	ctx := testContext(t)
	old, err := devenv.ServingCertificate(ctx, s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := devenv.NewCA("celadon faults rotated CA")
	if err != nil {
		t.Fatal(err)
	}
	newKP, err := newCA.NewServingCert()
	if err != nil {
		t.Fatal(err)
	}
	s.Pool.AddCert(newCA.Cert)

	tr := s.startTraffic(nil, nil)
	tr.waitOK(t, 200)
	if err := devenv.WriteCerts(s.CertDir, newCA, newKP); err != nil {
		t.Fatal(err)
	}
	err = devenv.WaitFor(ctx, 30*time.Second, "the new certificate to be served", func(ctx context.Context) (bool, error) {
		got, err := devenv.ServingCertificate(ctx, s.Addr)
		return err == nil && got.Equal(newKP.Cert), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Connections made before the swap keep the old certificate: make
	// the traffic reconnect, under the new one.
	tr.closeIdle()
	tr.waitOK(t, 200)
	tr.finish(t)

	if got, err := devenv.ServingCertificate(ctx, s.Addr); err != nil || got.Equal(old) {
		t.Fatalf("after the rotation: serving %v (error %v), the old certificate", got.SerialNumber, err)
	}
	s.runOnce(webhook.MutatePath, podTemplate(t, "pod", "web-new-ca", nil), 5, newCA.Pool(), allowedPatched)
	s.healthz()
}

// freezeIngresses is the good edit of TestReloadUnderLoad.
const freezeIngresses = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: freeze-ingresses
spec:
  match:
    resources: [networking.k8s.io/ingresses]
    operations: [CREATE]
  action: deny
  with:
    message: ingresses are frozen
`

// brokenPolicy names a builtin that does not exist: the set fails to load.
const brokenPolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: freeze-ingresses
spec:
  match:
    resources: [networking.k8s.io/ingresses]
    operations: [CREATE]
  action: noSuchBuiltin
`

// TestReloadUnderLoad edits the policy directory under load, as a
// ConfigMap update does: a good edit (a new policy denying Ingress
// CREATEs) takes over, and a broken edit after it leaves the set in force,
// with the failure on /status and /metrics. Every answer is checked
// against the set that must be in force at that moment.
func TestReloadUnderLoad(t *testing.T) {
	s := startServer(t, nil)
	const (
		before    = iota // shipped policies only
		switching        // the good edit is being loaded: either answer
		frozen           // ingresses are denied
	)
	var phase atomic.Int32
	check := func(path string, tpl *loadgen.Template, r *loadgen.Review) error {
		if tpl.Kind != loadgen.KindIngress || path != webhook.ValidatePath {
			return shippedOutcome(path, tpl, r)
		}
		denied := !r.Allowed && strings.Contains(r.Message, "ingresses are frozen")
		switch p := phase.Load(); {
		case p == before && !r.Allowed, p == frozen && !denied:
			return fmt.Errorf("phase %d: allowed=%v (%s)", p, r.Allowed, r.Message)
		case !r.Allowed && !denied:
			return fmt.Errorf("denied with %q", r.Message)
		}
		return nil
	}
	tr := s.startTraffic(check, nil)
	tr.waitOK(t, 200)

	st0 := s.status()
	phase.Store(switching)
	s.writePolicies(map[string]string{"freeze-ingresses.yaml": freezeIngresses})
	ctx := testContext(t)
	var st1 celadonserver.Status
	err := devenv.WaitFor(ctx, 30*time.Second, "the good edit to be served", func(context.Context) (bool, error) {
		st1 = s.status()
		return st1.Hash != st0.Hash, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st1.LastReloadError != nil || len(st1.Policies) != len(st0.Policies)+1 {
		t.Fatalf("after the good edit: %d policies (want %d), reload error %v", len(st1.Policies), len(st0.Policies)+1, st1.LastReloadError)
	}
	// A review evaluated by the old set may still be on its way back:
	// requests take milliseconds, so after a second every answer is the
	// new set's.
	time.Sleep(time.Second)
	phase.Store(frozen)
	tr.waitOK(t, 200)

	reloadsFailed := s.metric(celadonserver.MetricReloads, `result="failure"`)
	s.writePolicies(map[string]string{"freeze-ingresses.yaml": brokenPolicy})
	var st2 celadonserver.Status
	err = devenv.WaitFor(ctx, 30*time.Second, "the broken edit to be reported", func(context.Context) (bool, error) {
		st2 = s.status()
		return st2.LastReloadError != nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st2.Hash != st1.Hash {
		t.Errorf("after the broken edit the served set changed: hash %s, want %s", st2.Hash, st1.Hash)
	}
	if !strings.Contains(st2.LastReloadError.Error(), "noSuchBuiltin") {
		t.Errorf("reload error %q does not name the unknown builtin", st2.LastReloadError.Error())
	}
	t.Logf("broken edit reported: %s", st2.LastReloadError.Error())
	tr.waitOK(t, 200) // still frozen: the checks above hold throughout
	res := tr.finish(t)
	if got := s.metric(celadonserver.MetricLastReloadFailed); got != 1 {
		t.Errorf("%s = %v, want 1", celadonserver.MetricLastReloadFailed, got)
	}
	if got := s.metric(celadonserver.MetricReloads, `result="failure"`); got <= reloadsFailed {
		t.Errorf(`%s{result="failure"} = %v, want more than %v`, celadonserver.MetricReloads, got, reloadsFailed)
	}
	if len(res) == 2 && res[1].Denied == 0 {
		t.Error("/validate denied nothing")
	}
	s.healthz()
}

// TestSIGTERMUnderLoad sends SIGTERM to the server under load while one
// request is held in flight (its body half sent): the held request and
// every request in flight get their answer, new connections are refused
// once the listener closes, and the process exits 0. Requests that never
// reached the server are excused: a refused dial, or a request on a
// kept-alive connection the server closed as idle (no byte of an answer).
func TestSIGTERMUnderLoad(t *testing.T) {
	s := startServer(t, nil, "--shutdown-timeout", "30s")
	var stopping atomic.Bool
	var refused, closedIdle, notSent atomic.Int64
	tolerate := func(e *loadgen.TransportError) bool {
		switch {
		case !stopping.Load() || e.GotResponse:
			return false
		case errors.Is(e, syscall.ECONNREFUSED):
			refused.Add(1)
		case !e.WroteRequest:
			notSent.Add(1) // e.g. accepted into the backlog as the listener closed
		case e.ReusedIdle:
			closedIdle.Add(1)
		default:
			return false
		}
		return true
	}
	tr := s.startTraffic(nil, tolerate)
	tr.waitOK(t, 200)

	// The held request: headers and half the body, the rest after the
	// SIGTERM.
	held := podTemplate(t, "held", "web-held", nil)
	body, uid := loadgen.NewBody(held).Next(999, 1)
	conn, err := tls.Dial("tcp", s.Addr, &tls.Config{RootCAs: s.Pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s?timeout=30s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", webhook.MutatePath, s.Addr, len(body))
	if _, err := conn.Write(body[:len(body)/2]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the server reads the headers: the connection is active

	stopping.Store(true)
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	if err := devenv.WaitForPortClosed(ctx, 30*time.Second, s.Addr); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Exited():
		t.Fatal("the server exited with a request in flight")
	default:
	}
	if _, err := conn.Write(body[len(body)/2:]); err != nil {
		t.Fatalf("the held request: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the held request: %v", err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var review admissionv1.AdmissionReview
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &review) != nil || review.Response == nil ||
		string(review.Response.UID) != uid || !review.Response.Allowed || len(review.Response.Patch) == 0 {
		t.Fatalf("the held request: %s %.300s; want 200, uid %s, allowed and patched", resp.Status, raw, uid)
	}

	select {
	case <-s.Exited():
	case <-time.After(40 * time.Second):
		t.Fatal("the server did not exit within 40s of SIGTERM")
	}
	if err := s.Wait(); err != nil {
		t.Errorf("the server's exit: %v, want status 0", err)
	}
	tr.finish(t)
	for range 3 {
		c, err := net.DialTimeout("tcp", s.Addr, 2*time.Second)
		if err == nil {
			c.Close()
			t.Fatal("a connection was accepted after the exit")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial after the exit: %v, want connection refused", err)
		}
	}
	t.Logf("after SIGTERM: %d refused dials, %d requests not sent, %d idle connections closed before the request", refused.Load(), notSent.Load(), closedIdle.Load())
}

// runawayPolicy denies pods whose name starts with prefix when a nested
// comprehension over object.spec.big holds: quadratic in the list, far over
// the cost budget for 2,000 items. A Pod has no spec.big, so the policy
// reads it through dyn(), past the type check against the Pod schema.
func runawayPolicy(name, prefix, failurePolicy string) string {
	return fmt.Sprintf(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: %s
spec:
  match:
    resources: [pods]
    operations: [CREATE]
    conditions:
    - name: selected
      expression: object.metadata.name.startsWith('%s')
    - name: runaway
      expression: >-
        has(dyn(object.spec).big) &&
        dyn(object.spec).big.all(x, dyn(object.spec).big.all(y, x + y >= 0))
  action: deny
  with:
    message: the runaway condition held
  failurePolicy: %s
`, name, prefix, failurePolicy)
}

// TestRunawayPolicy serves two policies that blow the CEL cost budget on
// pods carrying a 2,000-item list, one under failurePolicy Fail and one
// under Ignore, next to the shipped ones: the first denies its pods with a
// message naming the cost limit, the second lets them through, both count
// policy errors, and the normal traffic alongside still gets its right
// answers. Its latency with and without the runaway requests is logged.
func TestRunawayPolicy(t *testing.T) {
	s := startServer(t, map[string]string{
		"runaway-fail.yaml":   runawayPolicy("runaway-fail", "fail-", "Fail"),
		"runaway-ignore.yaml": runawayPolicy("runaway-ignore", "ignore-", "Ignore"),
	})
	big := func(pod map[string]any) {
		items := make([]any, 2000)
		for i := range items {
			items[i] = i
		}
		pod["spec"].(map[string]any)["big"] = items
	}

	alone := s.startTraffic(nil, nil)
	alone.waitOK(t, 400)
	quiet := alone.finish(t)

	tr := s.startTraffic(nil, nil)
	tr.waitOK(t, 50)
	const runaways = 10
	failRes := s.runOnce(webhook.ValidatePath, podTemplate(t, "runaway-fail", "fail-0", big), runaways, nil, func(r *loadgen.Review) error {
		switch {
		case r.Allowed:
			return errors.New("allowed: a runaway policy under failurePolicy Fail let the pod through")
		case strings.Contains(r.Message, "the runaway condition held"):
			return fmt.Errorf("denied by the condition, which should not have completed: %q", r.Message)
		case !strings.Contains(strings.ToLower(r.Message), "cost"):
			return fmt.Errorf("denied with %q, which does not name the cost limit", r.Message)
		}
		return nil
	})
	ignoreRes := s.runOnce(webhook.ValidatePath, podTemplate(t, "runaway-ignore", "ignore-0", big), runaways, nil, func(r *loadgen.Review) error {
		if !r.Allowed {
			return fmt.Errorf("denied (%s): a runaway policy under failurePolicy Ignore must let the pod through", r.Message)
		}
		return nil
	})
	tr.waitOK(t, 50)
	busy := tr.finish(t)

	t.Logf("runaway requests: Fail p50 %.1f ms, Ignore p50 %.1f ms", failRes.P50ms, ignoreRes.P50ms)
	for i := range min(len(quiet), len(busy)) {
		t.Logf("normal traffic %s: p50 %.2f → %.2f ms, p99 %.2f → %.2f ms without → with the runaway requests (informational)",
			busy[i].Path, quiet[i].P50ms, busy[i].P50ms, quiet[i].P99ms, busy[i].P99ms)
	}
	for _, p := range []string{"runaway-fail", "runaway-ignore"} {
		if got := s.metric(celadonserver.MetricPolicyErrors, `policy="`+p+`"`); got < runaways {
			t.Errorf(`%s{policy=%q} = %v, want at least %d`, celadonserver.MetricPolicyErrors, p, got, runaways)
		}
	}
	if got := s.metric(celadonserver.MetricPolicyErrors, `policy="sts-index"`); got != 0 {
		t.Errorf(`%s{policy="sts-index"} = %v, want 0`, celadonserver.MetricPolicyErrors, got)
	}
	s.healthz()
}

// TestAbusiveClients sends, next to normal traffic that must not see a
// failure: a client trickling its headers (cut off by the server's
// header timeout) and one trickling its body (cut off at the request's
// timeout, with a 400); an 8 MiB body (413); garbage JSON (400); a review
// of a kind no policy knows (allowed untouched); and a pod just under the
// size limit (answered, patched). /healthz answers after each.
func TestAbusiveClients(t *testing.T) {
	s := startServer(t, nil)
	tr := s.startTraffic(nil, nil)
	tr.waitOK(t, 100)
	tlsConf := &tls.Config{RootCAs: s.Pool, NextProtos: []string{"http/1.1"}}
	client := loadgen.NewPoolClient(s.Pool, 1, 30*time.Second)
	defer client.CloseIdleConnections()
	post := func(path string, body []byte) (int, string) {
		t.Helper()
		resp, err := client.Post(s.BaseURL+path, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return resp.StatusCode, string(msg)
	}

	// Headers trickled one byte a second, from the start: the server's
	// header timeout (controller-runtime's, 32s) ends it while the rest of
	// the test runs.
	headerConn, err := tls.Dial("tcp", s.Addr, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	defer headerConn.Close()
	headerStart := time.Now()
	headerClosed := make(chan struct{})
	var headerErr error
	go func() {
		_, headerErr = headerConn.Read(make([]byte, 1)) // returns when the server closes
		close(headerClosed)
	}()
	go func() {
		msg := "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + strings.Repeat("a", 200)
		for i := range len(msg) {
			if _, err := headerConn.Write([]byte{msg[i]}); err != nil {
				return
			}
			select {
			case <-headerClosed:
				return
			case <-time.After(time.Second):
			}
		}
	}()

	t.Run("slow body", func(t *testing.T) {
		conn, err := tls.Dial("tcp", s.Addr, tlsConf)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		before := tr.Live.OK.Load()
		start := time.Now()
		fmt.Fprintf(conn, "POST /validate?timeout=2s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n")
		answered := make(chan *http.Response, 1)
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				close(answered)
				return
			}
			answered <- resp
		}()
		var resp *http.Response
	trickle:
		for i := 0; ; i++ {
			select {
			case resp = <-answered:
				break trickle
			case <-time.After(200 * time.Millisecond):
			}
			if time.Since(start) > 30*time.Second {
				t.Fatal("the server did not cut off a body trickled for 30s (request timeout 2s)")
			}
			conn.Write([]byte{' '})
		}
		if resp == nil {
			t.Fatal("the connection closed without an answer")
		}
		msg, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), "timeout") {
			t.Fatalf("%s %s; want 400 naming the timeout", resp.Status, msg)
		}
		t.Logf("cut off after %v: %s", time.Since(start).Round(100*time.Millisecond), bytes.TrimSpace(msg))
		if tr.Live.OK.Load() == before {
			t.Error("the traffic made no progress while the body trickled")
		}
		s.healthz()
	})

	t.Run("oversized body", func(t *testing.T) {
		body := bytes.Repeat([]byte(" "), 8<<20)
		copy(body, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","padding":"`)
		if code, msg := post(webhook.ValidatePath, body); code != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d (%.200s), want 413", code, msg)
		}
		s.healthz()
	})

	t.Run("garbage JSON", func(t *testing.T) {
		for _, body := range []string{"{not json", "[1,2,3]", `{"request":`, "\x00\xff\xfe", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":{]}}`} {
			if code, msg := post(webhook.MutatePath, []byte(body)); code != http.StatusBadRequest {
				t.Errorf("body %q: status %d (%.200s), want 400", body, code, msg)
			}
		}
		s.healthz()
	})

	t.Run("unknown kind", func(t *testing.T) {
		widget := reviewTemplate(t, "widget", admissionv1.AdmissionRequest{
			Kind:      metav1.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"},
			Resource:  metav1.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"},
			Name:      "w",
			Namespace: "shop",
			Operation: admissionv1.Create,
			UserInfo:  authenticationv1.UserInfo{Username: "alice@example.com"},
			Object:    runtime.RawExtension{Raw: []byte(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"shop","labels":{"celadon.io/protected":"true"}},"spec":{"size":3}}`)},
		})
		for _, path := range []string{webhook.MutatePath, webhook.ValidatePath} {
			s.runOnce(path, widget, 3, nil, func(r *loadgen.Review) error {
				if !r.Allowed || len(r.Patch) != 0 {
					return fmt.Errorf("allowed=%v patch=%s (%s), want allowed untouched", r.Allowed, r.Patch, r.Message)
				}
				return nil
			})
		}
		s.healthz()
	})

	t.Run("huge object under the limit", func(t *testing.T) {
		huge := strings.Repeat("x", 6<<20+512<<10) // 6.5 MiB, the review just under 7 MiB
		tpl := podTemplate(t, "huge", "web-huge", func(pod map[string]any) {
			pod["metadata"].(map[string]any)["annotations"] = map[string]any{"example.com/huge": huge}
		})
		if n := len(tpl.Body); n > webhook.MaxRequestBytes || n < webhook.MaxRequestBytes-1<<20 {
			t.Fatalf("review of %d bytes, want just under %d", n, webhook.MaxRequestBytes)
		}
		r := s.runOnce(webhook.MutatePath, tpl, 3, nil, allowedPatched)
		t.Logf("%d-byte review: p50 %.1f ms", len(tpl.Body), r.P50ms)
		s.healthz()
	})

	tr.waitOK(t, 100)
	select {
	case <-headerClosed:
		t.Logf("trickled headers cut off after %v (%v)", time.Since(headerStart).Round(time.Second), headerErr)
	case <-time.After(time.Minute):
		t.Error("the server did not cut off headers trickled for a minute")
	}
	tr.finish(t)
	s.healthz()
}

// TestOverloadIsAFailedCall runs the real server with one evaluation slot
// and sends it 16 requests at a time whose evaluation takes a while (a
// runaway condition under failurePolicy Ignore, on a 2,000-item list). A
// request that finds no slot before its deadline must be a failed call (a
// non-200 status, so that the API server applies the webhook's
// failurePolicy), never a review that denies: an Ignore webhook never
// denies. Every review that is answered admits the pod. Afterwards the
// server answers normal traffic.
func TestOverloadIsAFailedCall(t *testing.T) {
	s := startServer(t, map[string]string{
		"runaway-ignore.yaml": runawayPolicy("runaway-ignore", "ignore-", "Ignore"),
	}, "--max-concurrent", "1")
	big := func(pod map[string]any) {
		items := make([]any, 2000)
		for i := range items {
			items[i] = i
		}
		pod["spec"].(map[string]any)["big"] = items
	}
	tpl := podTemplate(t, "runaway-ignore", "ignore-0", big)
	client := loadgen.NewPoolClient(s.Pool, 16, 30*time.Second)
	defer client.CloseIdleConnections()
	r, err := loadgen.Run(loadgen.RunConfig{
		Label: "overload", URL: s.BaseURL + webhook.ValidatePath + "?timeout=100ms", Concurrency: 16, Count: 400, MaxDuration: time.Minute,
		Timeout: 30 * time.Second, Templates: map[string][]*loadgen.Template{tpl.Kind: {tpl}}, Schedule: []string{tpl.Kind},
		Client: client, Check: func(_ *loadgen.Template, r *loadgen.Review) error {
			if !r.Allowed {
				return fmt.Errorf("a review denied the pod (code %d: %s): a busy server must fail the call instead", r.Code, r.Message)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests: %d errors by kind %v, e.g. %q", r.Requests, r.ErrorCount, r.Errors, r.ErrorSamples)
	throttled := r.Errors["http 429"] + r.Errors["http 503"]
	if throttled == 0 {
		t.Fatalf("no request was refused for want of a slot: the test did not overload the server (errors %v)", r.Errors)
	}
	if others := r.ErrorCount - throttled; others > 0 {
		t.Errorf("%d requests failed otherwise than as failed calls: %v, e.g. %q", others, r.Errors, r.ErrorSamples)
	}
	if got := s.metric(webhook.MetricThrottled); got < float64(throttled) {
		t.Errorf("%s = %v, want at least %d", webhook.MetricThrottled, got, throttled)
	}
	tr := s.startTraffic(nil, nil)
	tr.waitOK(t, 50)
	tr.finish(t)
	s.healthz()
}

// TestIngressBurstDoesNotStarve sends, next to normal traffic that must
// not see a failure, a burst of Ingress reviews each naming 1,000 Services
// that do not exist, to a checkIngressBackends policy: each is denied
// naming them all, and says that most were judged from the cache, since a
// request reads at most 8 directly and the server's direct reads have a
// rate of their own that refuses rather than waits.
func TestIngressBurstDoesNotStarve(t *testing.T) {
	s := startServer(t, map[string]string{"ingress.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: ingress-backends
spec:
  match:
    resources: [networking.k8s.io/ingresses]
    operations: [CREATE]
    conditions: [{name: flood, expression: "object.metadata.name == 'flood'"}]
  action: checkIngressBackends
  failurePolicy: Fail
`})
	var paths []any
	for i := range 1000 {
		paths = append(paths, map[string]any{"path": fmt.Sprintf("/p%d", i), "pathType": "Prefix",
			"backend": map[string]any{"service": map[string]any{"name": fmt.Sprintf("missing-%d", i), "port": map[string]any{"number": 80}}}})
	}
	raw, err := json.Marshal(map[string]any{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
		"metadata": map[string]any{"name": "flood", "namespace": "default"},
		"spec":     map[string]any{"rules": []any{map[string]any{"host": "flood.example.com", "http": map[string]any{"paths": paths}}}}})
	if err != nil {
		t.Fatal(err)
	}
	tpl := reviewTemplate(t, "ingress", admissionv1.AdmissionRequest{
		Kind:      metav1.GroupVersionKind{Group: "networking.k8s.io", Version: "v1", Kind: "Ingress"},
		Resource:  metav1.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"},
		Name:      "flood",
		Namespace: "default",
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: "alice@example.com"},
		Object:    runtime.RawExtension{Raw: raw},
	})

	tr := s.startTraffic(nil, nil)
	tr.waitOK(t, 50)
	client := loadgen.NewPoolClient(s.Pool, 16, 30*time.Second)
	defer client.CloseIdleConnections()
	r, err := loadgen.Run(loadgen.RunConfig{
		Label: "ingress-flood", URL: s.BaseURL + webhook.ValidatePath, Concurrency: 16, Count: 100, MaxDuration: time.Minute,
		Timeout: 30 * time.Second, Templates: map[string][]*loadgen.Template{tpl.Kind: {tpl}}, Schedule: []string{tpl.Kind},
		Client: client, Check: func(_ *loadgen.Template, r *loadgen.Review) error {
			switch {
			case r.Allowed:
				return errors.New("allowed an Ingress whose 1,000 Services do not exist")
			case !strings.Contains(r.Message, `service "missing-999" not found`):
				return fmt.Errorf("denied without naming every missing Service: %.200s", r.Message)
			case !strings.Contains(r.Message, "judged from Celadon's cache alone"):
				return fmt.Errorf("denied without saying most lookups were judged from the cache: %.200s", r.Message)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.ErrorCount > 0 || r.Requests != 100 {
		t.Errorf("Ingress flood: %d of 100 answered, %d errors: %v, e.g. %q", r.Requests, r.ErrorCount, r.Errors, r.ErrorSamples)
	}
	t.Logf("Ingress flood: p50 %.1f ms, p99 %.1f ms", r.P50ms, r.P99ms)
	tr.waitOK(t, 50)
	tr.finish(t)
	s.healthz()
}
