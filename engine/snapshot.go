package engine

// Snapshot is an immutable, compiled policy set. It is safe for concurrent
// use; a reload builds a new Snapshot and swaps it in whole.
type Snapshot struct {
	// Policies are the compiled policies, in dispatch order: files sorted by
	// name, documents in file order. It is the order within one Evaluate
	// call; see the package documentation for the order in a cluster.
	Policies []*CompiledPolicy
	// Hash identifies the content the snapshot was compiled from.
	Hash string
	// Exceptions are the PolicyException documents of the policy files;
	// never nil. Those of an exceptions directory come with each
	// evaluation (EvalOptions.Exceptions).
	Exceptions *ExceptionSet

	index    map[indexKey][]*CompiledPolicy
	wildcard []*CompiledPolicy
	// onlyUnserved says that every compile error is a resource unknown to
	// the cluster's discovery: a CRD's, maybe created since it was read.
	onlyUnserved bool
}

type indexKey struct{ group, resource, subresource, operation string }

// buildIndex files each policy under every (group, resource, subresource,
// operation) it matches, so a request only looks at policies that can match
// it. Policies with wildcard resources are kept apart and filtered per
// request.
func (s *Snapshot) buildIndex() {
	for _, p := range s.Policies {
		wild := false
		for _, r := range p.rules {
			if r.wildcard() || r.Group == "*" {
				wild = true
				continue
			}
			for op := range p.ops {
				k := indexKey{r.Group, r.Resource, r.Subresource, op}
				if l := s.index[k]; len(l) > 0 && l[len(l)-1] == p {
					continue // the same resource listed twice
				}
				s.index[k] = append(s.index[k], p)
			}
		}
		for _, r := range p.autogen {
			for _, op := range p.AutogenOperations() {
				k := indexKey{r.Group, r.Resource, r.Subresource, op}
				s.index[k] = append(s.index[k], p)
			}
		}
		if wild {
			s.wildcard = append(s.wildcard, p)
		}
	}
}

// Candidates returns, in dispatch order, the policies whose resources and
// operations match; selectors and conditions are not yet checked.
func (s *Snapshot) Candidates(group, resource, subresource, operation string) []*CompiledPolicy {
	exact := s.index[indexKey{group, resource, subresource, operation}]
	if len(s.wildcard) == 0 {
		return exact
	}
	var wild []*CompiledPolicy
	for _, p := range s.wildcard {
		if !p.ops[operation] {
			continue
		}
		for _, r := range p.rules {
			if r.matches(group, resource, subresource) {
				wild = append(wild, p)
				break
			}
		}
	}
	if len(wild) == 0 {
		return exact
	}
	// Merge the two ordered lists by ordinal, dropping duplicates.
	out := make([]*CompiledPolicy, 0, len(exact)+len(wild))
	i, j := 0, 0
	for i < len(exact) || j < len(wild) {
		switch {
		case j == len(wild) || (i < len(exact) && exact[i].ordinal < wild[j].ordinal):
			out = append(out, exact[i])
			i++
		case i == len(exact) || wild[j].ordinal < exact[i].ordinal:
			out = append(out, wild[j])
			j++
		default: // the same policy in both lists
			out = append(out, exact[i])
			i++
			j++
		}
	}
	return out
}

// Policy returns the named policy, or nil.
func (s *Snapshot) Policy(name string) *CompiledPolicy {
	for _, p := range s.Policies {
		if p.Name() == name {
			return p
		}
	}
	return nil
}
