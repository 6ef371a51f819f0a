package main

// `celadon webhook-config`: print the webhook configurations routing
// requests to Celadon, generated from the policies.

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
)

func init() { rootCmd.AddCommand(newWebhookConfigCmd()) }

// certManagerInjectCAFrom is the annotation asking cert-manager's cainjector
// to fill in the caBundle of every webhook from a Certificate's CA.
const certManagerInjectCAFrom = "cert-manager.io/inject-ca-from"

type webhookConfigOptions struct {
	policies       string
	service        string
	url            string
	caBundle       string
	name           string
	timeoutSeconds int32
	exclude        []string
	injectFrom     string
}

func newWebhookConfigCmd() *cobra.Command {
	o := &webhookConfigOptions{}
	cmd := &cobra.Command{
		Use:   "webhook-config -p POLICIES (--service NS/NAME[:PORT] | --url URL)",
		Short: "Print the webhook configurations for a policy set",
		Long: `Webhook-config prints the MutatingWebhookConfiguration and the
ValidatingWebhookConfiguration that route requests to Celadon for the policies
in POLICIES, as a YAML stream for kubectl apply.

Each has one webhook per failurePolicy its policies use (fail.mutate.celadon.io,
ignore.mutate.celadon.io, fail.validate.celadon.io, ignore.validate.celadon.io),
served at /mutate/fail, /mutate/ignore, /validate/fail and /validate/ignore,
whose rules are the union of those policies' resources and operations. A
configuration no policy needs is printed with no webhooks, so that applying it
clears the previous one. kube-system, kube-node-lease, the Service's namespace
and every --exclude-namespace are never sent to Celadon.

Policy errors are printed on stderr as with validate. Exit status: 0 on
success, 2 on bad flags or policy errors.`,
		// The first example names the Service and Certificate of
		// deploy/overlays/cert-manager (TestWebhookConfigExample).
		Example: `  # To apply the configurations yourself (the installs let celadon serve
  # --manage-webhooks write them), with cert-manager injecting the CA of the
  # Certificate celadon/celadon-serving:
  celadon webhook-config -p policies/ --service celadon/celadon \
    --cert-manager-inject-from celadon/celadon-serving | kubectl apply -f -
  celadon webhook-config -p policies/ --url https://127.0.0.1:9443 --ca-bundle ca.crt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	f := cmd.Flags()
	f.StringVarP(&o.policies, "policies", "p", "", "policy file or directory (required)")
	f.StringVar(&o.service, "service", "", "the Service in front of Celadon, as NAMESPACE/NAME[:PORT] (port default 443)")
	f.StringVar(&o.url, "url", "", "base https URL of Celadon instead of a Service, e.g. https://127.0.0.1:9443")
	f.StringVar(&o.caBundle, "ca-bundle", "", "PEM file of the CA that signed Celadon's serving certificate")
	f.StringVar(&o.name, "name", controllers.DefaultConfigName, "name of both configurations")
	f.Int32Var(&o.timeoutSeconds, "timeout-seconds", controllers.DefaultTimeoutSeconds, "webhook timeout, 1 to 30 seconds")
	f.StringSliceVar(&o.exclude, "exclude-namespace", nil, "namespace never sent to Celadon (repeatable, or comma-separated)")
	f.StringVar(&o.injectFrom, "cert-manager-inject-from", "", "NAMESPACE/CERTIFICATE whose CA cert-manager injects as caBundle")
	return cmd
}

func (o *webhookConfigOptions) run(cmd *cobra.Command) error {
	opts, err := o.configOptions(cmd)
	if err != nil {
		return err
	}
	// Check the options before spending time on the policies.
	if _, _, err := controllers.Configurations(&engine.Snapshot{}, opts); err != nil {
		return usageErrorf("%s: %v", cmd.Name(), err)
	}
	snap, err := loadPolicies(cmd, o.policies)
	if err != nil {
		return err
	}
	mwc, vwc, err := controllers.Configurations(snap, opts)
	if err != nil {
		return usageErrorf("%s: %v", cmd.Name(), err)
	}
	if len(opts.CABundle) == 0 && opts.Annotations[certManagerInjectCAFrom] == "" {
		fmt.Fprintln(cmd.ErrOrStderr(), "celadon: warning: no --ca-bundle or --cert-manager-inject-from: the API server will verify Celadon's certificate against its own trust roots")
	}
	return writeYAMLStream(cmd.OutOrStdout(), mwc, vwc)
}

// configOptions turns the flags into controllers.ConfigOptions; the checks that
// controllers.Configurations makes itself are left to it.
func (o *webhookConfigOptions) configOptions(cmd *cobra.Command) (controllers.ConfigOptions, error) {
	opts := controllers.ConfigOptions{
		Name:              o.name,
		URL:               o.url,
		TimeoutSeconds:    o.timeoutSeconds,
		ExcludeNamespaces: o.exclude,
	}
	if o.name == "" {
		return opts, usageErrorf("%s: --name must not be empty", cmd.Name())
	}
	if o.timeoutSeconds < 1 || o.timeoutSeconds > 30 {
		return opts, usageErrorf("%s: --timeout-seconds %d: must be between 1 and 30", cmd.Name(), o.timeoutSeconds)
	}
	switch {
	case cmd.Flags().Changed("url") && o.url == "":
		return opts, usageErrorf("%s: --url must not be empty", cmd.Name())
	case cmd.Flags().Changed("service") && o.service == "":
		return opts, usageErrorf("%s: --service must not be empty", cmd.Name())
	case o.service != "" && o.url != "":
		return opts, usageErrorf("%s: --service and --url are exclusive: give one", cmd.Name())
	case o.service == "" && o.url == "":
		return opts, usageErrorf("%s: --service NAMESPACE/NAME[:PORT] or --url URL is required", cmd.Name())
	case o.service != "":
		s, err := parseServiceRef(o.service)
		if err != nil {
			return opts, usageErrorf("%s: --service: %v", cmd.Name(), err)
		}
		opts.Service = s
	}
	if o.caBundle != "" {
		b, err := os.ReadFile(o.caBundle)
		if err != nil {
			return opts, usageErrorf("%s: --ca-bundle: %v", cmd.Name(), err)
		}
		if len(strings.TrimSpace(string(b))) == 0 {
			return opts, usageErrorf("%s: --ca-bundle: %s is empty", cmd.Name(), o.caBundle)
		}
		opts.CABundle = b
	}
	if cmd.Flags().Changed("cert-manager-inject-from") {
		ns, name, ok := strings.Cut(o.injectFrom, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return opts, usageErrorf("%s: --cert-manager-inject-from: want NAMESPACE/CERTIFICATE, not %q", cmd.Name(), o.injectFrom)
		}
		opts.Annotations = map[string]string{certManagerInjectCAFrom: o.injectFrom}
	}
	return opts, nil
}

// parseServiceRef reads NAMESPACE/NAME[:PORT].
func parseServiceRef(s string) (*controllers.ServiceRef, error) {
	ns, rest, ok := strings.Cut(s, "/")
	if !ok || ns == "" || rest == "" || strings.Contains(rest, "/") {
		return nil, fmt.Errorf("want NAMESPACE/NAME[:PORT], not %q", s)
	}
	ref := &controllers.ServiceRef{Namespace: ns, Name: rest}
	if name, port, ok := strings.Cut(rest, ":"); ok {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("port %q in %q: want a number from 1 to 65535", port, s)
		}
		ref.Name, ref.Port = name, int32(p)
	}
	return ref, nil
}

// writeYAMLStream writes objects as YAML documents separated by "---".
func writeYAMLStream(w io.Writer, objs ...any) error {
	for i, obj := range objs {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
