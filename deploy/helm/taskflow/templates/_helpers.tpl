{{/* Names, labels and shared pieces of the TaskFlow chart. */}}

{{- define "taskflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "taskflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "taskflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "taskflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of every TaskFlow pod (all components). */}}
{{- define "taskflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "taskflow.componentSelectorLabels" -}}
{{ include "taskflow.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "taskflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "taskflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "taskflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "taskflow.appId" -}}
{{- printf "%s-%s" .root.Values.dapr.appIdPrefix .component -}}
{{- end -}}

{{/* Physical topic name: (dict "root" $ "topic" "task-events"). */}}
{{- define "taskflow.topic" -}}
{{- printf "%s%s" .root.Values.bus.topicPrefix .topic -}}
{{- end -}}

{{/* App-ids of enabled components that run a role consuming `topic`, as a JSON list. */}}
{{- define "taskflow.consumerAppIds" -}}
{{- $root := .root -}}
{{- $topic := .topic -}}
{{- $ids := list -}}
{{- range $component, $spec := $root.Values.components -}}
{{- if $spec.enabled -}}
{{- range $role := $spec.roles -}}
{{- if has $topic (default (list) (get $root.Values.dapr.subscriptions.topicsByRole $role)) -}}
{{- $ids = append $ids (include "taskflow.appId" (dict "root" $root "component" $component)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $ids | uniq | toJson -}}
{{- end -}}

{{/* App-ids of every enabled component, as a JSON list. */}}
{{- define "taskflow.allAppIds" -}}
{{- $root := . -}}
{{- $ids := list -}}
{{- range $component, $spec := .Values.components -}}
{{- if $spec.enabled -}}
{{- $ids = append $ids (include "taskflow.appId" (dict "root" $root "component" $component)) -}}
{{- end -}}
{{- end -}}
{{- $ids | toJson -}}
{{- end -}}

{{/* Environment every TaskFlow container shares: settings from the ConfigMap, secrets from Secrets. */}}
{{- define "taskflow.secretEnv" -}}
- name: TASKFLOW_DATABASE__URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.existingSecret }}, key: database-url}
{{- if ne .Values.config.secrets.backend "dapr" }}
- name: TASKFLOW_AUTH__JWT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.existingSecret }}, key: jwt-secret}
{{- end }}
{{- if eq .Values.bus.backend "kafka" }}
- name: TASKFLOW_BUS__KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.existingSecret }}, key: kafka-sasl-username, optional: true}
- name: TASKFLOW_BUS__KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.existingSecret }}, key: kafka-sasl-password, optional: true}
{{- end }}
{{- if eq .Values.bus.backend "dapr" }}
- name: TASKFLOW_BUS__DAPR__APP_API_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.daprAppTokenSecret }}, key: token}
{{- end }}
{{- end -}}

{{/* Checks of value combinations that would deploy something broken. */}}
{{- define "taskflow.validate" -}}
{{- $enabled := 0 -}}
{{- range $component, $spec := .Values.components -}}
{{- if $spec.enabled -}}
{{- $enabled = add1 $enabled -}}
{{- if and $spec.autoscaling.enabled (gt (int $spec.autoscaling.maxReplicas) (int $.Values.bus.partitions)) (has "api" $spec.roles | not) -}}
{{- fail (printf "components.%s.autoscaling.maxReplicas (%v) exceeds bus.partitions (%v): extra consumers would sit idle" $component $spec.autoscaling.maxReplicas $.Values.bus.partitions) -}}
{{- end -}}
{{- if and (has "relay" $spec.roles) $spec.autoscaling.enabled (has "api" $spec.roles | not) -}}
{{- fail (printf "components.%s runs the relay: autoscaling it adds nothing (one relay leads, the others stand by); set replicas instead" $component) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.bus.backend "memory" -}}
{{- range $component, $spec := .Values.components -}}
{{- if and $spec.enabled (or (ne $enabled 1) (gt (int $spec.replicas) 1) $spec.autoscaling.enabled) -}}
{{- fail "bus.backend=memory is in-process: enable exactly one component, running every role, with replicas 1 and autoscaling off" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.bus.backend "dapr") (not .Values.dapr.enabled) -}}
{{- fail "bus.backend=dapr needs dapr.enabled=true (the sidecar is the bus)" -}}
{{- end -}}
{{- if and (eq .Values.config.secrets.backend "dapr") (not .Values.dapr.enabled) -}}
{{- fail "config.secrets.backend=dapr needs dapr.enabled=true" -}}
{{- end -}}
{{- if not (has .Values.bus.backend (list "memory" "nats" "kafka" "dapr")) -}}
{{- fail (printf "bus.backend %q: use memory, nats, kafka or dapr" .Values.bus.backend) -}}
{{- end -}}
{{- end -}}
