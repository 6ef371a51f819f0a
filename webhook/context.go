package webhook

import (
	"context"
	"sync"
	"time"

	"celadon.io/celadon/engine"
)

// requestContext is the context a request is evaluated under: the values of
// the connection's context and none of its cancellation (controller-runtime
// cancels every request as soon as shutdown starts, and in-flight requests
// must still get their answer), the deadline derived from the API server's
// timeout, and the review parsed from the body (engine.ReviewKey).
//
// It does what context.WithTimeout and WithValue over WithoutCancel do in
// one allocation, and makes the deadline's timer only when something waits
// on Done: most requests only ask Err.
type requestContext struct {
	context.Context // the connection's, without its cancellation
	deadline        time.Time
	review          *engine.Review

	mu    sync.Mutex
	done  chan struct{} // made on the first Done, or Err past the deadline
	timer *time.Timer
}

func newRequestContext(conn context.Context, timeout time.Duration) *requestContext {
	return &requestContext{Context: context.WithoutCancel(conn), deadline: time.Now().Add(timeout)}
}

func (c *requestContext) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *requestContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if d := time.Until(c.deadline); d <= 0 {
			close(c.done)
		} else {
			c.timer = time.AfterFunc(d, c.expire)
		}
	}
	return c.done
}

func (c *requestContext) expire() { close(c.done) }

// Err is DeadlineExceeded once Done is closed, as the context contract
// wants; past the deadline it closes Done itself if nothing waited yet.
func (c *requestContext) Err() error {
	c.mu.Lock()
	if c.done == nil && !time.Now().Before(c.deadline) {
		c.done = make(chan struct{})
		close(c.done)
	}
	done := c.done
	c.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *requestContext) Value(key any) any {
	if key == engine.ReviewKey && c.review != nil {
		return c.review
	}
	return c.Context.Value(key)
}

// stop releases the timer once the request is answered.
func (c *requestContext) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
}
