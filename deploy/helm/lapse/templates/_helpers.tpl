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

{{/*
The Secrets the audit trail's sinks read, by volume name: trail-<what> is mounted at
/etc/lapse/trail/<what>.
*/}}
{{- define "lapse.trailSecrets" -}}
{{- $t := .Values.trail -}}
{{- if and $t.syslog.address $t.syslog.caSecret }}
trail-syslog-ca: {{ $t.syslog.caSecret }}
{{- end }}
{{- if and $t.syslog.address $t.syslog.clientCertSecret }}
trail-syslog-client: {{ $t.syslog.clientCertSecret }}
{{- end }}
{{- if and $t.https.url $t.https.tokenSecret }}
trail-https-token: {{ $t.https.tokenSecret }}
{{- end }}
{{- if and $t.https.url $t.https.caSecret }}
trail-https-ca: {{ $t.https.caSecret }}
{{- end }}
{{- if and $t.https.url $t.https.clientCertSecret }}
trail-https-client: {{ $t.https.clientCertSecret }}
{{- end }}
{{- end -}}
