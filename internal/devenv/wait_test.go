package devenv

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	ctx := context.Background()
	var n atomic.Int32
	if err := WaitFor(ctx, time.Minute, "n to reach 3", func(context.Context) (bool, error) {
		return n.Add(1) >= 3, nil
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := WaitFor(ctx, time.Minute, "x", func(context.Context) (bool, error) { return false, boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom at once", err)
	}
	err := WaitFor(ctx, 50*time.Millisecond, "never", func(context.Context) (bool, error) { return false, nil })
	if err == nil || !strings.Contains(err.Error(), "never") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout naming what was awaited", err)
	}
}

func TestRetryReportsLastError(t *testing.T) {
	err := Retry(context.Background(), 50*time.Millisecond, "ready", func(context.Context) error { return errors.New("not yet") })
	if err == nil || !strings.Contains(err.Error(), "not yet") {
		t.Fatalf("err = %v, want the last error", err)
	}
}

func TestWaitForHTTP(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "namespaces not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	err := WaitForHTTP(context.Background(), 300*time.Millisecond, srv.URL)
	if err == nil || !strings.Contains(err.Error(), "namespaces not synced") {
		t.Fatalf("err = %v, want the last answer", err)
	}
	ready.Store(true)
	if err := WaitForHTTP(context.Background(), time.Minute, srv.URL); err != nil {
		t.Fatal(err)
	}
}

func TestFreePortAndPortClosed(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the free port cannot be bound: %v", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if err := WaitForPortClosed(context.Background(), 300*time.Millisecond, addr); err == nil {
		t.Fatal("WaitForPortClosed returned while the port listens")
	}
	l.Close()
	if err := WaitForPortClosed(context.Background(), time.Minute, addr); err != nil {
		t.Fatal(err)
	}
}
