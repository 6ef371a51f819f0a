package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"celadon.io/celadon/cluster"
	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/webhook"
)

// StatusPath serves Status on the metrics bind address, next to /metrics.
const StatusPath = "/status"

// Server serves Celadon's policies as admission webhooks. It runs
// controller-runtime's webhook server (TLS, with the certificate and key
// reloaded from CertDir when they change) inside a controller-runtime
// manager, which also serves /metrics, /status, /healthz and /readyz; and
// a Namespace informer for namespaceSelector and namespaceObject.
//
// NewServer loads the policy set, failing on any error; Start serves until
// its context is cancelled, reloading the policy directory as it changes.
// `celadon serve` is a flag layer over these two calls, and tests can run
// the same code path in-process.
type Server struct {
	opts    Options
	log     logr.Logger
	metrics *metrics
	limiter *webhook.Limiter
	bodies  *webhook.BodyBudget // shared by every endpoint
	// decisions writes the decision logs; nil when they are off.
	decisions *decisionLogger
	// now is the clock of the decision logs' rate and of the results
	// /status counts; tests replace it.
	now func() time.Time
	// scans are the last background scan's results by policy
	// (RecordScan), guarded by scanMu.
	scanMu sync.Mutex
	scans  map[string]ScanStatus

	store     *engine.Store
	set       atomic.Pointer[policySet] // derived from store's current set
	reloadErr atomic.Pointer[ReloadError]
	// exStore serves the exceptions directory; nil without one.
	exStore     *engine.ExceptionStore
	exReloadErr atomic.Pointer[ReloadError]
	exLoadedAt  atomic.Pointer[time.Time]
	// cache owns the informers requests read; namespaces and cluster are
	// it, unless Options.Namespaces or Options.Cluster replace it.
	cache      *cluster.Cache
	namespaces engine.NamespaceGetter
	cluster    engine.ObjectGetter

	handlers map[string]http.Handler // by path

	// syncer writes the webhook configurations (ManageWebhooks) once Start
	// made it; controllers runs the builtins' controllers.
	syncer      atomic.Pointer[controllers.ConfigSyncer]
	controllers atomic.Pointer[controllers.BuiltinControllers]
	// scanner runs the background scan (BackgroundScan), once Start made it.
	scanner atomic.Pointer[controllers.BackgroundScanner]

	started   atomic.Bool
	readiness atomic.Pointer[readiness]

	// schemas are the cluster's schemas last read (clusterSchemas).
	schemas atomic.Pointer[engine.Schemas]

	// For tests: called once the reloader is set up; and polling only.
	onWatch func()
	noWatch bool
}

type readiness struct {
	cacheReady     func() error
	webhookStarted healthz.Checker
}

// NewServer checks opts, applies defaults and loads the policy set. A set
// that does not load is an error (a *LoadError listing every
// file:line:col error); nothing is served then.
func NewServer(opts Options) (*Server, error) {
	opts.setDefaults()
	if opts.PoliciesDir == "" {
		return nil, errors.New("webhook: Options.PoliciesDir is required")
	}
	if opts.Registry == nil {
		return nil, errors.New("webhook: Options.Registry is required")
	}
	if err := opts.checkExceptionsDir(); err != nil {
		return nil, err
	}
	sa, err := ServiceAccountUsername(opts.ServiceAccount)
	if err != nil {
		return nil, err
	}
	opts.ServiceAccount = sa
	if opts.ManageWebhooks {
		// Check the options now rather than at the first sync.
		if err := (controllers.ConfigOptions{Name: opts.WebhookConfigName, Service: opts.WebhookService, URL: opts.WebhookURL, ExcludeNamespaces: opts.ExcludeNamespaces}).Check(); err != nil {
			return nil, fmt.Errorf("webhook: managing the webhook configurations: %w", err)
		}
	}
	if a := opts.pprofAddress(); a != "" {
		if err := CheckLoopbackAddress(a); err != nil {
			return nil, fmt.Errorf("webhook: Options.PprofBindAddress: %w", err)
		}
	}
	if opts.DecisionLogPassSample < 0 {
		return nil, fmt.Errorf("webhook: Options.DecisionLogPassSample %d: want 0 (no pass result), 1 (every one) or N (one in N)", opts.DecisionLogPassSample)
	}
	if opts.SelfSignedCerts {
		if err := opts.checkSelfSigned(); err != nil {
			return nil, fmt.Errorf("webhook: self-signed certificates: %w", err)
		}
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		metrics: newMetrics(opts.MetricsRegisterer),
		limiter: webhook.NewLimiter(opts.MaxConcurrent),
		now:     time.Now,
	}
	s.decisions = newDecisionLogger(&opts, s.metrics.decisionsLost)
	s.bodies = webhook.NewBodyBudget(opts.MaxBodyBytesInFlight, s.metrics.BodyBytes)
	s.cache = cluster.New(opts.Namespaces == nil)
	s.namespaces, s.cluster = s.cache, s.cache
	if opts.Namespaces != nil {
		s.namespaces = opts.Namespaces
	}
	if opts.Cluster != nil {
		s.cluster = opts.Cluster
	}
	storeOpts := engine.Options{Registry: opts.Registry, AllowEmpty: opts.AllowEmpty, Schemas: s.opts.Schemas}
	if s.opts.Schemas == nil {
		storeOpts.Rediscover = s.clusterSchemas
	}
	s.store = engine.NewStore(opts.PoliciesDir, storeOpts)
	if err := s.loadInitial(); err != nil {
		return nil, err
	}
	s.loadExceptions()
	if users := controllers.ControllerBuiltins(s.Snapshot()); s.opts.ElectForControllers && len(users) > 0 && !s.opts.LeaderElection {
		if s.opts.LeaderElectionNamespace == "" {
			s.opts.LeaderElectionNamespace = s.opts.Namespace
		}
		if s.opts.LeaderElectionNamespace == "" {
			return nil, fmt.Errorf("webhook: the policies use %s, whose controller runs on one elected replica: "+
				"set the leader election namespace (--leader-election-namespace, $POD_NAMESPACE), or turn leader election off (--leader-elect=false) for a single replica", strings.Join(users, ", "))
		}
		s.opts.LeaderElection = true
	}
	s.handlers = map[string]http.Handler{
		webhook.MutatePath:   s.endpoint(webhook.MutatePath, engine.EvalOptions{Phase: engine.PhaseMutating}),
		webhook.ValidatePath: s.endpoint(webhook.ValidatePath, engine.EvalOptions{Phase: engine.PhaseValidating}),
	}
	for _, t := range []engine.ActionType{engine.Mutating, engine.Validating} {
		phase := engine.PhaseMutating
		if t == engine.Validating {
			phase = engine.PhaseValidating
		}
		for _, fp := range []engine.FailurePolicy{engine.Fail, engine.Ignore} {
			path := webhook.WebhookPath(t, fp)
			s.handlers[path] = s.endpoint(path, engine.EvalOptions{Phase: phase, FailurePolicy: fp})
		}
	}
	return s, nil
}

// signalConfigSync asks the configuration syncer, if any, to sync; it
// never blocks.
func (s *Server) signalConfigSync() {
	if y := s.syncer.Load(); y != nil {
		y.Signal()
	}
}

// Options returns the options in force, defaults applied.
func (s *Server) Options() Options { return s.opts }

// Snapshot returns the served policy set.
func (s *Server) Snapshot() *engine.Snapshot { return s.store.Current() }

// Store returns the store of the served policy sets.
func (s *Server) Store() *engine.Store { return s.store }

// MutateHandler serves /mutate: mutating policies only.
func (s *Server) MutateHandler() http.Handler { return s.handlers[webhook.MutatePath] }

// ValidateHandler serves /validate: validating policies only.
func (s *Server) ValidateHandler() http.Handler { return s.handlers[webhook.ValidatePath] }

// Handler returns the handler of a webhook path: webhook.MutatePath, webhook.ValidatePath
// or a webhook.WebhookPath; nil for another path.
func (s *Server) Handler(path string) http.Handler { return s.handlers[path] }

// Paths returns the webhook paths served, sorted.
func (s *Server) Paths() []string {
	paths := make([]string, 0, len(s.handlers))
	for p := range s.handlers {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths
}

// endpoint builds the handler chain of one endpoint:
//
//	instrument (request metrics)
//	  webhook.ReviewHandler (decode, limits, deadline, encode; the one recover)
//	    webhook.WithLogging → webhook.WithBypass → webhook.WithLimit → evaluator
func (s *Server) endpoint(path string, eo engine.EvalOptions) http.Handler {
	log := s.log.WithValues("endpoint", path)
	h := webhook.Chain(s.evaluator(eo, s.opts.DecisionLogger.WithValues("endpoint", path)),
		webhook.WithLogging(log),
		webhook.WithBypass(s.opts.ServiceAccount),
		webhook.WithLimit(s.limiter, s.metrics.Throttled.WithLabelValues(path), s.metrics.InFlight),
	)
	return webhook.Instrument(path, s.metrics.Metrics, &webhook.ReviewHandler{
		Handler:        h,
		DefaultTimeout: s.opts.DefaultTimeout,
		Log:            log,
		OnPanic:        func(req admission.Request, p any) webhook.Response { return s.panicked(log, req, eo, p) },
		Panics:         s.metrics.Panics.WithLabelValues(webhook.PanicHTTP),
		Bodies:         s.bodies,
		Throttled:      s.metrics.Throttled.WithLabelValues(path),
	})
}

// evaluator answers a request from the policy set served when it starts;
// a reload during the request does not affect it. Its results go to the
// metrics and to decisions, the decision logger of the endpoint.
func (s *Server) evaluator(eo engine.EvalOptions, decisions logr.Logger) webhook.HandlerFunc {
	eo.Namespaces, eo.Cluster = s.namespaces, s.cluster
	return func(ctx context.Context, req admission.Request) webhook.Response {
		set := s.set.Load()
		eo := eo
		eo.Exceptions = s.Exceptions()
		d, err := set.snap.Evaluate(ctx, &req.AdmissionRequest, eo)
		if err != nil {
			// The engine cannot read the object: a failed call, so that the
			// webhook's failurePolicy decides, never a denial.
			return webhook.NotEvaluated(http.StatusBadRequest, fmt.Errorf("celadon: %w", err))
		}
		now := s.now()
		s.metrics.observeResults(set, d.Results, now)
		s.decisions.write(decisions, now, &req.AdmissionRequest, d)
		if sc := s.scanner.Load(); sc != nil {
			sc.RecordAdmission(&req.AdmissionRequest, d)
		}
		// The diagnostic lines of errors and panics. What they quote of the
		// request or the object is made one line and bounded (logText): a
		// hand-made review's uid can be megabytes.
		for i := range d.Results {
			switch r := &d.Results[i]; {
			case r.Panicked:
				// Rare, and a bug in a builtin: worth an error log.
				s.log.Error(errors.New(logText(r.Reason, maxLogReasonBytes)), "builtin panicked; its failurePolicy decided",
					"policy", r.Policy, "action", r.Action, "uid", logText(string(req.UID), maxLogFieldBytes))
			case r.State == engine.StateError:
				// The requester reads this reason with its URLs and
				// addresses redacted (engine.RedactAddresses), and so do
				// the decision logs; the operator needs them whole.
				s.log.Info("policy evaluation failed; its failurePolicy decided",
					"policy", r.Policy, "action", r.Action, "uid", logText(string(req.UID), maxLogFieldBytes), "reason", logText(r.Reason, maxLogReasonBytes))
			}
		}
		return webhook.FromDecision(d)
	}
}

// panicked answers a request whose handling panicked outside a builtin
// (builtin panics are recovered by the engine into their policy's result).
// The failurePolicy of the policies the request could have matched
// decides: denied if any of them is Fail, else allowed with a warning.
func (s *Server) panicked(log logr.Logger, req admission.Request, eo engine.EvalOptions, p any) webhook.Response {
	s.metrics.Panics.WithLabelValues(webhook.PanicEngine).Inc()
	log.Error(fmt.Errorf("panic: %v", p), "recovered a panic answering an admission request", "uid", logText(string(req.UID), maxLogFieldBytes), "stack", string(debug.Stack()))
	return webhook.FromDecision(panicDecision(s.Snapshot(), &req.AdmissionRequest, eo, p))
}

func panicDecision(snap *engine.Snapshot, req *admissionv1.AdmissionRequest, eo engine.EvalOptions, p any) *engine.Decision {
	// The panic's value is logged whole (panicked); the requester gets it
	// without URLs or addresses.
	msg := "celadon: internal error evaluating policies: " + engine.RedactAddresses(fmt.Sprint(p))
	var failing []string
	for _, c := range snap.Candidates(req.Resource.Group, req.Resource.Resource, req.SubResource, string(req.Operation)) {
		if !eo.Phase.Includes(c.Type) || (eo.FailurePolicy != "" && c.Policy.Spec.FailurePolicy != eo.FailurePolicy) {
			continue
		}
		if c.Policy.Spec.FailurePolicy != engine.Ignore {
			failing = append(failing, c.Name())
		}
	}
	if len(failing) > 0 {
		return &engine.Decision{Message: msg + " (failurePolicy Fail: " + strings.Join(failing, ", ") + ")"}
	}
	return &engine.Decision{Allowed: true, Warnings: []string{msg + " (every matching policy has failurePolicy Ignore)"}}
}

// Ready reports whether the server can serve: a policy set is loaded, the
// namespace informer has synced and the webhook server is listening. It
// backs /readyz.
func (s *Server) Ready() error {
	if s.set.Load() == nil {
		return errors.New("no policy set loaded")
	}
	r := s.readiness.Load()
	if r == nil {
		return errors.New("server not started")
	}
	if err := r.cacheReady(); err != nil {
		return err
	}
	return r.webhookStarted(nil)
}

// clusterSchemas reads the cluster's discovery and OpenAPI schemas, CRDs'
// included, for the resource check and type checking; the store calls it
// before each compilation (engine.Options.Rediscover). When they cannot
// be read it returns the schemas last read without their discovery (the
// resources of groups not built in go unchecked, as offline), or nil (the
// built-in kinds' snapshot) when none were: a policy set is never refused
// because the API server was out of reach.
func (s *Server) clusterSchemas() *engine.Schemas {
	discover := s.opts.discover
	if discover == nil {
		discover = s.discovery
	}
	dc, err := discover()
	if err == nil {
		var schemas *engine.Schemas
		if schemas, err = engine.DiscoverySchemas(dc); err == nil {
			prev := s.schemas.Swap(schemas)
			if prev == nil || prev.Resources() != schemas.Resources() {
				s.log.Info("checking policies against the cluster's discovery and schemas", "resources", schemas.Resources())
			}
			return schemas
		}
	}
	last := s.schemas.Load()
	if last == nil {
		s.log.Info("checking policies against the built-in resources and kinds only: the cluster's discovery is out of reach; resources of groups not built in are not checked", "error", err.Error())
		return nil
	}
	s.log.Info("the cluster's discovery is out of reach: type-checking against the schemas last read; resources of groups not built in are not checked", "error", err.Error())
	return last.WithServed(nil)
}

// discovery returns a client of the cluster's discovery; each call of it
// reads discovery anew.
func (s *Server) discovery() (discovery.DiscoveryInterface, error) {
	cfg, err := s.restConfig()
	if err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 10 * time.Second
	return discovery.NewDiscoveryClientForConfig(cfg)
}

// restConfig returns the configuration to reach the API server.
func (s *Server) restConfig() (*rest.Config, error) {
	if s.opts.Config != nil {
		return s.opts.Config, nil
	}
	if s.opts.Kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", s.opts.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", s.opts.Kubeconfig, err)
		}
		if cfg.QPS == 0 {
			cfg.QPS = -1 // rely on API priority and fairness, as controller-runtime does
		}
		return cfg, nil
	}
	return ctrlconfig.GetConfig()
}

// Start serves until ctx is cancelled, then lets in-flight requests finish
// (within GracefulShutdownTimeout) and returns. It returns early with an
// error when the servers cannot start, e.g. a port is taken or the
// certificate cannot be read. Start may be called once.
func (s *Server) Start(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("webhook: Server.Start called twice")
	}
	cfg, err := s.restConfig()
	if err != nil {
		return err
	}
	o := s.opts
	var tlsOpts []func(*tls.Config)
	if !o.EnableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	if o.ClientCAFile != "" {
		verify, err := RequireClientCert(o.ClientCAFile)
		if err != nil {
			return err
		}
		tlsOpts = append(tlsOpts, verify)
	}
	tlsOpts = append(tlsOpts, o.TLSOpts...)
	hooks := crwebhook.NewServer(crwebhook.Options{
		Host: o.Host, Port: o.Port,
		CertDir: o.CertDir, CertName: o.CertName, KeyName: o.KeyName,
		TLSOpts: tlsOpts,
	})
	shutdown := o.GracefulShutdownTimeout
	mgr, err := manager.New(cfg, manager.Options{
		Logger:                  s.log.WithName("manager"),
		Metrics:                 o.metricsOptions(s.StatusHandler()),
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		PprofBindAddress:        o.pprofAddress(), // loopback only: NewServer checked it
		WebhookServer:           hooks,
		GracefulShutdownTimeout: &shutdown,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        o.LeaderElectionID,
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// Hand the lease over at once on shutdown; Start returns only
		// after the runnables have stopped.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating the controller manager: %w", err)
	}
	for _, path := range s.Paths() {
		mgr.GetWebhookServer().Register(path, s.handlers[path]) // the first call adds the server to the manager
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cacheReady := func() error { return nil }
	if s.opts.Namespaces == nil || s.opts.Cluster == nil {
		ready, err := s.cache.Start(ctx, cfg, s.Snapshot().ClusterReads())
		if err != nil {
			return fmt.Errorf("cluster cache: %w", err)
		}
		defer func() { cancel(); s.cache.Wait() }() // the informers stop with ctx
		s.store.Subscribe(func(snap *engine.Snapshot) { s.cache.Ensure(snap.ClusterReads()) })
		cacheReady = ready
	}
	s.readiness.Store(&readiness{cacheReady: cacheReady, webhookStarted: hooks.StartedChecker()})
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("policies", func(*http.Request) error {
		if s.set.Load() == nil {
			return errors.New("no policy set loaded")
		}
		return nil
	}); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("cluster", func(*http.Request) error { return cacheReady() }); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", hooks.StartedChecker()); err != nil {
		return err
	}

	if o.ManageWebhooks {
		y := controllers.NewConfigSyncer(controllers.SyncOptions{
			Config: controllers.ConfigOptions{
				Name: o.WebhookConfigName, Service: o.WebhookService, URL: o.WebhookURL,
				ExcludeNamespaces: o.ExcludeNamespaces,
			},
			CAFile:   o.caBundleFile(),
			Interval: o.WebhookSyncInterval,
			Policies: s.store,
			// Written only once this replica answers: an install never
			// sends the API server to a Celadon that cannot.
			Ready: s.Ready,
			Log:   s.log,
		}, mgr.GetClient(), mgr.GetAPIReader())
		if err := mgr.Add(y); err != nil {
			return err
		}
		s.syncer.Store(y)
	}
	if o.SelfSignedCerts {
		// The webhook server reads the certificate when it starts, before
		// the manager runs anything else: write it first.
		cm := controllers.NewCertManager(controllers.CertOptions{
			Secret:        client.ObjectKey{Namespace: o.CertSecretNamespace, Name: o.CertSecretName},
			Hosts:         o.certHosts(),
			CAValidity:    o.CAValidity,
			CertValidity:  o.CertValidity,
			RenewBefore:   o.CertRenewBefore,
			CheckInterval: o.CertCheckInterval,
			Dir:           o.CertDir,
			CertName:      o.CertName,
			KeyName:       o.KeyName,
			OnCAChange:    s.signalConfigSync,
			Metrics:       o.MetricsRegisterer,
			Log:           s.log,
		}, mgr.GetClient(), mgr.GetAPIReader())
		if err := cm.First(ctx); err != nil {
			return err
		}
		if err := mgr.Add(cm); err != nil {
			return err
		}
	}
	bc := controllers.NewBuiltinControllers(engine.ControllerContext{
		Config:     cfg,
		Policies:   s.store,
		Namespaces: s.namespaces,
		Cluster:    s.cluster,
		Namespace:  o.Namespace,
		ExcludedNamespaces: controllers.ConfigOptions{
			Service: o.WebhookService, URL: o.WebhookURL, ExcludeNamespaces: append([]string{o.Namespace}, o.ExcludeNamespaces...),
		}.ExcludedNamespaces(),
		SourceNamespaces: o.SecretSourceNamespaces,
		Events:           mgr.GetEventRecorder("celadon"),
		Metrics:          o.MetricsRegisterer,
		Log:              s.log,
	})
	if err := mgr.Add(bc); err != nil {
		return err
	}
	s.controllers.Store(bc)
	if o.BackgroundScan > 0 {
		sc := controllers.NewBackgroundScanner(controllers.ScanOptions{
			Interval:   o.BackgroundScan,
			Policies:   s.store,
			Namespaces: s.namespaces,
			Cluster:    s.cluster,
			Excluded: controllers.ConfigOptions{
				Service: o.WebhookService, URL: o.WebhookURL, ExcludeNamespaces: []string{o.Namespace},
			}.ExcludedNamespaces(),
			Exceptions: s.Exceptions,
			OnScan:     s.recordScanCounts,
			Log:        s.log.WithName("background-scan"),
		}, cfg, mgr.GetClient())
		if err := mgr.Add(sc); err != nil {
			return err
		}
		s.store.Subscribe(func(*engine.Snapshot) { sc.Trigger() })
		s.scanner.Store(sc)
	}

	var wg sync.WaitGroup
	wg.Go(func() { s.watch(ctx) })
	snap := s.Snapshot()
	s.log.Info("starting the admission webhook", "port", o.Port, "certDir", o.CertDir,
		"metrics", o.MetricsBindAddress, "metricsSecure", !o.InsecureMetrics, "clientCA", o.ClientCAFile, "healthProbes", o.HealthProbeBindAddress,
		"pprof", o.pprofAddress(),
		"policies", len(snap.Policies), "hash", snap.Hash, "maxConcurrent", s.limiter.Size())
	err = mgr.Start(ctx)
	cancel()
	wg.Wait()
	return err
}
