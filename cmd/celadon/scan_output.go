package main

// The outputs of `celadon scan`: table, json, yaml, junit, sarif and
// report.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/reports"
)

// write writes the scan's results in format.
func (s *scanner) write(w io.Writer, format string) error {
	bw := bufio.NewWriter(w)
	var err error
	switch format {
	case "table":
		err = s.writeTable(bw)
	case "json", "yaml":
		err = s.writeJSON(bw, format)
	case "junit":
		err = s.writeJUnit(bw)
	case "sarif":
		err = s.writeSARIF(bw)
	case "report":
		err = s.writeReports(bw)
	default:
		err = fmt.Errorf("unknown output format %q", format)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// kindRef names a type as kubectl does: configmap, deployment.apps.
func (k scanKind) ref() string {
	r := strings.ToLower(k.kind)
	if k.group != "" {
		r += "." + k.group
	}
	return r
}

// ref names an object as kubectl does: deployment.apps/web.
func (s *scanner) ref(o *scanObject) string { return s.kinds[o.kind].ref() + "/" + o.name }

// fullName names an object with its namespace: shop/deployment.apps/web,
// or namespace/shop for a cluster-scoped object.
func (s *scanner) fullName(o *scanObject) string {
	if ns := s.strs.get(o.namespace); ns != "" {
		return ns + "/" + s.ref(o)
	}
	return s.ref(o)
}

// location is a manifest object's file:line; "" for a cluster's.
func (s *scanner) location(o *scanObject) string {
	if o.file < 0 {
		return ""
	}
	return fmt.Sprintf("%s:%d", s.files[o.file], o.line)
}

// stateLabel is a result's state as the table shows it: a failure that
// only audits says so, as eval does.
func (s *scanner) stateLabel(r *scanResult) string {
	p := s.policies[r.policy].p
	if r.state == engine.StateFail && p.Policy.Spec.Enforcement == engine.Audit {
		return "fail (audit)"
	}
	return string(r.state)
}

// summary is the last line of the table.
func (s *scanner) summary() string {
	return fmt.Sprintf("%d object%s scanned, %d matched by a policy: %d allowed, %d denied; results: %s",
		s.scanned, pluralS(s.scanned), s.evaluated, s.scanned-s.denied, s.denied, s.counts)
}

// writeTable writes one line per listed result, the policies that do not
// apply, what could not be scanned and a summary line.
func (s *scanner) writeTable(w io.Writer) error {
	if len(s.results) > 0 {
		// Two passes, column widths then lines, rather than a
		// tabwriter, which would hold the whole table.
		header := []string{"NAMESPACE", "OBJECT", "POLICY", "RESULT", "MESSAGE"}
		if s.source == "manifests" {
			header = append([]string{"SOURCE"}, header...)
		}
		widths := make([]int, len(header))
		row := make([]string, len(header))
		cells := func(r *scanResult) []string {
			o := &s.objects[r.object]
			row = append(row[:0], s.strs.get(o.namespace), s.ref(o), s.policies[r.policy].name, s.stateLabel(r), oneLine(s.strs.get(r.message)))
			if len(header) > 5 {
				row = append([]string{s.location(o)}, row...)
			}
			return row
		}
		measure := func(cells []string) {
			for i, c := range cells {
				widths[i] = max(widths[i], utf8.RuneCountInString(c))
			}
		}
		measure(header)
		for i := range s.results {
			measure(cells(&s.results[i]))
		}
		line := func(cells []string) error {
			var b strings.Builder
			for i, c := range cells {
				b.WriteString(c)
				if i < len(cells)-1 {
					b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
				}
			}
			b.WriteByte('\n')
			_, err := io.WriteString(w, b.String())
			return err
		}
		if err := line(header); err != nil {
			return err
		}
		for i := range s.results {
			if err := line(cells(&s.results[i])); err != nil {
				return err
			}
		}
		fmt.Fprintln(w)
	}
	if len(s.applicable) < len(s.policies) {
		fmt.Fprintln(w, "not applicable to a scan:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, p := range s.policies {
			if p.notApplicable != "" {
				fmt.Fprintf(tw, "  %s\t%s\n", p.name, p.notApplicable)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.problems) > 0 {
		fmt.Fprintln(w, "not scanned:")
		for _, p := range s.problems {
			fmt.Fprintf(w, "  %s: %s\n", p.resource, oneLine(p.err))
		}
	}
	for _, n := range s.notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	_, err := fmt.Fprintln(w, s.summary())
	return err
}

// The document of -o json and -o yaml. Every key is always present.
type (
	scanJSON struct {
		Source     string             `json:"source"` // cluster or manifests
		Server     string             `json:"server"` // the API server's URL; "" for manifests
		Files      []string           `json:"files"`  // the manifests read
		Summary    scanSummaryJSON    `json:"summary"`
		Policies   []scanPolicyJSON   `json:"policies"`
		Resources  []scanResourceJSON `json:"resources"`
		NotScanned []scanProblemJSON  `json:"notScanned"`
		Notes      []string           `json:"notes"`
		Objects    []scanObjectJSON   `json:"objects"` // those with a listed result
	}
	scanSummaryJSON struct {
		Objects      int         `json:"objects"`   // scanned
		Evaluated    int         `json:"evaluated"` // matched by a policy
		Allowed      int         `json:"allowed"`
		Denied       int         `json:"denied"`
		Results      stateCounts `json:"results"` // every result, listed or not
		ListRequests int         `json:"listRequests"`
	}
	scanPolicyJSON struct {
		Name          string      `json:"name"`
		Action        string      `json:"action"`
		Enforcement   string      `json:"enforcement"`
		FailurePolicy string      `json:"failurePolicy"`
		Applicable    bool        `json:"applicable"`
		NotApplicable string      `json:"notApplicable"` // why it does not apply
		Results       stateCounts `json:"results"`
	}
	scanResourceJSON struct {
		Resource string `json:"resource"` // group/version/resource, version/resource for the core group
		Kind     string `json:"kind"`
		Objects  int    `json:"objects"`
	}
	scanProblemJSON struct {
		Resource string `json:"resource"`
		Error    string `json:"error"`
	}
	scanObjectJSON struct {
		APIVersion string           `json:"apiVersion"`
		Kind       string           `json:"kind"`
		Namespace  string           `json:"namespace"`
		Name       string           `json:"name"`
		UID        string           `json:"uid"`
		Source     string           `json:"source"` // "file: document N[, item M]"; "" for a cluster's
		File       string           `json:"file"`
		Line       int              `json:"line"`
		Allowed    bool             `json:"allowed"`
		Message    string           `json:"message"` // the denial
		Results    []scanResultJSON `json:"results"`
	}
	scanResultJSON struct {
		Policy      string `json:"policy"`
		State       string `json:"state"`
		Enforcement string `json:"enforcement"`
		Message     string `json:"message"`
	}
)

// document is the document of -o json and -o yaml; with objects false,
// its objects are left empty, for writeJSON to stream them.
func (s *scanner) document(objects bool) scanJSON {
	out := scanJSON{
		Source: s.source, Server: s.server, Files: append([]string{}, s.files...),
		Summary: scanSummaryJSON{
			Objects: s.scanned, Evaluated: s.evaluated, Allowed: s.scanned - s.denied, Denied: s.denied,
			Results: s.counts, ListRequests: s.listRequests,
		},
		Policies: []scanPolicyJSON{}, Resources: []scanResourceJSON{}, NotScanned: []scanProblemJSON{},
		Notes: append([]string{}, s.notes...), Objects: []scanObjectJSON{},
	}
	for _, p := range s.policies {
		spec := p.p.Policy.Spec
		out.Policies = append(out.Policies, scanPolicyJSON{
			Name: p.name, Action: spec.Action, Enforcement: string(spec.Enforcement), FailurePolicy: string(spec.FailurePolicy),
			Applicable: p.notApplicable == "", NotApplicable: p.notApplicable, Results: p.counts,
		})
	}
	for _, r := range s.resources {
		out.Resources = append(out.Resources, scanResourceJSON{Resource: r.String(), Kind: r.gvk.Kind, Objects: r.objects})
	}
	for _, p := range s.problems {
		out.NotScanned = append(out.NotScanned, scanProblemJSON{Resource: p.resource, Error: p.err})
	}
	if objects {
		s.eachObject(func(o scanObjectJSON) error {
			out.Objects = append(out.Objects, o)
			return nil
		})
	}
	return out
}

// eachObject calls fn with each object that has a listed result, in scan
// order, built one at a time.
func (s *scanner) eachObject(fn func(scanObjectJSON) error) error {
	for i := 0; i < len(s.results); {
		o := &s.objects[s.results[i].object]
		k := s.kinds[o.kind]
		oj := scanObjectJSON{
			APIVersion: k.apiVersion, Kind: k.kind, Namespace: s.strs.get(o.namespace), Name: o.name, UID: o.uid,
			Allowed: !o.denied, Results: []scanResultJSON{},
		}
		if o.message >= 0 {
			oj.Message = s.strs.get(o.message)
		}
		if o.file >= 0 {
			oj.Source, oj.File, oj.Line = sourceOf(s.files[o.file], o.document, o.index), s.files[o.file], int(o.line)
		}
		// An object's results are consecutive.
		for obj := s.results[i].object; i < len(s.results) && s.results[i].object == obj; i++ {
			r := &s.results[i]
			p := s.policies[r.policy]
			oj.Results = append(oj.Results, scanResultJSON{
				Policy: p.name, State: string(r.state), Enforcement: string(p.p.Policy.Spec.Enforcement), Message: s.strs.get(r.message),
			})
		}
		if err := fn(oj); err != nil {
			return err
		}
	}
	return nil
}

// writeJSON writes the document. JSON streams the objects, one at a time,
// after the rest: with --show-pass on a large cluster they are most of it.
func (s *scanner) writeJSON(w io.Writer, format string) error {
	if format == "yaml" {
		out, err := yaml.Marshal(s.document(true))
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s.document(false)); err != nil {
		return err
	}
	const empty = "[]\n}\n"
	head, ok := bytes.CutSuffix(b.Bytes(), []byte(empty))
	if !ok {
		return fmt.Errorf("scan -o json: the document does not end with its objects")
	}
	if _, err := w.Write(head); err != nil {
		return err
	}
	if len(s.results) == 0 {
		_, err := io.WriteString(w, empty)
		return err
	}
	b.Reset()
	enc = json.NewEncoder(&b) // one object at a time
	enc.SetEscapeHTML(false)
	enc.SetIndent("    ", "  ")
	sep := "[\n    "
	err := s.eachObject(func(o scanObjectJSON) error {
		b.Reset()
		if err := enc.Encode(o); err != nil {
			return err
		}
		if _, err := io.WriteString(w, sep); err != nil {
			return err
		}
		sep = ",\n    "
		_, err := w.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
		return err
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n  ]\n}\n")
	return err
}

// junitNotApplicable names the testcase of a policy that does not apply,
// and junitNotScanned the testsuite of the resources that could not be
// listed.
const (
	junitNotApplicable = "(not applicable to a scan)"
	junitNotScanned    = "(not scanned)"
)

// writeJUnit writes a testsuite per policy, in load order, with a testcase
// per listed result: a failure for fail and warn, an error for error, a
// skipped testcase for skip. A policy that does not apply is a testsuite of
// one skipped testcase; the resources that could not be listed a testsuite
// of errors.
func (s *scanner) writeJUnit(w io.Writer) error {
	byPolicy := make([][]int32, len(s.policies))
	for i := range s.results {
		p := s.results[i].policy
		byPolicy[p] = append(byPolicy[p], int32(i))
	}
	out := junitTestsuites{Name: "celadon scan"}
	for pi, p := range s.policies {
		ts := junitTestsuite{Name: p.name}
		if p.notApplicable != "" {
			ts.Skipped = 1
			ts.Cases = append(ts.Cases, junitTestcase{Name: junitNotApplicable, Classname: p.name, Skipped: &junitSkipped{Message: p.notApplicable}})
		}
		for _, ri := range byPolicy[pi] {
			r := &s.results[ri]
			o := &s.objects[r.object]
			msg := s.strs.get(r.message)
			tc := junitTestcase{Name: s.fullName(o), Classname: p.name}
			if o.file >= 0 {
				tc.File = s.files[o.file]
			}
			text := msg
			if loc := s.location(o); loc != "" {
				text += "\n" + sourceOf(s.files[o.file], o.document, o.index) + " (" + loc + ")"
			}
			first, _, _ := strings.Cut(msg, "\n")
			switch r.state {
			case engine.StateFail, engine.StateWarn:
				ts.Failures++
				typ := string(r.state)
				if r.state == engine.StateFail {
					typ += " (enforcement " + string(p.p.Policy.Spec.Enforcement) + ")"
				}
				tc.Failure = &junitProblem{Message: first, Type: typ, Text: xmlText(text)}
			case engine.StateError:
				ts.Errors++
				tc.Error = &junitProblem{Message: first, Type: "error (failurePolicy " + string(p.p.Policy.Spec.FailurePolicy) + ")", Text: xmlText(text)}
			case engine.StateSkip:
				ts.Skipped++
				tc.Skipped = &junitSkipped{Message: first}
			}
			ts.Cases = append(ts.Cases, tc)
		}
		ts.Tests = len(ts.Cases)
		out.Tests += ts.Tests
		out.Failures += ts.Failures
		out.Errors += ts.Errors
		out.Suites = append(out.Suites, ts)
	}
	if len(s.problems) > 0 {
		ts := junitTestsuite{Name: junitNotScanned}
		for _, p := range s.problems {
			first, _, _ := strings.Cut(p.err, "\n")
			ts.Cases = append(ts.Cases, junitTestcase{Name: p.resource, Classname: junitNotScanned, Error: &junitProblem{Message: first, Type: "ListError", Text: xmlText(p.err)}})
		}
		ts.Tests, ts.Errors = len(ts.Cases), len(ts.Cases)
		out.Tests += ts.Tests
		out.Errors += ts.Errors
		out.Suites = append(out.Suites, ts)
	}
	return writeJUnitDocument(w, out)
}

// SARIF 2.1.0 (https://docs.oasis-open.org/sarif/sarif/v2.1.0/): one run,
// the tool celadon with a rule per policy that applies, a result per
// listed result.
type (
	sarifLog struct {
		Schema  string     `json:"$schema"`
		Version string     `json:"version"`
		Runs    []sarifRun `json:"runs"`
	}
	sarifRun struct {
		Tool        sarifTool         `json:"tool"`
		Invocations []sarifInvocation `json:"invocations"`
		Results     []sarifResult     `json:"results"`
	}
	sarifTool struct {
		Driver sarifDriver `json:"driver"`
	}
	sarifDriver struct {
		Name    string      `json:"name"`
		Version string      `json:"version"`
		Rules   []sarifRule `json:"rules"`
	}
	sarifRule struct {
		ID                   string            `json:"id"`
		ShortDescription     sarifMessage      `json:"shortDescription"`
		DefaultConfiguration sarifRuleConfig   `json:"defaultConfiguration"`
		Properties           map[string]string `json:"properties"`
	}
	sarifRuleConfig struct {
		Level string `json:"level"`
	}
	sarifMessage struct {
		Text string `json:"text"`
	}
	sarifInvocation struct {
		ExecutionSuccessful        bool                `json:"executionSuccessful"`
		ToolExecutionNotifications []sarifNotification `json:"toolExecutionNotifications"`
	}
	sarifNotification struct {
		Level   string       `json:"level"`
		Message sarifMessage `json:"message"`
	}
	sarifResult struct {
		RuleID     string            `json:"ruleId"`
		RuleIndex  int               `json:"ruleIndex"`
		Kind       string            `json:"kind"`
		Level      string            `json:"level"`
		Message    sarifMessage      `json:"message"`
		Locations  []sarifLocation   `json:"locations"`
		Properties map[string]string `json:"properties"`
	}
	sarifLocation struct {
		PhysicalLocation *sarifPhysicalLocation `json:"physicalLocation,omitempty"`
		LogicalLocations []sarifLogicalLocation `json:"logicalLocations"`
	}
	sarifPhysicalLocation struct {
		ArtifactLocation sarifArtifactLocation `json:"artifactLocation"`
		Region           *sarifRegion          `json:"region,omitempty"`
	}
	sarifArtifactLocation struct {
		URI string `json:"uri"`
	}
	sarifRegion struct {
		StartLine int `json:"startLine"`
	}
	sarifLogicalLocation struct {
		Name               string `json:"name"`
		FullyQualifiedName string `json:"fullyQualifiedName"`
		Kind               string `json:"kind"`
	}
)

const sarifSchema = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"

// sarifLevel is a result's level: error when it denies the object (a
// failure under Deny, an error under failurePolicy Fail), warning when it
// does not; none for what found nothing wrong (kind pass).
func sarifLevel(p *engine.CompiledPolicy, st engine.State) (kind, level string) {
	spec := p.Policy.Spec
	switch st {
	case engine.StateFail:
		if spec.Enforcement == engine.Audit {
			return "fail", "warning"
		}
		return "fail", "error"
	case engine.StateWarn:
		return "fail", "warning"
	case engine.StateError:
		if spec.FailurePolicy == engine.Ignore {
			return "fail", "warning"
		}
		return "fail", "error"
	}
	return "pass", "none"
}

func (s *scanner) writeSARIF(w io.Writer) error {
	run := sarifRun{
		Tool:        sarifTool{Driver: sarifDriver{Name: "celadon", Version: buildInfo().version, Rules: []sarifRule{}}},
		Invocations: []sarifInvocation{{ExecutionSuccessful: len(s.problems) == 0, ToolExecutionNotifications: []sarifNotification{}}},
		Results:     []sarifResult{},
	}
	ruleIndex := map[int32]int{}
	for pi, p := range s.policies {
		if p.notApplicable != "" {
			inv := &run.Invocations[0]
			inv.ToolExecutionNotifications = append(inv.ToolExecutionNotifications, sarifNotification{
				Level: "note", Message: sarifMessage{Text: fmt.Sprintf("policy %q is not applicable to a scan: %s", p.name, p.notApplicable)},
			})
			continue
		}
		spec := p.p.Policy.Spec
		level := "error"
		if spec.Enforcement != engine.Deny {
			level = "warning"
		}
		ruleIndex[int32(pi)] = len(run.Tool.Driver.Rules)
		run.Tool.Driver.Rules = append(run.Tool.Driver.Rules, sarifRule{
			ID:                   p.name,
			ShortDescription:     sarifMessage{Text: fmt.Sprintf("%s (enforcement %s, failurePolicy %s)", spec.Action, spec.Enforcement, spec.FailurePolicy)},
			DefaultConfiguration: sarifRuleConfig{Level: level},
			Properties: map[string]string{
				"action": spec.Action, "enforcement": string(spec.Enforcement), "failurePolicy": string(spec.FailurePolicy),
				"file": p.p.File, "line": fmt.Sprint(p.p.Line),
			},
		})
	}
	for _, p := range s.problems {
		inv := &run.Invocations[0]
		inv.ToolExecutionNotifications = append(inv.ToolExecutionNotifications, sarifNotification{
			Level: "error", Message: sarifMessage{Text: "not scanned: " + p.resource + ": " + p.err},
		})
	}
	for i := range s.results {
		r := &s.results[i]
		o := &s.objects[r.object]
		p := s.policies[r.policy]
		kind, level := sarifLevel(p.p, r.state)
		loc := sarifLocation{LogicalLocations: []sarifLogicalLocation{{Name: o.name, FullyQualifiedName: s.fullName(o), Kind: "resource"}}}
		if o.file >= 0 && s.files[o.file] != "<stdin>" {
			loc.PhysicalLocation = &sarifPhysicalLocation{
				ArtifactLocation: sarifArtifactLocation{URI: filepath.ToSlash(s.files[o.file])},
				Region:           &sarifRegion{StartLine: int(o.line)},
			}
		}
		props := map[string]string{"state": string(r.state), "namespace": s.strs.get(o.namespace), "kind": s.kinds[o.kind].kind, "apiVersion": s.kinds[o.kind].apiVersion}
		if o.file >= 0 {
			props["source"] = sourceOf(s.files[o.file], o.document, o.index)
		}
		run.Results = append(run.Results, sarifResult{
			RuleID: p.name, RuleIndex: ruleIndex[r.policy], Kind: kind, Level: level,
			Message:    sarifMessage{Text: s.fullName(o) + ": " + s.strs.get(r.message)},
			Locations:  []sarifLocation{loc},
			Properties: props,
		})
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(sarifLog{Schema: sarifSchema, Version: "2.1.0", Runs: []sarifRun{run}})
}

// writeReports writes, as a YAML stream, the Report of each namespace
// with a listed result, in name order, then the ClusterReport, built by
// reports.Build. A report's summary counts every result of its namespace,
// listed or not: --show-pass decides what results it lists, not what it
// counts.
func (s *scanner) writeReports(w io.Writer) error {
	byNS := map[int32][]reports.Result{}
	now := scanNow()
	for i := range s.results {
		r := &s.results[i]
		o := &s.objects[r.object]
		k := s.kinds[o.kind]
		rr := reports.Result{
			Policy:  s.policies[r.policy].name,
			State:   r.state,
			Message: s.strs.get(r.message),
			Object:  corev1.ObjectReference{APIVersion: k.apiVersion, Kind: k.kind, Namespace: s.strs.get(o.namespace), Name: o.name, UID: typesUID(o.uid)},
			Time:    now,
		}
		if name := s.strs.get(r.exception); name != "" {
			ex := s.opts.Exceptions.Exception(name)
			if ex == nil {
				ex = s.snap.Exceptions.Exception(name)
			}
			var expires time.Time
			if ex != nil {
				expires = ex.Expires
			}
			rr.Properties = reports.ExceptionProperties(name, expires, s.opts.Now())
		}
		byNS[o.namespace] = append(byNS[o.namespace], rr)
	}
	namespaces := make([]int32, 0, len(byNS))
	for ns := range byNS {
		namespaces = append(namespaces, ns)
	}
	sort.Slice(namespaces, func(i, j int) bool {
		a, b := s.strs.get(namespaces[i]), s.strs.get(namespaces[j])
		return a != "" && (b == "" || a < b) // the ClusterReport last
	})
	first := true
	for _, ns := range namespaces {
		rs := byNS[ns]
		delete(byNS, ns)
		namespaced, cluster := reports.Build(rs)
		var obj any
		if cluster != nil {
			cluster.Summary = s.nsCounts[ns].summary()
			obj = cluster
		} else {
			r := namespaced[s.strs.get(ns)]
			r.Summary = s.nsCounts[ns].summary()
			obj = r
		}
		out, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		if !first {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		first = false
		if _, err := w.Write(out); err != nil {
			return err
		}
	}
	return nil
}

func typesUID(s string) types.UID { return types.UID(s) }

// summary is the counts as a report's summary.
func (c *stateCounts) summary() v1alpha1.ReportSummary {
	return v1alpha1.ReportSummary{Pass: c.Pass, Fail: c.Fail, Warn: c.Warn, Error: c.Error, Skip: c.Skip}
}
