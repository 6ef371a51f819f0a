package server

import "celadon.io/celadon/engine"

// ServerAccess is what the server itself needs of every install, whatever
// its policies: the namespace informer behind namespaceSelector and the
// namespaceObject CEL variable (one cache, no API call per request); and,
// for the secure metrics endpoint that is the default (Options.
// InsecureMetrics false), the reviews that authenticate and authorize each
// scrape.
func ServerAccess() []engine.Access {
	return append([]engine.Access{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"},
			Why: "namespaceSelector and namespaceObject: the namespace informer, and get to read a namespace the cache does not have yet"},
	}, SecureMetricsAccess()...)
}

// SecureMetricsAccess is what serving /metrics and /status securely needs:
// a TokenReview to authenticate a scraper's bearer token and a
// SubjectAccessReview to authorize its GET. Unused with InsecureMetrics
// (--metrics-secure=false), but that is for development only, so the
// install grants it.
func SecureMetricsAccess() []engine.Access {
	return []engine.Access{
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"},
			Why: "secure metrics (the default; not with --metrics-secure=false): authenticate the bearer token of a request to /metrics or /status"},
		{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"},
			Why: "secure metrics: authorize that request (get on its path, a nonResourceURL)"},
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

// ManageWebhooksAccess is what ManageWebhooks needs: the Mutating- and
// ValidatingWebhookConfiguration named name, read with single GETs (no
// list or watch), created when missing and updated when the policies or
// the CA change. With LeaderElection (the default with --manage-webhooks),
// LeaderElectionAccess too.
func ManageWebhooksAccess(name string) []engine.Access {
	res := []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"}
	return []engine.Access{
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: res, ResourceNames: []string{name}, Verbs: []string{"get", "update"},
			Why: "--manage-webhooks: the leader reads the webhook configurations " + name + " and updates them when the policies or the CA change"},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: res, Verbs: []string{"create"},
			Why: "--manage-webhooks: their first creation (RBAC cannot limit create by name)"},
	}
}

// SelfSignedCertsAccess is what SelfSignedCerts needs in the Secret's
// namespace: every replica reads the Secret named secret, creates it when
// missing and updates it on renewal.
func SelfSignedCertsAccess(secret string) []engine.Access {
	return []engine.Access{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secret}, Verbs: []string{"get", "update"},
			Why: "--self-signed-certs: every replica reads the Secret " + secret + " and updates it on renewal"},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"},
			Why: "--self-signed-certs: its first creation (RBAC cannot limit create by name)"},
	}
}
