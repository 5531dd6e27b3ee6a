{{/* vim: set filetype=mustache: */}}
{{/*
Names, labels and the small lookups every template shares. Every define is prefixed with
"krakenplug." so it cannot collide with a parent chart's helpers.
*/}}

{{/* The chart name, or nameOverride; at most 63 characters. */}}
{{- define "krakenplug.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name prefix of every object: fullnameOverride, or "<release>-<chart>" (just the release name
when it already contains the chart name); at most 63 characters.
*/}}
{{- define "krakenplug.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The name of one vendor's objects (DaemonSet, ConfigMap): "<fullname>-<vendor>". The prefix is cut
first, so the vendor suffix always survives the 63-character limit and names never collide.
Call with (dict "root" $ "vendor" $vendor).
*/}}
{{- define "krakenplug.vendorFullname" -}}
{{- $room := int (sub 62 (len .vendor)) }}
{{- printf "%s-%s" (include "krakenplug.fullname" .root | trunc $room | trimSuffix "-") .vendor }}
{{- end }}

{{/* The namespace every namespaced object goes to: namespaceOverride or the release namespace. */}}
{{- define "krakenplug.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "krakenplug.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select this release's objects; never includes anything that changes on upgrade. */}}
{{- define "krakenplug.selectorLabels" -}}
app.kubernetes.io/name: {{ include "krakenplug.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object: selector labels, chart and version labels, and commonLabels. */}}
{{- define "krakenplug.labels" -}}
helm.sh/chart: {{ include "krakenplug.chart" . }}
{{ include "krakenplug.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: krakenplug
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one vendor's agent pods. The vendor label keeps the DaemonSets' selectors
disjoint; the component label is what the metrics Service selects across vendors.
Call with (dict "root" $ "vendor" $vendor).
*/}}
{{- define "krakenplug.agentSelectorLabels" -}}
{{ include "krakenplug.selectorLabels" .root }}
app.kubernetes.io/component: agent
krakenplug.pcl.ac.cn/vendor: {{ .vendor }}
{{- end }}

{{/* The ServiceAccount the agents run as. */}}
{{- define "krakenplug.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "krakenplug.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The metrics Service name (also the Prometheus job name the ServiceMonitor produces). */}}
{{- define "krakenplug.metricsServiceName" -}}
{{- printf "%s-metrics" (include "krakenplug.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* The SR-IOV ConfigMap name. */}}
{{- define "krakenplug.sriovConfigMapName" -}}
{{- printf "%s-sriov" (include "krakenplug.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/*
The image reference of one vendor: vendors.<vendor>.image keys override the top-level image; a digest
wins over a tag; the tag defaults to the chart's appVersion. Call with (dict "root" $ "cfg" $cfg).
*/}}
{{- define "krakenplug.image" -}}
{{- $image := merge (dict) (.cfg.image | default dict) .root.Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (toString (default .root.Chart.AppVersion $image.tag)) }}
{{- end }}
{{- end }}

{{/*
One vendor's values: `defaults` with vendors.<vendor> laid over it (see krakenplug.overlay), as YAML.
Every template reads a vendor through this, so defaults live once. Call with (dict "root" $ "vendor" $vendor).
*/}}
{{- define "krakenplug.vendorValues" -}}
{{- include "krakenplug.overlay" (dict "base" (.root.Values.defaults | default dict) "over" (get .root.Values.vendors .vendor | default dict)) }}
{{- end }}

{{/*
Lays the map .over onto the map .base: nested maps merge, anything else replaces, and a null removes the
key. Unlike sprig's merge, a `false`, `0` or `""` in .over wins. Renders YAML.
*/}}
{{- define "krakenplug.overlay" -}}
{{- $out := deepCopy .base }}
{{- range $key, $value := .over }}
{{- if kindIs "invalid" $value }}
{{- $_ := unset $out $key }}
{{- else if and (kindIs "map" $value) (kindIs "map" (get $out $key)) }}
{{- $_ := set $out $key (include "krakenplug.overlay" (dict "base" (get $out $key) "over" $value) | fromYaml) }}
{{- else }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- range $key, $value := $out }}
{{- if kindIs "invalid" $value }}
{{- $_ := unset $out $key }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
The enabled vendors, sorted, as a comma-separated string ("" when none). Templates that need a
list split it; keeping one definition means NOTES, Service and ServiceMonitor agree.
*/}}
{{- define "krakenplug.enabledVendors" -}}
{{- $names := list }}
{{- range $vendor, $_ := .Values.vendors }}
{{- if (include "krakenplug.vendorValues" (dict "root" $ "vendor" $vendor) | fromYaml).enabled }}
{{- $names = append $names $vendor }}
{{- end }}
{{- end }}
{{- join "," (sortAlpha $names) }}
{{- end }}

{{/* "true" when any enabled vendor runs the exporter (so a metrics Service is worth rendering). */}}
{{- define "krakenplug.anyExporter" -}}
{{- $any := false }}
{{- range $vendor := splitList "," (include "krakenplug.enabledVendors" $) | compact }}
{{- $cfg := include "krakenplug.vendorValues" (dict "root" $ "vendor" $vendor) | fromYaml }}
{{- if (include "krakenplug.section" (dict "root" $ "cfg" $cfg "name" "exporter") | fromYaml).enabled }}
{{- $any = true }}
{{- end }}
{{- end }}
{{- if $any }}true{{ end }}
{{- end }}

{{/*
One component section (plugin, exporter, discovery or log) of one vendor as YAML: the top-level
section with vendors.<vendor>.<name> laid over it key by key, so a per-vendor `false` or `0` wins
(sprig's merge would drop them). Call with (dict "root" $ "cfg" $cfg "name" "plugin").
*/}}
{{- define "krakenplug.section" -}}
{{- $merged := deepCopy (get .root.Values .name | default dict) }}
{{- range $key, $value := (get .cfg .name | default dict) }}
{{- $_ := set $merged $key $value }}
{{- end }}
{{- toYaml $merged }}
{{- end }}

{{/* Whether monitoring.coreos.com/v1 (ServiceMonitor, PrometheusRule) is served by the cluster. */}}
{{- define "krakenplug.hasPrometheusOperator" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}
