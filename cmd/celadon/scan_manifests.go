package main

// The manifests `celadon scan -f` reads: files, directories and standard
// input, split into documents as eval splits them, each object kept as its
// JSON and the few fields its request needs.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "sigs.k8s.io/json"
)

// scanManifests reads every manifest, then evaluates its objects in order.
// Every file is read before the first object is evaluated: a Namespace
// may come after the objects in it.
func (s *scanner) scanManifests(ctx context.Context, paths []string, recursive bool, namespace string, nsLabels map[string]string) error {
	s.source = "manifests"
	files, err := manifestFiles(paths, recursive)
	if err != nil {
		return usageErrorf("%v", err)
	}
	var items []scanItem
	for _, f := range files {
		name := f
		if f == "-" {
			name = "<stdin>"
		}
		fi := int32(len(s.files))
		s.files = append(s.files, name)
		data, err := readInput(f)
		if err != nil {
			return usageErrorf("%v", err)
		}
		docs, err := splitDocuments(name, data)
		if err != nil {
			return usageErrorf("%v", err)
		}
		data = nil
		for _, d := range docs {
			err := scanDocument(d, func(it scanItem) {
				it.file = fi
				items = append(items, it)
			})
			if err != nil {
				return usageErrorf("%v", err)
			}
		}
	}
	if len(items) == 0 {
		return usageErrorf("%s: no objects found", strings.Join(paths, ", "))
	}
	if namespace == "" {
		namespace = corev1.NamespaceDefault
	}

	// The namespaces, and the objects builtins look up.
	cluster := newOfflineCluster()
	cluster.otherNamespaces = flagNamespaces{labels: nsLabels}
	reads := map[schema.GroupResource]bool{}
	for _, p := range s.applicable {
		for _, r := range p.p.ClusterReads() {
			reads[r.Resource.GroupResource()] = true
		}
	}
	resources := map[schema.GroupVersionKind]*scanResource{}
	for i := range items {
		it := &items[i]
		res := resources[it.gvk]
		if res == nil {
			gvr, _ := resourceFor(it.gvk)
			res = &scanResource{gvr: gvr, gvk: it.gvk, namespaced: !clusterScopedKinds[it.gvk.GroupKind()]}
			resources[it.gvk] = res
			s.resources = append(s.resources, res)
		}
		if res.namespaced && it.namespace == "" {
			it.namespace = namespace
		}
		isNamespace := it.gvk.Group == "" && it.gvk.Kind == "Namespace"
		if !isNamespace && !reads[res.gvr.GroupResource()] {
			continue
		}
		o, err := s.inputObject(it, res.namespaced)
		if err != nil {
			return usageErrorf("%v", err)
		}
		if err := cluster.put(o); err != nil {
			return usageErrorf("%v", err)
		}
	}
	s.opts.Namespaces = cluster
	if len(reads) > 0 {
		s.opts.Cluster = cluster
	}
	for i := range items {
		if err := ctx.Err(); err != nil {
			return nil
		}
		it := &items[i]
		if err := s.evaluate(ctx, resources[it.gvk], it); err != nil {
			return &exitError{code: 2, err: err}
		}
		items[i] = scanItem{} // its JSON is no longer needed
	}
	sort.SliceStable(s.resources, func(i, j int) bool { return s.resources[i].String() < s.resources[j].String() })
	return nil
}

// inputObject decodes an item for the offline cluster, in its namespace.
func (s *scanner) inputObject(it *scanItem, namespaced bool) (inputObject, error) {
	src := sourceOf(s.files[it.file], it.document, it.index)
	var m map[string]any
	if err := kjson.UnmarshalCaseSensitivePreserveInts(it.raw, &m); err != nil {
		return inputObject{}, fmt.Errorf("%s: %v", src, err)
	}
	if namespaced {
		md, _ := m["metadata"].(map[string]any)
		if md == nil {
			md = map[string]any{}
			m["metadata"] = md
		}
		md["namespace"] = it.namespace
	}
	return inputObject{Source: src, Raw: it.raw, Object: m}, nil
}

// manifestFiles expands directories into their *.yaml, *.yml and *.json
// files, in name order; recursive descends into subdirectories (not
// hidden ones).
func manifestFiles(paths []string, recursive bool) ([]string, error) {
	var out []string
	for _, p := range paths {
		if p == "-" {
			out = append(out, p)
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			out = append(out, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			hidden := strings.HasPrefix(d.Name(), ".") && path != p
			if d.IsDir() {
				if path != p && (!recursive || hidden) {
					return filepath.SkipDir
				}
				return nil
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml", ".json":
				if !hidden {
					found = append(found, path)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s: no *.yaml, *.yml or *.json files", p)
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}

// scanDocument passes the document's object, or each item of a List, to
// add. Errors name the file, the document and the item, as eval's do.
func scanDocument(d inputDocument, add func(scanItem)) error {
	j := bytes.TrimSpace(d.json)
	if len(j) == 0 || j[0] != '{' {
		var v any
		if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &v); err != nil {
			return fmt.Errorf("%s: %v", d.source(), err)
		}
		return fmt.Errorf("%s:%d: document %d: want a Kubernetes object (a mapping with apiVersion and kind), got %s", d.file, d.line, d.index, jsonKind(v))
	}
	var head struct {
		Kind  any             `json:"kind"`
		Items json.RawMessage `json:"items"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &head); err != nil {
		return fmt.Errorf("%s: %v", d.source(), err)
	}
	kind, _ := head.Kind.(string)
	hasItems := len(head.Items) > 0 && string(head.Items) != "null"
	if kind == "List" || strings.HasSuffix(kind, "List") && hasItems {
		items := bytes.TrimSpace(head.Items)
		if len(items) == 0 || items[0] != '[' {
			return fmt.Errorf("%s:%d: document %d: %s has no items list", d.file, d.line, d.index, kind)
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(items, &raws); err != nil {
			return fmt.Errorf("%s:%d: document %d: items: %v", d.file, d.line, d.index, err)
		}
		for i, raw := range raws {
			it, err := newScanItem(raw)
			if err != nil {
				return fmt.Errorf("%s, item %d: %v", d.source(), i+1, err)
			}
			it.line, it.document, it.index = int32(d.line), int32(d.index), int32(i+1)
			raws[i] = nil
			add(it)
		}
		return nil
	}
	it, err := newScanItem(j)
	if err != nil {
		return fmt.Errorf("%s:%d: document %d: %v", d.file, d.line, d.index, err)
	}
	it.line, it.document = int32(d.line), int32(d.index)
	add(it)
	return nil
}

// objectHead is what a scan reads of an object besides its JSON.
type objectHead struct {
	APIVersion any             `json:"apiVersion"`
	Kind       any             `json:"kind"`
	Metadata   json.RawMessage `json:"metadata"`
}

type objectMeta struct {
	Name      any `json:"name"`
	Namespace any `json:"namespace"`
	UID       any `json:"uid"`
}

// newScanItem reads an object's type and name, checked as eval checks
// them (inputObject.check). The item keeps raw.
func newScanItem(raw []byte) (scanItem, error) {
	it := scanItem{raw: raw, file: -1}
	j := bytes.TrimSpace(raw)
	if len(j) == 0 || j[0] != '{' {
		var v any
		_ = kjson.UnmarshalCaseSensitivePreserveInts(j, &v)
		return it, fmt.Errorf("want a Kubernetes object, got %s", jsonKind(v))
	}
	var h objectHead
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &h); err != nil {
		return it, err
	}
	apiVersion, _ := h.APIVersion.(string)
	kind, _ := h.Kind.(string)
	if apiVersion == "" || kind == "" {
		return it, fmt.Errorf("apiVersion and kind are required")
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return it, fmt.Errorf("apiVersion: %v", err)
	}
	it.gvk = gv.WithKind(kind)
	if err := it.readMetadata(h.Metadata); err != nil {
		return it, err
	}
	return it, nil
}

// readMetadata reads the name, namespace and UID of an object's metadata.
func (it *scanItem) readMetadata(md json.RawMessage) error {
	md = bytes.TrimSpace(md)
	if len(md) == 0 || string(md) == "null" {
		return nil
	}
	if md[0] != '{' {
		return fmt.Errorf("metadata must be a mapping")
	}
	var m objectMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(md, &m); err != nil {
		return fmt.Errorf("metadata: %v", err)
	}
	it.name, _ = m.Name.(string)
	it.namespace, _ = m.Namespace.(string)
	it.uid, _ = m.UID.(string)
	return nil
}
