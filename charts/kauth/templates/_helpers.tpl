{{- define "kauth.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kauth.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kauth.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kauth.issuer" -}}
{{- required "issuer is required, e.g. --set issuer=https://auth.example.com" .Values.issuer -}}
{{- end -}}

{{/* The distinct Secrets connectors reference, as a JSON array (each is mounted once). */}}
{{- define "kauth.connectorSecrets" -}}
{{- $names := list -}}
{{- range .Values.connectors -}}
{{- $names = append $names .clientSecretRef.name -}}
{{- end -}}
{{- $names | uniq | toJson -}}
{{- end }}

{{/* The issuer's host (no port) and path ("/" when it has none): where the Ingress and HTTPRoute route. */}}
{{- define "kauth.issuerHost" -}}
{{- regexReplaceAll ":[0-9]+$" (urlParse (include "kauth.issuer" .)).host "" -}}
{{- end -}}
{{- define "kauth.issuerPath" -}}
{{- (urlParse (include "kauth.issuer" .)).path | default "/" -}}
{{- end -}}

{{/* The Secret holding the provider's certificate, when kauth serves HTTPS itself. */}}
{{- define "kauth.tlsSecret" -}}
{{- if .Values.tls.certManager.enabled -}}{{ include "kauth.fullname" . }}-tls{{- else -}}{{ .Values.tls.secretName }}{{- end -}}
{{- end -}}
