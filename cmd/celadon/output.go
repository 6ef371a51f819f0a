package main

// -o/--output: the formats a command prints, in one list per command that
// checks the flag, lists them in --help and offers them to shell
// completion.

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	"github.com/spf13/cobra"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"celadon.io/celadon/engine"
)

// outputFormat is one value of a command's -o.
type outputFormat struct {
	name string
	help string // the description shell completion shows
}

// outputFlag is the value of -o/--output: one of formats, checked as the
// command line is parsed.
type outputFlag struct {
	value   *string
	formats []outputFormat
}

// addOutputFlag adds -o/--output to cmd, storing the format in p: the
// first of formats by default, any other of them, and nothing else. Shell
// completion offers them with their descriptions.
func addOutputFlag(cmd *cobra.Command, p *string, formats []outputFormat) {
	*p = formats[0].name
	f := &outputFlag{value: p, formats: formats}
	cmd.Flags().VarP(f, "output", "o", "output format: "+f.names())
	err := cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		comps := make([]cobra.Completion, len(formats))
		for i, fm := range formats {
			comps[i] = cobra.CompletionWithDesc(fm.name, fm.help)
		}
		return comps, cobra.ShellCompDirectiveNoFileComp
	})
	if err != nil {
		panic(err) // the flag was just added, once
	}
}

func (f *outputFlag) names() string {
	names := make([]string, len(f.formats))
	for i, fm := range f.formats {
		names[i] = fm.name
	}
	return strings.Join(names, ", ")
}

func (f *outputFlag) String() string { return *f.value }

func (f *outputFlag) Set(s string) error {
	for _, fm := range f.formats {
		if fm.name == s {
			*f.value = s
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q: want one of %s", s, f.names())
}

func (f *outputFlag) Type() string { return "format" }

// The JSON of `eval -o results` and `test -o json`. Every key is always
// present: arrays and objects empty rather than absent, strings empty.
type (
	// requestOutput describes an admission request.
	requestOutput struct {
		Operation   string                      `json:"operation"`
		Kind        metav1.GroupVersionKind     `json:"kind"`
		Resource    metav1.GroupVersionResource `json:"resource"`
		SubResource string                      `json:"subResource"`
		Namespace   string                      `json:"namespace"`
		Name        string                      `json:"name"`
		User        string                      `json:"user"`
	}
	// decisionOutput is what the webhook answers a request, and why.
	decisionOutput struct {
		Allowed          bool                 `json:"allowed"`
		Message          string               `json:"message"` // the denial
		Warnings         []string             `json:"warnings"`
		AuditAnnotations map[string]string    `json:"auditAnnotations"`
		Results          []policyResultOutput `json:"results"`
		Patch            json.RawMessage      `json:"patch"` // a JSON patch, [] for none
	}
	// policyResultOutput is one policy's result, as -o text shows it.
	policyResultOutput struct {
		Policy          string `json:"policy"`
		Action          string `json:"action"`
		State           string `json:"state"`       // pass, fail, warn, error or skip
		Enforcement     string `json:"enforcement"` // Deny, Warn or Audit; "" for a mutating policy
		Reason          string `json:"reason"`
		PatchOperations int    `json:"patchOperations"`
		Panicked        bool   `json:"panicked"`
		Exception       string `json:"exception"` // the exception that made it a skip; "" for none
	}
)

func newRequestOutput(r *admissionv1.AdmissionRequest) requestOutput {
	return requestOutput{
		Operation:   string(r.Operation),
		Kind:        r.Kind,
		Resource:    r.Resource,
		SubResource: r.SubResource,
		Namespace:   r.Namespace,
		Name:        r.Name,
		User:        r.UserInfo.Username,
	}
}

func newDecisionOutput(d *engine.Decision) (decisionOutput, error) {
	patch, err := d.PatchJSON()
	if err != nil {
		return decisionOutput{}, err
	}
	out := decisionOutput{
		Allowed:          d.Allowed,
		Message:          d.Message,
		Warnings:         append([]string{}, d.Warnings...),
		AuditAnnotations: map[string]string{},
		Results:          make([]policyResultOutput, len(d.Results)),
		Patch:            patch,
	}
	maps.Copy(out.AuditAnnotations, d.AuditAnnotations)
	for i, r := range d.Results {
		out.Results[i] = policyResultOutput{
			Policy:          r.Policy,
			Action:          r.Action,
			State:           string(r.State),
			Enforcement:     string(r.Enforcement),
			Reason:          r.Reason,
			PatchOperations: r.Patch,
			Panicked:        r.Panicked,
			Exception:       r.Exception,
		}
	}
	return out, nil
}
