{{- define "meshgate.name" -}}{{ .Release.Name }}{{- end -}}
{{- define "meshgate.labels" -}}
app.kubernetes.io/part-of: meshgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "meshgate.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}
{{- define "meshgate.controlScheme" -}}{{ if eq .Values.control.tls.mode "plain" }}http{{ else }}https{{ end }}{{- end -}}
{{- define "meshgate.controlUrl" -}}{{ include "meshgate.controlScheme" . }}://{{ .Release.Name }}-control:{{ .Values.control.port }}{{- end -}}
{{- define "meshgate.dbUrl" -}}
{{- if .Values.control.database.url -}}{{ .Values.control.database.url }}
{{- else if .Values.postgres.enabled -}}postgres://{{ .Values.postgres.user }}:$(PGPASSWORD)@{{ .Release.Name }}-postgres:5432/{{ .Values.postgres.database }}
{{- end -}}
{{- end -}}
