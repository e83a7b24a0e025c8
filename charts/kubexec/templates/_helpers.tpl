{{- define "kubexec.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kubexec.labels" -}}
app.kubernetes.io/name: kubexec
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubexec.selector" -}}
app.kubernetes.io/name: kubexec
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The api Pods' labels as key=value pairs, for the operator's --api-pod-selector. */}}
{{- define "kubexec.apiPodSelector" -}}
{{- $labels := include "kubexec.selector" . | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/component" "api" -}}
{{- include "kubexec.pairs" $labels -}}
{{- end -}}

{{/* A map as sorted key=value pairs joined by commas. */}}
{{- define "kubexec.pairs" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "kubexec.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "kubexec.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "kubexec.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{/* The Secret holding the result secret (see values.yaml `results`). */}}
{{- define "kubexec.resultsSecret" -}}
{{- .Values.results.secretName | default (printf "%s-results" (include "kubexec.fullname" .)) -}}
{{- end -}}

{{/* The result secret as an env entry; optional, so that without it results live only as long as their Execution. */}}
{{- define "kubexec.resultsSecretEnv" -}}
- name: KUBEXEC_RESULT_SECRET
  valueFrom: {secretKeyRef: {name: {{ include "kubexec.resultsSecret" . }}, key: secret, optional: true}}
{{- end -}}
