package main

// The cluster state of `celadon eval --cluster` and of `celadon test`
// suites: objects read from files, served to namespaceSelector,
// namespaceObject and builtins that look objects up.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"celadon.io/celadon/engine"
)

// offlineCluster is a cluster state held in memory: its namespaces, for
// namespaceSelector and namespaceObject (engine.NamespaceGetter), and its
// objects, for builtins that look objects up (engine.ObjectGetter).
type offlineCluster struct {
	// otherNamespaces serves the namespaces the cluster does not hold; nil:
	// they do not exist.
	otherNamespaces engine.NamespaceGetter
	namespaces      map[string]*corev1.Namespace
	objects         map[clusterKey]*unstructured.Unstructured
}

type clusterKey struct{ group, resource, namespace, name string }

var (
	_ engine.NamespaceGetter = (*offlineCluster)(nil)
	_ engine.ObjectGetter    = (*offlineCluster)(nil)
	_ engine.ObjectLister    = (*offlineCluster)(nil)
)

func newOfflineCluster() *offlineCluster {
	return &offlineCluster{namespaces: map[string]*corev1.Namespace{}, objects: map[clusterKey]*unstructured.Unstructured{}}
}

// GetNamespace implements engine.NamespaceGetter.
func (c *offlineCluster) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	if ns, ok := c.namespaces[name]; ok {
		return ns.DeepCopy(), nil
	}
	if c.otherNamespaces != nil {
		return c.otherNamespaces.GetNamespace(ctx, name)
	}
	return nil, apierrors.NewNotFound(corev1.Resource("namespaces"), name)
}

// Get implements engine.ObjectGetter. Objects are found by group, resource,
// namespace and name, whatever the version asked for.
func (c *offlineCluster) Get(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	if o, ok := c.objects[clusterKey{gvr.Group, gvr.Resource, namespace, name}]; ok {
		return o.DeepCopy(), nil
	}
	if gvr.Group == "" && gvr.Resource == "namespaces" && c.otherNamespaces != nil {
		ns, err := c.otherNamespaces.GetNamespace(ctx, name)
		if err != nil {
			return nil, err
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ns)
		if err != nil {
			return nil, err
		}
		return &unstructured.Unstructured{Object: m}, nil
	}
	return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
}

// List implements engine.ObjectLister, by group and resource as Get finds
// objects. It has no cache to bypass, so it is not a LiveLister.
func (c *offlineCluster) List(ctx context.Context, gvr schema.GroupVersionResource, namespace string, selector labels.Selector, limit int) ([]*unstructured.Unstructured, int, error) {
	var all []*unstructured.Unstructured
	for k, o := range c.objects {
		if k.group == gvr.Group && k.resource == gvr.Resource && k.namespace == namespace && selector.Matches(labels.Set(o.GetLabels())) {
			all = append(all, o)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].GetName() < all[j].GetName() })
	limit = max(limit, 0)
	out := make([]*unstructured.Unstructured, 0, min(limit, len(all)))
	for _, o := range all[:min(limit, len(all))] {
		out = append(out, o.DeepCopy())
	}
	return out, len(all), nil
}

// add puts an object in the cluster; a Namespace is also a namespace. A
// namespaced object without a namespace is in "default". An object the
// cluster already has is an error.
func (c *offlineCluster) add(o inputObject) error {
	k, err := keyOf(o)
	if err != nil {
		return err
	}
	if _, dup := c.objects[k]; dup {
		return fmt.Errorf("%s: the cluster already has %s %s", o.Source, o.gvk().Kind, clusterObjectName(k.namespace, k.name))
	}
	return c.put(o)
}

// keyOf returns where the cluster keeps an object.
func keyOf(o inputObject) (clusterKey, error) {
	gvk := o.gvk()
	gvr, _ := resourceFor(gvk)
	name := o.metadataString("name")
	if name == "" {
		return clusterKey{}, fmt.Errorf("%s: metadata.name is required", o.Source)
	}
	k := clusterKey{group: gvr.Group, resource: gvr.Resource, name: name}
	if !clusterScopedKinds[gvk.GroupKind()] {
		if k.namespace = o.metadataString("namespace"); k.namespace == "" {
			k.namespace = corev1.NamespaceDefault
		}
	}
	return k, nil
}

// put puts an object in the cluster as add does, replacing one it has.
func (c *offlineCluster) put(o inputObject) error {
	k, err := keyOf(o)
	if err != nil {
		return err
	}
	gvk, name := o.gvk(), k.name
	u := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(o.Object)}
	if k.namespace != "" {
		u.SetNamespace(k.namespace)
	}
	if gvk.Group == "" && gvk.Kind == "Namespace" {
		ns := &corev1.Namespace{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ns); err != nil {
			return fmt.Errorf("%s: %v", o.Source, err)
		}
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[corev1.LabelMetadataName] = name
		if ns.Status.Phase == "" {
			ns.Status.Phase = corev1.NamespaceActive
		}
		u.SetLabels(ns.Labels)
		c.namespaces[name] = ns
	}
	c.objects[k] = u
	return nil
}

func clusterObjectName(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// loadCluster reads the objects of --cluster: files, or directories whose
// *.yaml, *.yml and *.json files are read in name order (not recursively).
func loadCluster(c *offlineCluster, paths []string) error {
	for _, p := range paths {
		files := []string{p}
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			files = files[:0]
			for _, e := range entries {
				switch strings.ToLower(filepath.Ext(e.Name())) {
				case ".yaml", ".yml", ".json":
					if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
						files = append(files, filepath.Join(p, e.Name()))
					}
				}
			}
			if len(files) == 0 {
				return fmt.Errorf("%s: no *.yaml, *.yml or *.json files", p)
			}
			sort.Strings(files)
		}
		for _, f := range files {
			objs, err := loadObjects(f)
			if err != nil {
				return err
			}
			for _, o := range objs {
				if err := c.add(o); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
