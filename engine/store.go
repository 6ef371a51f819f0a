package engine

import (
	"sync"
	"sync/atomic"
	"time"
)

// Store holds the served policy set of a directory. Load reads, hashes,
// compiles and publishes; Subscribe is the only way to hear of a new set.
// A set that does not load is never published: the last good one stays,
// and Failure says why the newest content is not served. A set of no
// policies does not load unless Options.AllowEmpty (ErrNoPolicies), the
// same rule for the first Load and every later one.
type Store struct {
	dir  string
	opts Options

	cur atomic.Pointer[Snapshot]

	loadMu  sync.Mutex // serializes Load
	failure atomic.Pointer[LoadFailure]

	subs       subscribers[*Snapshot]
	failureSub subscribers[*LoadFailure]
}

// LoadFailure is content that did not load.
type LoadFailure struct {
	Time time.Time
	// Hash identifies the content; empty when it could not be read.
	Hash string
	// Err is an ErrorList when the policies do not compile.
	Err error
	// Rediscover says that every error is a resource unknown to the
	// cluster's discovery (Options.Rediscover): Load compiles the same
	// content again, with discovery read again.
	Rediscover bool
}

// NewStore returns a store of the policies in dir (a directory or one
// file), compiled with opts. Nothing is read before Load.
func NewStore(dir string, opts Options) *Store { return &Store{dir: dir, opts: opts} }

// Dir returns the directory the store reads.
func (s *Store) Dir() string { return s.dir }

// Current returns the served set; nil before the first successful Load.
func (s *Store) Current() *Snapshot { return s.cur.Load() }

// Failure returns why the newest content is not served; nil when the
// served set is the newest content.
func (s *Store) Failure() *LoadFailure { return s.failure.Load() }

// Subscribe calls fn with every set published from now on, in the order
// of subscription, and at once with the current set when there is one.
// fn runs on the loading goroutine: it must not block, nor call Load.
func (s *Store) Subscribe(fn func(*Snapshot)) {
	s.subs.add(fn)
	if cur := s.Current(); cur != nil {
		fn(cur)
	}
}

// SubscribeFailures calls fn when content fails to load, once per content,
// and with nil when the failure is over (the content on disk is served).
func (s *Store) SubscribeFailures(fn func(*LoadFailure)) { s.failureSub.add(fn) }

// Load reads the directory and, when its content differs from the served
// set's, compiles it and publishes it. It reports whether a new set was
// published. Content that does not load (unreadable, not compiling, or no
// policy at all without AllowEmpty) returns its *LoadFailure's error,
// and the served set stays; the same broken content is reported to the
// failure subscribers once. Unchanged broken content is not compiled
// again, unless it failed only because of resources the cluster's
// discovery did not serve and Options.Rediscover is set: then each Load
// compiles it again, with the schemas Rediscover returns.
func (s *Store) Load() (bool, error) {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	now := time.Now()
	files, err := ReadFiles(s.dir)
	if err != nil {
		return false, s.failed(&LoadFailure{Time: now, Err: err}, "read:"+err.Error())
	}
	hash := Hash(files)
	if cur := s.Current(); cur != nil && cur.Hash == hash {
		if s.failure.Swap(nil) != nil {
			s.notifyFailure(nil)
		}
		return false, nil
	}
	if f := s.failure.Load(); f != nil && f.Hash == hash && hash != "" && !(f.Rediscover && s.opts.Rediscover != nil) {
		return false, f.Err
	}
	opts := s.opts
	if opts.Rediscover != nil {
		opts.Schemas = opts.Rediscover()
	}
	snap, err := Compile(files, opts)
	if err == nil && len(snap.Policies) == 0 && !s.opts.AllowEmpty {
		err = ErrNoPolicies
	}
	if err != nil {
		return false, s.failed(&LoadFailure{Time: now, Hash: hash, Err: err, Rediscover: snap != nil && snap.onlyUnserved}, hash)
	}
	s.cur.Store(snap)
	if s.failure.Swap(nil) != nil {
		s.notifyFailure(nil)
	}
	s.subs.notify(snap)
	return true, nil
}

// failed records f unless the same content (key) failed last time, and
// returns the recorded error.
func (s *Store) failed(f *LoadFailure, key string) error {
	if prev := s.failure.Load(); prev != nil && failureKey(prev) == key {
		if prev.Rediscover != f.Rediscover { // still reported once
			again := *prev
			again.Rediscover = f.Rediscover
			s.failure.Store(&again)
		}
		return prev.Err
	}
	s.failure.Store(f)
	s.notifyFailure(f)
	return f.Err
}

func failureKey(f *LoadFailure) string {
	if f.Hash == "" {
		return "read:" + f.Err.Error()
	}
	return f.Hash
}

func (s *Store) notifyFailure(f *LoadFailure) { s.failureSub.notify(f) }

// ExceptionStore holds the served exception set of an exceptions
// directory (ReadExceptionFiles, CompileExceptions), as Store holds a
// policy set: a set that does not load is never served, the last good one
// stays and Failure says why. Unlike policies, an empty directory is a
// set of no exceptions, and nothing here stops a server from starting:
// before the first good Load, Current is an empty set.
type ExceptionStore struct {
	dir  string
	opts ExceptionOptions
	// now is the clock MaxLifetime is checked with at each load.
	now func() time.Time

	cur     atomic.Pointer[ExceptionSet]
	loadMu  sync.Mutex
	failure atomic.Pointer[LoadFailure]

	subs       subscribers[*ExceptionSet]
	failureSub subscribers[*LoadFailure]
}

// NewExceptionStore returns a store of the exceptions in dir, compiled with
// opts (its Now is ignored: each Load uses the time of the load). Nothing
// is read before Load.
func NewExceptionStore(dir string, opts ExceptionOptions) *ExceptionStore {
	s := &ExceptionStore{dir: dir, opts: opts, now: time.Now}
	s.cur.Store(&ExceptionSet{})
	return s
}

// Dir returns the directory the store reads.
func (s *ExceptionStore) Dir() string { return s.dir }

// Current returns the served set: empty before the first good Load.
func (s *ExceptionStore) Current() *ExceptionSet { return s.cur.Load() }

// Failure returns why the newest content is not served; nil when the
// served set is the newest content.
func (s *ExceptionStore) Failure() *LoadFailure { return s.failure.Load() }

// Subscribe calls fn with every set published from now on, and at once
// with the current one. fn runs on the loading goroutine: it must not
// block, nor call Load.
func (s *ExceptionStore) Subscribe(fn func(*ExceptionSet)) {
	s.subs.add(fn)
	fn(s.Current())
}

// SubscribeFailures calls fn when content fails to load, once per content,
// and with nil when the failure is over.
func (s *ExceptionStore) SubscribeFailures(fn func(*LoadFailure)) { s.failureSub.add(fn) }

// Load reads the directory and, when its content differs from the served
// set's, compiles it and publishes it; see Store.Load. A directory that
// cannot be read (not mounted, gone) is a failure like content that does
// not compile: the last good set stays. Content that failed is compiled
// again at every Load, as the time decides whether an expiry is too far
// ahead; it is reported once.
func (s *ExceptionStore) Load() (bool, error) {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	now := s.now()
	files, err := ReadExceptionFiles(s.dir)
	if err != nil {
		return false, s.failed(&LoadFailure{Time: now, Err: err})
	}
	hash := Hash(files)
	if s.Current().Hash == hash {
		if s.failure.Swap(nil) != nil {
			s.notifyFailure(nil)
		}
		return false, nil
	}
	opts := s.opts
	opts.Now = now
	set, err := CompileExceptions(files, opts)
	if err != nil {
		return false, s.failed(&LoadFailure{Time: now, Hash: hash, Err: err})
	}
	s.cur.Store(set)
	if s.failure.Swap(nil) != nil {
		s.notifyFailure(nil)
	}
	s.subs.notify(set)
	return true, nil
}

func (s *ExceptionStore) failed(f *LoadFailure) error {
	if prev := s.failure.Load(); prev != nil && failureKey(prev) == failureKey(f) {
		return prev.Err
	}
	s.failure.Store(f)
	s.notifyFailure(f)
	return f.Err
}

func (s *ExceptionStore) notifyFailure(f *LoadFailure) { s.failureSub.notify(f) }

// subscribers is a list of callbacks, added to at any time and called in
// order, outside the lock, so that a callback may subscribe.
type subscribers[T any] struct {
	mu  sync.Mutex
	fns []func(T)
}

func (s *subscribers[T]) add(fn func(T)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fns = append(s.fns, fn)
}

func (s *subscribers[T]) notify(v T) {
	s.mu.Lock()
	fns := s.fns
	s.mu.Unlock()
	for _, fn := range fns {
		fn(v)
	}
}
