package engine

//go:generate go run ./internal/genresources

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// builtinResource is a resource the Kubernetes API server serves itself.
type builtinResource struct {
	Group, Resource, Kind string
	Subresources          []string
}

// name is how match.resources writes the resource.
func (r *builtinResource) name() string {
	if r.Group == "" {
		return r.Resource
	}
	return r.Group + "/" + r.Resource
}

// builtinGroups indexes builtinResources by group, then resource.
var builtinGroups = func() map[string]map[string]*builtinResource {
	m := map[string]map[string]*builtinResource{}
	for i := range builtinResources {
		r := &builtinResources[i]
		if m[r.Group] == nil {
			m[r.Group] = map[string]*builtinResource{}
		}
		m[r.Group][r.Resource] = r
	}
	return m
}()

// checkResource says whether a parsed entry of match.resources, written
// raw, names a resource the API server serves: a policy naming one that
// does not exist would silently match nothing. Groups other than the
// built-in ones are checked against the cluster's discovery when schemas
// come from one (in the server), and then only the groups it serves: a
// group it does not serve (yet) may be a CRD's to come, as all are
// offline. Undotted groups are always checked, since a CRD's group has a
// dot.
func checkResource(raw string, r resourceRule, schemas *Schemas) error {
	if r.Group == "*" || r.Resource == "*" && (r.Group == "" || builtinGroups[r.Group] != nil) {
		return nil
	}
	res := builtinGroups[r.Group][r.Resource]
	if res == nil {
		if builtinGroups[r.Group] == nil && strings.Contains(r.Group, ".") {
			return schemas.checkServed(raw, r) // maybe a CRD's
		}
		if r.Resource == "*" {
			return fmt.Errorf("unknown API group %q", r.Group)
		}
		return fmt.Errorf("unknown resource %q%s", raw, didYouMean(suggestResource(raw, r)))
	}
	if r.Subresource == "" || r.Subresource == "*" {
		return nil
	}
	for _, s := range res.Subresources {
		if s == r.Subresource {
			return nil
		}
	}
	if len(res.Subresources) == 0 {
		return fmt.Errorf("unknown subresource %q: %s has no subresources", raw, res.name())
	}
	best := nearest(r.Subresource, res.Subresources)
	if best != "" {
		best = res.name() + "/" + best
	}
	return fmt.Errorf("unknown subresource %q%s (%s has %s)", raw, didYouMean(best), res.name(), strings.Join(res.Subresources, ", "))
}

func didYouMean(s string) string {
	if s == "" {
		return ""
	}
	return fmt.Sprintf(": did you mean %q?", s)
}

// suggestResource returns the resource an unknown entry most likely
// meant, "" when none is close: the resource whose name or kind it is,
// whatever the case ("Pod", "deployments"), in its group first; else the
// nearest by edit distance ("podz", "app/deployments").
func suggestResource(raw string, r resourceRule) string {
	lower := strings.ToLower(r.Resource)
	sub := ""
	if r.Subresource != "" {
		sub = "/" + r.Subresource
	}
	for _, sameGroup := range []bool{true, false} {
		for i := range builtinResources {
			b := &builtinResources[i]
			if sameGroup != (b.Group == r.Group) {
				continue
			}
			if b.Resource == lower || strings.ToLower(b.Kind) == lower {
				return b.name() + sub
			}
		}
	}
	names := make([]string, 0, len(builtinResources))
	for i := range builtinResources {
		names = append(names, builtinResources[i].name())
	}
	// The whole entry first, so that a misspelt undotted group, read as
	// resource/subresource ("app/deployments"), is found.
	if best := nearest(strings.ToLower(raw), names); best != "" {
		return best
	}
	if r.Subresource == "" {
		return ""
	}
	whole := strings.ToLower(strings.TrimSuffix(raw, sub))
	if best := nearest(whole, names); best != "" {
		return best + sub
	}
	return ""
}

// nearest returns the candidate nearest to s by edit distance, the first
// of equals, if it is near enough to be a typo; "" otherwise.
func nearest(s string, candidates []string) string {
	return nearestWithin(s, candidates, max(2, len(s)/3))
}

// nearestWithin returns the candidate nearest to s, the first of equals,
// if at most maxD edits away; "" otherwise.
func nearestWithin(s string, candidates []string, maxD int) string {
	best, bestD := "", maxD+1
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// GroupTypo returns, for a rule of a group that is not built in but is
// near one by edit distance ("networking.k8s.oi"), the built-in resource
// it likely meant; "" otherwise. Such a group is no error, as it may be a
// CRD's, but is worth a warning.
func GroupTypo(r ResourceRule) string {
	if r.Group == "*" || r.Group == "" || builtinGroups[r.Group] != nil || !strings.Contains(r.Group, ".") {
		return ""
	}
	groups := make([]string, 0, len(builtinGroups))
	for g := range builtinGroups {
		if g != "" {
			groups = append(groups, g)
		}
	}
	sort.Strings(groups) // nearest keeps the first of equals
	// Two edits at most: a longer group ending in a built-in one
	// (gateway.networking.k8s.io) is a CRD's, no typo.
	g := nearestWithin(r.Group, groups, 2)
	if g == "" {
		return ""
	}
	s := g + "/" + r.Resource
	if r.Subresource != "" {
		s += "/" + r.Subresource
	}
	return s
}

// unservedError is an unknown resource of a group the cluster's discovery
// serves: a CRD's, maybe created since discovery was read, so the content
// is worth compiling again with discovery read again.
type unservedError struct{ msg string }

func (e *unservedError) Error() string { return e.msg }

// checkServed checks an entry of a group not built in against the
// cluster's discovery: nil when there is none, or when it does not serve
// the group.
func (s *Schemas) checkServed(raw string, r resourceRule) error {
	if !s.Discovered() {
		return nil
	}
	group := s.served[r.Group]
	if group == nil || r.Resource == "*" {
		return nil
	}
	subs, ok := group[r.Resource]
	if !ok {
		return &unservedError{fmt.Sprintf("unknown resource %q: the cluster serves no such resource in %s%s",
			raw, r.Group, didYouMean(s.suggestServed(r, group)))}
	}
	if r.Subresource == "" || r.Subresource == "*" || slices.Contains(subs, r.Subresource) {
		return nil
	}
	name := r.Group + "/" + r.Resource
	if len(subs) == 0 {
		return &unservedError{fmt.Sprintf("unknown subresource %q: %s has no subresources", raw, name)}
	}
	sorted := slices.Sorted(slices.Values(subs))
	best := nearest(r.Subresource, sorted)
	if best != "" {
		best = name + "/" + best
	}
	return &unservedError{fmt.Sprintf("unknown subresource %q%s (%s has %s)", raw, didYouMean(best), name, strings.Join(sorted, ", "))}
}

// suggestServed returns the resource of a served group an unknown entry
// most likely meant, "" when none is close: the one whose name or kind
// it is, whatever the case ("Widget", "WIDGETS"), else the nearest by
// edit distance ("widget", "widgts").
func (s *Schemas) suggestServed(r resourceRule, group map[string][]string) string {
	names := make([]string, 0, len(group))
	for name := range group {
		names = append(names, name)
	}
	sort.Strings(names) // nearest keeps the first of equals
	sub := ""
	if r.Subresource != "" {
		sub = "/" + r.Subresource
	}
	lower := strings.ToLower(r.Resource)
	meant := ""
	for _, name := range names {
		if name == lower || strings.ToLower(s.kinds[r.Group+"/"+name].Kind) == lower {
			meant = name
			break
		}
	}
	if meant == "" {
		meant = nearest(lower, names)
	}
	if meant == "" {
		return ""
	}
	return r.Group + "/" + meant + sub
}
