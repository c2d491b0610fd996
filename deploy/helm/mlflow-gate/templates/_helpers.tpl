{{/* Names, labels and shared snippets of the mlflow-gate chart. */}}

{{- define "mlflow-gate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mlflow-gate.gateName" -}}
{{- include "mlflow-gate.fullname" . }}-gate
{{- end -}}

{{- define "mlflow-gate.nginxName" -}}
{{- include "mlflow-gate.fullname" . }}-nginx
{{- end -}}

{{- define "mlflow-gate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlflow-gate
{{- end -}}

{{/* Selector labels of one component: include with (list $ "gate") or (list $ "nginx"). */}}
{{- define "mlflow-gate.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* repository@digest when a digest is given, else repository:tag; an unpinned image is an error. */}}
{{- define "mlflow-gate.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else if and .tag (ne (toString .tag) "latest") -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- else -}}
{{- fail (printf "image %s must be pinned to a version tag or a digest" .repository) -}}
{{- end -}}
{{- end -}}

{{/* The gate's in-cluster address (host:port), used by NGINX and ingress-nginx. */}}
{{- define "mlflow-gate.gateAddress" -}}
{{- printf "%s.%s.svc.cluster.local:%v" (include "mlflow-gate.gateName" .) .Release.Namespace .Values.gate.port -}}
{{- end -}}

{{- define "mlflow-gate.mlflowHostHeader" -}}
{{- .Values.mlflow.hostHeader | default .Values.mlflow.address -}}
{{- end -}}

{{/* A PodDisruptionBudget: include with (list $ "gate" .Values.gate.podDisruptionBudget). */}}
{{- define "mlflow-gate.pdb" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $budget := index . 2 -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "mlflow-gate.fullname" $root }}-{{ $component }}
  labels:
    {{- include "mlflow-gate.labels" $root | nindent 4 }}
spec:
  maxUnavailable: {{ $budget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "mlflow-gate.selector" (list $root $component) | nindent 6 }}
{{- end -}}

{{/* Scheduling settings shared by both Deployments: include with (list $ .Values.gate "gate"). */}}
{{- define "mlflow-gate.scheduling" -}}
{{- $root := index . 0 -}}
{{- $values := index . 1 -}}
{{- $component := index . 2 -}}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range $values.topologySpreadConstraints }}
  - {{- toYaml . | nindent 4 }}
    labelSelector:
      matchLabels:
        {{- include "mlflow-gate.selector" (list $root $component) | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The project's NGINX template (files/gateway.conf.template, a link to nginx/) with its
placeholders filled the way the official image's envsubst step fills them. A placeholder the chart
does not know fails the render instead of reaching NGINX. */}}
{{- define "mlflow-gate.nginxConfig" -}}
{{- $listen := printf "%v" .Values.nginx.port -}}
{{- $tls := "" -}}
{{- if .Values.nginx.tls.secretName -}}
{{- $listen = printf "%v ssl" .Values.nginx.port -}}
{{- $dir := .Values.nginx.tls.mountPath -}}
{{- $tls = printf "ssl_certificate %s/tls.crt; ssl_certificate_key %s/tls.key;" $dir $dir -}}
{{- end -}}
{{- $conf := .Files.Get "files/gateway.conf.template" -}}
{{- if not $conf -}}
{{- fail "files/gateway.conf.template is missing from the chart" -}}
{{- end -}}
{{- $values := dict
  "GATEWAY_LISTEN" $listen
  "GATEWAY_TLS" $tls
  "GATE_UPSTREAM" (include "mlflow-gate.gateAddress" .)
  "GATE_EXTRA_SERVERS" ""
  "MLFLOW_UPSTREAM" (required "mlflow.address is required" .Values.mlflow.address)
  "MLFLOW_EXTRA_SERVERS" ""
  "MLFLOW_HOST_HEADER" (include "mlflow-gate.mlflowHostHeader" .)
  "GATEWAY_AUTH_CACHE_ZONE" ""
  "GATEWAY_AUTH_CACHE" "" -}}
{{- range $name, $value := $values -}}
{{- $conf = replace (printf "${%s}" $name) $value $conf -}}
{{- end -}}
{{- with regexFind "\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}" $conf -}}
{{- fail (printf "the NGINX template uses %s, which the chart does not set" .) -}}
{{- end -}}
{{- $conf -}}
{{- end -}}
