// Package reports turns policy results on existing objects into
// OpenReports objects (openreports.io/v1alpha1): one Report per namespace
// and one ClusterReport for cluster-scoped objects, all named ReportName,
// the format Kyverno and policy-reporter read. `celadon scan -o report`
// prints them; the server's background scan writes them.
package reports
