package main

// `celadon serve`: the admission webhook. A thin flag layer over
// server.NewServer and Server.Start.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/server"
	"celadon.io/celadon/webhook"
)

func init() { rootCmd.AddCommand(newServeCmd()) }

// Defaults of serve's flags that differ from server.Options' own.
const (
	defaultPoliciesDir = "/etc/celadon/policies"
	defaultCertDir     = "/etc/celadon/tls"
)

type serveOptions struct {
	policies        string
	certDir         string
	host            string
	port            int
	metricsAddr     string
	metricsSecure   bool
	clientCA        string
	probeAddr       string
	pprofAddr       string
	kubeconfig      string
	logLevel        string
	logFormat       string
	serviceAccount  string
	maxConcurrent   int
	maxBodyBytes    string
	reloadInterval  time.Duration
	shutdownTimeout time.Duration
	allowEmpty      bool
	exceptionsDir   string
	exMaxLifetime   time.Duration

	decisionLog        bool
	decisionPassSample int
	decisionLogRate    int

	selfSignedCerts   bool
	certSecret        string
	certDNSNames      []string
	caValidity        time.Duration
	certValidity      time.Duration
	certRenewBefore   time.Duration
	certCheckInterval time.Duration

	manageWebhooks    bool
	webhookConfigName string
	webhookService    string
	excludeNamespaces []string
	webhookURL        string
	caBundle          string
	webhookSync       time.Duration
	backgroundScan    time.Duration
	leaderElect       bool
	leaderElectSet    bool // --leader-elect given; else it follows --manage-webhooks
	leaderElectionNS  string

	namespace string // Celadon's own, for createSecret's sources
	// secretSources are the other namespaces createSecret may copy from.
	secretSources []string
}

// serveEnv maps each flag to the environment variable that sets it when
// the flag is not given. KUBECONFIG is not listed: without --kubeconfig,
// controller-runtime's loading rules honour it (a list of files included),
// then the in-cluster configuration, then ~/.kube/config.
var serveEnv = map[string]string{
	"policies":                  "CELADON_POLICIES",
	"cert-dir":                  "CELADON_CERT_DIR",
	"host":                      "CELADON_HOST",
	"port":                      "CELADON_PORT",
	"metrics-bind-address":      "CELADON_METRICS_BIND_ADDRESS",
	"metrics-secure":            "CELADON_METRICS_SECURE",
	"client-ca":                 "CELADON_CLIENT_CA",
	"health-probe-bind-address": "CELADON_HEALTH_PROBE_BIND_ADDRESS",
	"pprof-bind-address":        "CELADON_PPROF_BIND_ADDRESS",
	"log-level":                 "CELADON_LOG_LEVEL",
	"log-format":                "CELADON_LOG_FORMAT",
	"service-account":           "CELADON_SERVICE_ACCOUNT",
	"max-concurrent":            "CELADON_MAX_CONCURRENT",
	"max-body-bytes-in-flight":  "CELADON_MAX_BODY_BYTES_IN_FLIGHT",
	"allow-empty-policies":      "CELADON_ALLOW_EMPTY_POLICIES",
	"exceptions-dir":            "CELADON_EXCEPTIONS_DIR",
	"exceptions-max-lifetime":   "CELADON_EXCEPTIONS_MAX_LIFETIME",
	"decision-log":              "CELADON_DECISION_LOG",
	"decision-log-pass-sample":  "CELADON_DECISION_LOG_PASS_SAMPLE",
	"decision-log-rate":         "CELADON_DECISION_LOG_RATE",
	"reload-interval":           "CELADON_RELOAD_INTERVAL",
	"shutdown-timeout":          "CELADON_SHUTDOWN_TIMEOUT",
	"self-signed-certs":         "CELADON_SELF_SIGNED_CERTS",
	"cert-secret":               "CELADON_CERT_SECRET",
	"cert-dns-names":            "CELADON_CERT_DNS_NAMES",
	"ca-validity":               "CELADON_CA_VALIDITY",
	"cert-validity":             "CELADON_CERT_VALIDITY",
	"cert-renew-before":         "CELADON_CERT_RENEW_BEFORE",
	"cert-check-interval":       "CELADON_CERT_CHECK_INTERVAL",
	"manage-webhooks":           "CELADON_MANAGE_WEBHOOKS",
	"webhook-config-name":       "CELADON_WEBHOOK_CONFIG_NAME",
	"webhook-service":           "CELADON_WEBHOOK_SERVICE",
	"exclude-namespace":         "CELADON_EXCLUDE_NAMESPACE",
	"webhook-url":               "CELADON_WEBHOOK_URL",
	"ca-bundle":                 "CELADON_CA_BUNDLE",
	"webhook-sync-interval":     "CELADON_WEBHOOK_SYNC_INTERVAL",
	"background-scan":           "CELADON_BACKGROUND_SCAN",
	"leader-elect":              "CELADON_LEADER_ELECT",
	"leader-election-namespace": "CELADON_LEADER_ELECTION_NAMESPACE",
	"namespace":                 "CELADON_NAMESPACE",
	"secret-source-namespaces":  "CELADON_SECRET_SOURCE_NAMESPACES",
}

func newServeCmd() *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the policies as Kubernetes admission webhooks",
		Long: `Serve runs the admission webhook: /mutate runs the mutating policies and
/validate the validating ones, and /mutate/fail, /mutate/ignore,
/validate/fail and /validate/ignore only those with that failurePolicy (the
paths the configurations of "celadon webhook-config" call). It serves HTTPS
on --port with the certificate and key tls.crt and tls.key from --cert-dir
(with --client-ca, only to clients presenting a certificate that CA signed),
reloaded when they change.

The policy directory is watched and re-read every --reload-interval; a new
set is compiled whole and swapped in atomically. An edit that does not
compile keeps the last good set and is reported, at file:line:col, in the log,
in the metrics and at /status. Starting with a set that does not compile
fails, listing every error. A directory with no policy (no file, or only
empty files and comments) is refused the same way, at start and at a
reload, unless --allow-empty-policies. Mount the policies ConfigMap as a directory: a
ConfigMap mounted with subPath is never updated.

PolicyException documents among the policies except policies from requests
they match. --exceptions-dir adds a directory of them that teams may edit
without editing the policies, watched and reloaded with the policies: its
exceptions must name their policies one by one, list their namespaces and
expire within --exceptions-max-lifetime, and match namespaced objects of
those namespaces only; in a subdirectory (where a team's ConfigMap is
mounted), the namespace it is named after alone. Exceptions that do not load
never stop the server: the last good ones stay (none at start) and the
error is reported as a policy reload error is, under
lastExceptionsReloadError at /status.

/metrics and /status (the served policies, each with its results of the
last hour and of the last background scan, their hash and the last reload
error, as JSON) on --metrics-bind-address: HTTPS with a self-signed
certificate, and only for a bearer token the API server authenticates
(TokenReview) and authorizes for get on the path (SubjectAccessReview):
401 or 403 otherwise. --metrics-secure=false serves them as plain HTTP to
anyone, for local development. /healthz and /readyz (plain HTTP; ready once
the policies are loaded, the namespace cache has synced and the webhook
listens) on --health-probe-bind-address. --pprof-bind-address serves
net/http/pprof's /debug/pprof/ (plain HTTP, no authentication) on a
loopback address only, for profiling; off by default.

Decision logs: every fail, warn and error result (Audit's fails included)
is logged at info level by the logger "celadon.decision", one line per
policy result, with the request's resource, namespace, name, operation,
user, dryRun and uid and whether it was denied; an error's message is
redacted as the requester's denial is. --decision-log-pass-sample N also
logs one pass result in N; --decision-log=false turns them off. At most
--decision-log-rate lines are written a second; the rest are dropped and
counted in celadon_decision_logs_dropped_total.

Requests from Celadon's own service account (--service-account, default
system:serviceaccount:$POD_NAMESPACE:$SERVICE_ACCOUNT) are allowed
untouched. SIGTERM or SIGINT stops the server after in-flight requests
finish (within --shutdown-timeout).

With --self-signed-certs, the servers make their own CA and serving
certificate and keep them in the Secret --cert-secret (default celadon-tls
in $POD_NAMESPACE), shared by every replica: whichever replica finds it
missing, unusable or due creates or renews it (a conflicting write by
another replica wins, and its certificate is used). Each server writes
tls.crt, tls.key and ca.crt into --cert-dir (which must be writable, e.g.
an emptyDir) before the webhook starts, re-reads the Secret every
--cert-check-interval and swaps in what changed, with no restart. The
certificate is for the --webhook-service names
(NAME.NAMESPACE.svc, NAME.NAMESPACE.svc.cluster.local), the host of
--webhook-url and --cert-dns-names. It lives --cert-validity (90 days) and
renews when --cert-renew-before is left (default a third); the CA lives
--ca-validity (10 years) and a new one is trusted next to it a third of
its life before it expires. With --manage-webhooks the configurations'
caBundle is the Secret's ca.crt. RBAC: get and update on the Secret, create
on Secrets in its namespace.

With --manage-webhooks, the server keeps the MutatingWebhookConfiguration
and ValidatingWebhookConfiguration named --webhook-config-name in sync with
the policies it serves (what "celadon webhook-config" prints), pointing at
--webhook-service NAMESPACE/NAME[:PORT] or --webhook-url, with the caBundle
read from --ca-bundle (default <cert-dir>/ca.crt, re-read on every sync and
checked for a change every 10s, so a rotated CA is picked up), never sending
--exclude-namespace, kube-system, kube-node-lease or the Service's namespace
to Celadon: once the server is ready (policies loaded, caches synced, the
webhook listening), after every policy reload, and every
--webhook-sync-interval to repair drift. Until a replica is ready nothing is
written, so an install whose pods never start blocks nothing. A policy edit that adds a resource
then takes effect with no manual step. Only the leader elected through the
Lease "celadon-webhooks" in --leader-election-namespace (default
$POD_NAMESPACE) writes; --leader-elect is on by default with
--manage-webhooks. RBAC: get, create and update on
mutatingwebhookconfigurations and validatingwebhookconfigurations, and on
leases (coordination.k8s.io) in that namespace, and create on events there
(the election records one).

When the policies use createSecret, the leader also runs a reconciler that
creates and syncs the Secrets those policies want in the namespaces they
select; a source Secret without a namespace is looked up in --namespace
(default $POD_NAMESPACE). --leader-elect is then on by default too, so
that one replica writes.

Every flag can also be set through the environment variable shown in its
help; a flag given on the command line wins.

Exit status: 0 after a clean shutdown, 1 when the server fails, 2 for bad
usage or policies that do not load.`,
		Example: `  celadon serve --policies /etc/celadon/policies --cert-dir /etc/celadon/tls
  CELADON_POLICIES=./policies celadon serve --kubeconfig ~/.kube/config --log-level debug
  celadon serve --manage-webhooks --webhook-service celadon/celadon:443
  celadon serve --self-signed-certs --manage-webhooks --webhook-service celadon/celadon`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	f := cmd.Flags()
	f.StringVar(&o.policies, "policies", defaultPoliciesDir, "directory of policy files, typically a mounted ConfigMap")
	f.StringVar(&o.certDir, "cert-dir", defaultCertDir, "directory holding the serving certificate tls.crt and key tls.key")
	f.StringVar(&o.host, "host", "", `address the webhook listens on ("" for all)`)
	f.IntVar(&o.port, "port", server.DefaultPort, "HTTPS port of the webhook")
	f.StringVar(&o.metricsAddr, "metrics-bind-address", server.DefaultMetricsBindAddress, `address of /metrics and /status; "0" disables them`)
	f.BoolVar(&o.metricsSecure, "metrics-secure", true, "serve /metrics and /status over HTTPS, each request's bearer token authenticated and authorized by the API server (get on the path); false serves plain HTTP to anyone, for local development only")
	f.StringVar(&o.clientCA, "client-ca", "", "PEM bundle of CAs: the webhook requires a client certificate they signed (the API server's, see its AdmissionConfiguration) and refuses any other client at the TLS handshake")
	f.StringVar(&o.probeAddr, "health-probe-bind-address", server.DefaultHealthProbeBindAddress, `address of /healthz and /readyz (plain HTTP); "0" disables them`)
	f.StringVar(&o.pprofAddr, "pprof-bind-address", "", `loopback address (127.0.0.1:PORT, [::1]:PORT or localhost:PORT) of net/http/pprof's /debug/pprof/, plain HTTP with no authentication, for profiling; any other address is refused; "" disables it`)
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else in-cluster, else ~/.kube/config)")
	f.StringVar(&o.logLevel, "log-level", "info", "log verbosity: error, info, debug, or a number (V-level; debug is 1)")
	f.StringVar(&o.logFormat, "log-format", "", "log format: json or console (default: console on a terminal, json otherwise)")
	f.StringVar(&o.serviceAccount, "service-account", "", "Celadon's own service account, whose requests are allowed untouched: NAMESPACE/NAME or system:serviceaccount:NAMESPACE:NAME (default from $POD_NAMESPACE and $SERVICE_ACCOUNT)")
	f.IntVar(&o.maxConcurrent, "max-concurrent", 0, "maximum concurrent evaluations; more requests wait for a slot until their deadline (default 4×GOMAXPROCS)")
	f.StringVar(&o.maxBodyBytes, "max-body-bytes-in-flight", resource.NewQuantity(webhook.DefaultMaxBodyBytesInFlight, resource.BinarySI).String(), "bytes of request bodies held at once, taken as they arrive (a quantity: 24Mi, 64Mi...; at least 8Mi); a request that finds no room before its deadline gets HTTP 429")
	f.StringVar(&o.exceptionsDir, "exceptions-dir", "", "directory of PolicyException files teams may edit, a subdirectory per namespace (see --help)")
	f.DurationVar(&o.exMaxLifetime, "exceptions-max-lifetime", engine.DefaultExceptionMaxLifetime, "how far ahead an exception of --exceptions-dir may expire, when it loads")
	f.BoolVar(&o.allowEmpty, "allow-empty-policies", false, "serve a policy directory that holds no policy; without it, an empty set is refused at start and at a reload (the last good set stays)")
	f.BoolVar(&o.decisionLog, "decision-log", true, "log every fail, warn and error result (and Audit's fails) at info level, one line per policy result with the request's resource, namespace, name, operation, user and uid (logger celadon.decision)")
	f.IntVar(&o.decisionPassSample, "decision-log-pass-sample", 0, "also log pass results: 0 none, 1 every one, N one in N")
	f.IntVar(&o.decisionLogRate, "decision-log-rate", server.DefaultDecisionLogRate, "at most this many decision lines a second; the rest of that second's are dropped and counted in "+server.MetricDecisionLogsDropped+"; 0: no limit")
	f.DurationVar(&o.reloadInterval, "reload-interval", server.DefaultReloadInterval, "re-read the policy directory this often, besides watching it; 0 keeps the default, negative disables polling")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", server.DefaultGracefulShutdownTimeout, "on SIGTERM, how long to wait for in-flight requests")
	f.BoolVar(&o.selfSignedCerts, "self-signed-certs", false, "make and renew a CA and a serving certificate, kept in --cert-secret and written into --cert-dir")
	f.StringVar(&o.certSecret, "cert-secret", controllers.DefaultCertSecretName, "Secret of --self-signed-certs: [NAMESPACE/]NAME (namespace default $POD_NAMESPACE)")
	f.StringSliceVar(&o.certDNSNames, "cert-dns-names", nil, "more names (DNS or IP) for the self-signed certificate, besides those of --webhook-service and --webhook-url")
	f.DurationVar(&o.caValidity, "ca-validity", controllers.DefaultCAValidity, "lifetime of a self-signed CA")
	f.DurationVar(&o.certValidity, "cert-validity", controllers.DefaultCertValidity, "lifetime of a self-signed serving certificate")
	f.DurationVar(&o.certRenewBefore, "cert-renew-before", 0, "renew the self-signed serving certificate when this much validity is left (default a third of --cert-validity)")
	f.DurationVar(&o.certCheckInterval, "cert-check-interval", controllers.DefaultCertCheckInterval, "re-read the --cert-secret Secret this often, renewing what is due and picking up other replicas' renewals")
	f.BoolVar(&o.manageWebhooks, "manage-webhooks", false, "keep the webhook configurations in sync with the served policies, caBundle included (needs --webhook-service or --webhook-url)")
	f.StringVar(&o.webhookConfigName, "webhook-config-name", controllers.DefaultConfigName, "name of the managed Mutating- and ValidatingWebhookConfiguration")
	f.StringVar(&o.webhookService, "webhook-service", "", "Service the managed configurations point at: NAMESPACE/NAME[:PORT] (port default 443)")
	f.StringSliceVar(&o.excludeNamespaces, "exclude-namespace", nil, "namespace the managed configurations never send to Celadon, besides kube-system, kube-node-lease and the --webhook-service's (repeatable, or comma-separated); the builtins' controllers do not act there either")
	f.StringVar(&o.webhookURL, "webhook-url", "", "base URL the managed configurations point at instead of a Service, e.g. https://127.0.0.1:9443")
	f.StringVar(&o.caBundle, "ca-bundle", "", "PEM file written as the managed configurations' caBundle, re-read on every sync (default <cert-dir>/ca.crt)")
	f.DurationVar(&o.backgroundScan, "background-scan", 0, "on the leader, scan the objects the validating policies match this often and write OpenReports Reports (needs their CRDs); 0 disables")
	f.DurationVar(&o.webhookSync, "webhook-sync-interval", controllers.DefaultWebhookSyncInterval, "also re-check the managed configurations this often, repairing drift; negative: only at start and after reloads")
	f.BoolVar(&o.leaderElect, "leader-elect", false, "elect one replica to write the managed configurations and createSecret's Secrets (default true with --manage-webhooks or a createSecret policy)")
	f.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "namespace of the leader election Lease (default $POD_NAMESPACE)")
	f.StringVar(&o.namespace, "namespace", "", "Celadon's own namespace, where createSecret finds source Secrets by default (default $POD_NAMESPACE)")
	f.StringSliceVar(&o.secretSources, "secret-source-namespaces", nil, "namespaces besides --namespace that createSecret may copy source Secrets from (default none)")
	f.VisitAll(func(fl *pflag.Flag) {
		if env, ok := serveEnv[fl.Name]; ok {
			fl.Usage += " [$" + env + "]"
		}
	})
	return cmd
}

// applyEnv sets each flag not given on the command line from its
// environment variable, when that is set.
func applyEnv(fs *pflag.FlagSet, env map[string]string) error {
	var err error
	fs.VisitAll(func(fl *pflag.Flag) {
		name, ok := env[fl.Name]
		if !ok || fl.Changed || err != nil {
			return
		}
		v, set := os.LookupEnv(name)
		if !set {
			return
		}
		if e := fl.Value.Set(v); e != nil {
			err = fmt.Errorf("$%s=%q: invalid value for --%s: %v", name, v, fl.Name, e)
			return
		}
		fl.Changed = true
	})
	return err
}

// options turns the flags into server.Options.
func (o *serveOptions) options(log logr.Logger) (server.Options, error) {
	sa := o.serviceAccount
	if sa == "" {
		sa = server.ServiceAccountFromEnv()
	}
	sa, err := server.ServiceAccountUsername(sa)
	if err != nil {
		return server.Options{}, err
	}
	if o.port <= 0 || o.port > 65535 {
		return server.Options{}, fmt.Errorf("--port %d: want 1-65535", o.port)
	}
	if o.maxConcurrent < 0 {
		return server.Options{}, fmt.Errorf("--max-concurrent %d: want a positive number, or 0 for the default", o.maxConcurrent)
	}
	if o.shutdownTimeout <= 0 {
		return server.Options{}, fmt.Errorf("--shutdown-timeout %v: want a positive duration", o.shutdownTimeout)
	}
	if o.policies == "" {
		return server.Options{}, errors.New("--policies is required")
	}
	if o.exMaxLifetime < 0 {
		return server.Options{}, fmt.Errorf("--exceptions-max-lifetime %v: want a positive duration, or 0 for the default", o.exMaxLifetime)
	}
	if o.pprofAddr != "" && o.pprofAddr != "0" {
		if err := server.CheckLoopbackAddress(o.pprofAddr); err != nil {
			return server.Options{}, fmt.Errorf("--pprof-bind-address: %v", err)
		}
	}
	var svc *controllers.ServiceRef
	if o.webhookService != "" {
		if svc, err = parseServiceRef(o.webhookService); err != nil {
			return server.Options{}, fmt.Errorf("--webhook-service: %v", err)
		}
	}
	if o.manageWebhooks && (svc == nil) == (o.webhookURL == "") {
		return server.Options{}, errors.New("--manage-webhooks needs exactly one of --webhook-service and --webhook-url")
	}
	var secretNS, secretName string
	if o.selfSignedCerts {
		if secretNS, secretName, err = parseSecretRef(o.certSecret); err != nil {
			return server.Options{}, fmt.Errorf("--cert-secret: %v", err)
		}
		if o.certCheckInterval <= 0 {
			return server.Options{}, fmt.Errorf("--cert-check-interval %v: want a positive duration", o.certCheckInterval)
		}
		if o.webhookService == "" && o.webhookURL == "" && len(o.certDNSNames) == 0 {
			return server.Options{}, errors.New("--self-signed-certs needs the certificate's names: --webhook-service, --webhook-url or --cert-dns-names")
		}
		if o.caBundle != "" {
			return server.Options{}, errors.New("--ca-bundle cannot be used with --self-signed-certs: the CA bundle is the Secret's ca.crt")
		}
	}
	leaderElect := o.leaderElect
	if !o.leaderElectSet {
		leaderElect = o.manageWebhooks
	}
	leNS := o.leaderElectionNS
	if leNS == "" {
		leNS = os.Getenv("POD_NAMESPACE")
	}
	ns := o.namespace
	if ns == "" {
		ns = os.Getenv("POD_NAMESPACE")
	}
	maxBody, err := parseBodyBytes(o.maxBodyBytes)
	if err != nil {
		return server.Options{}, err
	}
	if o.decisionPassSample < 0 {
		return server.Options{}, fmt.Errorf("--decision-log-pass-sample %d: want 0 (no pass result), 1 (every one) or N (one in N)", o.decisionPassSample)
	}
	if o.decisionLogRate < 0 {
		return server.Options{}, fmt.Errorf("--decision-log-rate %d: want a number of lines a second, or 0 for no limit", o.decisionLogRate)
	}
	decisionRate := o.decisionLogRate
	if decisionRate == 0 {
		decisionRate = -1 // server.Options' "no limit"
	}
	return server.Options{
		ManageWebhooks:          o.manageWebhooks,
		WebhookConfigName:       o.webhookConfigName,
		WebhookService:          svc,
		WebhookURL:              o.webhookURL,
		ExcludeNamespaces:       o.excludeNamespaces,
		CABundleFile:            o.caBundle,
		WebhookSyncInterval:     o.webhookSync,
		BackgroundScan:          o.backgroundScan,
		LeaderElection:          leaderElect,
		LeaderElectionNamespace: leNS,
		ElectForControllers:     !o.leaderElectSet,
		Registry:                builtins.Registry(),
		Namespace:               ns,
		SecretSourceNamespaces:  o.secretSources,
		PoliciesDir:             o.policies,
		CertDir:                 o.certDir,
		Host:                    o.host,
		Port:                    o.port,
		MetricsBindAddress:      o.metricsAddr,
		InsecureMetrics:         !o.metricsSecure,
		ClientCAFile:            o.clientCA,
		HealthProbeBindAddress:  o.probeAddr,
		PprofBindAddress:        o.pprofAddr,
		Kubeconfig:              o.kubeconfig,
		ServiceAccount:          sa,
		MaxConcurrent:           o.maxConcurrent,
		MaxBodyBytesInFlight:    maxBody,
		AllowEmpty:              o.allowEmpty,
		ExceptionsDir:           o.exceptionsDir,
		ExceptionsMaxLifetime:   o.exMaxLifetime,
		DisableDecisionLogs:     !o.decisionLog,
		DecisionLogPassSample:   o.decisionPassSample,
		DecisionLogRate:         decisionRate,
		ReloadInterval:          o.reloadInterval,
		GracefulShutdownTimeout: o.shutdownTimeout,
		SelfSignedCerts:         o.selfSignedCerts,
		CertSecretNamespace:     secretNS,
		CertSecretName:          secretName,
		CertDNSNames:            o.certDNSNames,
		CAValidity:              o.caValidity,
		CertValidity:            o.certValidity,
		CertRenewBefore:         o.certRenewBefore,
		CertCheckInterval:       o.certCheckInterval,
		Logger:                  log,
	}, nil
}

func (o *serveOptions) run(cmd *cobra.Command) error {
	if err := applyEnv(cmd.Flags(), serveEnv); err != nil {
		return usageErrorf("%v", err)
	}
	o.leaderElectSet = cmd.Flags().Changed("leader-elect")
	log, err := newLogger(o.logLevel, o.logFormat, cmd.ErrOrStderr())
	if err != nil {
		return usageErrorf("%v", err)
	}
	ctrllog.SetLogger(log)
	klog.SetLogger(log.WithName("klog"))
	opts, err := o.options(log.WithName("celadon"))
	if err != nil {
		return usageErrorf("%v", err)
	}
	decisions, err := newDecisionLogger(o.logLevel, o.logFormat, cmd.ErrOrStderr())
	if err != nil {
		return usageErrorf("%v", err)
	}
	opts.DecisionLogger = decisions.WithName("celadon").WithName("decision")
	srv, err := server.NewServer(opts)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Start(ctx); err != nil {
		return &exitError{code: 1, err: err}
	}
	log.Info("shut down")
	return nil
}

// parseSecretRef parses --cert-secret: [NAMESPACE/]NAME, the namespace
// defaulting to $POD_NAMESPACE.
func parseSecretRef(s string) (namespace, name string, err error) {
	namespace, name, ok := strings.Cut(s, "/")
	if !ok {
		namespace, name = os.Getenv("POD_NAMESPACE"), s
		if namespace == "" {
			return "", "", fmt.Errorf("%q: no namespace; want NAMESPACE/NAME, or set $POD_NAMESPACE", s)
		}
	}
	if namespace == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%q: want [NAMESPACE/]NAME", s)
	}
	return namespace, name, nil
}

// newLogger builds the zap logger behind logr. format "" picks console on
// a terminal and JSON otherwise.
func newLogger(level, format string, w io.Writer) (logr.Logger, error) {
	lvl, enc, err := logFlags(level, format, w)
	if err != nil {
		return logr.Logger{}, err
	}
	return crzap.New(
		crzap.WriteTo(w),
		crzap.Level(lvl),
		// Recovered panics log their own stack; keep other errors short.
		crzap.StacktraceLevel(zapcore.DPanicLevel),
		crzap.Encoder(enc),
	), nil
}

// newDecisionLogger builds the logger of the decision logs: newLogger's
// level, encoding and writer, without the sampling controller-runtime puts
// in front of every logger it builds at info level (past the first 100
// lines of one message in a second, one in 100, silently). Every decision
// line has the same message, so a busy second would lose 99 of 100 of
// them with no trace; the server bounds them itself
// (--decision-log-rate) and counts what it drops.
func newDecisionLogger(level, format string, w io.Writer) (logr.Logger, error) {
	lvl, enc, err := logFlags(level, format, w)
	if err != nil {
		return logr.Logger{}, err
	}
	sink := zapcore.AddSync(w)
	core := zapcore.NewCore(&crzap.KubeAwareEncoder{Encoder: enc}, sink, lvl)
	return zapr.NewLogger(zap.New(core, zap.ErrorOutput(sink))), nil
}

// logFlags reads --log-level and --log-format: the zap level, and the
// encoder controller-runtime's crzap.JSONEncoder or crzap.ConsoleEncoder
// would make.
func logFlags(level, format string, w io.Writer) (zapcore.Level, zapcore.Encoder, error) {
	var lvl zapcore.Level
	switch strings.ToLower(level) {
	case "error":
		lvl = zapcore.ErrorLevel
	case "info", "":
		lvl = zapcore.InfoLevel
	case "debug":
		lvl = zapcore.DebugLevel // logr V(1)
	default:
		n, err := strconv.Atoi(level)
		if err != nil || n < 0 || n > 10 {
			return 0, nil, fmt.Errorf("--log-level %q: want error, info, debug or a V-level 0-10", level)
		}
		lvl = zapcore.Level(-n)
	}
	if format == "" {
		format = "json"
		if isTerminal(w) {
			format = "console"
		}
	}
	switch format {
	case "json":
		return lvl, zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), nil
	case "console":
		return lvl, zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), nil
	}
	return 0, nil, fmt.Errorf("--log-format %q: want json or console", format)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// parseBodyBytes reads --max-body-bytes-in-flight: a quantity of at least
// webhook.MinBodyBytesInFlight, the largest body and one chunk; "" is the
// server's default.
func parseBodyBytes(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return 0, fmt.Errorf("--max-body-bytes-in-flight=%q: %v", v, err)
	}
	n, ok := q.AsInt64()
	if !ok || n < webhook.MinBodyBytesInFlight {
		return 0, fmt.Errorf("--max-body-bytes-in-flight=%q: want at least %d bytes (8Mi), room for the largest review", v, webhook.MinBodyBytesInFlight)
	}
	return n, nil
}
