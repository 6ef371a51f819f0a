package webhook

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
)

// Body reading. Memory follows the bytes that actually arrive, never a
// header: a client can announce 7 MiB and send nothing.
const (
	// DefaultMaxBodyBytesInFlight is the default BodyBudget: three reviews
	// of MaxRequestBytes and change. A large body costs about its bytes
	// again while it is served (read into chunks, joined into one buffer
	// the parsed review keeps, and its tape), and the collector, paced by
	// GOMEMLIMIT, lets garbage stand: 24 MiB of bodies keeps the server
	// within the shipped Deployment's 256 MiB (BENCHMARKS.md).
	DefaultMaxBodyBytesInFlight = 24 << 20
	// bodyChunk is how much budget a request takes at a time, ahead of the
	// bytes it reads into it.
	bodyChunk = 64 << 10
	// firstRead is the most read before a request takes any budget or
	// buffer: a connection that sent headers and no body holds this only.
	firstRead = 512
)

// errBudgetBusy refuses a request that holds budget and needs more while
// another such request already waits.
var errBudgetBusy = errors.New("another request holding body bytes is waiting for more")

// BodyBudget bounds the bytes of request bodies held at once, across all
// requests and endpoints. A request takes budget as its bytes arrive, in
// chunks, and gives it all back when it is answered, whatever the answer.
//
// A request that holds nothing yet waits for its first chunk until its
// deadline, in arrival order. A request that already holds some and needs
// more waits too, but only while no other such request is waiting; past
// that one it is refused at once. Requests holding part of their body and
// waiting on each other would otherwise deadlock until their deadlines,
// with the whole budget held and no body complete.
type BodyBudget struct {
	sem     *semaphore.Weighted
	size    int64
	inUse   atomic.Int64
	waiting atomic.Bool // a request that holds budget is waiting for more
	gauge   prometheus.Gauge
}

// NewBodyBudget returns a budget of n bytes, at least enough for one body
// of MaxRequestBytes: a smaller one could never serve the largest review.
// inUse, if not nil, follows InUse (MetricBodyBytesInFlight).
func NewBodyBudget(n int64, inUse prometheus.Gauge) *BodyBudget {
	n = max(n, MinBodyBytesInFlight)
	return &BodyBudget{sem: semaphore.NewWeighted(n), size: n, gauge: inUse}
}

func (b *BodyBudget) add(n int64) {
	b.inUse.Add(n)
	if b.gauge != nil {
		b.gauge.Add(float64(n))
	}
}

// MinBodyBytesInFlight is the smallest BodyBudget: one body of
// MaxRequestBytes, plus the chunk that finds it over the limit.
const MinBodyBytesInFlight = MaxRequestBytes + bodyChunk

// Size is the budget in bytes.
func (b *BodyBudget) Size() int64 { return b.size }

// InUse is the budget held by requests now.
func (b *BodyBudget) InUse() int64 { return b.inUse.Load() }

// bodyGrant is the budget one request holds; the zero value of a nil
// budget tracks bytes without bounding them.
type bodyGrant struct {
	b    *BodyBudget
	held int64
}

// take adds n bytes to g, waiting as BodyBudget says.
func (g *bodyGrant) take(ctx context.Context, n int64) error {
	if g.b == nil {
		g.held += n
		return nil
	}
	b := g.b
	if !b.sem.TryAcquire(n) {
		if g.held > 0 {
			if !b.waiting.CompareAndSwap(false, true) {
				return errBudgetBusy
			}
			defer b.waiting.Store(false)
		}
		if err := b.sem.Acquire(ctx, n); err != nil {
			return err
		}
	}
	b.add(n)
	g.held += n
	return nil
}

// release gives back all g holds.
func (g *bodyGrant) release() {
	if g.b != nil && g.held > 0 {
		g.b.add(-g.held)
		g.b.sem.Release(g.held)
	}
	g.held = 0
}

// budgetError is a body that could not get budget: the request was not
// evaluated, and the API server applies the failurePolicy.
type budgetError struct{ err error }

func (e *budgetError) Error() string { return e.err.Error() }
func (e *budgetError) Unwrap() error { return e.err }

// readBody reads body, at most limit bytes, into a buffer that grows with
// the bytes received, under g: budget is taken in chunks ahead of the
// bytes read into them. Nothing is taken, and no buffer, until the first
// bytes arrive. Up to spillSize the body grows in a pooled buffer; past
// it, in pooled chunks joined once at the end into a buffer of the body's
// size, so that a 7 MB body leaves 7 MB of garbage rather than the 16 MB of
// a buffer doubling to 8 MB. It returns the buffer (nil when the body was
// empty), and a *budgetError when budget ran out, or the read error.
func readBody(ctx context.Context, body io.Reader, limit int64, g *bodyGrant) (*bytes.Buffer, error) {
	head := headPool.Get().(*[firstRead]byte)
	defer headPool.Put(head)
	n, err := io.ReadAtLeast(body, head[:], 1)
	if n == 0 {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = nil
		}
		return nil, err
	}
	if err := g.take(ctx, bodyChunk); err != nil {
		return nil, &budgetError{err}
	}
	buf := getBuffer()
	buf.Write(head[:n])
	var spill [][]byte // the body past spillSize
	defer func() {
		for _, c := range spill {
			putChunk(c)
		}
	}()
	size := int64(n)
	for size < limit {
		if size >= g.held {
			if err := g.take(ctx, bodyChunk); err != nil {
				return buf, &budgetError{err}
			}
		}
		room := min(g.held, limit) - size
		var p []byte
		if buf.Len() < spillSize {
			if buf.Available() < firstRead {
				buf.Grow(firstRead) // doubles the buffer when full
			}
			p = buf.AvailableBuffer()
			p = p[:min(int64(cap(p)), room, int64(spillSize-buf.Len()))]
		} else {
			if len(spill) == 0 || len(spill[len(spill)-1]) == bodyChunk {
				spill = append(spill, getChunk())
			}
			last := spill[len(spill)-1]
			p = last[len(last):bodyChunk]
			p = p[:min(int64(len(p)), room)]
		}
		n, err := body.Read(p)
		if buf.Len() < spillSize {
			buf.Write(p[:n])
		} else {
			spill[len(spill)-1] = spill[len(spill)-1][:len(spill[len(spill)-1])+n]
		}
		size += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return buf, err
		}
	}
	if len(spill) == 0 {
		return buf, nil
	}
	whole := make([]byte, 0, size)
	whole = append(whole, buf.Bytes()...)
	for _, c := range spill {
		whole = append(whole, c...)
	}
	putBuffer(buf)
	return bytes.NewBuffer(whole), nil
}

// spillSize is the size past which a body is read into chunks (readBody):
// the pooled buffer then stays under maxPooledBuffer.
const spillSize = 256 << 10

// headPool holds the firstRead bytes a request reads before anything else.
var headPool = sync.Pool{New: func() any { return new([firstRead]byte) }}

var chunkPool = sync.Pool{New: func() any { return new([bodyChunk]byte) }}

func getChunk() []byte { return chunkPool.Get().(*[bodyChunk]byte)[:0] }

func putChunk(c []byte) { chunkPool.Put((*[bodyChunk]byte)(c[:bodyChunk])) }
