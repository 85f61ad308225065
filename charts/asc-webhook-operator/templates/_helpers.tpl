{{/* Chart name, overridable. */}}
{{- define "asc-webhook-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: <release>-<chart> unless the release name already holds it. */}}
{{- define "asc-webhook-operator.fullname" -}}
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

{{- define "asc-webhook-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "asc-webhook-operator.labels" -}}
helm.sh/chart: {{ include "asc-webhook-operator.chart" . }}
{{ include "asc-webhook-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's pods; never change them in an upgrade. */}}
{{- define "asc-webhook-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "asc-webhook-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "asc-webhook-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "asc-webhook-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "asc-webhook-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: asked for, or needed because several replicas run. */}}
{{- define "asc-webhook-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{- define "asc-webhook-operator.leaseName" -}}
{{- default (include "asc-webhook-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The base URL routes report in status.url: publicUrl, else https://<ingress host>, else empty. */}}
{{- define "asc-webhook-operator.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.host }}
{{- printf "https://%s" .Values.ingress.host }}
{{- end }}
{{- end }}

{{/* Whether the PodDisruptionBudget is rendered: "auto" means only with more than one replica. */}}
{{- define "asc-webhook-operator.pdbEnabled" -}}
{{- $e := .Values.podDisruptionBudget.enabled }}
{{- if eq (toString $e) "auto" }}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- else if $e }}true{{ end }}
{{- end }}

{{/*
  Exactly the API calls the operator makes, nothing more:
  - routes and credentials are watched (reflector caches) and only their status is written, except
    that a route with spec.appStoreConnect gets a finalizer (patch of metadata.finalizers) so its App
    Store Connect webhook is deleted with it;
  - deliveries are created by the receiver, patched and pruned (history limit) by the controllers;
  - Secrets are read by name (webhook secret, HTTP URL and headers, API key): get only, no list or watch,
    so the operator never holds every Secret of the cluster in memory; create only for a route with
    appStoreConnect.generateSecret, whose webhook Secret the operator makes once (never update: an
    existing Secret is never overwritten);
  - Jobs are watched for completion, never changed or deleted (the delivery owns them; garbage
    collection removes them). They are created in the operator's own name only for routes without a
    ServiceAccount while no defaultServiceAccount is set; with one set, every route's actions run as a
    ServiceAccount of its namespace, so the operator itself may not create Jobs at all;
  - ServiceAccounts are impersonated (for the routes' actions) and read (to warn when one is missing);
  - Events are recorded on the resources.
*/}}
{{- define "asc-webhook-operator.rules" }}
rules:
  - apiGroups: [asc.webhooks.dev]
    resources: [webhookroutes]
    verbs: [get, list, watch, patch]
  - apiGroups: [asc.webhooks.dev]
    resources: [asccredentials]
    verbs: [get, list, watch]
  - apiGroups: [asc.webhooks.dev]
    resources: [webhookdeliveries]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [asc.webhooks.dev]
    resources: [webhookroutes/status, asccredentials/status, webhookdeliveries/status]
    verbs: [get, patch, update]
  # Secrets: read by name, and created for appStoreConnect.generateSecret; with secretAccess watch also
  # listed and watched, as metadata only (the operator asks for no values that way).
  - apiGroups: [""]
    resources: [secrets]
    {{- if eq .Values.secretAccess "watch" }}
    verbs: [get, list, watch, create]
    {{- else }}
    verbs: [get, create]
    {{- end }}
  - apiGroups: [batch]
    resources: [jobs]
    {{- if .Values.defaultServiceAccount }}
    verbs: [get, list, watch]
    {{- else }}
    verbs: [get, list, watch, create]
    {{- end }}
  - apiGroups: [""]
    resources: [serviceaccounts]
    verbs: [get, impersonate]
  - apiGroups: [events.k8s.io]
    resources: [events]
    verbs: [create, patch]
{{- range .Values.extraResources }}
  # A kind resource rules create: followed by a metadata watch, read when it changes.
  - apiGroups: [{{ .apiGroup | quote }}]
    resources: {{ toJson .resources }}
    {{- if $.Values.defaultServiceAccount }}
    verbs: [get, list, watch]
    {{- else }}
    verbs: [get, list, watch, create]
    {{- end }}
{{- end }}
{{- end }}
