{{/*
The labels of every object: those deploy/ sets (app.kubernetes.io/name and
part-of) and Helm's standard ones. Selectors and pod templates use only
app.kubernetes.io/name and component, as deploy/ does: Celadon's objects
have fixed names (its webhook configurations are cluster-wide), so one
release per cluster.
*/}}
{{- define "celadon.labels" -}}
app.kubernetes.io/name: celadon
app.kubernetes.io/part-of: celadon
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The labels selecting Celadon's pods. */}}
{{- define "celadon.selectorLabels" -}}
app.kubernetes.io/name: celadon
app.kubernetes.io/component: webhook
{{- end }}
