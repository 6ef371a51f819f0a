package webhook

import (
	"context"
	"errors"
	"testing"
	"time"

	"celadon.io/celadon/engine"
)

type ctxKey struct{}

// TestRequestContext: a request's context has the connection's values, not
// its cancellation, expires at its deadline whether or not anything waits
// on Done, and carries the parsed review.
func TestRequestContext(t *testing.T) {
	conn, cancelConn := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	rc := newRequestContext(conn, 50*time.Millisecond)
	defer rc.stop()
	cancelConn()
	if rc.Err() != nil {
		t.Fatalf("the connection's cancellation reached the request: %v", rc.Err())
	}
	if rc.Value(ctxKey{}) != "v" {
		t.Errorf("the connection's values are lost")
	}
	if d, ok := rc.Deadline(); !ok || time.Until(d) > 50*time.Millisecond {
		t.Errorf("deadline %v %v", d, ok)
	}
	if rc.Value(engine.ReviewKey) != nil {
		t.Errorf("a review before one is set")
	}
	r, err := engine.ParseReview([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	rc.review = r
	if rc.Value(engine.ReviewKey) != r {
		t.Errorf("the review is not under engine.ReviewKey")
	}

	select {
	case <-rc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done was not closed at the deadline")
	}
	if !errors.Is(rc.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(rc), context.DeadlineExceeded) {
		t.Fatalf("Err %v, Cause %v after the deadline", rc.Err(), context.Cause(rc))
	}
	// A child context sees the deadline too.
	child, cancel := context.WithCancel(rc)
	defer cancel()
	select {
	case <-child.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a child of an expired request context is not done")
	}
}

// TestRequestContextErrWithoutDone: past the deadline Err reports it, and
// Done is closed, even when nothing waited on Done (no timer was made).
func TestRequestContextErrWithoutDone(t *testing.T) {
	rc := newRequestContext(context.Background(), time.Millisecond)
	defer rc.stop()
	for rc.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	if rc.timer != nil {
		t.Errorf("a timer was made though nothing waited on Done")
	}
	select {
	case <-rc.Done():
	default:
		t.Fatal("Err reports the deadline, Done is open")
	}
}
