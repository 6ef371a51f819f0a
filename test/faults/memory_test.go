package faults

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"celadon.io/celadon/webhook"
)

// shippedMemoryLimit is the memory limit of deploy/base/deployment.yaml.
const shippedMemoryLimit = 256 << 20

// rssKiB reads a field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
func rssKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("the server is gone: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", field, line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestMemoryUnderBodyFlood holds 200 connections that send the headers of
// a 7 MiB review and no body, then posts 32 reviews of just under 7 MiB at
// once, to a server run with GOMEMLIMIT at the shipped Deployment's memory
// limit: its peak RSS (VmHWM) stays under that limit, and it answers
// ordinary reviews afterwards, with the header-only connections still
// open. Each large review is answered (patched) or refused with 429 (no
// room in the body budget), or cut off mid-upload with that 429; nothing
// else.
//
// The limit is GOMEMLIMIT and an assertion on RSS, not a cgroup: the
// only memory cgroup writable here is the one the test itself runs in.
func TestMemoryUnderBodyFlood(t *testing.T) {
	t.Setenv("GOMEMLIMIT", strconv.Itoa(shippedMemoryLimit)+"B") // inherited by the server
	s := startServer(t, nil)
	pod := podTemplate(t, "pod", "web-0", nil)
	s.runOnce(webhook.MutatePath, pod, 20, nil, allowedPatched)
	idle := rssKiB(t, s.PID, "VmRSS")

	// 200 header-only connections, held open past the flood: ?timeout=30s
	// gives each a 27s read deadline.
	tlsConf := &tls.Config{RootCAs: s.Pool, NextProtos: []string{"http/1.1"}}
	const headerOnly = 200
	conns := make([]net.Conn, 0, headerOnly)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range headerOnly {
		c, err := tls.Dial("tcp", s.Addr, tlsConf)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /validate?timeout=30s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", webhook.MaxRequestBytes)
	}
	time.Sleep(time.Second) // the server reads every header
	withHeaders := rssKiB(t, s.PID, "VmRSS")
	t.Logf("RSS idle %d KiB; with %d header-only connections %d KiB (%+d KiB, %.1f KiB each)",
		idle, headerOnly, withHeaders, withHeaders-idle, float64(withHeaders-idle)/headerOnly)

	// Peak RSS while the large reviews are served.
	var peak atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID)); err == nil {
				for line := range strings.SplitSeq(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
						n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
						peak.Store(max(peak.Load(), n))
					}
				}
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	huge := podTemplate(t, "huge", "web-huge", func(pod map[string]any) {
		pod["metadata"].(map[string]any)["annotations"] = map[string]any{"example.com/huge": strings.Repeat("x", 6<<20+512<<10)}
	})
	if n := len(huge.Body); n > webhook.MaxRequestBytes || n < webhook.MaxRequestBytes-1<<20 {
		t.Fatalf("review of %d bytes, want just under %d", n, webhook.MaxRequestBytes)
	}
	const large = 32
	tr := &http.Transport{TLSClientConfig: tlsConf, MaxConnsPerHost: large, MaxIdleConnsPerHost: large}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var mu sync.Mutex
	outcomes := map[string]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for range large {
		wg.Go(func() {
			outcome := "patched"
			resp, err := client.Post(s.BaseURL+webhook.MutatePath, "application/json", bytes.NewReader(huge.Body))
			switch {
			case err != nil:
				// The server answered 429 and closed while the client
				// was still sending.
				outcome = "cut off"
			default:
				msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusTooManyRequests && strings.Contains(string(msg), "request bodies in flight"):
					outcome = "429"
				case resp.StatusCode != http.StatusOK || !strings.Contains(string(msg), `"patch"`):
					outcome = fmt.Sprintf("unexpected %s: %.300s", resp.Status, msg)
				}
			}
			mu.Lock()
			outcomes[outcome]++
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopSampling)
	<-sampled
	hwm := rssKiB(t, s.PID, "VmHWM")
	t.Logf("%d reviews of %d bytes in %v: %v; RSS peak sampled %d KiB, VmHWM %d KiB (limit %d KiB)",
		large, len(huge.Body), elapsed.Round(10*time.Millisecond), outcomes, peak.Load(), hwm, shippedMemoryLimit>>10)
	for o, n := range outcomes {
		if o != "patched" && o != "429" && o != "cut off" {
			t.Errorf("%d large reviews: %s", n, o)
		}
	}
	if outcomes["patched"] == 0 {
		t.Error("no large review was answered")
	}
	if hwm >= shippedMemoryLimit>>10 {
		t.Errorf("peak RSS %d KiB, over the shipped memory limit of %d KiB: the pod would be OOM-killed", hwm, shippedMemoryLimit>>10)
	}

	// Alive, and answering ordinary reviews with the connections still
	// held.
	s.healthz()
	s.runOnce(webhook.MutatePath, pod, 50, nil, allowedPatched)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == nil || !isTimeout(err) {
			t.Fatalf("header-only connection %d: %v, want it still open and unanswered", i, err)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
