package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/webhook"
)

// Defaults of Options.
const (
	// DefaultLeaderElectionID names the Lease the replicas elect the one
	// that writes (webhook configurations, builtin controllers) with.
	DefaultLeaderElectionID       = "celadon-webhooks"
	DefaultPort                   = 9443
	DefaultMetricsBindAddress     = ":8080"
	DefaultHealthProbeBindAddress = ":8081"
	DefaultReloadInterval         = 10 * time.Second
	// DefaultGracefulShutdownTimeout bounds how long Start waits, once its
	// context is cancelled, for in-flight requests and runnables to finish.
	DefaultGracefulShutdownTimeout = 30 * time.Second
	// reloadDebounce is how long the reloader waits after a file-system
	// event for the burst of events of one update to end.
	reloadDebounce = 100 * time.Millisecond
)

// Options configure a Server. The zero value of every field but PoliciesDir
// selects its default.
type Options struct {
	// PoliciesDir is the directory of policy files (*.yaml, *.yml, *.json),
	// typically a mounted ConfigMap; a single file is accepted too. Required.
	//
	// The directory is watched, not the files, so that the atomic swap of a
	// ConfigMap volume's "..data" symlink is seen. A ConfigMap mounted with
	// subPath is never updated by the kubelet: mount the whole ConfigMap as
	// a directory for hot reload to work.
	PoliciesDir string
	// Registry holds the builtins policies may name: builtins.Registry()
	// in `celadon serve`. Required.
	Registry *engine.Registry
	// AllowEmpty serves a policy directory that holds no policy (no file,
	// or only empty files and comments). Without it such content is
	// refused, at start (NewServer fails) and at a reload alike (the last
	// good set stays, and the refusal is logged, counted as a failed
	// reload and shown at /status): an emptied ConfigMap is far more often
	// a mistake than a wish to switch every policy off.
	AllowEmpty bool
	// ExceptionsDir is a directory of PolicyException files, besides
	// those among the policies: typically a ConfigMap that teams may edit
	// without editing the policies, with a subdirectory per team's
	// namespace (engine.ReadExceptionFiles). Its exceptions must name
	// their policies one by one, list their namespaces and expire within
	// ExceptionsMaxLifetime, and match only namespaced objects of those
	// namespaces. Watched and reloaded with the policies; content that
	// does not load never stops the server (the last good exceptions, or
	// none, are served, and the error reported). Optional.
	ExceptionsDir string
	// ExceptionsMaxLifetime bounds how far ahead, when it loads, an
	// exception of ExceptionsDir may expire. Default 90 days.
	ExceptionsMaxLifetime time.Duration

	// Host is the address the webhook server listens on; "" is every
	// address.
	Host string
	// Port is the webhook's HTTPS port. Default 9443.
	Port int
	// CertDir holds the serving certificate and key, CertName and KeyName
	// (default tls.crt and tls.key). They are reloaded when they change: no
	// restart is needed after a rotation. Default: controller-runtime's
	// <temp-dir>/k8s-webhook-server/serving-certs.
	CertDir, CertName, KeyName string
	// TLSOpts adjust the webhook's TLS configuration.
	TLSOpts []func(*tls.Config)
	// EnableHTTP2 lets the webhook negotiate HTTP/2. It is off by default,
	// as kubebuilder recommends since the HTTP/2 rapid-reset and stream
	// cancellation CVEs; the API server speaks HTTP/1.1 to webhooks just
	// as well.
	EnableHTTP2 bool

	// MetricsBindAddress serves /metrics and /status: over HTTPS, each
	// request authenticated and authorized by the API server, unless
	// InsecureMetrics. Default ":8080"; "0" disables both.
	MetricsBindAddress string
	// InsecureMetrics serves /metrics and /status over plain HTTP to
	// anyone who can reach MetricsBindAddress: for local development and
	// tests only. By default (false) they are served as kubebuilder
	// projects serve them: HTTPS (a self-signed certificate made in memory
	// at start, since scrapers of in-cluster metrics rarely verify it) and
	// every request's bearer token checked with a TokenReview, then its
	// "get" on the path with a SubjectAccessReview: 401 without a valid
	// token, 403 without the permission. /status names the served
	// policies and the last reload error, which is why it is behind the
	// same check. RBAC: create tokenreviews and subjectaccessreviews
	// (ServerAccess); a scraper needs get on the nonResourceURLs /metrics
	// and /status (deploy/base's ClusterRole celadon-metrics-reader).
	InsecureMetrics bool
	// ClientCAFile, when set, is a PEM bundle of the CAs whose client
	// certificates the webhook accepts: a client that presents none, or
	// one these CAs did not sign, is refused at the TLS handshake. Set it
	// to the CA of the certificate the API server presents to webhooks
	// (its AdmissionConfiguration kubeconfig), so that only the API server
	// can call the webhook. Read once at start; /healthz, /readyz and
	// /metrics are not affected.
	ClientCAFile string
	// HealthProbeBindAddress serves /healthz and /readyz over plain HTTP.
	// Default ":8081"; "0" disables them.
	HealthProbeBindAddress string
	// PprofBindAddress serves net/http/pprof (/debug/pprof/...) over plain
	// HTTP, with no authentication: "" or "0" (the default) disables it.
	// It must be a loopback address (127.0.0.0/8, ::1 or localhost, with a
	// port; CheckLoopbackAddress), so that only a process on the same host,
	// or in the same Pod, can profile the server: a profile names the
	// server's code and its command line, and costs CPU to take.
	PprofBindAddress string

	// Config reaches the API server, for the namespace informer. Default:
	// Kubeconfig when set, else controller-runtime's loading rules
	// (KUBECONFIG, in-cluster, ~/.kube/config).
	Config *rest.Config
	// Kubeconfig is a kubeconfig file, used when Config is nil.
	Kubeconfig string

	// Schemas are the OpenAPI schemas the policies' CEL is type-checked
	// against. Default: the cluster's discovery and schemas (/openapi/v3,
	// CRDs included), read at start and again before each reload that
	// compiles, so that CRDs created since are known: match.resources of
	// a group the cluster serves that is not built in (a CRD's) are then
	// checked against what it serves. Content refused only because of
	// such a resource is compiled again, discovery read again, at every
	// reload until it loads (a CRD being created with its policy). When
	// discovery cannot be read, the schemas last read (the built-in kinds'
	// snapshot if none) are used and such resources are not checked, as
	// offline: a policy set is never refused because the API server was
	// out of reach. Set, they are used as they are, never read again.
	Schemas *engine.Schemas
	// discover returns the discovery of the cluster; tests replace it.
	discover func() (discovery.DiscoveryInterface, error)

	// ServiceAccount is Celadon's own username, e.g.
	// "system:serviceaccount:celadon:celadon". Its requests are allowed
	// untouched, so Celadon can never lock itself out. Empty: none.
	// ServiceAccountFromEnv derives it from the Pod's environment.
	ServiceAccount string

	// MaxConcurrent bounds the evaluations running at once. A request
	// beyond it waits for a slot until its deadline, then gets HTTP 429:
	// a failed call, so the API server applies the webhook's
	// failurePolicy (webhook.WithLimit). Default 4×GOMAXPROCS.
	MaxConcurrent int
	// MaxBodyBytesInFlight bounds the bytes of request bodies held at
	// once, across endpoints; each request takes its share as the bytes
	// arrive. One that finds no room before its deadline gets HTTP 429, a
	// failed call (webhook.BodyBudget). Default
	// webhook.DefaultMaxBodyBytesInFlight; at least
	// webhook.MinBodyBytesInFlight.
	MaxBodyBytesInFlight int64
	// ReloadInterval is how often the policy directory is re-read even
	// without a file-system event, because watches can be lost. Default
	// 10s; negative disables polling.
	ReloadInterval time.Duration
	// DefaultTimeout is the API server's webhook timeout assumed when a
	// request has no ?timeout= parameter. Evaluation gets 90% of the
	// timeout, at least 100ms. Default 10s.
	DefaultTimeout time.Duration
	// GracefulShutdownTimeout bounds the wait for in-flight requests after
	// Start's context is cancelled. Default 30s.
	GracefulShutdownTimeout time.Duration

	// Namespaces replaces the Namespace informer behind namespaceSelector
	// and namespaceObject. Nil: the cluster.Cache's informer on Namespaces
	// (RBAC: list and watch namespaces), which readiness waits for. Tests
	// set it to run without an API server.
	Namespaces engine.NamespaceGetter
	// Cluster serves lookups of other objects to builtins. Nil: a
	// cluster.Cache, with informers only for the resources the served
	// policies read (engine.Snapshot.ClusterReads; RBAC: get, list and
	// watch on those), which readiness waits for. Tests set it to run
	// without an API server.
	Cluster engine.ObjectGetter

	// Logger is the server's logger. Default (a Logger with no sink):
	// controller-runtime's (ctrl.SetLogger), named "celadon".
	Logger logr.Logger
	// DisableDecisionLogs turns the decision logs off: by default every
	// fail, warn and error result (a fail under enforcement Audit
	// included) is logged at info level, one line per policy result with
	// the request it was for (decisionlog.go).
	DisableDecisionLogs bool
	// DecisionLogPassSample also logs pass results: 0 none (the default),
	// 1 every one, N one in N. Skip results are never logged.
	DecisionLogPassSample int
	// DecisionLogRate bounds the decision lines of one second; the rest
	// of that second's are dropped and counted in
	// celadon_decision_logs_dropped_total. Default DefaultDecisionLogRate;
	// negative: no bound.
	DecisionLogRate int
	// DecisionLogger writes the decision logs. Default
	// Logger.WithName("decision"). `celadon serve` gives it a logger of
	// its own, writing where Logger does but without zap's sampling, which
	// would silently drop all but one in 100 lines past the first 100 of
	// a second: DecisionLogRate bounds them instead, and counts what it
	// drops. Over zap (zapr), lines are written through zap directly.
	DecisionLogger logr.Logger
	// MetricsRegisterer receives the server's metrics. Default
	// controller-runtime's metrics.Registry, which /metrics serves; tests
	// pass a fresh prometheus.Registry to read their own counters.
	MetricsRegisterer prometheus.Registerer

	// ManageWebhooks keeps the MutatingWebhookConfiguration and
	// ValidatingWebhookConfiguration named WebhookConfigName in sync with
	// the served policy set (controllers.Configurations), caBundle included: at start,
	// after every successful reload and every WebhookSyncInterval. Only
	// the elected leader writes when LeaderElection is set. Exactly one of
	// WebhookService and WebhookURL is required. RBAC: get, create and
	// update mutatingwebhookconfigurations and
	// validatingwebhookconfigurations (single GETs: no list or watch); with
	// LeaderElection, get, create and update on the Lease and create on
	// events (the election records one) in its namespace.
	ManageWebhooks bool
	// WebhookConfigName names both configurations. Default "celadon".
	WebhookConfigName string
	// WebhookService is the Service in front of Celadon the configurations
	// point at; WebhookURL a base URL instead (development, tests).
	WebhookService *controllers.ServiceRef
	WebhookURL     string
	// CABundleFile is the PEM file written as the configurations' caBundle,
	// re-read on every sync so that a rotated CA is picked up. Default
	// <CertDir>/ca.crt.
	CABundleFile string
	// ExcludeNamespaces are namespaces no managed webhook is called for,
	// besides controllers.AlwaysExcludedNamespaces and WebhookService's
	// namespace (controllers.ConfigOptions.ExcludedNamespaces); the
	// builtins' controllers do not act there either.
	ExcludeNamespaces []string
	// WebhookSyncInterval is how often the configurations are checked and
	// repaired when they drifted. Default 1m; negative disables the timer
	// (syncs still follow every reload).
	WebhookSyncInterval time.Duration

	// BackgroundScan, when positive, makes the leader scan the objects the
	// validating policies match this often, from informer caches, and write
	// the results as OpenReports objects (controllers.BackgroundScanner),
	// which needs their CRDs. Zero disables it.
	BackgroundScan time.Duration

	// SelfSignedCerts makes the servers keep their own CA and serving
	// certificate, for the names of certHosts, in the Secret
	// CertSecretNamespace/CertSecretName, shared by every replica: created
	// when missing or unusable, renewed before expiry, and written into
	// CertDir (CertName, KeyName and ca.crt, swapped atomically as the
	// kubelet updates a Secret volume) before the webhook server starts and
	// whenever it changes, with no restart. With ManageWebhooks, the
	// caBundle of the configurations is the Secret's ca.crt. Every replica
	// checks the Secret; no leader is needed. RBAC: get and update on the
	// Secret, create on Secrets in its namespace.
	SelfSignedCerts bool
	// CertSecretNamespace and CertSecretName name the Secret. The
	// namespace is required; the name defaults to "celadon-tls".
	CertSecretNamespace, CertSecretName string
	// CertDNSNames are more names (DNS names or IP addresses) for the
	// serving certificate, besides those of WebhookService
	// (<name>.<namespace>.svc and <name>.<namespace>.svc.cluster.local)
	// and the host of WebhookURL.
	CertDNSNames []string
	// CAValidity and CertValidity are the lifetimes of a new CA and of a
	// new serving certificate. Default 10 years and 90 days.
	CAValidity, CertValidity time.Duration
	// CertRenewBefore renews the serving certificate when that little
	// validity is left. Default a third of its lifetime (30 days of 90).
	// The CA renews when a third of its lifetime is left.
	CertRenewBefore time.Duration
	// CertCheckInterval is how often each server re-reads the Secret, to
	// renew what is due or to pick up another replica's renewal. Default
	// 1m.
	CertCheckInterval time.Duration

	// LeaderElection makes the servers elect one leader, through a Lease,
	// to write the webhook configurations and run the createSecret
	// reconciler; serving admission requests does not need it.
	LeaderElection bool
	// ElectForControllers turns LeaderElection on when the policy set the
	// server starts with uses a builtin that runs a controller (such as
	// createSecret), so that one replica runs it. `celadon serve` sets it
	// unless --leader-elect is given.
	ElectForControllers bool
	// LeaderElectionID names the Lease. Default "celadon-webhooks".
	LeaderElectionID string
	// LeaderElectionNamespace holds the Lease. Required with LeaderElection
	// outside a cluster; in a cluster, default the Pod's namespace.
	LeaderElectionNamespace string

	// SecretSourceNamespaces are the namespaces besides Namespace that
	// createSecret may copy source Secrets from. Default none: a policy
	// author who can edit the policies cannot read Secrets elsewhere
	// through copies.
	SecretSourceNamespaces []string

	// Namespace is Celadon's own namespace: where createSecret finds its
	// source Secrets when from.namespace is not set. `celadon serve`
	// defaults it to $POD_NAMESPACE. The createSecret reconciler starts
	// once the served set has a createSecret policy; RBAC: see
	// deploy/base/rbac.yaml.
	Namespace string
}

func (o *Options) setDefaults() {
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.MetricsBindAddress == "" {
		o.MetricsBindAddress = DefaultMetricsBindAddress
	}
	if o.HealthProbeBindAddress == "" {
		o.HealthProbeBindAddress = DefaultHealthProbeBindAddress
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 4 * runtime.GOMAXPROCS(0)
	}
	if o.MaxBodyBytesInFlight <= 0 {
		o.MaxBodyBytesInFlight = webhook.DefaultMaxBodyBytesInFlight
	}
	if o.ReloadInterval == 0 {
		o.ReloadInterval = DefaultReloadInterval
	}
	if o.DefaultTimeout <= 0 {
		o.DefaultTimeout = webhook.DefaultAPIServerTimeout
	}
	if o.GracefulShutdownTimeout == 0 {
		o.GracefulShutdownTimeout = DefaultGracefulShutdownTimeout
	}
	if o.MetricsRegisterer == nil {
		o.MetricsRegisterer = ctrlmetrics.Registry
	}
	if o.WebhookConfigName == "" {
		o.WebhookConfigName = controllers.DefaultConfigName
	}
	if o.WebhookSyncInterval == 0 {
		o.WebhookSyncInterval = controllers.DefaultWebhookSyncInterval
	}
	if o.LeaderElectionID == "" {
		o.LeaderElectionID = DefaultLeaderElectionID
	}
	if o.SelfSignedCerts {
		if o.CertSecretName == "" {
			o.CertSecretName = controllers.DefaultCertSecretName
		}
		if o.CAValidity == 0 {
			o.CAValidity = controllers.DefaultCAValidity
		}
		if o.CertValidity == 0 {
			o.CertValidity = controllers.DefaultCertValidity
		}
		if o.CertCheckInterval <= 0 {
			o.CertCheckInterval = controllers.DefaultCertCheckInterval
		}
		if o.CertDir == "" {
			// controller-runtime's default, which the webhook server reads.
			o.CertDir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
		}
	}
	if o.Logger.GetSink() == nil {
		o.Logger = ctrllog.Log.WithName("celadon")
	}
	if o.DecisionLogger.GetSink() == nil {
		o.DecisionLogger = o.Logger.WithName("decision")
	}
	if o.DecisionLogRate == 0 {
		o.DecisionLogRate = DefaultDecisionLogRate
	}
}

// CheckLoopbackAddress refuses a HOST:PORT address whose host is not
// loopback: an IP in 127.0.0.0/8, ::1, or the name localhost. An empty host
// (":6060") listens on every address and is refused too.
func CheckLoopbackAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT on loopback, e.g. 127.0.0.1:6060: %v", addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q: bad port: %v", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address: want 127.0.0.1, [::1] or localhost with a port, since pprof is served to any caller without authentication", addr)
}

// pprofAddress is the address controller-runtime's manager serves pprof
// on; "" serves none.
func (o *Options) pprofAddress() string {
	if o.PprofBindAddress == "0" {
		return ""
	}
	return o.PprofBindAddress
}

// ServiceAccountFromEnv returns the username of the Pod's service account,
// "system:serviceaccount:$POD_NAMESPACE:$SERVICE_ACCOUNT", when both
// variables are set (from the downward API and the Pod spec); else "".
func ServiceAccountFromEnv() string {
	ns, sa := os.Getenv("POD_NAMESPACE"), os.Getenv("SERVICE_ACCOUNT")
	if ns == "" || sa == "" {
		return ""
	}
	return serviceAccountPrefix + ns + ":" + sa
}

const serviceAccountPrefix = "system:serviceaccount:"

// ServiceAccountUsername normalizes a service account given as a full
// username ("system:serviceaccount:ns:name") or as "ns/name" or "ns:name".
func ServiceAccountUsername(s string) (string, error) {
	if s == "" || strings.HasPrefix(s, serviceAccountPrefix) {
		if s != "" && strings.Count(strings.TrimPrefix(s, serviceAccountPrefix), ":") != 1 {
			return "", fmt.Errorf("service account %q: want system:serviceaccount:NAMESPACE:NAME", s)
		}
		return s, nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		ns, name, ok = strings.Cut(s, ":")
	}
	if !ok || ns == "" || name == "" || strings.ContainsAny(name, "/:") {
		return "", fmt.Errorf("service account %q: want NAMESPACE/NAME or system:serviceaccount:NAMESPACE:NAME", s)
	}
	return serviceAccountPrefix + ns + ":" + name, nil
}

// caBundleFile returns the CA bundle file of the managed configurations.
func (o *Options) caBundleFile() string {
	if o.CABundleFile != "" {
		return o.CABundleFile
	}
	dir := o.CertDir
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs") // controller-runtime's default
	}
	return filepath.Join(dir, controllers.CABundleName)
}

// certHosts returns the names the serving certificate is for: those of
// WebhookService (<name>.<namespace>.svc and .svc.cluster.local, what the
// API server checks when it calls a Service), the host of WebhookURL, and
// CertDNSNames; in that order, without duplicates.
func (o *Options) certHosts() []string {
	var hosts []string
	add := func(h string) {
		if h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	if svc := o.WebhookService; svc != nil {
		add(svc.Name + "." + svc.Namespace + ".svc")
		add(svc.Name + "." + svc.Namespace + ".svc.cluster.local")
	}
	if u, err := url.Parse(o.WebhookURL); err == nil && o.WebhookURL != "" {
		add(u.Hostname())
	}
	for _, h := range o.CertDNSNames {
		add(h)
	}
	return hosts
}

// checkSelfSigned checks the options of SelfSignedCerts.
func (o *Options) checkSelfSigned() error {
	if o.CertSecretNamespace == "" {
		return errors.New("the namespace of the certificate Secret is required")
	}
	if len(o.certHosts()) == 0 {
		return errors.New("the certificate has no name: set WebhookService, WebhookURL or CertDNSNames")
	}
	for _, h := range o.CertDNSNames {
		if net.ParseIP(h) == nil && (strings.ContainsAny(h, "/: ") || strings.Trim(h, ".") == "") {
			return fmt.Errorf("certificate name %q: want a DNS name or an IP address", h)
		}
	}
	if o.CABundleFile != "" {
		return errors.New("the CA bundle comes from the certificate Secret: do not set CABundleFile")
	}
	if o.CertValidity < time.Hour {
		return fmt.Errorf("certificate validity %v: want at least 1h", o.CertValidity)
	}
	if o.CAValidity < 2*o.CertValidity {
		return fmt.Errorf("CA validity %v: want at least twice the certificate validity %v", o.CAValidity, o.CertValidity)
	}
	if o.CertRenewBefore < 0 || o.CertRenewBefore >= o.CertValidity {
		return fmt.Errorf("renew-before %v: want 0 (a third of the validity) or less than the certificate validity %v", o.CertRenewBefore, o.CertValidity)
	}
	return nil
}
