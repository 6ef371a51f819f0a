// Command openapi-snapshot writes engine/openapi/: the OpenAPI v3 schemas
// of the built-in kinds, taken from a real kube-apiserver (bin/, every API
// version enabled, as engine/internal/genresources takes the resources),
// which `celadon validate`, `eval` and `test` type-check policies against
// offline.
//
// It keeps, for each built-in resource, the group-version discovery serves
// it from (the group's preferred version when that serves it), and of each
// such group-version's document only components.schemas, without
// descriptions, gzipped. kinds.json maps each resource to its kind.
//
// Run it from the repository's root: make openapi-snapshot
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/controlplane"
)

const outDir = "engine/openapi"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "openapi-snapshot:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{APIServerArgs: controlplane.EveryAPI()})
	if err != nil {
		return err
	}
	defer func() { _ = cp.Stop() }()
	server := "unknown"
	if info, err := buildinfo.ReadFile(filepath.Join(cp.BinDir, controlplane.APIServerBinary)); err == nil {
		server = info.Main.Version
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cp.Config)
	if err != nil {
		return err
	}
	groups, lists, err := dc.ServerGroupsAndResources()
	if err != nil {
		return err
	}
	kinds := engine.KindsFromDiscovery(groups, lists)
	paths, err := dc.OpenAPIV3().Paths()
	if err != nil {
		return err
	}
	if err := os.RemoveAll(outDir); err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	index := map[string]string{}
	gvs := map[schema.GroupVersion]bool{}
	for res, gvk := range kinds {
		index[res] = gvk.Group + "/" + gvk.Version + "/" + gvk.Kind
		gvs[gvk.GroupVersion()] = true
	}
	var written []string
	for gv := range gvs {
		path := "apis/" + gv.Group + "/" + gv.Version
		if gv.Group == "" {
			path = "api/" + gv.Version
		}
		c, ok := paths[path]
		if !ok {
			return fmt.Errorf("/openapi/v3 has no %s", path)
		}
		doc, err := c.Schema("application/json")
		if err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		small, err := shrink(doc)
		if err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		name := strings.ReplaceAll(path, "/", "__") + "_openapi.json.gz"
		if err := writeGzip(filepath.Join(outDir, name), small); err != nil {
			return err
		}
		written = append(written, name)
	}
	sort.Strings(written)
	idx, err := json.MarshalIndent(struct {
		Server string            `json:"server"`
		Kinds  map[string]string `json:"kinds"`
	}{server, index}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "kinds.json"), append(idx, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("openapi-snapshot: %d resources, %d group-versions from kube-apiserver %s in %s\n", len(index), len(written), server, outDir)
	return nil
}

// shrink keeps of an OpenAPI v3 document only components.schemas, which
// the schema resolver reads, without descriptions.
func shrink(doc []byte) ([]byte, error) {
	var d struct {
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	for _, s := range d.Components.Schemas {
		stripDescriptions(s)
	}
	return json.Marshal(map[string]any{"components": map[string]any{"schemas": d.Components.Schemas}})
}

// stripDescriptions removes every description keyword; a property named
// description is an object, and stays.
func stripDescriptions(v any) {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["description"].(string); ok {
			delete(v, "description")
		}
		for _, e := range v {
			stripDescriptions(e)
		}
	case []any:
		for _, e := range v {
			stripDescriptions(e)
		}
	}
}

func writeGzip(name string, data []byte) error {
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(name, b.Bytes(), 0o644)
}
