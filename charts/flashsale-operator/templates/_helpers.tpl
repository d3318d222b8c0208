{{/* Names and labels shared by every template of the chart. */}}

{{- define "flashsale-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flashsale-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Images default to the chart's appVersion, which is the workspace's Cargo version. */}}
{{- define "flashsale-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "flashsale-operator.bookingAppImage" -}}
{{- default (printf "flashsale/booking-app:%s" .Chart.AppVersion) .Values.bookingAppImage -}}
{{- end -}}

{{- define "flashsale-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "flashsale-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "flashsale-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flashsale-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flashsale-operator.labels" -}}
{{ include "flashsale-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The NetworkPolicy peers admitted to the sales' metrics ports, as JSON: the operator's pods,
then networkPolicy.metricsFrom. */}}
{{- define "flashsale-operator.metricsFrom" -}}
{{- $self := dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace)) "podSelector" (dict "matchLabels" (include "flashsale-operator.selectorLabels" . | fromYaml)) -}}
{{- concat (list $self) (.Values.networkPolicy.metricsFrom | default list) | toJson -}}
{{- end }}
