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
{{- $issuer := required "issuer is required: the URL tokens carry and people reach kauth at, e.g. --set issuer=https://auth.example.com" .Values.issuer -}}
{{- if not (regexMatch "^https?://[^/?#\\s]+(/[^?#\\s]*)?$" $issuer) -}}
{{- fail (printf "issuer %q must be an http(s) URL without query or fragment, e.g. https://auth.example.com" $issuer) -}}
{{- end -}}
{{- $issuer -}}
{{- end -}}

{{/* Values that only make sense together, each refused with a sentence that says what to set. */}}
{{- define "kauth.validate" -}}
{{- $_ := include "kauth.issuer" . -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.sharedStore.enabled) -}}
{{- fail (printf "replicaCount %d needs sharedStore.enabled=true and sharedStore.urlSecret.name (a PostgreSQL every replica shares): each replica's own SQLite file would not see the codes, refresh tokens and sessions of the others" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and .Values.sharedStore.enabled (not .Values.sharedStore.urlSecret.name) -}}
{{- fail "sharedStore.enabled needs sharedStore.urlSecret.name: the Secret in kauth's namespace holding the postgres:// URL (key sharedStore.urlSecret.key, default url)" -}}
{{- end -}}
{{- if and (not .Values.controller.enabled) (not .Values.provider.enabled) -}}
{{- fail "controller.enabled and provider.enabled are both false: kauth would do nothing" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.enabled) -}}
{{- fail "tls.certManager.enabled needs tls.enabled=true: the certificate is for kauth to serve HTTPS with" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name: the cert-manager (Cluster)Issuer to ask" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.certManager.enabled) (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret in kauth's namespace) or tls.certManager.enabled=true" -}}
{{- end -}}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) -}}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs: the Gateway to attach to, e.g. [{name: public, namespace: gateway-system}]" -}}
{{- end -}}
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
