package engine

import (
	"sort"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// ClusterRead is a resource an action reads through ActionContext.Cluster.
type ClusterRead struct {
	Resource schema.GroupVersionResource
	// MetadataOnly says the action needs only the objects' metadata (e.g.
	// whether a Secret exists), so a cache may keep metadata alone.
	MetadataOnly bool
}

// ClusterReader is implemented by Actions that read other objects, so that
// a server can cache exactly those resources before requests arrive.
type ClusterReader interface {
	ClusterReads() []ClusterRead
}

// ClusterReads returns the resources the snapshot's actions read, one entry
// per resource, sorted; MetadataOnly only when every reader of the
// resource needs metadata alone.
func (s *Snapshot) ClusterReads() []ClusterRead {
	byGVR := map[schema.GroupVersionResource]bool{} // metadata only
	for _, p := range s.Policies {
		for _, cr := range p.ClusterReads() {
			metaOnly, seen := byGVR[cr.Resource]
			byGVR[cr.Resource] = cr.MetadataOnly && (!seen || metaOnly)
		}
	}
	out := make([]ClusterRead, 0, len(byGVR))
	for gvr, metaOnly := range byGVR {
		out = append(out, ClusterRead{Resource: gvr, MetadataOnly: metaOnly})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Resource.String() < out[j].Resource.String() })
	return out
}

// ClusterReads returns the resources the policy's action reads; none when
// it reads nothing (or did not compile).
func (p *CompiledPolicy) ClusterReads() []ClusterRead {
	if r, ok := p.action.(ClusterReader); ok {
		return r.ClusterReads()
	}
	return nil
}
