{{/* The release's full name, the base of every object name. */}}
{{- define "gitlab-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gitlab-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gitlab-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gitlab-agent.secretName" -}}
{{- default (printf "%s-token" (include "gitlab-agent.fullname" .)) .Values.config.secretName -}}
{{- end -}}

{{- define "gitlab-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gitlab-agent.labels" -}}
{{ include "gitlab-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Fails rendering on values that cannot make a working agent. */}}
{{- define "gitlab-agent.validate" -}}
{{- if and (not .Values.config.receptive.enabled) (not .Values.config.kasAddress) }}
{{- fail "config.kasAddress is required (wss://<kas host>/-/kubernetes-agent/ or grpcs://<kas host>:8150), unless config.receptive.enabled" }}
{{- end }}
{{- $format := toString (dig "observability" "logging" "format" "json" .Values.config) }}
{{- if not (has $format (list "json" "text")) }}
{{- fail (printf "config.observability.logging.format (%s) must be json or text" $format) }}
{{- end }}
{{- if .Values.config.receptive.enabled }}
{{- $api := .Values.config.api }}
{{- if and (not $api.jwtPublicKey) (not $api.mtls.enabled) }}
{{- fail "config.api.jwtPublicKey is required for a receptive agent: set it to the public_key of the agent's URL configuration (or enable config.api.mtls)" }}
{{- end }}
{{- $address := toString $api.listenAddress }}
{{- $port := toString (int .Values.service.internalPort) }}
{{- if not (contains ":" $address) }}
{{- fail (printf "config.api.listenAddress (%s) must be [host]:port, e.g. :%s (service.internalPort)" $address $port) }}
{{- end }}
{{- if ne (last (splitList ":" $address)) $port }}
{{- fail (printf "config.api.listenAddress (%s) must listen on service.internalPort (%s)" $address $port) }}
{{- end }}
{{- if and $api.mtls.enabled (not $api.tls.enabled) }}
{{- fail "config.api.mtls.enabled needs config.api.tls.enabled: mutual TLS is TLS" }}
{{- end }}
{{- if and $api.tls.enabled (not $api.tls.secretName) }}
{{- fail "config.api.tls.secretName is required with config.api.tls.enabled (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and $api.mtls.enabled (not $api.mtls.clientCaCert) }}
{{- fail "config.api.mtls.clientCaCert is required with config.api.mtls.enabled (--set-file config.api.mtls.clientCaCert=ca.pem)" }}
{{- end }}
{{- end }}
{{- end -}}
