package server

import (
	"sync"
	"sync/atomic"
	"time"

	"celadon.io/celadon/engine"
)

// Per-policy results for /status: the admission results of the last hour,
// counted on this replica, and the counts of the last background scan.
//
// A policy's admission results are counted in resultBuckets buckets of a
// minute, each reused when its minute comes round again, behind a small
// mutex (a lock and a few increments per result). The buckets are made on
// the policy's first evaluation, never before, so that a thousand loaded
// policies of which few match cost a pointer each; they are kept across
// reloads as long as the policy keeps its name, and dropped with the last
// set that holds the policy.

const (
	// resultBuckets of resultBucketWidth make the window /status counts:
	// the current minute and the 59 before it.
	resultBuckets     = 60
	resultBucketWidth = time.Minute
)

// StateCounts counts policy results by state.
type StateCounts struct {
	Pass  uint64 `json:"pass"`
	Fail  uint64 `json:"fail"`
	Warn  uint64 `json:"warn"`
	Error uint64 `json:"error"`
	Skip  uint64 `json:"skip"`
}

// ScanStatus is what a background scan found for one policy.
type ScanStatus struct {
	// Time is when the scan that reported the policy ran.
	Time   time.Time   `json:"time"`
	Counts StateCounts `json:"counts"`
}

// stateIndex numbers the states for resultBucket.counts; -1 for a state
// unknown here.
func stateIndex(st engine.State) int {
	switch st {
	case engine.StatePass:
		return 0
	case engine.StateFail:
		return 1
	case engine.StateWarn:
		return 2
	case engine.StateError:
		return 3
	case engine.StateSkip:
		return 4
	}
	return -1
}

// resultBucket counts the results of one minute.
type resultBucket struct {
	// minute is the bucket's minute since the Unix epoch (good until the
	// year 10000); 0, never a minute of the window, is an unused bucket.
	minute uint32
	counts [5]uint32
}

// recentResults counts one policy's results of the last hour.
type recentResults struct {
	mu      sync.Mutex
	buckets [resultBuckets]resultBucket
}

func minuteOf(t time.Time) uint32 { return uint32(t.Unix() / int64(resultBucketWidth/time.Second)) }

// record counts one result of state st at now.
func (w *recentResults) record(now time.Time, st engine.State) {
	i := stateIndex(st)
	if i < 0 {
		return
	}
	m := minuteOf(now)
	w.mu.Lock()
	b := &w.buckets[m%resultBuckets]
	if b.minute != m {
		*b = resultBucket{minute: m}
	}
	b.counts[i]++
	w.mu.Unlock()
}

// sum counts the results of the window that ends at now: the buckets of
// its minute and of the resultBuckets-1 before. A bucket of an older
// minute (or of a later one, after the clock went back) does not count.
func (w *recentResults) sum(now time.Time) StateCounts {
	m := minuteOf(now)
	var c [5]uint64
	w.mu.Lock()
	for _, b := range w.buckets {
		if b.minute <= m && m-b.minute < resultBuckets {
			for i, n := range b.counts {
				c[i] += uint64(n)
			}
		}
	}
	w.mu.Unlock()
	return stateCounts(c)
}

// lazyResults holds a policy's recentResults once it is evaluated. One is
// shared by the sets that hold the policy, so that a request on the set
// being replaced counts where the new set reads.
type lazyResults struct{ p atomic.Pointer[recentResults] }

// get returns the policy's counts, making them on first use.
func (l *lazyResults) get() *recentResults {
	if w := l.p.Load(); w != nil {
		return w
	}
	l.p.CompareAndSwap(nil, new(recentResults))
	return l.p.Load()
}

// sum returns the policy's counts of the last hour; zero when it was never
// evaluated.
func (l *lazyResults) sum(now time.Time) StateCounts {
	if w := l.p.Load(); w != nil {
		return w.sum(now)
	}
	return StateCounts{}
}

// RecordScan records what a background scan that ran at at found, by
// policy name: each policy of the served set that counts names shows it as
// its lastScan at /status, until a later scan reports it again or a reload
// removes it. Names the served set does not hold are ignored. counts is
// not kept: the caller may reuse it.
func (s *Server) RecordScan(at time.Time, counts map[string]StateCounts) {
	set := s.set.Load()
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	for name, c := range counts {
		if _, served := set.observers[name]; !served {
			continue
		}
		if s.scans == nil {
			s.scans = map[string]ScanStatus{}
		}
		s.scans[name] = ScanStatus{Time: at.UTC(), Counts: c}
	}
}

// forgetScans drops the scan results of the policies set does not hold.
func (s *Server) forgetScans(set *policySet) {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	for name := range s.scans {
		if _, served := set.observers[name]; !served {
			delete(s.scans, name)
		}
	}
}

// lastScan returns the last scan's result for a policy; nil when none.
func (s *Server) lastScan(name string) *ScanStatus {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	if sc, ok := s.scans[name]; ok {
		return &sc
	}
	return nil
}

// recordScanCounts records a background scan's counts (ScanOptions.OnScan)
// for /status.
func (s *Server) recordScanCounts(at time.Time, counts map[string]map[engine.State]int) {
	out := make(map[string]StateCounts, len(counts))
	for policy, byState := range counts {
		var c [5]uint64
		for st, n := range byState {
			if i := stateIndex(st); i >= 0 {
				c[i] += uint64(n)
			}
		}
		out[policy] = stateCounts(c)
	}
	s.RecordScan(at, out)
}

// stateCounts reads counts indexed by stateIndex.
func stateCounts(c [5]uint64) StateCounts {
	return StateCounts{Pass: c[0], Fail: c[1], Warn: c[2], Error: c[3], Skip: c[4]}
}
