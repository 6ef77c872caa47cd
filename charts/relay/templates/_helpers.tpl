{{/*
Names and labels, one definition each. Objects are named RELEASE-relay, or RELEASE alone
when the release name already says "relay"; 63 characters at most (a DNS label).
*/}}
{{- define "relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "relay.fullname" -}}
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

{{- define "relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels every object carries (the app.kubernetes.io recommended set), without the
component; "relay.labels" adds component "server" for relay's own objects.
*/}}
{{- define "relay.commonLabels" -}}
helm.sh/chart: {{ include "relay.chart" . }}
app.kubernetes.io/name: {{ include "relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: bunny-relay
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "relay.labels" -}}
{{ include "relay.commonLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
What selects relay's pods. The component keeps `helm test` pods (component "test") out
of the Deployment's ReplicaSets and out of the NetworkPolicy's podSelector.
*/}}
{{- define "relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "relay.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The pod is told to stop -> preStop sleep (endpoints and the NLB stop sending it new
connections) -> SIGTERM: relay drains for up to gracePeriodSeconds and takes a few
seconds more to stop (relay's own bound is grace + 3 s) -> SIGKILL. Derived, never set
by hand, so the kubelet never kills relay mid-drain.
*/}}
{{- define "relay.terminationGracePeriodSeconds" -}}
{{- add .Values.lifecycle.preStopSleepSeconds .Values.relay.gracePeriodSeconds 5 }}
{{- end }}

{{/*
Does the release run more than one pod (and so get a PodDisruptionBudget)?
*/}}
{{- define "relay.multiplePods" -}}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.minReplicas) 1 }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/*
The in-cluster DNS name of relay's Service, with the trailing dot that makes it one query.
*/}}
{{- define "relay.serviceFqdn" -}}
{{- printf "%s.%s.svc.%s." (include "relay.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
relay's TLS Secret: cert-manager's RELEASE-relay-tls, or the existing one in tls.secretName.
*/}}
{{- define "relay.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled }}
{{- if .Values.tls.secretName }}
{{- fail "tls.secretName and tls.certManager.enabled exclude each other: cert-manager writes Secret RELEASE-relay-tls itself; set one of them" }}
{{- end }}
{{- printf "%s-tls" (include "relay.fullname" .) }}
{{- else if .Values.tls.secretName }}
{{- .Values.tls.secretName }}
{{- else }}
{{- fail "tls.enabled needs a certificate: tls.certManager.enabled (cert-manager issues it) or tls.secretName (an existing kubernetes.io/tls Secret)" }}
{{- end }}
{{- end }}

{{/*
The client certificate `helm test` presents to a relay that requires one.
*/}}
{{- define "relay.testClientSecretName" -}}
{{- printf "%s-test-client-tls" (include "relay.fullname" .) }}
{{- end }}

{{/*
The port the probes ask: relay.port, or with TLS the plaintext health-only port (the
kubelet's gRPC probes cannot speak TLS).
*/}}
{{- define "relay.probePort" -}}
{{- if .Values.tls.enabled }}
{{- if eq (int .Values.relay.healthPort) (int .Values.relay.port) }}
{{- fail "relay.healthPort must differ from relay.port: the health port is plaintext, relay.port serves TLS" }}
{{- end }}
{{- .Values.relay.healthPort }}
{{- else }}
{{- .Values.relay.port }}
{{- end }}
{{- end }}
