{{/* vim: set filetype=mustache: */}}
{{/*
DRA (resource.k8s.io/v1) helpers. A vendor runs in one allocation mode: `dra.allocationMode: dra`
makes its agent publish ResourceSlices and serve the kubelet's DRA plugin API instead of the device
plugin, so no device is handed out twice.
*/}}

{{/* One vendor's dra section as YAML. Call with (dict "root" $ "cfg" $cfg). */}}
{{- define "krakenplug.draSection" -}}
{{- include "krakenplug.section" (dict "root" .root "cfg" .cfg "name" "dra") }}
{{- end }}

{{/* The vendors in DRA mode, sorted, comma-separated ("" when none). */}}
{{- define "krakenplug.draVendors" -}}
{{- $names := list }}
{{- range $vendor := splitList "," (include "krakenplug.enabledVendors" $) | compact }}
{{- $cfg := include "krakenplug.vendorValues" (dict "root" $ "vendor" $vendor) | fromYaml }}
{{- if eq ((include "krakenplug.draSection" (dict "root" $ "cfg" $cfg) | fromYaml).allocationMode | default "") "dra" }}
{{- $names = append $names $vendor }}
{{- end }}
{{- end }}
{{- join "," $names }}
{{- end }}

{{/* The DRA driver name of a vendor: dra.driverName, else <vendor>.krakenplug.pcl.ac.cn. Call with (dict "vendor" $vendor "dra" $dra). */}}
{{- define "krakenplug.draDriver" -}}
{{- .dra.driverName | default (printf "%s.krakenplug.pcl.ac.cn" .vendor) }}
{{- end }}

{{/*
The vendor's classic extended resource name, for DeviceClass.spec.extendedResourceName: its
resourceName, else krakenplug.pcl.ac.cn/<vendor>. A vendor whose backend default differs names it as
resourceName in its values.yaml entry (a chart test holds the entries to the backends' DEFAULT_RESOURCE).
Call with (dict "vendor" $vendor "cfg" $cfg).
*/}}
{{- define "krakenplug.classicResource" -}}
{{- .cfg.resourceName | default (printf "krakenplug.pcl.ac.cn/%s" .vendor) }}
{{- end }}
