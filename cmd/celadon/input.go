package main

// Input loading for `celadon eval`: objects from YAML/JSON streams, the
// AdmissionRequests the API server would send for them, and AdmissionReviews
// read from files.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// inputObject is one Kubernetes object read from a file.
type inputObject struct {
	// Source names where the object came from: "file: document N" or
	// "file: document N, item M" for the items of a List.
	Source string
	// Raw is the object as JSON.
	Raw []byte
	// Object is the decoded object.
	Object map[string]any
}

// readInput reads a file, or standard input when path is "-".
func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// loadObjects reads every object in a file of YAML documents separated by
// "---", or of concatenated JSON values. Items of a List are returned one by
// one. Empty documents are skipped. Errors name the file, the document and,
// for YAML syntax errors, the line in the file.
func loadObjects(path string) ([]inputObject, error) {
	data, err := readInput(path)
	if err != nil {
		return nil, err
	}
	name := path
	if path == "-" {
		name = "<stdin>"
	}
	docs, err := splitDocuments(name, data)
	if err != nil {
		return nil, err
	}
	var out []inputObject
	for _, d := range docs {
		objs, err := d.objects()
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no objects found", name)
	}
	return out, nil
}

// inputDocument is one document of an input file, converted to JSON.
type inputDocument struct {
	file  string
	index int // 1-based
	line  int // first line in the file
	json  []byte
}

func (d inputDocument) source() string { return fmt.Sprintf("%s: document %d", d.file, d.index) }

// splitDocuments splits a file into JSON documents, dropping empty ones.
func splitDocuments(file string, data []byte) ([]inputDocument, error) {
	if utilyaml.IsJSONBuffer(data) {
		return splitJSON(file, data)
	}
	return splitYAML(file, data)
}

func splitJSON(file string, data []byte) ([]inputDocument, error) {
	var docs []inputDocument
	dec := json.NewDecoder(bytes.NewReader(data))
	for i := 1; ; i++ {
		start := dec.InputOffset()
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			line := lineAt(data, start)
			var se *json.SyntaxError
			if errors.As(err, &se) {
				line = lineAt(data, se.Offset)
			}
			return nil, fmt.Errorf("%s:%d: document %d: invalid JSON: %v", file, line, i, err)
		}
		docs = append(docs, inputDocument{file: file, index: i, line: lineAt(data, start+int64(leadingSpace(data[start:]))), json: raw})
	}
}

func leadingSpace(b []byte) int { return len(b) - len(bytes.TrimLeft(b, " \t\r\n")) }

// lineAt returns the 1-based line of a byte offset.
func lineAt(data []byte, off int64) int {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// splitYAML splits on "---" lines as kubectl does and converts each
// document to JSON. Duplicate keys are errors, as with kubectl.
func splitYAML(file string, data []byte) ([]inputDocument, error) {
	var docs []inputDocument
	r := bufio.NewReader(bytes.NewReader(data))
	var buf bytes.Buffer
	index, line, start := 1, 0, 1
	flush := func() error {
		chunk := buf.Bytes()
		defer func() { buf.Reset(); index++ }()
		if isBlankYAML(chunk) {
			return nil
		}
		j, err := yaml.YAMLToJSONStrict(chunk)
		if err != nil {
			errLine, msg := yamlError(err, start)
			return fmt.Errorf("%s:%d: document %d: invalid YAML: %s", file, errLine, index, msg)
		}
		if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
			return nil
		}
		docs = append(docs, inputDocument{file: file, index: index, line: start, json: j})
		return nil
	}
	for {
		l, err := r.ReadBytes('\n')
		if len(l) > 0 {
			line++
			if isDocumentSeparator(l) {
				if err := flush(); err != nil {
					return nil, err
				}
				start = line + 1
			} else {
				buf.Write(l)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return docs, nil
}

// yamlError turns a YAML error about a document starting at line start of
// its file into the line of the first problem in the file and a one-line
// message with lines made absolute.
func yamlError(err error, start int) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:")
	var parts []string
	errLine := 0
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		l = yamlLineRE.ReplaceAllStringFunc(l, func(m string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
			if errLine == 0 {
				errLine = start + n - 1
			}
			return "line " + strconv.Itoa(start+n-1)
		})
		parts = append(parts, l)
	}
	if errLine == 0 {
		errLine = start
	}
	if len(parts) == 1 {
		parts[0] = strings.TrimPrefix(parts[0], "line "+strconv.Itoa(errLine)+": ")
	}
	return errLine, strings.Join(parts, "; ")
}

// isDocumentSeparator reports whether a line is "---", optionally followed
// by spaces or a comment.
func isDocumentSeparator(l []byte) bool {
	if !bytes.HasPrefix(l, []byte("---")) {
		return false
	}
	rest := strings.TrimSpace(string(l[3:]))
	return rest == "" || strings.HasPrefix(rest, "#")
}

func isBlankYAML(b []byte) bool {
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// objects returns the document's object, or the items of a List.
func (d inputDocument) objects() ([]inputObject, error) {
	var v any
	if err := kjson.UnmarshalCaseSensitivePreserveInts(d.json, &v); err != nil {
		return nil, fmt.Errorf("%s: %v", d.source(), err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s:%d: document %d: want a Kubernetes object (a mapping with apiVersion and kind), got %s", d.file, d.line, d.index, jsonKind(v))
	}
	if kind, _ := obj["kind"].(string); kind == "List" || strings.HasSuffix(kind, "List") && obj["items"] != nil {
		items, ok := obj["items"].([]any)
		if !ok {
			return nil, fmt.Errorf("%s:%d: document %d: %s has no items list", d.file, d.line, d.index, kind)
		}
		var out []inputObject
		for i, it := range items {
			src := fmt.Sprintf("%s, item %d", d.source(), i+1)
			m, ok := it.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: want a Kubernetes object, got %s", src, jsonKind(it))
			}
			raw, err := json.Marshal(m)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", src, err)
			}
			o := inputObject{Source: src, Raw: raw, Object: m}
			if err := o.check(); err != nil {
				return nil, err
			}
			out = append(out, o)
		}
		return out, nil
	}
	o := inputObject{Source: d.source(), Raw: d.json, Object: obj}
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("%s:%d: document %d: %v", d.file, d.line, d.index, strings.TrimPrefix(err.Error(), d.source()+": "))
	}
	return []inputObject{o}, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case string:
		return "a string"
	}
	return "a scalar"
}

// check verifies the fields the request is built from.
func (o inputObject) check() error {
	apiVersion, _ := o.Object["apiVersion"].(string)
	kind, _ := o.Object["kind"].(string)
	if apiVersion == "" || kind == "" {
		return fmt.Errorf("%s: apiVersion and kind are required", o.Source)
	}
	if _, err := schema.ParseGroupVersion(apiVersion); err != nil {
		return fmt.Errorf("%s: apiVersion: %v", o.Source, err)
	}
	if md, ok := o.Object["metadata"]; ok {
		if _, ok := md.(map[string]any); !ok {
			return fmt.Errorf("%s: metadata must be a mapping", o.Source)
		}
	}
	return nil
}

func (o inputObject) gvk() schema.GroupVersionKind {
	apiVersion, _ := o.Object["apiVersion"].(string)
	kind, _ := o.Object["kind"].(string)
	gv, _ := schema.ParseGroupVersion(apiVersion)
	return gv.WithKind(kind)
}

func (o inputObject) metadataString(field string) string {
	md, _ := o.Object["metadata"].(map[string]any)
	s, _ := md[field].(string)
	return s
}

// clusterScopedKinds are the kinds, by group, that have no namespace. Every
// other kind, including custom resources, is taken to be namespaced.
var clusterScopedKinds = map[schema.GroupKind]bool{
	{Group: "", Kind: "Namespace"}:                                                    true,
	{Group: "", Kind: "Node"}:                                                         true,
	{Group: "", Kind: "PersistentVolume"}:                                             true,
	{Group: "", Kind: "ComponentStatus"}:                                              true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}:                         true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}:                  true,
	{Group: "storage.k8s.io", Kind: "StorageClass"}:                                   true,
	{Group: "storage.k8s.io", Kind: "CSIDriver"}:                                      true,
	{Group: "storage.k8s.io", Kind: "CSINode"}:                                        true,
	{Group: "storage.k8s.io", Kind: "VolumeAttachment"}:                               true,
	{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:                 true,
	{Group: "apiregistration.k8s.io", Kind: "APIService"}:                             true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingWebhookConfiguration"}:     true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingWebhookConfiguration"}:   true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicy"}:        true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicyBinding"}: true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicy"}:          true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicyBinding"}:   true,
	{Group: "scheduling.k8s.io", Kind: "PriorityClass"}:                               true,
	{Group: "node.k8s.io", Kind: "RuntimeClass"}:                                      true,
	{Group: "networking.k8s.io", Kind: "IngressClass"}:                                true,
	{Group: "certificates.k8s.io", Kind: "CertificateSigningRequest"}:                 true,
	{Group: "flowcontrol.apiserver.k8s.io", Kind: "FlowSchema"}:                       true,
	{Group: "flowcontrol.apiserver.k8s.io", Kind: "PriorityLevelConfiguration"}:       true,
	{Group: "resource.k8s.io", Kind: "DeviceClass"}:                                   true,
	{Group: "resource.k8s.io", Kind: "ResourceSlice"}:                                 true,
	{Group: "authorization.k8s.io", Kind: "SubjectAccessReview"}:                      true,
	{Group: "authorization.k8s.io", Kind: "SelfSubjectAccessReview"}:                  true,
	{Group: "authentication.k8s.io", Kind: "TokenReview"}:                             true,
	{Group: "authentication.k8s.io", Kind: "SelfSubjectReview"}:                       true,
	{Group: "storagemigration.k8s.io", Kind: "StorageVersionMigration"}:               true,
	{Group: "internal.apiserver.k8s.io", Kind: "StorageVersion"}:                      true,
	{Group: "networking.k8s.io", Kind: "IPAddress"}:                                   true,
	{Group: "networking.k8s.io", Kind: "ServiceCIDR"}:                                 true,
}

// resourceFor maps a kind to its resource as a RESTMapper would: kinds
// known to client-go's scheme and guessed ones (custom resources) alike get
// the lower-case plural, e.g. Ingress → ingresses, NetworkPolicy →
// networkpolicies.
func resourceFor(gvk schema.GroupVersionKind) (gvr schema.GroupVersionResource, known bool) {
	plural, _ := meta.UnsafeGuessKindToResource(gvk)
	return plural, scheme.Scheme.Recognizes(gvk)
}

// requestOptions describe how eval builds requests from objects.
type requestOptions struct {
	Operation   admissionv1.Operation
	SubResource string
	User        string
}

// defaultUser is the user kubeadm's admin kubeconfig authenticates as.
const defaultUser = "kubernetes-admin"

// requestUID returns a fixed UID for the n-th request (1-based), so that
// output is stable from run to run.
func requestUID(n int) types.UID {
	return types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012d", n))
}

// buildRequest builds the AdmissionRequest the API server would send for
// obj (the new object; nil for DELETE) and old (the old object for UPDATE
// and DELETE; nil otherwise).
func buildRequest(n int, obj, old *inputObject, opts requestOptions) (*admissionv1.AdmissionRequest, error) {
	ref := obj
	if ref == nil {
		ref = old
	}
	if ref == nil {
		return nil, errors.New("no object")
	}
	gvk := ref.gvk()
	if obj != nil && old != nil {
		if og := old.gvk(); og.GroupKind() != gvk.GroupKind() {
			return nil, fmt.Errorf("%s is a %s but the old object, %s, is a %s", obj.Source, gvk.Kind, old.Source, og.Kind)
		}
	}
	gvr, _ := resourceFor(gvk)
	req := &admissionv1.AdmissionRequest{
		UID:             requestUID(n),
		Kind:            metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
		Resource:        metav1.GroupVersionResource{Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource},
		SubResource:     opts.SubResource,
		Name:            ref.metadataString("name"),
		Operation:       opts.Operation,
		DryRun:          new(bool),
		UserInfo:        authenticationv1.UserInfo{Username: opts.User, Groups: []string{"system:masters", "system:authenticated"}},
		RequestKind:     &metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
		RequestResource: &metav1.GroupVersionResource{Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource},
	}
	if opts.SubResource != "" {
		req.RequestSubResource = opts.SubResource
	}
	if req.UserInfo.Username == "" {
		req.UserInfo.Username = defaultUser
	}
	switch {
	case gvk.Group == "" && gvk.Kind == "Namespace":
		// The API server sets a Namespace's own name as the namespace of
		// requests about it.
		req.Namespace = req.Name
	case clusterScopedKinds[gvk.GroupKind()]:
	default:
		req.Namespace = ref.metadataString("namespace")
		if req.Namespace == "" {
			req.Namespace = metav1.NamespaceDefault
		}
		if obj != nil && old != nil {
			if ons := old.metadataString("namespace"); ons != "" && ons != req.Namespace {
				return nil, fmt.Errorf("%s is in namespace %q but the old object, %s, is in %q", obj.Source, req.Namespace, old.Source, ons)
			}
		}
	}
	if obj != nil {
		req.Object = runtime.RawExtension{Raw: obj.Raw}
	}
	if old != nil && opts.Operation != admissionv1.Create {
		req.OldObject = runtime.RawExtension{Raw: old.Raw}
	}
	var options runtime.Object
	switch opts.Operation {
	case admissionv1.Create:
		options = &metav1.CreateOptions{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "CreateOptions"}}
	case admissionv1.Update:
		options = &metav1.UpdateOptions{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "UpdateOptions"}}
	case admissionv1.Delete:
		bg := metav1.DeletePropagationBackground
		options = &metav1.DeleteOptions{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "DeleteOptions"}, PropagationPolicy: &bg}
	}
	if options != nil {
		raw, err := json.Marshal(options)
		if err != nil {
			return nil, err
		}
		req.Options = runtime.RawExtension{Raw: raw}
	}
	return req, nil
}

// parseOperation reads --operation.
func parseOperation(s string) (admissionv1.Operation, error) {
	switch op := admissionv1.Operation(strings.ToUpper(s)); op {
	case admissionv1.Create, admissionv1.Update, admissionv1.Delete, admissionv1.Connect:
		return op, nil
	}
	return "", fmt.Errorf("--operation must be CREATE, UPDATE, DELETE or CONNECT, not %q", s)
}

// parseLabels reads --namespace-labels: comma-separated key=value pairs.
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("--namespace-labels: %q is not key=value", kv)
		}
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			return nil, fmt.Errorf("--namespace-labels: invalid label key %q: %s", k, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
			return nil, fmt.Errorf("--namespace-labels: invalid value %q for label %q: %s", v, k, strings.Join(msgs, "; "))
		}
		out[k] = v
	}
	return out, nil
}

// flagNamespaces serves every namespace as existing, with the labels given
// by --namespace-labels plus kubernetes.io/metadata.name, which Kubernetes
// sets on every namespace.
type flagNamespaces struct{ labels map[string]string }

func (f flagNamespaces) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	labels := make(map[string]string, len(f.labels)+1)
	for k, v := range f.labels {
		labels[k] = v
	}
	labels[corev1.LabelMetadataName] = name
	return &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}, nil
}

// inputReview is an AdmissionReview read from a file.
type inputReview struct {
	// APIVersion is admission.k8s.io/v1 or admission.k8s.io/v1beta1; the
	// response is written in the same version.
	APIVersion string
	Request    *admissionv1.AdmissionRequest
}

// loadReview reads an AdmissionReview (JSON or YAML), v1 or v1beta1.
func loadReview(path string) (*inputReview, error) {
	data, err := readInput(path)
	if err != nil {
		return nil, err
	}
	name := path
	if path == "-" {
		name = "<stdin>"
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s: empty file, want an AdmissionReview", name)
	}
	j := data
	if !utilyaml.IsJSONBuffer(data) {
		if j, err = yaml.YAMLToJSONStrict(data); err != nil {
			return nil, fmt.Errorf("%s: invalid YAML: %s", name, strings.TrimPrefix(err.Error(), "error converting YAML to JSON: yaml: "))
		}
	}
	var head struct {
		metav1.TypeMeta
		Request json.RawMessage `json:"request"`
	}
	if err := json.Unmarshal(j, &head); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%s:%d: invalid JSON: %v", name, lineAt(j, se.Offset), err)
		}
		return nil, fmt.Errorf("%s: not an AdmissionReview: %v", name, err)
	}
	switch head.APIVersion {
	case admissionv1.SchemeGroupVersion.String(), admissionv1beta1.SchemeGroupVersion.String():
	default:
		return nil, fmt.Errorf("%s: apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1, not %q", name, head.APIVersion)
	}
	if head.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("%s: kind must be AdmissionReview, not %q", name, head.Kind)
	}
	if len(head.Request) == 0 || string(head.Request) == "null" {
		return nil, fmt.Errorf("%s: the AdmissionReview has no request", name)
	}
	// v1beta1's AdmissionRequest has the same fields as v1's.
	req := &admissionv1.AdmissionRequest{}
	if err := json.Unmarshal(head.Request, req); err != nil {
		return nil, fmt.Errorf("%s: request: %v", name, err)
	}
	switch req.Operation {
	case admissionv1.Create, admissionv1.Update, admissionv1.Delete, admissionv1.Connect:
	default:
		return nil, fmt.Errorf("%s: request.operation must be CREATE, UPDATE, DELETE or CONNECT, not %q", name, req.Operation)
	}
	if req.Resource.Resource == "" {
		return nil, fmt.Errorf("%s: request.resource.resource is required", name)
	}
	for _, f := range []struct {
		field string
		raw   []byte
	}{{"object", req.Object.Raw}, {"oldObject", req.OldObject.Raw}} {
		if len(f.raw) == 0 || string(f.raw) == "null" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(f.raw, &m); err != nil {
			return nil, fmt.Errorf("%s: request.%s is not a JSON object: %v", name, f.field, err)
		}
	}
	return &inputReview{APIVersion: head.APIVersion, Request: req}, nil
}
