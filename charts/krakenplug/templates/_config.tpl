{{/* vim: set filetype=mustache: */}}
{{/*
The agent's config.yaml, rendered from values. The component sections (plugin, exporter, discovery,
log) map values keys to settings fields one by one below; backend options are data: `options` of the
vendor (over `defaults.options`) goes verbatim to backends.<vendor>, and the agent validates it with
the backend's own model (the chart's schema is generated from the same model).
*/}}

{{/* Fixed paths inside the agent container. */}}
{{- define "krakenplug.configDir" -}}/etc/krakenplug{{- end }}
{{- define "krakenplug.sriovDir" -}}/etc/krakenplug-sriov{{- end }}
{{- /* Inside configDir: the kubelet creates mount points for Secret volumes nested in a ConfigMap volume. */}}
{{- define "krakenplug.webConfigDir" -}}/etc/krakenplug/web{{- end }}

{{/*
The backends.<vendor> mapping as YAML. Call with (dict "root" $ "vendor" $vendor "cfg" $cfg), where
$cfg is the vendor's merged values (krakenplug.vendorValues).
*/}}
{{- define "krakenplug.backendOptions" -}}
{{- $cfg := .cfg }}
{{- $options := deepCopy ($cfg.options | default dict) }}
{{- if $cfg.resourceName }}
{{- $_ := set $options "resource_name" $cfg.resourceName }}
{{- end }}
{{- if $cfg.resourceRules }}
{{- $_ := set $options "resources" $cfg.resourceRules }}
{{- end }}
{{- if hasKey $cfg "sriov" }}
{{- $sriov := $cfg.sriov | default dict }}
{{- if $sriov.enabled }}
{{- $_ := set $options "sriov_config_file" (printf "%s/sriov.yaml" (include "krakenplug.sriovDir" .)) }}
{{- $exporter := include "krakenplug.section" (dict "root" .root "cfg" $cfg "name" "exporter") | fromYaml }}
{{- $_ := set $options "pod_resources_socket" (printf "%s/kubelet.sock" $exporter.podResourcesDir) }}
{{- if $sriov.nodeLabel }}
{{- $_ := set $options "sriov_node_label" $sriov.nodeLabel }}
{{- end }}
{{- else }}
{{- /* SR-IOV off in the chart: the backend must not act on a VF-count node label either (sysfs is read-only). */}}
{{- $_ := set $options "sriov_node_label" nil }}
{{- end }}
{{- end }}
{{- if $cfg.devices }}
{{- $_ := set $options "devices_file" (printf "%s/fake-devices.yaml" (include "krakenplug.configDir" .)) }}
{{- end }}
{{- toYaml $options }}
{{- end }}

{{/*
The whole config.yaml of one vendor. Call with (dict "root" $ "vendor" $vendor "cfg" $cfg).
*/}}
{{- define "krakenplug.config" -}}
{{- $ctx := . }}
{{- $plugin := include "krakenplug.section" (dict "root" .root "cfg" .cfg "name" "plugin") | fromYaml }}
{{- $exporter := include "krakenplug.section" (dict "root" .root "cfg" .cfg "name" "exporter") | fromYaml }}
{{- $discovery := include "krakenplug.section" (dict "root" .root "cfg" .cfg "name" "discovery") | fromYaml }}
{{- $log := include "krakenplug.section" (dict "root" .root "cfg" .cfg "name" "log") | fromYaml }}
{{- $config := dict "version" "v1" "backend" .vendor "fail_on_init_error" .cfg.failOnInitError }}
{{- $_ := set $config "log" (dict "level" $log.level "format" $log.format) }}
{{- $_ := set $config "plugin" (dict
      "enabled" $plugin.enabled
      "device_plugin_dir" $plugin.devicePluginDir
      "replicas" (int $plugin.replicas)
      "fail_requests_greater_than_one" $plugin.failRequestsGreaterThanOne
      "cdi_enabled" $plugin.cdiEnabled
      "rescan_interval_seconds" $plugin.rescanIntervalSeconds) }}
{{- $exporterOut := dict
      "enabled" $exporter.enabled
      "address" (printf "%s:%v" $exporter.host (int $exporter.port))
      "pod_resources_socket" (printf "%s/kubelet.sock" $exporter.podResourcesDir)
      "pod_resources_refresh_seconds" $exporter.podResourcesRefreshSeconds
      "collect_timeout_seconds" $exporter.collectTimeoutSeconds
      "base_unit_metrics" $exporter.baseUnitMetrics }}
{{- if (include "krakenplug.webConfigEnabled" .root) }}
{{- $_ := set $exporterOut "web_config_file" (printf "%s/web-config.yml" (include "krakenplug.webConfigDir" .)) }}
{{- end }}
{{- $_ := set $config "exporter" $exporterOut }}
{{- $discoveryOut := dict "enabled" $discovery.enabled "interval_seconds" $discovery.intervalSeconds }}
{{- if $discovery.featuresDir }}
{{- $_ := set $discoveryOut "features_file" (printf "%s/krakenplug-%s" (trimSuffix "/" $discovery.featuresDir) .vendor) }}
{{- end }}
{{- $_ := set $config "discovery" $discoveryOut }}
{{- $dra := include "krakenplug.draSection" (dict "root" .root "cfg" .cfg) | fromYaml }}
{{- $draOut := dict
      "allocation_mode" $dra.allocationMode
      "registry_dir" $dra.registryDir
      "plugins_dir" $dra.pluginsDir
      "max_devices_per_slice" (int $dra.maxDevicesPerSlice)
      "health_timeout_seconds" (int $dra.healthTimeoutSeconds)
      "share_memory_step_mb" (int $dra.shareMemoryStepMb)
      "watch_claims" (eq (toString $dra.watchClaims) "true") }}
{{- if $dra.driverName }}
{{- $_ := set $draOut "driver_name" $dra.driverName }}
{{- end }}
{{- $_ := set $config "dra" $draOut }}
{{- $_ := set $config "cdi_dir" $dra.cdiDir }}
{{- $_ := set $config "backends" (dict .vendor (include "krakenplug.backendOptions" $ctx | fromYaml)) }}
{{- toYaml $config }}
{{- end }}

{{/*
The data of one vendor's ConfigMap (config.yaml, plus fake-devices.yaml when the vendor lists devices).
The DaemonSet hashes exactly this text into its checksum annotation.
*/}}
{{- define "krakenplug.configMapData" -}}
config.yaml: |
{{- include "krakenplug.config" . | nindent 2 }}
{{- if .cfg.devices }}
fake-devices.yaml: |
{{- toYaml (dict "devices" .cfg.devices) | nindent 2 }}
{{- end }}
{{- end }}

{{/* The SR-IOV file the Kunlunxin backend reads: {defaultNumVfs: N, nodes: {<node>: N}}. */}}
{{- define "krakenplug.sriovConfig" -}}
{{- $sriov := .Values.vendors.kunlun.sriov }}
{{- toYaml (dict "defaultNumVfs" (int $sriov.defaultNumVfs) "nodes" ($sriov.nodes | default dict)) }}
{{- end }}

{{/* "true" when the exporter serves the exporter-toolkit web config (TLS and/or basic auth). */}}
{{- define "krakenplug.webConfigEnabled" -}}
{{- if (.Values.exporter.webConfig | default dict).enabled }}true{{ end }}
{{- end }}

{{/* The Secret holding web-config.yml: the user's existingSecret, or the one the chart renders. */}}
{{- define "krakenplug.webConfigSecretName" -}}
{{- .Values.exporter.webConfig.existingSecret | default (printf "%s-web-config" (include "krakenplug.fullname" . | trunc 52 | trimSuffix "-")) }}
{{- end }}

{{/* "https" when the exporter serves TLS (web config with `tls`), else "http". */}}
{{- define "krakenplug.exporterScheme" -}}
{{- if and (include "krakenplug.webConfigEnabled" .) .Values.exporter.webConfig.tls }}https{{ else }}http{{ end }}
{{- end }}
