{{/*
Names and labels, one definition each. Objects are named RELEASE-bunny, or RELEASE alone
when the release name already says "bunny"; 63 characters at most (a DNS label).
*/}}
{{- define "bunny.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bunny.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bunny.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels every object carries (the app.kubernetes.io recommended set), without the
component; "bunny.labels" adds component "client" for bunny's own objects. An object
rendered for `kubectl apply` instead of the release (kube-system/coredns-custom) takes
"bunny.appliedLabels": the same set without managed-by, since Helm does not manage it.
*/}}
{{- define "bunny.appliedLabels" -}}
helm.sh/chart: {{ include "bunny.chart" . }}
app.kubernetes.io/name: {{ include "bunny.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: bunny-relay
{{- end }}

{{- define "bunny.commonLabels" -}}
{{ include "bunny.appliedLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "bunny.labels" -}}
{{ include "bunny.commonLabels" . }}
app.kubernetes.io/component: client
{{- end }}

{{/*
What selects bunny's pods. The component keeps `helm test` pods (component "test") out
of the Deployment's ReplicaSets and out of the NetworkPolicy's podSelector.
*/}}
{{- define "bunny.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bunny.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: client
{{- end }}

{{- define "bunny.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bunny.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bunny.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
relay's port, from bunny.target (NAME:PORT).
*/}}
{{- define "bunny.relayPort" -}}
{{- regexFind "[0-9]+$" .Values.bunny.target }}
{{- end }}

{{/*
The pod DNS configuration of bunny and its test pod (see dnsConfig in values.yaml).
*/}}
{{- define "bunny.dnsConfig" -}}
dnsPolicy: ClusterFirst
dnsConfig:
  options:
    - name: ndots
      value: {{ .Values.dnsConfig.ndots | quote }}
    {{- range .Values.dnsConfig.options }}
    - name: {{ .name }}
      {{- if hasKey . "value" }}
      value: {{ .value | quote }}
      {{- end }}
    {{- end }}
{{- end }}

{{/*
OpenTelemetry's standard variables, after the pod's names they refer to ($(VAR) only
sees variables defined before it).
*/}}
{{- define "bunny.telemetryEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: OTEL_SERVICE_NAME
  value: {{ .Values.telemetry.serviceName | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.instance.id=$(POD_NAME),k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),k8s.node.name=$(NODE_NAME),cloud.provider=azure%s" (ternary (printf ",%s" .Values.telemetry.resourceAttributes) "" (ne .Values.telemetry.resourceAttributes "")) | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .Values.telemetry.sampler | quote }}
{{- with .Values.telemetry.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- with .Values.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $.Values.telemetry.otlpProtocol | quote }}
- name: OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE
  value: {{ $.Values.telemetry.metricsTemporality | quote }}
{{- end }}
{{- end }}

{{/*
bunny's TLS Secret: cert-manager's RELEASE-bunny-tls, or the existing one in tls.secretName.
*/}}
{{- define "bunny.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled }}
{{- if .Values.tls.secretName }}
{{- fail "tls.secretName and tls.certManager.enabled exclude each other: cert-manager writes Secret RELEASE-bunny-tls itself; set one of them" }}
{{- end }}
{{- printf "%s-tls" (include "bunny.fullname" .) }}
{{- else if .Values.tls.secretName }}
{{- .Values.tls.secretName }}
{{- else }}
{{- fail "tls.enabled needs a client certificate: tls.certManager.enabled (cert-manager issues it) or tls.secretName (an existing kubernetes.io/tls Secret)" }}
{{- end }}
{{- end }}

{{/*
TLS to relay for bunny and its test pod (tls.enabled): the variables, the mounts and the
volumes. The Secrets are mounted as whole directories, never with subPath, so renewed
files reach bunny, which re-reads them before its next job.
*/}}
{{- define "bunny.tlsEnv" -}}
- name: BUNNY_TLS
  value: "true"
- name: BUNNY_TLS_CA
  value: {{ ternary (printf "/etc/bunny/relay-ca/%s" .Values.tls.relayCA.key) "/etc/bunny/tls/ca.crt" (ne .Values.tls.relayCA.secretName "") | quote }}
- name: BUNNY_TLS_CERT
  value: /etc/bunny/tls/tls.crt
- name: BUNNY_TLS_KEY
  value: /etc/bunny/tls/tls.key
{{- end }}

{{- define "bunny.tlsVolumeMounts" -}}
- name: tls
  mountPath: /etc/bunny/tls
  readOnly: true
{{- if .Values.tls.relayCA.secretName }}
- name: relay-ca
  mountPath: /etc/bunny/relay-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "bunny.tlsVolumes" -}}
- name: tls
  secret:
    secretName: {{ include "bunny.tlsSecretName" . }}
    # Readable by bunny's group (fsGroup) only.
    defaultMode: 0440
{{- if .Values.tls.relayCA.secretName }}
- name: relay-ca
  secret:
    secretName: {{ .Values.tls.relayCA.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
