{{- /* The opt-in group of alerts on how long Apple takes (prometheusRule.releaseTiming), a list item of
the PrometheusRule's groups. Prometheus's own templates are escaped from Helm's. */}}
{{- define "asc-webhook-operator.releaseTimingRules" -}}
{{- $t := .Values.prometheusRule.releaseTiming -}}
- name: asc-webhook-operator-release-timing
  rules:
    - alert: AscWebhookWaitingForReviewTooLong
      expr: |
        max by (namespace, route) (asc_webhook_release_in_state_seconds{kind="version",state="WAITING_FOR_REVIEW"}) > {{ int64 $t.waitingForReviewSeconds }}
      labels:
        severity: info
      annotations:
        summary: An app version of route {{ "{{" }} $labels.namespace {{ "}}" }}/{{ "{{" }} $labels.route {{ "}}" }} waits long for review
        description: >-
          An app version of route {{ "{{" }} $labels.namespace {{ "}}" }}/{{ "{{" }} $labels.route {{ "}}" }} has been
          WAITING_FOR_REVIEW for {{ "{{" }} $value | humanizeDuration {{ "}}" }}, longer than
          {{ int64 $t.waitingForReviewSeconds }} s (prometheusRule.releaseTiming.waitingForReviewSeconds).
        runbook_url: docs/RUNBOOK.md#ascwebhookwaitingforreviewtoolong
    - alert: AscWebhookBuildProcessingTooLong
      expr: |
        max by (namespace, route) (asc_webhook_release_in_state_seconds{kind="build",state=~"AWAITING_UPLOAD|PROCESSING"}) > {{ int64 $t.buildProcessingSeconds }}
      labels:
        severity: warning
      annotations:
        summary: A build upload of route {{ "{{" }} $labels.namespace {{ "}}" }}/{{ "{{" }} $labels.route {{ "}}" }} is processing for long
        description: >-
          A build upload of route {{ "{{" }} $labels.namespace {{ "}}" }}/{{ "{{" }} $labels.route {{ "}}" }} has been
          awaiting upload or processing for {{ "{{" }} $value | humanizeDuration {{ "}}" }}, longer than
          {{ int64 $t.buildProcessingSeconds }} s (prometheusRule.releaseTiming.buildProcessingSeconds).
        runbook_url: docs/RUNBOOK.md#ascwebhookbuildprocessingtoolong
{{- end }}
