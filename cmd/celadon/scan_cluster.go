package main

// The cluster `celadon scan` reads: discovery, the namespaces, and paged
// LISTs of each resource a policy matches, evaluated page by page.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"celadon.io/celadon/cluster"
	"celadon.io/celadon/engine"
)

// cacheSyncTimeout bounds the wait for the caches of the resources
// builtins look up (checkIngressBackends' Services...).
const cacheSyncTimeout = 2 * time.Minute

// restConfig loads the kubeconfig as kubectl does: --kubeconfig, else
// $KUBECONFIG, else ~/.kube/config, else the in-cluster configuration.
func (o *scanOptions) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, &exitError{code: 2, err: errNoCluster}
		}
		return nil, usageErrorf("kubeconfig: %v", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "celadon-scan"
	return cfg, nil
}

// scanCluster scans the objects of every resource the cluster serves that
// a policy matches, one page at a time.
func (s *scanner) scanCluster(ctx context.Context, o *scanOptions, stderr io.Writer) error {
	s.source = "cluster"
	cfg, err := o.restConfig()
	if err != nil {
		return err
	}
	s.server = cfg.Host
	// Every request of the scan, discovery and LISTs alike, waits for its
	// turn under --qps.
	lcfg := rest.CopyConfig(cfg)
	lcfg.QPS, lcfg.Burst = o.qps, max(1, int(2*o.qps))
	lcfg.Timeout = o.timeout // not the caches' watches: cfg
	dc, err := discovery.NewDiscoveryClientForConfig(lcfg)
	if err != nil {
		return usageErrorf("kubeconfig: %v", err)
	}
	lists, err := discovery.ServerPreferredResourcesWithContext(ctx, dc)
	failed, partial := discovery.GroupDiscoveryFailedErrorGroups(err)
	if err != nil && !partial {
		return &exitError{code: 2, err: fmt.Errorf("cannot reach the API server at %s: %v", cfg.Host, err)}
	}
	failedGroups := map[string]bool{}
	for _, gv := range slices.SortedFunc(maps.Keys(failed), func(a, b schema.GroupVersion) int { return strings.Compare(a.String(), b.String()) }) {
		failedGroups[gv.Group] = true
		fmt.Fprintf(stderr, "celadon: warning: the API server could not say what %s serves: %v; its resources are not scanned\n", gv, failed[gv])
	}
	served := map[schema.GroupResource]bool{}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") {
				continue // a subresource
			}
			served[schema.GroupResource{Group: gv.Group, Resource: r.Name}] = true
			gvr := gv.WithResource(r.Name)
			if !slices.Contains(r.Verbs, "list") || (o.namespace != "" && !r.Namespaced) || !s.matches(gvr) {
				continue
			}
			s.resources = append(s.resources, &scanResource{gvr: gvr, gvk: gv.WithKind(r.Kind), namespaced: r.Namespaced})
		}
	}
	sort.Slice(s.resources, func(i, j int) bool {
		a, b := s.resources[i].gvr, s.resources[j].gvr
		return a.Group < b.Group || a.Group == b.Group && a.Resource < b.Resource
	})
	// A policy naming a resource the cluster does not serve (a typo, a
	// CRD not installed) finds nothing: say so rather than pass silently.
	for _, p := range s.applicable {
		for _, r := range p.p.Resources() {
			if r.Group == "*" || r.Resource == "*" || r.Subresource != "" || failedGroups[r.Group] {
				continue
			}
			if !served[schema.GroupResource{Group: r.Group, Resource: r.Resource}] {
				name := r.Resource
				if r.Group != "" {
					name = r.Group + "/" + r.Resource
				}
				fmt.Fprintf(stderr, "celadon: warning: policy %q matches %s, which the API server does not serve: nothing of it to scan\n", p.name, name)
			}
		}
	}

	cs, err := kubernetes.NewForConfig(lcfg)
	if err != nil {
		return usageErrorf("kubeconfig: %v", err)
	}
	rc := cs.CoreV1().RESTClient()
	nsGetter, err := s.loadNamespaces(ctx, rc, o.namespace, o.chunkSize, stderr)
	if err != nil {
		return err
	}
	s.opts.Namespaces = nsGetter

	var reads []engine.ClusterRead
	for _, p := range s.applicable {
		reads = append(reads, p.p.ClusterReads()...)
	}
	if len(reads) > 0 {
		cctx, stop := context.WithCancel(ctx)
		c := cluster.New(false)
		defer func() { stop(); c.Wait() }()
		ready, err := c.Start(cctx, cfg, reads)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		if err := waitReady(ctx, ready, cacheSyncTimeout); err != nil {
			return &exitError{code: 2, err: fmt.Errorf("the objects builtins look up: %v", err)}
		}
		s.opts.Cluster = readOnlyCluster{c}
	}

	prog := newProgress(stderr)
	defer prog.finish()
	for _, res := range s.resources {
		if ctx.Err() != nil {
			return nil
		}
		if err := s.listResource(ctx, rc, res, o.namespace, o.chunkSize, prog); err != nil {
			return err
		}
	}
	return nil
}

// waitReady waits until ready says nil, at most timeout.
func waitReady(ctx context.Context, ready func() error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// resourcePath is the API path of a resource's objects, in a namespace
// or all of them.
func resourcePath(gvr schema.GroupVersionResource, namespace string) string {
	p := "/apis/" + gvr.Group + "/" + gvr.Version
	if gvr.Group == "" {
		p = "/api/" + gvr.Version
	}
	if namespace != "" {
		p += "/namespaces/" + namespace
	}
	return p + "/" + gvr.Resource
}

// rawResult returns a response's body, or its error with the API
// server's Status decoded (Raw alone says "unknown" for a 403).
func rawResult(r rest.Result) ([]byte, error) {
	body, err := r.Raw()
	if err != nil {
		return nil, r.Error()
	}
	return body, nil
}

// scanPage is one page of a LIST.
type scanPage struct {
	items     []json.RawMessage
	remaining int64 // objects after this page; -1 when the API server does not say
	note      string
	err       error
}

// listPages LISTs path in pages of chunk objects, following continue
// tokens, and sends each page to out, which it closes. A continue token
// that expires part-way (the API server compacted the history the list
// started from) is followed by the inconsistent one the API server offers,
// with a note: objects changed during the list may be missed or seen
// twice, which is better than starting a long scan over.
func listPages(ctx context.Context, rc rest.Interface, path string, chunk int64, out chan<- scanPage) {
	defer close(out)
	send := func(p scanPage) bool {
		select {
		case out <- p:
			return true
		case <-ctx.Done():
			return false
		}
	}
	cont, note := "", ""
	for {
		req := rc.Get().AbsPath(path).Param("limit", strconv.FormatInt(chunk, 10)).SetHeader("Accept", "application/json")
		if cont != "" {
			req = req.Param("continue", cont)
		}
		body, err := rawResult(req.Do(ctx))
		if err != nil {
			var st apierrors.APIStatus
			if cont != "" && (apierrors.IsResourceExpired(err) || apierrors.IsGone(err)) && errors.As(err, &st) && st.Status().ListMeta.Continue != "" {
				cont = st.Status().ListMeta.Continue
				note = fmt.Sprintf("the list of %s is not consistent: its continue token expired part-way, so objects changed during the scan may be missed or seen twice", path)
				continue
			}
			send(scanPage{err: err})
			return
		}
		var page struct {
			Metadata metav1.ListMeta   `json:"metadata"`
			Items    []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			send(scanPage{err: fmt.Errorf("the API server's answer is not a list: %v", err)})
			return
		}
		p := scanPage{items: page.Items, remaining: -1, note: note}
		note = ""
		if page.Metadata.RemainingItemCount != nil {
			p.remaining = *page.Metadata.RemainingItemCount
		}
		if !send(p) || page.Metadata.Continue == "" {
			return
		}
		cont = page.Metadata.Continue
	}
}

// listResource LISTs a resource's objects and evaluates them, one page
// while the next is read: at most three pages are in memory, whatever the
// number of objects. A resource that cannot be listed is a problem of the
// scan, and the others are scanned still.
func (s *scanner) listResource(ctx context.Context, rc rest.Interface, res *scanResource, namespace string, chunk int64, prog *progress) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make(chan scanPage, 1)
	go listPages(lctx, rc, resourcePath(res.gvr, namespace), chunk, pages)
	defer func() {
		cancel()
		for range pages { // let listPages return
		}
	}()
	for p := range pages {
		if p.err != nil {
			msg := p.err.Error()
			if res.objects > 0 {
				msg = fmt.Sprintf("after %d objects: %s", res.objects, msg)
			}
			s.problems = append(s.problems, scanProblem{resource: res.String(), err: msg})
			return nil
		}
		s.listRequests++
		if p.note != "" {
			s.notes = append(s.notes, p.note)
		}
		for i, raw := range p.items {
			it, err := newLiveItem(raw, res)
			if err != nil {
				s.problems = append(s.problems, scanProblem{resource: res.String(), err: err.Error()})
				return nil
			}
			if err := s.evaluate(ctx, res, &it); err != nil {
				return &exitError{code: 2, err: err}
			}
			p.items[i] = nil
			if ctx.Err() != nil {
				return nil
			}
		}
		total := -1
		if p.remaining >= 0 {
			total = res.objects + int(p.remaining)
		}
		prog.update(res.String(), res.objects, total, s.scanned, s.denied)
	}
	return nil
}

// newLiveItem reads an object of a LIST. The API server leaves out the
// apiVersion and kind of built-in types' items: they are put back, as
// the object of an admission request has them.
func newLiveItem(raw []byte, res *scanResource) (scanItem, error) {
	it := scanItem{raw: raw, file: -1, gvk: res.gvk}
	var h objectHead
	if err := json.Unmarshal(raw, &h); err != nil {
		return it, fmt.Errorf("an item of the list: %v", err)
	}
	var prefix []string
	if s, _ := h.APIVersion.(string); s == "" {
		prefix = append(prefix, `"apiVersion":`+strconv.Quote(res.gvk.GroupVersion().String()))
	}
	if s, _ := h.Kind.(string); s == "" {
		prefix = append(prefix, `"kind":`+strconv.Quote(res.gvk.Kind))
	}
	if len(prefix) > 0 {
		body := bytes.TrimSpace(raw)[1:] // after '{'
		sep := ","
		if len(bytes.TrimSpace(body)) > 0 && bytes.TrimSpace(body)[0] == '}' {
			sep = ""
		}
		it.raw = slices.Concat([]byte("{"+strings.Join(prefix, ",")+sep), body)
	}
	if err := it.readMetadata(h.Metadata); err != nil {
		return it, err
	}
	return it, nil
}

// liveNamespaces serves the cluster's namespaces, listed before the scan;
// one created since, or all of them when the scan may not list them, is
// read when first asked for.
type liveNamespaces struct {
	rc rest.Interface
	mu sync.Mutex
	ns map[string]*corev1.Namespace
	// missing are the namespaces that could not be read, and why: not
	// found, or forbidden. Their objects' policies with a namespaceSelector
	// error under their failurePolicy, as in the server.
	missing map[string]error
}

var _ engine.NamespaceGetter = (*liveNamespaces)(nil)

// GetNamespace implements engine.NamespaceGetter.
func (l *liveNamespaces) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ns, ok := l.ns[name]; ok {
		return ns, nil
	}
	if err, ok := l.missing[name]; ok {
		return nil, err
	}
	ns, err := getNamespace(ctx, l.rc, name)
	if err != nil {
		// Not read again for each of its objects.
		l.missing[name] = err
		return nil, err
	}
	l.ns[name] = ns
	return ns, nil
}

func getNamespace(ctx context.Context, rc rest.Interface, name string) (*corev1.Namespace, error) {
	body, err := rawResult(rc.Get().AbsPath("/api/v1/namespaces/"+name).SetHeader("Accept", "application/json").Do(ctx))
	if err != nil {
		return nil, err
	}
	return decodeNamespace(body)
}

func decodeNamespace(raw []byte) (*corev1.Namespace, error) {
	ns := &corev1.Namespace{}
	if err := json.Unmarshal(raw, ns); err != nil {
		return nil, err
	}
	ns.ManagedFields = nil
	ns.APIVersion, ns.Kind = "v1", "Namespace"
	return ns, nil
}

// loadNamespaces lists the cluster's namespaces, or reads the one the scan
// is restricted to. Forbidden to, the scan goes on, its namespaces read one
// by one when needed (as a namespace admin may not list them): the
// objects of those it cannot read get errors from the policies that need
// their labels, which stderr warns of.
func (s *scanner) loadNamespaces(ctx context.Context, rc rest.Interface, only string, chunk int64, stderr io.Writer) (*liveNamespaces, error) {
	l := &liveNamespaces{rc: rc, ns: map[string]*corev1.Namespace{}, missing: map[string]error{}}
	forbidden := func(err error) {
		fmt.Fprintf(stderr, "celadon: warning: %v: the labels of namespaces the scan cannot read are unknown, and policies with a namespaceSelector fail on their objects\n", err)
	}
	if only != "" {
		ns, err := getNamespace(ctx, rc, only)
		switch {
		case apierrors.IsForbidden(err):
			forbidden(err)
			l.missing[only] = err
		case err != nil:
			return nil, &exitError{code: 2, err: fmt.Errorf("namespace %s: %v", only, err)}
		default:
			l.ns[only] = ns
		}
		return l, nil
	}
	pages := make(chan scanPage, 1)
	go listPages(ctx, rc, "/api/v1/namespaces", chunk, pages)
	var err error
	for p := range pages {
		if p.err != nil {
			err = p.err
			continue
		}
		s.listRequests++
		for _, raw := range p.items {
			ns, derr := decodeNamespace(raw)
			if derr != nil {
				err = derr
				continue
			}
			l.ns[ns.Name] = ns
		}
	}
	switch {
	case apierrors.IsForbidden(err):
		forbidden(err)
	case err != nil:
		return nil, &exitError{code: 2, err: fmt.Errorf("listing namespaces (their labels are what namespaceSelector and namespaceObject see): %v", err)}
	}
	return l, nil
}

// readOnlyCluster serves the lookups of builtins from the caches, and
// nothing else: a scan never writes (it is no engine.ObjectPatcher).
type readOnlyCluster struct{ c *cluster.Cache }

var (
	_ engine.ObjectGetter = readOnlyCluster{}
	_ engine.LiveGetter   = readOnlyCluster{}
	_ engine.ObjectLister = readOnlyCluster{}
	_ engine.LiveLister   = readOnlyCluster{}
)

func (r readOnlyCluster) Get(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	return r.c.Get(ctx, gvr, namespace, name)
}

func (r readOnlyCluster) GetLive(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	return r.c.GetLive(ctx, gvr, namespace, name)
}

func (r readOnlyCluster) List(ctx context.Context, gvr schema.GroupVersionResource, namespace string, selector labels.Selector, limit int) ([]*unstructured.Unstructured, int, error) {
	return r.c.List(ctx, gvr, namespace, selector, limit)
}

func (r readOnlyCluster) ListLive(ctx context.Context, gvr schema.GroupVersionResource, namespace string, selector labels.Selector, limit int) ([]*unstructured.Unstructured, int, error) {
	return r.c.ListLive(ctx, gvr, namespace, selector, limit)
}
