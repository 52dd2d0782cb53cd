{{/* Labels every Lapse object carries. */}}
{{- define "lapse.labels" -}}
app.kubernetes.io/name: lapse
app.kubernetes.io/part-of: lapse
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The operator pods: the Deployment's selector and the Services' target. */}}
{{- define "lapse.selectorLabels" -}}
app.kubernetes.io/name: lapse
app.kubernetes.io/component: operator
{{- end -}}

{{- define "lapse.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
