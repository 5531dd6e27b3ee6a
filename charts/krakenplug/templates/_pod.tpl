{{/* vim: set filetype=mustache: */}}
{{/*
Pieces of one vendor's agent pod: node affinity, host mounts and the security context.
Each define takes (dict "root" $ "vendor" $vendor "cfg" $cfg).
*/}}

{{/*
The default node affinity: one nodeSelectorTerm per label in vendors.<vendor>.nodeLabels (value
"true") plus one for vendorLabel=<vendor> and one for discovery's per-vendor count label. Terms are
ORed, so a node with any NFD PCI label variant of the vendor, the hand-set vendor label, or devices of
this vendor found by discovery is selected.
*/}}
{{- define "krakenplug.defaultAffinity" -}}
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      {{- range $label := .cfg.nodeLabels }}
      - matchExpressions:
          - key: {{ $label }}
            operator: In
            values: ["true"]
      {{- end }}
      - matchExpressions:
          - key: {{ .root.Values.vendorLabel }}
            operator: In
            values: [{{ .vendor | quote }}]
      {{- /* Written by discovery for each vendor with devices: keeps every agent on a multi-vendor node
             although vendorLabel can name only the leading vendor. */}}
      - matchExpressions:
          - key: {{ printf "krakenplug.pcl.ac.cn/%s.count" .vendor }}
            operator: Exists
{{- end }}

{{/*
The host paths one vendor's agent needs, as a YAML list of {name, hostPath, mountPath, readOnly,
type}. Volumes and volume mounts are both rendered from this one list so they cannot drift apart.
Vendor-specific paths are data (`hostMounts`, `libraryDirs`); only the component mounts are built here.
*/}}
{{- define "krakenplug.hostMounts" -}}
{{- $plugin := include "krakenplug.section" (dict "root" .root "cfg" .cfg "name" "plugin") | fromYaml }}
{{- $exporter := include "krakenplug.section" (dict "root" .root "cfg" .cfg "name" "exporter") | fromYaml }}
{{- $discovery := include "krakenplug.section" (dict "root" .root "cfg" .cfg "name" "discovery") | fromYaml }}
{{- $sriov := (.cfg.sriov | default dict).enabled }}
{{- $mounts := list }}
{{- if $plugin.enabled }}
{{- /* The kubelet's registration socket lives here and our plugin sockets are created here. */}}
{{- $mounts = append $mounts (dict "name" "device-plugins" "hostPath" $plugin.devicePluginDir "mountPath" $plugin.devicePluginDir "readOnly" false "type" "Directory") }}
{{- end }}
{{- if or $exporter.enabled $sriov }}
{{- /* Connecting to a unix socket works on a read-only mount. */}}
{{- $mounts = append $mounts (dict "name" "pod-resources" "hostPath" $exporter.podResourcesDir "mountPath" $exporter.podResourcesDir "readOnly" true "type" "Directory") }}
{{- end }}
{{- range $name, $mount := (.cfg.hostMounts | default dict) }}
{{- if $mount.hostPath }}
{{- /* SR-IOV writes sriov_numvfs: the one case where sysfs is mounted read-write. */}}
{{- $readOnly := and (ne (toString $mount.readOnly) "false") (not (and $sriov (eq $name "sys"))) }}
{{- $mounts = append $mounts (dict "name" $name "hostPath" $mount.hostPath "mountPath" ($mount.mountPath | default $mount.hostPath) "readOnly" $readOnly "type" ($mount.type | default "")) }}
{{- end }}
{{- end }}
{{- range $index, $dir := (.cfg.libraryDirs | default list) }}
{{- /* No hostPath type check: a node without the driver gets an empty dir and serves zero devices. */}}
{{- $mounts = append $mounts (dict "name" (printf "library-%d" $index) "hostPath" $dir "mountPath" $dir "readOnly" true "type" "") }}
{{- end }}
{{- $dra := include "krakenplug.draSection" (dict "root" .root "cfg" .cfg) | fromYaml }}
{{- if eq $dra.allocationMode "dra" }}
{{- /* DRA: the registration socket, the driver's socket + checkpoint, and the per-claim CDI specs. */}}
{{- $mounts = append $mounts (dict "name" "plugins-registry" "hostPath" $dra.registryDir "mountPath" $dra.registryDir "readOnly" false "type" "DirectoryOrCreate") }}
{{- $mounts = append $mounts (dict "name" "kubelet-plugins" "hostPath" $dra.pluginsDir "mountPath" $dra.pluginsDir "readOnly" false "type" "DirectoryOrCreate") }}
{{- end }}
{{- if or (eq $dra.allocationMode "dra") (and $plugin.enabled $plugin.cdiEnabled) }}
{{- $mounts = append $mounts (dict "name" "cdi-specs" "hostPath" $dra.cdiDir "mountPath" $dra.cdiDir "readOnly" false "type" "DirectoryOrCreate") }}
{{- end }}
{{- if $discovery.featuresDir }}
{{- $mounts = append $mounts (dict "name" "nfd-features" "hostPath" $discovery.featuresDir "mountPath" $discovery.featuresDir "readOnly" false "type" "DirectoryOrCreate") }}
{{- end }}
{{- toYaml $mounts }}
{{- end }}

{{/*
The container security context. Vendors whose management library opens device nodes run
privileged (the device cgroup admits no other container to them); everything else runs with no
capabilities, no privilege escalation and a read-only root. Both run as uid 0: the kubelet's
sockets and the device-plugin directory belong to root, and without capabilities root is limited
to what those file modes allow.
*/}}
{{- define "krakenplug.securityContext" -}}
runAsUser: 0
readOnlyRootFilesystem: true
{{- if .cfg.privileged }}
privileged: true
{{- else }}
runAsNonRoot: false
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
{{- end }}
