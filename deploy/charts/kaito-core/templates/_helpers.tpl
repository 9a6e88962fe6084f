{{- define "kaito-core.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kaito-core.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kaito-core.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kaito-core.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "kaito-core.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "kaito-core.webhookService" -}}{{ include "kaito-core.fullname" . }}-webhook{{- end -}}
{{- define "kaito-core.webhookName" -}}validation.workspace.kaito.sh{{- end -}}
{{- define "kaito-core.certSecret" -}}{{ include "kaito-core.fullname" . }}-webhook-cert{{- end -}}
