package server

import "celadon.io/celadon/engine"

// ServerAccess is what the server itself needs of every install, whatever
// its policies: the namespace informer behind namespaceSelector and the
// namespaceObject CEL variable (one cache, no API call per request).
func ServerAccess() []engine.Access {
	return []engine.Access{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"},
			Why: "namespaceSelector and namespaceObject: the namespace informer, and get to read a namespace the cache does not have yet"},
	}
}

// LeaderElectionAccess is what leader election needs in Celadon's
// namespace: the Lease named id, and the Events the election records.
func LeaderElectionAccess(id string) []engine.Access {
	return []engine.Access{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{id}, Verbs: []string{"get", "update"},
			Why: "the Lease " + id + " the replicas elect their leader with"},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"},
			Why: "its first creation (RBAC cannot limit create by name)"},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"},
			Why: "the Events the election records"},
	}
}
