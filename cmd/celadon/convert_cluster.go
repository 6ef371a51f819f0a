package main

// `celadon convert --params-from-cluster`: parameter objects read from the
// cluster rather than from files.

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// convertRestConfig loads the kubeconfig as kubectl does: --kubeconfig,
// else $KUBECONFIG, else ~/.kube/config, else the in-cluster configuration.
func convertRestConfig(kubeconfig, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, usageErrorf("--params-from-cluster: no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not running in a cluster")
		}
		return nil, usageErrorf("kubeconfig: %v", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "celadon-convert"
	return cfg, nil
}

// paramKinds returns the paramKind of every policy among docs, once each.
func paramKinds(docs []convertDoc) ([]schema.GroupVersionKind, error) {
	policies, _, err := decodeAdmissionDocs(docs)
	if err != nil {
		return nil, err
	}
	seen := map[schema.GroupVersionKind]bool{}
	var out []schema.GroupVersionKind
	for _, k := range sortedKeys(boolKeys(policies)) {
		pk := policies[k].paramKind
		if pk == nil {
			continue
		}
		gv, err := schema.ParseGroupVersion(pk.APIVersion)
		if err != nil {
			return nil, fmt.Errorf("%s: paramKind.apiVersion: %v", policies[k].source, err)
		}
		if gvk := gv.WithKind(pk.Kind); !seen[gvk] {
			seen[gvk] = true
			out = append(out, gvk)
		}
	}
	return out, nil
}

func boolKeys[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// clusterParams lists every object of each kind, in every namespace:
// findParams then picks what each paramRef names, as from files.
func clusterParams(ctx context.Context, cfg *rest.Config, kinds []schema.GroupVersionKind) ([]paramObject, error) {
	if len(kinds) == 0 {
		return nil, nil
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var out []paramObject
	for _, gvk := range kinds {
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return nil, fmt.Errorf("paramKind %s: %v", gvk, err)
		}
		list, err := client.Resource(m.Resource).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing %s at %s: %v", m.Resource.GroupResource(), cfg.Host, err)
		}
		for _, it := range list.Items {
			obj := it.Object
			if meta, ok := obj["metadata"].(map[string]any); ok {
				delete(meta, "managedFields")
			}
			src := fmt.Sprintf("cluster %s %s", m.Resource.GroupResource(), it.GetName())
			if ns := it.GetNamespace(); ns != "" {
				src = fmt.Sprintf("cluster %s %s/%s", m.Resource.GroupResource(), ns, it.GetName())
			}
			out = append(out, paramObject{source: src, obj: obj})
		}
	}
	return out, nil
}
