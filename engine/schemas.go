package engine

import (
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	apiservercel "k8s.io/apiserver/pkg/cel"
	"k8s.io/apiserver/pkg/cel/common"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/apiserver/pkg/cel/openapi"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	openapiclient "k8s.io/client-go/openapi"
	"k8s.io/client-go/openapi/cached"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// Type checking: a policy's CEL is compiled once more against the OpenAPI
// schema of each kind it matches, object and oldObject typed as that kind,
// as the API server type-checks a ValidatingAdmissionPolicy
// (k8s.io/apiserver/pkg/admission/plugin/policy/validating/typechecking.go).
// Those typed compilations only check: the programs that run are compiled
// with object as dyn, so evaluation is unchanged.

// Schemas are the OpenAPI schemas policies are type-checked against: the
// kind of each resource, and the kind's schema. Safe for concurrent use;
// the typed environment of each kind is built once.
type Schemas struct {
	// kinds maps "group/resource" to the kind served for it.
	kinds    map[string]schema.GroupVersionKind
	resolver resolver.SchemaResolver
	// served is what a cluster's discovery serves: group, resource, its
	// subresources. match.resources entries of a group it serves that is
	// not built in (a CRD's) are checked against it. nil when the schemas
	// do not come from a discovery (the snapshot), or when it could not
	// be read: then such entries are not checked.
	served map[string]map[string][]string

	mu    sync.Mutex
	typed map[schema.GroupVersionKind]*kindEnv
}

// kindEnv is the CEL environment of one kind: object and oldObject typed.
type kindEnv struct {
	gvk schema.GroupVersionKind
	// set declares object, oldObject, request and namespaceObject; nil
	// when the kind's schema is unknown.
	set *environment.EnvSet
	// shared adds an empty variables object, for policies without
	// variables.
	shared *policyEnv
}

// NewSchemas returns the schemas of a resolver, with kinds mapping
// "group/resource" ("" group for the core one, e.g. "/pods") to its kind.
func NewSchemas(kinds map[string]schema.GroupVersionKind, r resolver.SchemaResolver) *Schemas {
	return &Schemas{kinds: kinds, resolver: r, typed: map[schema.GroupVersionKind]*kindEnv{}}
}

// KindsFromDiscovery maps each resource ("group/resource") of a discovery
// to the kind of its group's preferred version, or of the first version
// serving it when the preferred one does not.
func KindsFromDiscovery(groups []*metav1.APIGroup, lists []*metav1.APIResourceList) map[string]schema.GroupVersionKind {
	byGV := map[string]*metav1.APIResourceList{}
	for _, l := range lists {
		if l != nil {
			byGV[l.GroupVersion] = l
		}
	}
	kinds := map[string]schema.GroupVersionKind{}
	for _, g := range groups {
		versions := append([]metav1.GroupVersionForDiscovery{g.PreferredVersion}, g.Versions...)
		for _, v := range versions {
			l := byGV[v.GroupVersion]
			if l == nil {
				continue
			}
			for _, r := range l.APIResources {
				if strings.Contains(r.Name, "/") {
					continue
				}
				key := g.Name + "/" + r.Name
				if _, ok := kinds[key]; !ok {
					kinds[key] = schema.GroupVersionKind{Group: g.Name, Version: v.Version, Kind: r.Kind}
				}
			}
		}
	}
	return kinds
}

// DiscoverySchemas returns the schemas a cluster serves (/openapi/v3),
// CRDs' included, with its discovery's resources.
func DiscoverySchemas(dc discovery.DiscoveryInterface) (*Schemas, error) {
	groups, lists, err := dc.ServerGroupsAndResources()
	if err != nil && len(lists) == 0 {
		return nil, err
	}
	// A group that fails (an aggregated API down) is left out: its
	// kinds are dyn, and its resources are not checked.
	var failed map[schema.GroupVersion]error
	var gdf *discovery.ErrGroupDiscoveryFailed
	if errors.As(err, &gdf) {
		failed = gdf.Groups
	}
	c := cached.NewClient(dc.OpenAPIV3())
	s := NewSchemas(KindsFromDiscovery(groups, lists), &resolver.ClientDiscoveryResolver{Discovery: openAPIDiscovery{c: c}})
	s.served = ServedFromDiscovery(lists, failed)
	return s, nil
}

// ServedFromDiscovery maps each group a discovery serves to its resources
// and their subresources, leaving out the groups of which a version
// failed (failed, as discovery.ErrGroupDiscoveryFailed lists them).
func ServedFromDiscovery(lists []*metav1.APIResourceList, failed map[schema.GroupVersion]error) map[string]map[string][]string {
	bad := map[string]bool{}
	for gv := range failed {
		bad[gv.Group] = true
	}
	served := map[string]map[string][]string{}
	for _, l := range lists {
		if l == nil {
			continue
		}
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil || bad[gv.Group] {
			continue
		}
		if served[gv.Group] == nil {
			served[gv.Group] = map[string][]string{}
		}
		for _, r := range l.APIResources {
			res, sub, isSub := strings.Cut(r.Name, "/")
			subs := served[gv.Group][res]
			if isSub && !slices.Contains(subs, sub) {
				subs = append(subs, sub)
			}
			served[gv.Group][res] = subs
		}
	}
	return served
}

// WithServed returns schemas of s's kinds that check the resources of
// groups not built in against served (ServedFromDiscovery); nil served
// checks none.
func (s *Schemas) WithServed(served map[string]map[string][]string) *Schemas {
	c := NewSchemas(s.kinds, s.resolver)
	c.served = served
	return c
}

// Discovered says whether the resources of groups not built in are
// checked against a cluster's discovery.
func (s *Schemas) Discovered() bool { return s != nil && s.served != nil }

// openAPIDiscovery is a discovery that serves only OpenAPI v3, which is
// all ClientDiscoveryResolver asks of it.
type openAPIDiscovery struct {
	discovery.DiscoveryInterface // nil: only OpenAPIV3 is called
	c                            openapiclient.Client
}

func (d openAPIDiscovery) OpenAPIV3() openapiclient.Client { return d.c }

//go:embed openapi
var snapshotFS embed.FS

// snapshotDir holds the OpenAPI v3 snapshot of the built-in kinds, written
// by `make openapi-snapshot` (hack/openapi-snapshot): kinds.json maps each
// resource to its kind, and each group-version's document, only its
// components.schemas without descriptions, is a gzipped file named after
// its path, as client-go's openapitest names them.
const snapshotDir = "openapi"

// snapshotIndex is kinds.json.
type snapshotIndex struct {
	// Server is the kube-apiserver the snapshot was taken from.
	Server string `json:"server"`
	// Kinds maps "group/resource" to "group/version/Kind".
	Kinds map[string]string `json:"kinds"`
}

// BuiltinSchemas returns the schemas of the built-in kinds, from the
// snapshot in the binary: what `celadon validate`, `eval` and `test`
// check against, offline.
var BuiltinSchemas = sync.OnceValue(func() *Schemas {
	s, err := loadSnapshot(snapshotFS)
	if err != nil {
		panic(fmt.Sprintf("engine: the OpenAPI snapshot does not load: %v", err))
	}
	return s
})

func loadSnapshot(fsys fs.FS) (*Schemas, error) {
	sub, err := fs.Sub(fsys, snapshotDir)
	if err != nil {
		return nil, err
	}
	data, err := fs.ReadFile(sub, "kinds.json")
	if err != nil {
		return nil, err
	}
	var idx snapshotIndex
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("kinds.json: %v", err)
	}
	kinds := map[string]schema.GroupVersionKind{}
	for res, k := range idx.Kinds {
		parts := strings.Split(k, "/")
		if len(parts) != 3 {
			return nil, fmt.Errorf("kinds.json: %s: %q is not group/version/Kind", res, k)
		}
		kinds[res] = schema.GroupVersionKind{Group: parts[0], Version: parts[1], Kind: parts[2]}
	}
	return NewSchemas(kinds, &resolver.ClientDiscoveryResolver{Discovery: openAPIDiscovery{c: gzipFileClient{sub}}}), nil
}

// gzipFileClient serves the snapshot's gzipped documents as an OpenAPI v3
// client.
type gzipFileClient struct{ fsys fs.FS }

func (c gzipFileClient) Paths() (map[string]openapiclient.GroupVersion, error) {
	entries, err := fs.ReadDir(c.fsys, ".")
	if err != nil {
		return nil, err
	}
	paths := map[string]openapiclient.GroupVersion{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), "_openapi.json.gz")
		if !ok {
			continue
		}
		paths[strings.ReplaceAll(name, "__", "/")] = gzipFile{c.fsys, e.Name()}
	}
	return paths, nil
}

type gzipFile struct {
	fsys fs.FS
	name string
}

func (f gzipFile) Schema(contentType string) ([]byte, error) {
	if contentType != "application/json" {
		return nil, errors.New("the OpenAPI snapshot is JSON only")
	}
	data, err := fs.ReadFile(f.fsys, f.name)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func (f gzipFile) ServerRelativeURL() string { return f.name }

// KindOf returns the kind served for a resource, false when unknown.
func (s *Schemas) KindOf(group, resource string) (schema.GroupVersionKind, bool) {
	gvk, ok := s.kinds[group+"/"+resource]
	return gvk, ok
}

// Resources returns the number of resources whose kind s knows.
func (s *Schemas) Resources() int { return len(s.kinds) }

// HasSchema says whether the schema of a kind is known.
func (s *Schemas) HasSchema(gvk schema.GroupVersionKind) bool {
	k, _ := s.kindEnv(gvk)
	return k != nil && k.set != nil
}

// kindEnv returns the typed environment of a kind, built on first use;
// its set is nil when the kind's schema is unknown.
func (s *Schemas) kindEnv(gvk schema.GroupVersionKind) (*kindEnv, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.typed[gvk]; ok {
		return k, nil
	}
	k := &kindEnv{gvk: gvk}
	s.typed[gvk] = k
	sch, err := s.resolver.ResolveSchema(gvk)
	if err != nil {
		return k, nil // unknown: dyn
	}
	untypedAsDyn(sch, map[*spec.Schema]bool{})
	declType := common.SchemaDeclType(&openapi.Schema{Schema: sch}, true)
	if declType == nil {
		return k, nil
	}
	// Named after the kind, as the API server names it (with a suffix
	// there), so that errors name it.
	declType = nameByShape(declType, typeNameOf(gvk), map[string]string{})
	set, err := envWithObject(declType)
	if err != nil {
		return k, fmt.Errorf("CEL environment of %s: %v", gvk, err)
	}
	vset, _, err := extendWithVariables(set)
	if err != nil {
		return k, fmt.Errorf("CEL environment of %s: %v", gvk, err)
	}
	env, err := vset.Env(environment.StoredExpressions)
	if err != nil {
		return k, fmt.Errorf("CEL environment of %s: %v", gvk, err)
	}
	k.set = set
	k.shared = &policyEnv{env: env, kind: gvk}
	return k, nil
}

// untypedAsDyn marks the schemas in s that have no type but a oneOf or
// anyOf of types, as /openapi/v3 writes a Quantity, as int-or-string: CEL
// types those as dyn. Otherwise they would have no CEL type, and the
// fields of that type none: resources.limits would be an undefined field.
// (The API server's own type checking reads the schemas of its Go types,
// where a Quantity is a string.)
func untypedAsDyn(s *spec.Schema, seen map[*spec.Schema]bool) {
	if s == nil || seen[s] {
		return
	}
	seen[s] = true
	if len(s.Type) == 0 && (len(s.OneOf) > 0 || len(s.AnyOf) > 0) && s.Format == "" {
		s.Format = "int-or-string"
	}
	for k, p := range s.Properties {
		untypedAsDyn(&p, seen)
		s.Properties[k] = p
	}
	if s.AdditionalProperties != nil {
		untypedAsDyn(s.AdditionalProperties.Schema, seen)
	}
	if s.Items != nil {
		untypedAsDyn(s.Items.Schema, seen)
		for i := range s.Items.Schemas {
			untypedAsDyn(&s.Items.Schemas[i], seen)
		}
	}
	for i := range s.AllOf {
		untypedAsDyn(&s.AllOf[i], seen)
	}
}

// nameByShape names the object types of t, as MaybeAssignTypeName does,
// after the path of their first occurrence, but gives object types of the
// same shape the same name: both element types of spec.containers and
// spec.initContainers are a Container, and a policy adds the two lists.
// MaybeAssignTypeName would name each after its own path, two types that
// CEL does not unify.
func nameByShape(t *apiservercel.DeclType, path string, names map[string]string) *apiservercel.DeclType {
	switch {
	case t.IsObject():
		if t.TypeName() != "object" {
			return t
		}
		keys := make([]string, 0, len(t.Fields))
		for k := range t.Fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fields := make(map[string]*apiservercel.DeclField, len(t.Fields))
		var shape strings.Builder
		for _, k := range keys {
			f := t.Fields[k]
			ft := nameByShape(f.Type, path+"."+k, names)
			fields[k] = apiservercel.NewDeclField(k, ft, f.Required, nil, nil)
			fmt.Fprintf(&shape, "%s:%s,", k, ft.CelType())
		}
		name, ok := names[shape.String()]
		if !ok {
			name = path
			names[shape.String()] = name
		}
		return apiservercel.NewObjectType(name, fields)
	case t.IsList():
		return apiservercel.NewListType(nameByShape(t.ElemType, path+".@idx", names), t.MaxElements)
	case t.IsMap():
		return apiservercel.NewMapType(t.KeyType, nameByShape(t.ElemType, path+".@elem", names), t.MaxElements)
	}
	return t
}

// typeNameOf is the CEL type name of a kind's object.
func typeNameOf(gvk schema.GroupVersionKind) string {
	g := gvk.Group
	if g == "" {
		g = "core"
	}
	return g + "." + gvk.Version + "." + gvk.Kind
}

// policyKinds returns the kinds whose schemas a policy's CEL is checked
// against: those of the resources its rules name, and whose subresource,
// if any, is status (another subresource has an object of its own
// kind). Wildcards and unknown resources add none.
func (s *Schemas) policyKinds(rules []resourceRule) []*kindEnv {
	var out []*kindEnv
	seen := map[schema.GroupVersionKind]bool{}
	for _, r := range rules {
		if r.wildcard() || r.Group == "*" || (r.Subresource != "" && r.Subresource != "status") {
			continue
		}
		gvk, ok := s.KindOf(r.Group, r.Resource)
		if !ok || seen[gvk] {
			continue
		}
		seen[gvk] = true
		if k, err := s.kindEnv(gvk); err == nil && k.set != nil {
			out = append(out, k)
		}
	}
	return out
}

// envWithObject is the environment of sharedEnvs with object and
// oldObject typed, as the API server's buildEnvSet makes it.
func envWithObject(object *apiservercel.DeclType) (*environment.EnvSet, error) {
	return baseEnvSet(cel.Variable("object", object.CelType()), cel.Variable("oldObject", object.CelType()), object)
}
