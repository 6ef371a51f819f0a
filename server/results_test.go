package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"celadon.io/celadon/engine"
)

// statusOf reads /status through the server's handler.
func statusOf(t *testing.T, s *Server) Status {
	t.Helper()
	w := httptest.NewRecorder()
	s.StatusHandler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/status", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("/status: HTTP %d %s", w.Code, w.Body)
	}
	var st Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatalf("/status is not a Status: %v\n%s", err, w.Body)
	}
	return st
}

// policyCounts returns, by policy, its admission counts of the last hour
// and its last scan, as /status shows them.
func policyCounts(t *testing.T, s *Server) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range statusOf(t, s).Policies {
		c := p.AdmissionLastHour
		out[p.Name] = fmt.Sprintf("pass=%d fail=%d warn=%d error=%d skip=%d", c.Pass, c.Fail, c.Warn, c.Error, c.Skip)
		if p.LastScan != nil {
			c := p.LastScan.Counts
			out[p.Name] += fmt.Sprintf(" | scan %s pass=%d fail=%d warn=%d error=%d skip=%d", p.LastScan.Time.Format(time.RFC3339), c.Pass, c.Fail, c.Warn, c.Error, c.Skip)
		}
	}
	return out
}

func checkCounts(t *testing.T, when string, got map[string]string, want map[string]string) {
	t.Helper()
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %s: %s, want %s", when, name, got[name], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: policies %v, want %v", when, got, want)
	}
}

// TestStatusCountsTheLastHour: /status counts each policy's admission
// results by state, in the current minute and the 59 before it; older
// results fall out.
func TestStatusCountsTheLastHour(t *testing.T) {
	s, _ := newTestServer(t, decisionPolicies)
	now := time.Date(2026, 12, 1, 10, 0, 30, 0, time.UTC)
	s.now = func() time.Time { return now }
	zero := "pass=0 fail=0 warn=0 error=0 skip=0"
	checkCounts(t, "before any request", policyCounts(t, s), map[string]string{
		"label": zero, "no-bad-pods": zero, "warn-pods": zero, "audit-pods": zero, "broken": zero, "other-pods": zero,
	})

	// 10:00:30: two bad pods at /validate, one pod at /mutate.
	for range 2 {
		denialOf(t, s, named("bad"))
	}
	mustReview(t, post(s.MutateHandler(), "/mutate", review(v1, "m"), "application/json"))
	first := map[string]string{
		"label":       "pass=1 fail=0 warn=0 error=0 skip=0",
		"no-bad-pods": "pass=0 fail=2 warn=0 error=0 skip=0",
		"warn-pods":   "pass=0 fail=0 warn=2 error=0 skip=0",
		"audit-pods":  "pass=0 fail=2 warn=0 error=0 skip=0",
		"broken":      "pass=0 fail=0 warn=0 error=2 skip=0",
		"other-pods":  "pass=0 fail=0 warn=0 error=0 skip=2",
	}
	checkCounts(t, "10:00:30", policyCounts(t, s), first)

	// 10:40: a good pod; the first requests still count.
	now = now.Add(39*time.Minute + 30*time.Second)
	denialOf(t, s, named("good"))
	checkCounts(t, "10:40", policyCounts(t, s), map[string]string{
		"label":       "pass=1 fail=0 warn=0 error=0 skip=0",
		"no-bad-pods": "pass=0 fail=2 warn=0 error=0 skip=1",
		"warn-pods":   "pass=0 fail=0 warn=3 error=0 skip=0",
		"audit-pods":  "pass=0 fail=3 warn=0 error=0 skip=0",
		"broken":      "pass=0 fail=0 warn=0 error=3 skip=0",
		"other-pods":  "pass=0 fail=0 warn=0 error=0 skip=3",
	})

	// 10:59:59 is the last second the 10:00 minute counts; at 11:00:00
	// it is an hour old and falls out.
	now = time.Date(2026, 12, 1, 10, 59, 59, 0, time.UTC)
	if got := policyCounts(t, s)["no-bad-pods"]; got != "pass=0 fail=2 warn=0 error=0 skip=1" {
		t.Errorf("10:59:59: no-bad-pods %s; the 10:00 minute should still count", got)
	}
	now = time.Date(2026, 12, 1, 11, 0, 0, 0, time.UTC)
	checkCounts(t, "11:00", policyCounts(t, s), map[string]string{
		"label":       zero,
		"no-bad-pods": "pass=0 fail=0 warn=0 error=0 skip=1",
		"warn-pods":   "pass=0 fail=0 warn=1 error=0 skip=0",
		"audit-pods":  "pass=0 fail=1 warn=0 error=0 skip=0",
		"broken":      "pass=0 fail=0 warn=0 error=1 skip=0",
		"other-pods":  "pass=0 fail=0 warn=0 error=0 skip=1",
	})

	// Two hours on, the bucket of 10:40's minute is reused by 12:40's: it
	// holds that minute's request alone.
	now = time.Date(2026, 12, 1, 12, 40, 10, 0, time.UTC)
	denialOf(t, s, named("bad"))
	if got := policyCounts(t, s)["no-bad-pods"]; got != "pass=0 fail=1 warn=0 error=0 skip=0" {
		t.Errorf("12:40: no-bad-pods %s, want the 12:40 denial alone", got)
	}
	// A clock that went back does not count the later minute.
	now = time.Date(2026, 12, 1, 12, 39, 0, 0, time.UTC)
	if got := policyCounts(t, s)["no-bad-pods"]; got != zero {
		t.Errorf("clock back to 12:39: no-bad-pods %s, want %s", got, zero)
	}
}

// TestStatusDropsRemovedPolicies: a reload that removes a policy removes
// its counts and its scan; one that keeps it keeps them; a policy added
// back starts from zero.
func TestStatusDropsRemovedPolicies(t *testing.T) {
	s, _ := newTestServer(t, map[string]string{"p.yaml": denyAll("one")["policy.yaml"] + "---\n" +
		policy("warn-pods", "  match: {resources: [pods]}\n  action: violate\n  with: {message: watched}\n  enforcement: Warn\n")})
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	denialOf(t, s)
	s.RecordScan(now, map[string]StateCounts{"deny-all": {Fail: 4}, "warn-pods": {Warn: 2}})
	dir := s.Options().PoliciesDir
	rewrite := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if changed, err := s.Reload(); !changed || err != nil {
			t.Fatalf("reload: %v, %v", changed, err)
		}
	}

	// warn-pods goes; deny-all stays, with a new message.
	rewrite(denyAll("two")["policy.yaml"])
	checkCounts(t, "warn-pods removed", policyCounts(t, s), map[string]string{
		"deny-all": "pass=0 fail=1 warn=0 error=0 skip=0 | scan 2026-12-01T10:00:00Z pass=0 fail=4 warn=0 error=0 skip=0",
	})

	// warn-pods comes back: from zero, no scan.
	rewrite(denyAll("two")["policy.yaml"] + "---\n" + policy("warn-pods", "  match: {resources: [pods]}\n  action: violate\n  with: {message: watched}\n  enforcement: Warn\n"))
	checkCounts(t, "warn-pods back", policyCounts(t, s), map[string]string{
		"deny-all":  "pass=0 fail=1 warn=0 error=0 skip=0 | scan 2026-12-01T10:00:00Z pass=0 fail=4 warn=0 error=0 skip=0",
		"warn-pods": "pass=0 fail=0 warn=0 error=0 skip=0",
	})
}

// TestRecordScan: a scan's counts show as each named policy's lastScan;
// a later scan replaces those of the policies it names and leaves the
// others; names the set does not hold are not kept; the map is copied.
func TestRecordScan(t *testing.T) {
	s, _ := newTestServer(t, decisionPolicies)
	if st := statusOf(t, s); st.Policies[0].LastScan != nil {
		t.Fatalf("a lastScan before any scan: %+v", st.Policies[0].LastScan)
	}
	w := httptest.NewRecorder()
	s.StatusHandler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/status", nil))
	if !strings.Contains(w.Body.String(), `"lastScan": null`) || !strings.Contains(w.Body.String(), `"admissionLastHour": {`) {
		t.Errorf("/status before any scan:\n%s", w.Body)
	}

	first := time.Date(2026, 12, 1, 9, 0, 0, 0, time.FixedZone("CET", 3600))
	counts := map[string]StateCounts{
		"no-bad-pods": {Pass: 10, Fail: 3, Skip: 40},
		"warn-pods":   {Warn: 13},
		"no-such":     {Fail: 1},
	}
	s.RecordScan(first, counts)
	counts["no-bad-pods"] = StateCounts{Fail: 99} // the caller's map is not kept
	second := first.Add(time.Hour)
	s.RecordScan(second, map[string]StateCounts{"warn-pods": {Pass: 13}, "broken": {Error: 5}})

	scans := map[string]*ScanStatus{}
	for _, p := range statusOf(t, s).Policies {
		scans[p.Name] = p.LastScan
	}
	for name, want := range map[string]*ScanStatus{
		"no-bad-pods": {Time: first.UTC(), Counts: StateCounts{Pass: 10, Fail: 3, Skip: 40}},
		"warn-pods":   {Time: second.UTC(), Counts: StateCounts{Pass: 13}},
		"broken":      {Time: second.UTC(), Counts: StateCounts{Error: 5}},
		"label":       nil,
		"audit-pods":  nil,
		"other-pods":  nil,
	} {
		if fmt.Sprint(scans[name]) != fmt.Sprint(want) {
			t.Errorf("%s: lastScan %+v, want %+v", name, scans[name], want)
		}
	}
	s.scanMu.Lock()
	_, kept := s.scans["no-such"]
	s.scanMu.Unlock()
	if kept {
		t.Error("a scan result kept for a policy the set does not hold")
	}
}

// TestResultCountsAreLazy: with 1,000 policies loaded, of which a request
// matches one, only that one gets counts: memory does not grow with
// policies that are never evaluated.
func TestResultCountsAreLazy(t *testing.T) {
	var b strings.Builder
	for i := range 999 {
		fmt.Fprintf(&b, "%s---\n", policy(fmt.Sprintf("cm-%d", i), "  match: {resources: [configmaps]}\n  action: violate\n  with: {message: x}\n"))
	}
	b.WriteString(handlerPolicies["20-deny.yaml"])
	s, _ := newTestServer(t, map[string]string{"p.yaml": b.String()})
	denialOf(t, s, named("bad"))
	made := 0
	for _, o := range s.set.Load().observers {
		if o.recent.p.Load() != nil {
			made++
		}
	}
	if made != 1 {
		t.Errorf("counts made for %d policies of 1000, want 1 (the one evaluated)", made)
	}
	if got := policyCounts(t, s)["no-bad-pods"]; got != "pass=0 fail=1 warn=0 error=0 skip=0" {
		t.Errorf("no-bad-pods: %s", got)
	}
}

// TestResultCountsUnderConcurrentRequests: counts are exact when requests
// race (run with -race), and a reload in the middle loses none of a kept
// policy's.
func TestResultCountsUnderConcurrentRequests(t *testing.T) {
	s, _ := newTestServer(t, decisionPolicies)
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			for range each {
				if w := post(s.ValidateHandler(), "/validate", review(v1, "r", named("bad")), "application/json"); w.Code != http.StatusOK {
					t.Errorf("HTTP %d %s", w.Code, w.Body)
				}
			}
			if i == 0 {
				dir := s.Options().PoliciesDir
				content := decisionPolicies["p.yaml"] + "---\n" + policy("extra", "  match: {resources: [configmaps]}\n  action: violate\n  with: {message: x}\n")
				if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(content), 0o644); err != nil {
					t.Error(err)
				}
				if _, err := s.Reload(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if got, want := policyCounts(t, s)["no-bad-pods"], fmt.Sprintf("pass=0 fail=%d warn=0 error=0 skip=0", workers*each); got != want {
		t.Errorf("no-bad-pods: %s, want %s", got, want)
	}
	if len(statusOf(t, s).Policies) != 7 {
		t.Error("the reload did not happen")
	}
}

// TestResultCountsAreSmall: what a policy costs for /status, a pointer
// while it is not evaluated and an hour of buckets once it is, stays
// within what BENCHMARKS.md says (RSS with 1,000 policies).
func TestResultCountsAreSmall(t *testing.T) {
	if n := unsafe.Sizeof(lazyResults{}); n != 8 {
		t.Errorf("a policy never evaluated costs %d bytes, want 8", n)
	}
	if n := unsafe.Sizeof(recentResults{}); n > 1536 {
		t.Errorf("an evaluated policy's counts take %d bytes, want at most 1.5 KiB", n)
	}
}

func TestStateIndexCoversEveryState(t *testing.T) {
	seen := map[int]bool{}
	for _, st := range allStates {
		i := stateIndex(st)
		if i < 0 || i >= 5 || seen[i] {
			t.Errorf("state %s: index %d", st, i)
		}
		seen[i] = true
	}
	if stateIndex(engine.State("other")) != -1 {
		t.Error("an unknown state has an index")
	}
}
