package devenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// PollInterval is how often the wait helpers check their condition.
const PollInterval = 100 * time.Millisecond

// WaitFor calls cond every PollInterval until it returns true, returns an
// error, ctx is done or timeout has passed. The timeout error names what
// was awaited. An error from cond ends the wait at once: use Retry to
// retry on errors.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		ok, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: gave up after %v: %w", what, timeout, ctx.Err())
		case <-t.C:
		}
	}
}

// Retry is like WaitFor, but errors from cond are retried; the timeout
// error includes the last one.
func Retry(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) error) error {
	var last error
	err := WaitFor(ctx, timeout, what, func(ctx context.Context) (bool, error) {
		err := cond(ctx)
		if err != nil && ctx.Err() != nil && last != nil {
			// Cut short by the deadline: the previous error says more.
			return false, nil
		}
		last = err
		return err == nil, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last error: %v)", err, last)
	}
	return err
}

// WaitForHTTP waits until a GET of url answers 200 OK, e.g. a /readyz
// endpoint.
func WaitForHTTP(ctx context.Context, timeout time.Duration, url string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	return Retry(ctx, timeout, url+" to answer 200", func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	})
}

// WaitForPortClosed waits until nothing accepts TCP connections on addr
// (host:port).
func WaitForPortClosed(ctx context.Context, timeout time.Duration, addr string) error {
	return WaitFor(ctx, timeout, addr+" to stop listening", func(ctx context.Context) (bool, error) {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			// Refused: closed. Anything else (a dial cut short by the
			// deadline, a full backlog) proves nothing.
			return errors.Is(err, syscall.ECONNREFUSED), nil
		}
		conn.Close()
		return false, nil
	})
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the caller binds it; callers that can
// should retry on "address already in use".
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("devenv: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ServingCertificate connects to the TLS server at addr (host:port) and
// returns the leaf certificate it presents, without verifying it: the
// caller compares it with what it expects.
func ServingCertificate(ctx context.Context, addr string) (*x509.Certificate, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 2 * time.Second},
		Config: &tls.Config{
			ServerName:         host,
			InsecureSkipVerify: true, //nolint:gosec // returns the certificate for the caller to check
			NextProtos:         []string{"http/1.1"},
		},
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("devenv: server presented no certificate")
	}
	return certs[0], nil
}
