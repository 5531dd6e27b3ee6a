{{/* vim: set filetype=mustache: */}}
{{/*
The agent's config.yaml, rendered from values. Values keys are camelCase, the program's settings are
snake_case. Only keys the user set or that have chart defaults are rendered: the settings loader
refuses unknown keys (extra=forbid), and a key left null keeps the program's own default.
*/}}

{{/* Fixed paths inside the agent container. */}}
{{- define "krakenplug.configDir" -}}/etc/krakenplug{{- end }}
{{- define "krakenplug.sriovDir" -}}/etc/krakenplug-sriov{{- end }}
{{- define "krakenplug.hostSysDir" -}}/host/sys{{- end }}
{{- define "krakenplug.driverRootDir" -}}/host/driver-root{{- end }}

{{/* camelCase -> snake_case, e.g. healthPollIntervalSeconds -> health_poll_interval_seconds. */}}
{{- define "krakenplug.snakeCase" -}}
{{- regexReplaceAll "([a-z0-9])([A-Z])" . "${1}_${2}" | lower }}
{{- end }}

{{/*
Per-vendor option keys copied from values to backends.<vendor> by name (camelCase -> snake_case)
when they are not null. Keys that need a mount or a path inside the container are handled by
krakenplug.backendOptions itself.
*/}}
{{- define "krakenplug.optionKeys" -}}
common: [libraryPath, healthPollIntervalSeconds, callTimeoutSeconds]
nvidia: [healthChecks, ignoredXids, fatalXids]
ascend: [driverMounts]
cambricon: []
kunlun: []
streamcomputing: [mountHpeRuntime, maxDevicesPerContainer, smiPath]
fake: []
{{- end }}

{{/*
The backends.<vendor> mapping as YAML. Call with (dict "root" $ "vendor" $vendor "cfg" $cfg).
*/}}
{{- define "krakenplug.backendOptions" -}}
{{- $cfg := .cfg }}
{{- $options := dict }}
{{- if $cfg.resourceName }}
{{- $_ := set $options "resource_name" $cfg.resourceName }}
{{- end }}
{{- if $cfg.resourceRules }}
{{- $_ := set $options "resources" $cfg.resourceRules }}
{{- end }}
{{- if ne .vendor "fake" }}
{{- $_ := set $options "sysfs_root" (include "krakenplug.hostSysDir" .) }}
{{- end }}
{{- $keys := include "krakenplug.optionKeys" . | fromYaml }}
{{- range $key := concat $keys.common (get $keys .vendor | default list) }}
{{- if and (hasKey $cfg $key) (not (kindIs "invalid" (get $cfg $key))) }}
{{- $_ := set $options (include "krakenplug.snakeCase" $key) (get $cfg $key) }}
{{- end }}
{{- end }}
{{- if eq .vendor "nvidia" }}
{{- $_ := set $options "driver_root" (include "krakenplug.driverRootDir" .) }}
{{- end }}
{{- if eq .vendor "streamcomputing" }}
{{- $_ := set $options "hpe_root" $cfg.hpeRoot }}
{{- end }}
{{- $sriov := $cfg.sriov | default dict }}
{{- if and (eq .vendor "kunlun") $sriov.enabled }}
{{- $_ := set $options "sriov_config_file" (printf "%s/sriov.yaml" (include "krakenplug.sriovDir" .)) }}
{{- $exporter := include "krakenplug.section" (dict "root" .root "cfg" $cfg "name" "exporter") | fromYaml }}
{{- $_ := set $options "pod_resources_socket" (printf "%s/kubelet.sock" $exporter.podResourcesDir) }}
{{- if not (kindIs "invalid" $sriov.nodeLabel) }}
{{- $_ := set $options "sriov_node_label" $sriov.nodeLabel }}
{{- end }}
{{- else if eq .vendor "kunlun" }}
{{- /* SR-IOV off in the chart: the backend must not act on a VF-count node label either (sysfs is read-only). */}}
{{- $_ := set $options "sriov_node_label" nil }}
{{- end }}
{{- if and (eq .vendor "fake") $cfg.devices }}
{{- $_ := set $options "devices_file" (printf "%s/fake-devices.yaml" (include "krakenplug.configDir" .)) }}
{{- end }}
{{- range $key, $value := ($cfg.extraOptions | default dict) }}
{{- $_ := set $options $key $value }}
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
      "replicas" $plugin.replicas
      "fail_requests_greater_than_one" $plugin.failRequestsGreaterThanOne
      "cdi_enabled" $plugin.cdiEnabled
      "rescan_interval_seconds" $plugin.rescanIntervalSeconds) }}
{{- $_ := set $config "exporter" (dict
      "enabled" $exporter.enabled
      "address" (printf "%s:%v" $exporter.host $exporter.port)
      "pod_resources_socket" (printf "%s/kubelet.sock" $exporter.podResourcesDir)
      "pod_resources_refresh_seconds" $exporter.podResourcesRefreshSeconds
      "collect_timeout_seconds" $exporter.collectTimeoutSeconds
      "base_unit_metrics" $exporter.baseUnitMetrics) }}
{{- $discoveryOut := dict "enabled" $discovery.enabled "interval_seconds" $discovery.intervalSeconds }}
{{- if $discovery.featuresDir }}
{{- $_ := set $discoveryOut "features_file" (printf "%s/krakenplug-%s" (trimSuffix "/" $discovery.featuresDir) .vendor) }}
{{- end }}
{{- $_ := set $config "discovery" $discoveryOut }}
{{- $_ := set $config "backends" (dict .vendor (include "krakenplug.backendOptions" $ctx | fromYaml)) }}
{{- toYaml $config }}
{{- end }}

{{/*
The data of one vendor's ConfigMap (config.yaml, plus fake-devices.yaml for the fake vendor).
The DaemonSet hashes exactly this text into its checksum annotation.
*/}}
{{- define "krakenplug.configMapData" -}}
config.yaml: |
{{- include "krakenplug.config" . | nindent 2 }}
{{- if and (eq .vendor "fake") .cfg.devices }}
fake-devices.yaml: |
{{- toYaml (dict "devices" .cfg.devices) | nindent 2 }}
{{- end }}
{{- end }}

{{/* The SR-IOV file the Kunlunxin backend reads: {defaultNumVfs: N, nodes: {<node>: N}}. */}}
{{- define "krakenplug.sriovConfig" -}}
{{- $sriov := .Values.vendors.kunlun.sriov }}
{{- toYaml (dict "defaultNumVfs" (int $sriov.defaultNumVfs) "nodes" ($sriov.nodes | default dict)) }}
{{- end }}
