package builtins

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"celadon.io/celadon/engine"
)

func init() { register(consulLifecycle{}) }

// consulLifecycle registers each pod of a service with the Consul agent of
// its node when a container starts (a postStart exec hook) and deregisters
// it before the container stops (a preStop exec hook). The hooks call the
// agent's HTTP API with curl, or wget when the image has no curl, so the
// service needs no Consul SDK.
type consulLifecycle struct{}

// consulLifecycleArgs is consulLifecycle's spec.with.
type consulLifecycleArgs struct {
	// Service is the Consul service name. Absent: only pods annotated
	// consul.celadon.io/service are registered; the others are skipped.
	Service string `json:"service"`
	// Port is the service port: a number, or the name of a containerPort.
	// Absent: the first containerPort of the first hooked container.
	Port *intstr.IntOrString `json:"port"`
	// Tags and Meta are registered with the service.
	Tags []string          `json:"tags"`
	Meta map[string]string `json:"meta"`
	// AllowAnnotations lets the pod's consul.celadon.io/* annotations
	// override service, port, tags and meta. Default: false when Service is
	// set, true otherwise (consulAnnotationsAllowed).
	AllowAnnotations *bool `json:"allowAnnotations"`
	// Containers names the containers that get the hooks. Absent: the first
	// container of spec.containers, so that a pod registers once.
	Containers []string `json:"containers"`
	// AgentPort is the agent's HTTP port on the node. Default 8500.
	AgentPort int `json:"agentPort"`
	// AgentScheme is http (default) or https.
	AgentScheme string `json:"agentScheme"`
	// Check is the health check registered with the service. Absent: a TCP
	// check on the service port.
	Check *consulCheckArgs `json:"check"`
	// ACLTokenSecret is a Secret key holding the agent's ACL token, passed
	// to the hooks as CONSUL_HTTP_TOKEN.
	ACLTokenSecret *consulSecretArgs `json:"aclTokenSecret"`
	// ExistingHooks says what happens to a container's own postStart or
	// preStop: chain (default) runs an exec or sleep hook inside ours;
	// refuse makes any existing hook an error.
	ExistingHooks string `json:"existingHooks"`
	// Retry bounds how long a hook waits for an unreachable agent.
	Retry *consulRetryArgs `json:"retry"`
}

// consulCheckArgs is with.check: exactly one of HTTP and TCP.
type consulCheckArgs struct {
	// HTTP is the path an HTTP check GETs, e.g. /healthz.
	HTTP string `json:"http"`
	// TCP makes the check a TCP connect.
	TCP bool `json:"tcp"`
	// Port is the port checked. Default: the service port.
	Port *intstr.IntOrString `json:"port"`
	// Interval, Timeout and DeregisterCriticalServiceAfter are durations;
	// defaults 10s, 5s and 1m.
	Interval                       string `json:"interval"`
	Timeout                        string `json:"timeout"`
	DeregisterCriticalServiceAfter string `json:"deregisterCriticalServiceAfter"`
}

// consulAgentSettings checks and defaults the settings of the Consul agent
// that consulLifecycle and drainBeforeDelete share: its port and scheme,
// and the Secret of its ACL token. prefix is where they are in with ("" or
// "consul.").
func consulAgentSettings(c *engine.CompileContext, prefix string, port *int, scheme *string, token *consulSecretArgs) error {
	switch {
	case *port == 0:
		*port = consulDefaultAgentPort
	case *port < 1 || *port > 65535:
		return c.FieldError(prefix+"agentPort", "%d is not a port number (1-65535)", *port)
	}
	switch *scheme {
	case "":
		*scheme = "http"
	case "http", "https":
	default:
		return c.FieldError(prefix+"agentScheme", "must be http or https, not %q", *scheme)
	}
	if token != nil {
		if msgs := validation.IsDNS1123Subdomain(token.Name); len(msgs) > 0 {
			return c.FieldError(prefix+"aclTokenSecret.name", "%q is not a valid Secret name: %s", token.Name, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsConfigMapKey(token.Key); len(msgs) > 0 {
			return c.FieldError(prefix+"aclTokenSecret.key", "%q is not a valid Secret key: %s", token.Key, strings.Join(msgs, "; "))
		}
	}
	return nil
}

// consulSecretArgs is with.aclTokenSecret.
type consulSecretArgs struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// consulRetryArgs is with.retry. A hook makes up to Attempts requests,
// sleeping Backoff after the first failure, doubling up to MaxBackoff.
type consulRetryArgs struct {
	Attempts   int    `json:"attempts"`
	Backoff    string `json:"backoff"`
	MaxBackoff string `json:"maxBackoff"`
}

// Defaults and values of consulLifecycleArgs.
const (
	consulDefaultAgentPort      = 8500
	consulDefaultInterval       = "10s"
	consulDefaultTimeout        = "5s"
	consulDefaultDeregister     = "1m"
	consulDefaultAttempts       = 10
	consulDefaultBackoff        = time.Second
	consulDefaultMaxBackoff     = 8 * time.Second
	consulExistingChain         = "chain"
	consulExistingRefuse        = "refuse"
	consulMaxTags               = 64
	consulMaxMeta               = 64
	consulMaxMetaKey            = 128
	consulMaxMetaValue          = 512
	consulReservedMetaKeyPrefix = "consul-"
)

// consulAnnotationsAllowed says whether the pod's consul.celadon.io/*
// annotations are read. The policy is authoritative: one that names its
// service reads them only with allowAnnotations: true, else any pod could
// register itself under another service, port or tags than the policy
// says; one that names none has no other source of a name, and reads them
// unless allowAnnotations: false. consulLifecycle and drainBeforeDelete
// both decide here, so that under the same settings drainBeforeDelete
// deregisters the instance consulLifecycle registered.
func consulAnnotationsAllowed(allow *bool, service string) bool {
	if allow != nil {
		return *allow
	}
	return service == ""
}

// Pod annotations read when consulAnnotationsAllowed.
const (
	// consulAnnotationService overrides with.service.
	consulAnnotationService = "consul.celadon.io/service"
	// consulAnnotationPort overrides with.port: a number or a port name.
	consulAnnotationPort = "consul.celadon.io/port"
	// consulAnnotationTags replaces with.tags: a comma-separated list.
	consulAnnotationTags = "consul.celadon.io/tags"
	// consulAnnotationMetaPrefix followed by a key sets that meta key.
	consulAnnotationMetaPrefix = "consul.celadon.io/meta-"
)

// Environment variables the hooks read. The downward-API ones are added
// to a hooked container only when it does not set them itself.
const (
	consulEnvHostIP       = "HOST_IP"
	consulEnvPodIP        = "POD_IP"
	consulEnvPodName      = "POD_NAME"
	consulEnvPodNamespace = "POD_NAMESPACE"
	consulEnvToken        = "CONSUL_HTTP_TOKEN"
)

// consulDownwardEnv maps the downward-API variables to their field paths,
// in the order they are added.
var consulDownwardEnv = []struct{ name, fieldPath string }{
	{consulEnvHostIP, "status.hostIP"},
	{consulEnvPodIP, "status.podIP"},
	{consulEnvPodName, "metadata.name"},
	{consulEnvPodNamespace, "metadata.namespace"},
}

// Hook markers: $0 of our sh -c hooks. A hook whose command carries one is
// ours, which is what makes the patch idempotent.
const (
	consulRegisterMarker   = "celadon-consul-register"
	consulDeregisterMarker = "celadon-consul-deregister"
)

// consulScriptCommon is the start of both hook scripts. Its positional
// parameters are the agent's scheme and port, the retry attempts, backoff
// and maximum backoff (whole seconds) and the service name. Values that
// come from the policy or the pod are parameters, never spliced into the
// script, so no value can change what the shell runs.
const consulScriptCommon = `set -u
scheme=$1 port=$2 attempts=$3 backoff=$4 max_backoff=$5 service=$6
say() { printf 'celadon consulLifecycle: %s\n' "$*" >&2; }
# need NAME VALUE CHARS: VALUE, the variable NAME, is set and holds only CHARS.
need() {
  case $2 in
  '' | *[!$3]*) say "$1=\"$2\" is missing or malformed: the pod must set it from the downward API"; return 1 ;;
  esac
}
bracket() { case $1 in *:*) echo "[$1]" ;; *) echo "$1" ;; esac; }
# setup checks the environment and picks the HTTP client.
setup() {
  need HOST_IP "${HOST_IP:-}" 0-9a-fA-F.: && need POD_IP "${POD_IP:-}" 0-9a-fA-F.: &&
    need POD_NAME "${POD_NAME:-}" a-z0-9.- && need POD_NAMESPACE "${POD_NAMESPACE:-}" a-z0-9- || return 1
  agent="$scheme://$(bracket "$HOST_IP"):$port"
  id="$service.$POD_NAMESPACE.$POD_NAME"
  if command -v curl >/dev/null 2>&1; then
    client=curl
  elif wget --version >/dev/null 2>&1; then
    client=wget
  elif command -v wget >/dev/null 2>&1; then
    say "the container's wget is not GNU wget and cannot send PUT requests: cannot call the Consul agent at $agent; add curl (or GNU wget) to the image"
    return 1
  else
    say "neither curl nor wget is in the container's PATH: cannot call the Consul agent at $agent; add curl (or GNU wget) to the image"
    return 1
  fi
}
# put URL BODY: one PUT to the agent, with the ACL token if there is one.
put() {
  if [ "$client" = curl ]; then
    if [ -n "${CONSUL_HTTP_TOKEN:-}" ]; then
      out=$(curl -sS -m 10 -X PUT -H "X-Consul-Token: $CONSUL_HTTP_TOKEN" --data-binary "$2" -w '%{http_code}' "$1" 2>&1)
    else
      out=$(curl -sS -m 10 -X PUT --data-binary "$2" -w '%{http_code}' "$1" 2>&1)
    fi
    # The output ends in the three digits of the status, 000 for none.
    code=${out#"${out%???}"}
    case $code in
    2??) return 0 ;;
    000) say "PUT $1: no response: $(printf '%s' "${out%???}")" ;;
    *) say "PUT $1: HTTP $code: $(printf '%s' "${out%???}")" ;;
    esac
    return 1
  fi
  if [ -n "${CONSUL_HTTP_TOKEN:-}" ]; then
    out=$(wget -nv -O - -T 10 -t 1 --content-on-error --method=PUT --header="X-Consul-Token: $CONSUL_HTTP_TOKEN" --body-data="$2" "$1" 2>&1)
  else
    out=$(wget -nv -O - -T 10 -t 1 --content-on-error --method=PUT --body-data="$2" "$1" 2>&1)
  fi
  status=$?
  [ $status -eq 0 ] && return 0
  say "PUT $1: wget exited $status: $out"
  return 1
}
# retry URL BODY DONE: put until it succeeds or the attempts run out.
retry() {
  n=1 wait=$backoff
  until put "$1" "$2"; do
    if [ "$n" -ge "$attempts" ]; then
      say "gave up: $service not $3 after $attempts attempts"
      return 1
    fi
    sleep "$wait"
    n=$((n + 1)) wait=$((wait * 2))
    [ "$wait" -gt "$max_backoff" ] && wait=$max_backoff
  done
  echo "celadon consulLifecycle: $3 $id with the Consul agent at $agent"
}
`

// consulRegisterScript is the postStart hook. Parameters after the common
// six: the body's members besides ID, Address and Check ($7), the check's
// JSON before ($8) and after ($9) the pod's address; then the container's
// own hook, if chained. That hook runs first: a container whose own
// postStart failed is killed, and must not be registered.
const consulRegisterScript = consulScriptCommon + `members=$7 check_head=$8 check_tail=$9
shift 9
if [ $# -gt 0 ]; then "$@" || exit; fi
setup || exit
body="{\"ID\":\"$id\",\"Address\":\"$POD_IP\",$members,\"Check\":{$check_head$(bracket "$POD_IP")$check_tail}}"
retry "$agent/v1/agent/service/register" "$body" registered
`

// consulDeregisterScript is the preStop hook: it deregisters first, so no
// traffic is sent to a stopping pod, then runs the container's own hook,
// if chained, whatever the deregistration gave.
const consulDeregisterScript = consulScriptCommon + `shift 6
setup && retry "$agent/v1/agent/service/deregister/$id" "" deregistered
status=$?
if [ $# -gt 0 ]; then "$@" || exit; fi
exit $status
`

// Name is the policy's spec.action.
func (consulLifecycle) Name() string { return "consulLifecycle" }

// Type is Mutating.
func (consulLifecycle) Type() engine.ActionType { return engine.Mutating }

// TemplateOptIn: the hooks read the pod's name and namespace through the
// downward API, so hooks added to a controller's pod template (with
// spec.autogen: true) are those each pod would get; but the policy's
// service comes from annotations a template may not carry as its pods do,
// so a policy written for pods is not extended to templates unless it asks.
func (consulLifecycle) TemplateOptIn() bool { return true }

// consulMetaKey is Consul's rule for meta keys.
var consulMetaKey = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// consulHTTPPath is what an HTTP check path may hold: a path and query of
// URL characters that need no escaping in JSON.
var consulHTTPPath = regexp.MustCompile(`^/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*$`)

// Compile checks spec.with and applies its defaults.
func (consulLifecycle) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args consulLifecycleArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	a := &consulLifecycleAction{
		service:          args.Service,
		tags:             args.Tags,
		meta:             args.Meta,
		allowAnnotations: consulAnnotationsAllowed(args.AllowAnnotations, args.Service),
		agentPort:        args.AgentPort,
		agentScheme:      args.AgentScheme,
		chain:            true,
	}
	if a.service != "" {
		if err := consulValidService(a.service); err != nil {
			return nil, c.FieldError("service", "%v", err)
		}
	}
	var err error
	if a.port, err = consulPortArg(c, "port", args.Port); err != nil {
		return nil, err
	}
	if err := consulValidTags(a.tags); err != nil {
		return nil, c.FieldError("tags", "%v", err)
	}
	if err := consulValidMeta(a.meta); err != nil {
		return nil, c.FieldError("meta", "%v", err)
	}
	if a.containers, err = containerSet(c, args.Containers, "omit it to hook the first container"); err != nil {
		return nil, err
	}
	a.containerNames = args.Containers
	if err := consulAgentSettings(c, "", &a.agentPort, &a.agentScheme, args.ACLTokenSecret); err != nil {
		return nil, err
	}
	a.tokenSecret = args.ACLTokenSecret
	switch args.ExistingHooks {
	case "", consulExistingChain:
	case consulExistingRefuse:
		a.chain = false
	default:
		return nil, c.FieldError("existingHooks", "must be %s or %s, not %q", consulExistingChain, consulExistingRefuse, args.ExistingHooks)
	}
	if a.check, err = consulCompileCheck(c, args.Check); err != nil {
		return nil, err
	}
	a.attempts, a.backoff, a.maxBackoff = consulDefaultAttempts, int(consulDefaultBackoff/time.Second), int(consulDefaultMaxBackoff/time.Second)
	if r := args.Retry; r != nil {
		switch {
		case r.Attempts == 0:
		case r.Attempts < 1 || r.Attempts > 1000:
			return nil, c.FieldError("retry.attempts", "%d is not between 1 and 1000", r.Attempts)
		default:
			a.attempts = r.Attempts
		}
		if r.Backoff != "" {
			if a.backoff, err = consulWholeSeconds(r.Backoff); err != nil {
				return nil, c.FieldError("retry.backoff", "%v", err)
			}
		}
		if r.MaxBackoff != "" {
			if a.maxBackoff, err = consulWholeSeconds(r.MaxBackoff); err != nil {
				return nil, c.FieldError("retry.maxBackoff", "%v", err)
			}
		} else if a.maxBackoff < a.backoff {
			a.maxBackoff = a.backoff
		}
		if a.maxBackoff < a.backoff {
			return nil, c.FieldError("retry.maxBackoff", "%s is less than backoff %s", r.MaxBackoff, r.Backoff)
		}
	}
	return a, nil
}

// consulCompileCheck checks with.check and applies its defaults.
func consulCompileCheck(c *engine.CompileContext, args *consulCheckArgs) (consulCheck, error) {
	chk := consulCheck{interval: consulDefaultInterval, timeout: consulDefaultTimeout, deregister: consulDefaultDeregister}
	if args == nil {
		return chk, nil
	}
	switch {
	case args.HTTP != "" && args.TCP:
		return chk, c.FieldError("check", "set one of http and tcp, not both")
	case args.HTTP != "":
		if !consulHTTPPath.MatchString(args.HTTP) {
			return chk, c.FieldError("check.http", "%q is not a URL path: it must start with / and hold only URL characters (no spaces, quotes or backslashes)", args.HTTP)
		}
		chk.httpPath = args.HTTP
	case !args.TCP:
		return chk, c.FieldError("check", "set http (a path) or tcp: true")
	}
	var err error
	if chk.port, err = consulPortArg(c, "check.port", args.Port); err != nil {
		return chk, err
	}
	for _, d := range []struct {
		field, value string
		dst          *string
	}{
		{"check.interval", args.Interval, &chk.interval},
		{"check.timeout", args.Timeout, &chk.timeout},
		{"check.deregisterCriticalServiceAfter", args.DeregisterCriticalServiceAfter, &chk.deregister},
	} {
		if d.value == "" {
			continue
		}
		v, err := time.ParseDuration(d.value)
		if err != nil || v <= 0 {
			return chk, c.FieldError(d.field, "%q is not a positive duration such as 10s or 1m", d.value)
		}
		*d.dst = d.value
	}
	return chk, nil
}

// consulPortArg checks a port argument: a number 1-65535 or a port name.
func consulPortArg(c *engine.CompileContext, field string, p *intstr.IntOrString) (*intstr.IntOrString, error) {
	if p == nil {
		return nil, nil
	}
	if err := consulValidPort(*p); err != nil {
		return nil, c.FieldError(field, "%v", err)
	}
	return p, nil
}

// consulValidPort checks a port number or name.
func consulValidPort(p intstr.IntOrString) error {
	if p.Type == intstr.Int {
		if p.IntVal < 1 || p.IntVal > 65535 {
			return fmt.Errorf("%d is not a port number (1-65535)", p.IntVal)
		}
		return nil
	}
	if msgs := validation.IsValidPortName(p.StrVal); len(msgs) > 0 {
		return fmt.Errorf("%q is neither a port number nor a port name: %s", p.StrVal, strings.Join(msgs, "; "))
	}
	return nil
}

// consulValidService checks a service name: a DNS label, as Consul's DNS
// interface needs.
func consulValidService(name string) error {
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		return fmt.Errorf("%q is not a valid Consul service name: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

// consulValidTags checks tags: non-empty printable text, at most 64.
func consulValidTags(tags []string) error {
	if len(tags) > consulMaxTags {
		return fmt.Errorf("%d tags; at most %d", len(tags), consulMaxTags)
	}
	for i, t := range tags {
		if err := consulPrintable(t, 255); err != nil {
			return fmt.Errorf("[%d]: tag %q %v", i, t, err)
		}
	}
	return nil
}

// consulValidMeta checks meta as Consul does: keys of letters, digits, '_'
// and '-' up to 128, not starting with consul-; values up to 512.
func consulValidMeta(meta map[string]string) error {
	if len(meta) > consulMaxMeta {
		return fmt.Errorf("%d keys; at most %d", len(meta), consulMaxMeta)
	}
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		switch {
		case len(k) > consulMaxMetaKey || !consulMetaKey.MatchString(k):
			return fmt.Errorf("key %q must be 1 to %d letters, digits, '_' or '-'", k, consulMaxMetaKey)
		case strings.HasPrefix(k, consulReservedMetaKeyPrefix):
			return fmt.Errorf("key %q: the prefix %s is reserved by Consul", k, consulReservedMetaKeyPrefix)
		}
		if len(meta[k]) > consulMaxMetaValue {
			return fmt.Errorf("the value of %q is longer than %d bytes", k, consulMaxMetaValue)
		}
		if strings.IndexFunc(meta[k], unicode.IsControl) >= 0 {
			return fmt.Errorf("the value of %q holds a control character", k)
		}
	}
	return nil
}

// consulPrintable reports why s is not 1 to max bytes of printable text.
func consulPrintable(s string, max int) error {
	switch {
	case strings.TrimSpace(s) == "":
		return fmt.Errorf("is empty")
	case len(s) > max:
		return fmt.Errorf("is longer than %d bytes", max)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return fmt.Errorf("holds a control character")
	}
	return nil
}

// consulWholeSeconds parses a duration of whole seconds, as sleep takes.
func consulWholeSeconds(s string) (int, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second || d%time.Second != 0 || d > time.Hour {
		return 0, fmt.Errorf("%q is not a whole number of seconds between 1s and 1h", s)
	}
	return int(d / time.Second), nil
}

// consulCheck is a compiled with.check.
type consulCheck struct {
	httpPath                      string              // "": a TCP check
	port                          *intstr.IntOrString // nil: the service port
	interval, timeout, deregister string
}

// consulLifecycleAction is a compiled consulLifecycle. It is immutable,
// hence safe for concurrent use.
type consulLifecycleAction struct {
	service          string
	port             *intstr.IntOrString
	tags             []string
	meta             map[string]string
	allowAnnotations bool
	containers       map[string]bool // nil: the first container
	containerNames   []string        // as listed, for messages
	agentPort        int
	agentScheme      string
	check            consulCheck
	tokenSecret      *consulSecretArgs
	chain            bool
	attempts         int
	backoff          int
	maxBackoff       int
}

// consulRegistration is what one pod registers, resolved at admission.
type consulRegistration struct {
	service   string
	port      int
	checkPort int
	tags      []string
	meta      map[string]string
}

// Run returns the ops that add the hooks and the env they read to each
// hooked container that lacks them, so a second run on the patched pod
// returns none.
func (a *consulLifecycleAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	obj, why := podOnCreate(ac, "lifecycle hooks can only be added")
	if !obj.Exists() {
		return skip(why), nil
	}
	annotations := obj.Get("metadata").Get("annotations")
	spec := obj.Get("spec")
	if !spec.IsObject() {
		return skip("the pod has no spec"), nil
	}
	list := spec.Get("containers")
	if !list.IsList() && !list.IsNull() {
		return engine.Outcome{}, fmt.Errorf("spec.containers is a %s, not a list", goType(list))
	}
	containers := list.Elements()
	var hooked []int // indexes in spec.containers
	for i, c := range containers {
		if !c.IsObject() {
			return engine.Outcome{}, fmt.Errorf("spec.containers[%d] is a %s, not an object", i, goType(c))
		}
		name, _ := c.Get("name").Str()
		if (a.containers == nil && i == 0) || a.containers[name] {
			hooked = append(hooked, i)
		}
	}
	if len(hooked) == 0 {
		if a.containers != nil {
			return skip("the pod has no container named " + strings.Join(a.containerNames, ", ")), nil
		}
		return skip("the pod has no containers"), nil
	}

	reg, why, err := a.resolve(annotations, containers, hooked)
	if err != nil {
		return engine.Outcome{}, err
	}
	if why != "" {
		return skip(why), nil
	}
	body, checkHead, checkTail, err := a.registration(reg)
	if err != nil {
		return engine.Outcome{}, err
	}
	common := []string{a.agentScheme, strconv.Itoa(a.agentPort), strconv.Itoa(a.attempts), strconv.Itoa(a.backoff), strconv.Itoa(a.maxBackoff), reg.service}
	register := append(append([]string{"/bin/sh", "-c", consulRegisterScript, consulRegisterMarker}, common...), body, checkHead, checkTail)
	deregister := append([]string{"/bin/sh", "-c", consulDeregisterScript, consulDeregisterMarker}, common...)

	var (
		ops                   []engine.JSONPatchOp
		added, chained, ready []string
	)
	for _, i := range hooked {
		c := containers[i]
		name, _ := c.Get("name").Str()
		base := fmt.Sprintf("/spec/containers/%d", i)
		hookOps, chainedHooks, err := a.hookOps(c, name, base, register, deregister)
		if err != nil {
			return engine.Outcome{}, err
		}
		envOps, err := a.envOps(c, name, base)
		if err != nil {
			return engine.Outcome{}, err
		}
		switch {
		case len(hookOps)+len(envOps) == 0:
			ready = append(ready, name)
		case len(chainedHooks) > 0:
			chained = append(chained, fmt.Sprintf("%s (chained with its %s)", name, strings.Join(chainedHooks, " and ")))
		default:
			added = append(added, name)
		}
		ops = append(append(ops, hookOps...), envOps...)
	}

	what := fmt.Sprintf("Consul service %s port %d, %s check", reg.service, reg.port, a.checkKind())
	var parts []string
	if len(added)+len(chained) > 0 {
		parts = append(parts, "hooks added to containers "+strings.Join(append(added, chained...), ", "))
	}
	if len(ready) > 0 {
		parts = append(parts, "already in containers "+strings.Join(ready, ", "))
	}
	return engine.Outcome{Patch: ops, Reason: what + ": " + strings.Join(parts, "; ")}, nil
}

// checkKind names the health check's kind for messages.
func (a *consulLifecycleAction) checkKind() string {
	if a.check.httpPath != "" {
		return "HTTP " + a.check.httpPath
	}
	return "TCP"
}

// resolve works out what the pod registers, annotations applied. why is
// non-empty when the pod is skipped; err reports a pod that asks for
// something impossible.
func (a *consulLifecycleAction) resolve(annotations engine.Value, containers []engine.Value, hooked []int) (reg consulRegistration, why string, err error) {
	reg = consulRegistration{service: a.service, tags: a.tags, meta: map[string]string{}}
	for k, v := range a.meta {
		reg.meta[k] = v
	}
	port, checkPort := a.port, a.check.port
	annotation := func(key string) (string, bool, error) {
		if !a.allowAnnotations {
			return "", false, nil
		}
		v := annotations.Get(key)
		if !v.Exists() {
			return "", false, nil
		}
		s, isString := v.Str()
		if !isString {
			return "", false, fmt.Errorf("annotation %s is a %s, not a string", key, goType(v))
		}
		return s, true, nil
	}
	if s, ok, err := annotation(consulAnnotationService); err != nil {
		return reg, "", err
	} else if ok {
		if err := consulValidService(s); err != nil {
			return reg, "", fmt.Errorf("annotation %s: %v", consulAnnotationService, err)
		}
		reg.service = s
	}
	if reg.service == "" {
		if a.allowAnnotations {
			return reg, "no service name: with.service is not set and the pod has no annotation " + consulAnnotationService, nil
		}
		return reg, "", fmt.Errorf("no service name: with.service is not set and allowAnnotations is false")
	}
	if s, ok, err := annotation(consulAnnotationPort); err != nil {
		return reg, "", err
	} else if ok {
		p := intstr.Parse(s)
		if err := consulValidPort(p); err != nil {
			return reg, "", fmt.Errorf("annotation %s: %v", consulAnnotationPort, err)
		}
		port = &p
	}
	if s, ok, err := annotation(consulAnnotationTags); err != nil {
		return reg, "", err
	} else if ok {
		reg.tags = nil
		for _, t := range strings.Split(s, ",") {
			if t = strings.TrimSpace(t); t != "" {
				reg.tags = append(reg.tags, t)
			}
		}
		if err := consulValidTags(reg.tags); err != nil {
			return reg, "", fmt.Errorf("annotation %s: %v", consulAnnotationTags, err)
		}
	}
	if a.allowAnnotations {
		var notString error
		annotations.Range(func(k string, v engine.Value) {
			key, ok := strings.CutPrefix(k, consulAnnotationMetaPrefix)
			if !ok || notString != nil {
				return
			}
			if s, isString := v.Str(); isString {
				reg.meta[key] = s
			} else {
				notString = fmt.Errorf("annotation %s is a %s, not a string", k, goType(v))
			}
		})
		if notString != nil {
			return reg, "", notString
		}
		if err := consulValidMeta(reg.meta); err != nil {
			return reg, "", fmt.Errorf("meta, with the annotations %s*: %v", consulAnnotationMetaPrefix, err)
		}
	}

	if reg.port, err = consulResolvePort(port, containers, hooked); err != nil {
		return reg, "", err
	}
	reg.checkPort = reg.port
	if checkPort != nil {
		if reg.checkPort, err = consulResolvePort(checkPort, containers, hooked); err != nil {
			return reg, "", fmt.Errorf("check: %w", err)
		}
	}
	return reg, "", nil
}

// consulResolvePort turns a port number or name into a number; nil means
// the first containerPort of the first hooked container.
func consulResolvePort(p *intstr.IntOrString, containers []engine.Value, hooked []int) (int, error) {
	if p != nil && p.Type == intstr.Int {
		return int(p.IntVal), nil
	}
	order := append([]int{}, hooked...) // hooked containers first, then the rest
	for i := range containers {
		if !slices.Contains(hooked, i) {
			order = append(order, i)
		}
	}
	for _, i := range order {
		for _, cp := range containers[i].Get("ports").Elements() {
			var number int64
			switch n := cp.Get("containerPort").Interface().(type) {
			case int64:
				number = n
			case float64:
				number = int64(n)
			default:
				continue
			}
			if p == nil {
				if i == hooked[0] {
					return int(number), nil
				}
				continue
			}
			if name, ok := cp.Get("name").Str(); ok && name == p.StrVal {
				return int(number), nil
			}
		}
	}
	if p == nil {
		name, _ := containers[hooked[0]].Get("name").Str()
		return 0, fmt.Errorf("no service port: container %s declares no containerPort; set with.port or the annotation %s", name, consulAnnotationPort)
	}
	return 0, fmt.Errorf("no container of the pod has a port named %q", p.StrVal)
}

// registration returns the hook's parameters 7 to 9: the JSON members of
// the registration besides ID, Address and Check, and the check's JSON
// before and after the pod's address, which only the hook knows.
func (a *consulLifecycleAction) registration(reg consulRegistration) (members, checkHead, checkTail string, err error) {
	tags := reg.tags
	if tags == nil {
		tags = []string{}
	}
	b, err := json.Marshal(struct {
		Name string
		Port int
		Tags []string
		Meta map[string]string
	}{reg.service, reg.port, tags, reg.meta})
	if err != nil {
		return "", "", "", err
	}
	members = strings.TrimSuffix(strings.TrimPrefix(string(b), "{"), "}")
	timing, err := json.Marshal(struct {
		Interval                       string
		Timeout                        string
		DeregisterCriticalServiceAfter string
	}{a.check.interval, a.check.timeout, a.check.deregister})
	if err != nil {
		return "", "", "", err
	}
	port := ":" + strconv.Itoa(reg.checkPort)
	if a.check.httpPath != "" {
		// consulHTTPPath admits nothing JSON would escape but '&' (which
		// json.Marshal writes as \u0026, equally valid).
		path, err := json.Marshal(port + a.check.httpPath)
		if err != nil {
			return "", "", "", err
		}
		checkHead = `"HTTP":"http://`
		checkTail = strings.TrimPrefix(string(path), `"`) + "," + strings.TrimPrefix(string(timing), "{")
	} else {
		checkHead = `"TCP":"`
		checkTail = port + `",` + strings.TrimPrefix(string(timing), "{")
	}
	checkTail = strings.TrimSuffix(checkTail, "}")
	return members, checkHead, checkTail, nil
}

// hookOps returns the ops that put our hooks on container c at base, and
// which of its own hooks they chain.
func (a *consulLifecycleAction) hookOps(c engine.Value, name, base string, register, deregister []string) ([]engine.JSONPatchOp, []string, error) {
	lifecycle := c.Get("lifecycle")
	if !lifecycle.IsObject() && !lifecycle.IsNull() {
		return nil, nil, fmt.Errorf("container %s: lifecycle is a %s, not an object", name, goType(lifecycle))
	}
	if lifecycle.IsNull() {
		return []engine.JSONPatchOp{engine.Op("add", base+"/lifecycle", map[string]any{
			"postStart": consulExecHandler(register),
			"preStop":   consulExecHandler(deregister),
		})}, nil, nil
	}
	var (
		ops     []engine.JSONPatchOp
		chained []string
	)
	for _, h := range []struct {
		field   string
		command []string
		marker  string
	}{
		{"postStart", register, consulRegisterMarker},
		{"preStop", deregister, consulDeregisterMarker},
	} {
		path := base + "/lifecycle/" + h.field
		handler := lifecycle.Get(h.field)
		if handler.IsNull() {
			ops = append(ops, engine.Op("add", path, consulExecHandler(h.command)))
			continue
		}
		if !handler.IsObject() {
			return nil, nil, fmt.Errorf("container %s: lifecycle.%s is a %s, not an object", name, h.field, goType(handler))
		}
		own, kind, err := consulHookCommand(handler)
		if err != nil {
			return nil, nil, fmt.Errorf("container %s: lifecycle.%s: %v", name, h.field, err)
		}
		if kind == "exec" && len(own) >= 4 && own[3] == h.marker {
			continue // ours already
		}
		switch {
		case !a.chain:
			return nil, nil, fmt.Errorf("container %s already has a %s hook (%s) and existingHooks is refuse: remove the hook, or set existingHooks: chain to run it inside the registration hooks", name, h.field, kind)
		case own == nil:
			return nil, nil, fmt.Errorf("container %s already has a %s hook of kind %s, which cannot run inside an exec hook: change it to exec (or sleep), or keep this pod out of the policy", name, h.field, kind)
		}
		ops = append(ops, engine.Op("replace", path, consulExecHandler(append(append([]string{}, h.command...), own...))))
		chained = append(chained, h.field)
	}
	return ops, chained, nil
}

// consulHookCommand returns the command an existing handler, an object,
// runs, as argv, and its kind; nil when it is not a command (httpGet,
// tcpSocket).
func consulHookCommand(handler engine.Value) ([]string, string, error) {
	for _, kind := range []string{"exec", "sleep", "httpGet", "tcpSocket"} {
		m := handler.Get(kind)
		if m.IsNull() {
			continue
		}
		switch kind {
		case "exec":
			raw := m.Get("command").Elements()
			argv := make([]string, 0, len(raw))
			for i, arg := range raw {
				s, ok := arg.Str()
				if !ok {
					return nil, kind, fmt.Errorf("exec.command[%d] is a %s, not a string", i, goType(arg))
				}
				argv = append(argv, s)
			}
			// An exec hook with no command does nothing: chain nothing.
			return argv, kind, nil
		case "sleep":
			seconds, ok := quantityValue(m.Get("seconds"))
			if !ok {
				return nil, kind, fmt.Errorf("sleep.seconds is a %s, not a number", goType(m.Get("seconds")))
			}
			return []string{"sleep", seconds}, kind, nil
		default:
			return nil, kind, nil
		}
	}
	return nil, "", fmt.Errorf("no exec, sleep, httpGet or tcpSocket handler")
}

// consulExecHandler is an exec lifecycle handler running argv.
func consulExecHandler(argv []string) map[string]any {
	command := make([]any, len(argv))
	for i, s := range argv {
		command[i] = s
	}
	return map[string]any{"exec": map[string]any{"command": command}}
}

// envOps returns the ops that add the variables the hooks read and
// container c at base lacks. A variable the container sets itself is left
// as it is.
func (a *consulLifecycleAction) envOps(c engine.Value, name, base string) ([]engine.JSONPatchOp, error) {
	var want []map[string]any
	for _, e := range consulDownwardEnv {
		want = append(want, map[string]any{"name": e.name, "valueFrom": map[string]any{
			// apiVersion is what the API server defaults it to, so the stored
			// pod is the patched one.
			"fieldRef": map[string]any{"apiVersion": "v1", "fieldPath": e.fieldPath},
		}})
	}
	if s := a.tokenSecret; s != nil {
		want = append(want, map[string]any{"name": consulEnvToken, "valueFrom": map[string]any{
			"secretKeyRef": map[string]any{"name": s.Name, "key": s.Key},
		}})
	}
	env := c.Get("env")
	if !env.IsList() && !env.IsNull() {
		return nil, fmt.Errorf("container %s: env is a %s, not a list", name, goType(env))
	}
	present := map[string]bool{}
	for _, e := range env.Elements() {
		if n, ok := e.Get("name").Str(); ok {
			present[n] = true
		}
	}
	var missing []any
	for _, e := range want {
		if !present[e["name"].(string)] {
			missing = append(missing, e)
		}
	}
	switch {
	case len(missing) == 0:
		return nil, nil
	case env.IsNull():
		return []engine.JSONPatchOp{engine.Op("add", base+"/env", missing)}, nil
	}
	ops := make([]engine.JSONPatchOp, len(missing))
	for i, e := range missing {
		ops[i] = engine.Op("add", base+"/env/-", e)
	}
	return ops, nil
}
