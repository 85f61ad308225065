{{/* The text helm prints after install and upgrade (NOTES.txt). A named template so tests can render it. */}}
{{- define "asc-webhook-operator.notes" -}}
{{- $fullname := include "asc-webhook-operator.fullname" . -}}
{{- $publicUrl := include "asc-webhook-operator.publicUrl" . -}}
{{- $ns := default "<namespace>" .Values.watchNamespace }}
asc-webhook-operator {{ .Chart.AppVersion }} is installed in namespace {{ .Release.Namespace }}
{{- if .Values.watchNamespace }}, watching namespace {{ .Values.watchNamespace }} only{{ else }}, watching every namespace{{ end }}.

1. Declare a route: a Secret with a webhook secret you choose, an AscCredential (optional, for
   enrichment) and a WebhookRoute{{ if .Values.watchNamespace }} in namespace {{ .Values.watchNamespace }}{{ end }}. The examples/ directory of the project has
   one per use case:

     kubectl apply -n {{ $ns }} -f examples/failure-notifier/

2. Paste each route's URL and its secret into App Store Connect
   (Users and Access → Integrations → Webhooks):
{{- if $publicUrl }}

     {{ $publicUrl }}/hooks/{{ $ns }}/<route name>
{{- else }}

     <publicUrl>/hooks/{{ $ns }}/<route name>

   WARNING: neither publicUrl nor ingress.host is set, so routes cannot report their URL in
   status.url. Set publicUrl to the HTTPS address App Store Connect reaches the receiver at, e.g.
     helm upgrade {{ .Release.Name }} <chart> -n {{ .Release.Namespace }} --reuse-values --set publicUrl=https://asc-hooks.example.com
{{- end }}

   Every route shows its URL in status.url:

     kubectl get webhookroutes -A -o wide

{{- if .Values.ingress.enabled }}

   The Ingress routes {{ if .Values.ingress.host }}{{ .Values.ingress.host }}{{ end }}/hooks to the receiver.
{{- else if eq .Values.service.type "LoadBalancer" }}

   The receiver is exposed by the LoadBalancer Service {{ $fullname }} (port {{ .Values.service.port }}):
     kubectl get service -n {{ .Release.Namespace }} {{ $fullname }}
{{- else }}

   The receiver is the Service {{ $fullname }} (port {{ .Values.service.port }}) and is not exposed outside the
   cluster yet: enable the Ingress (ingress.enabled, ingress.host) or use service.type=LoadBalancer.
{{- end }}

3. Test a route without Apple: sign an example event with the route's secret and send it.

     asc-webhook-operator send \
       --url {{ default "<publicUrl>" $publicUrl }}/hooks/{{ $ns }}/<route name> \
       --secret-file ./webhook-secret.txt \
       --example build-upload-complete

   From inside the cluster, without an Ingress:
     kubectl port-forward -n {{ .Release.Namespace }} service/{{ $fullname }} 8080:{{ .Values.service.port }}
     asc-webhook-operator send --url http://localhost:8080/hooks/{{ $ns }}/<route name> \
       --secret-file ./webhook-secret.txt --example webhook-ping

4. Watch what happened:

     kubectl get webhookdeliveries -A
     kubectl get asc -A          # credentials, routes and deliveries at once

Metrics: http://{{ $fullname }}-metrics.{{ .Release.Namespace }}.svc:{{ .Values.ports.admin }}/metrics
{{- if eq (include "asc-webhook-operator.leaderElection" .) "true" }}
Leader election: on (Lease {{ include "asc-webhook-operator.leaseName" . }} in {{ .Release.Namespace }}); every replica receives webhooks.
{{- end }}
CRDs are installed from the chart's crds/ on first install only; after an upgrade apply them yourself:
  kubectl apply --server-side -f <chart>/crds/
{{- end }}
