{{/*
Names, labels and the pieces every pod shares (security context, probes, /tmp).
*/}}

{{- define "mwa-staging.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mwa-staging.fullname" -}}
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

{{- define "mwa-staging.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "mwa-staging.labels" -}}
helm.sh/chart: {{ include "mwa-staging.chart" . }}
app.kubernetes.io/name: {{ include "mwa-staging.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mwa-staging
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "operator"). */}}
{{- define "mwa-staging.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mwa-staging.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's resources. */}}
{{- define "mwa-staging.componentLabels" -}}
{{ include "mwa-staging.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mwa-staging.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "mwa-staging.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "mwa-staging.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mwa-staging.bridgeServiceAccountName" -}}
{{- if .Values.bridge.serviceAccount.create }}
{{- default (printf "%s-bridge" (include "mwa-staging.fullname" .)) .Values.bridge.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.bridge.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces served in namespaced mode (default: the release namespace), and the gateway's. */}}
{{- define "mwa-staging.watchNamespaces" -}}
{{- $namespaces := .Values.watchNamespaces | default (list .Release.Namespace) }}
{{- if .Values.gateway.enabled }}
{{- $namespaces = append $namespaces (include "mwa-staging.gatewayNamespace" .) }}
{{- end }}
{{- join "," (uniq $namespaces) }}
{{- end }}

{{/* The namespace where the gateway creates its StagingJobs. */}}
{{- define "mwa-staging.gatewayNamespace" -}}
{{- default .Release.Namespace .Values.gateway.namespace }}
{{- end }}

{{- define "mwa-staging.gatewayServiceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (printf "%s-gateway" (include "mwa-staging.fullname" .)) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* SCOUT_URL: explicit, or the chart's HAProxy Service. */}}
{{- define "mwa-staging.scoutUrl" -}}
{{- if .Values.scout.url }}
{{- .Values.scout.url }}
{{- else if .Values.haproxy.enabled }}
{{- printf "%s://%s-haproxy:%d" (ternary "https" "http" .Values.haproxy.tls.enabled) (include "mwa-staging.fullname" .) (int .Values.haproxy.port) }}
{{- else }}
{{- fail "scout.url is required when haproxy.enabled is false" }}
{{- end }}
{{- end }}

{{/* Is the bundled PostgreSQL in use? */}}
{{- define "mwa-staging.bundledPostgres" -}}
{{- if and .Values.postgresql.enabled (not .Values.database.existingSecret) }}true{{ end }}
{{- end }}

{{- define "mwa-staging.postgresSecretName" -}}
{{- default (printf "%s-postgresql" (include "mwa-staging.fullname" .)) .Values.postgresql.existingSecret }}
{{- end }}

{{/* Pod-level security context: (dict "uid" 10001). */}}
{{- define "mwa-staging.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context, the same for every container. */}}
{{- define "mwa-staging.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Liveness and readiness probes on /healthz of a named port. */}}
{{- define "mwa-staging.httpProbes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}

{{/* Prometheus scrape annotations: (dict "ctx" $ "port" 8080). */}}
{{- define "mwa-staging.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
Environment shared by the operator and the bridge: database, Kubernetes scope,
logging. Each process reads only its part (mwa_staging/settings.py).
*/}}
{{- define "mwa-staging.commonEnv" -}}
{{- if .Values.database.existingSecret }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
{{- else if include "mwa-staging.bundledPostgres" . }}
- name: DBHOST
  value: {{ include "mwa-staging.fullname" . }}-postgresql
- name: DBPORT
  value: {{ .Values.postgresql.port | quote }}
- name: DBNAME
  value: {{ .Values.postgresql.database | quote }}
- name: DBUSER
  value: {{ .Values.postgresql.username | quote }}
- name: DBPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "mwa-staging.postgresSecretName" . }}
      key: password
{{- else }}
{{- fail "set database.existingSecret (a Secret with a libpq URL) or postgresql.enabled=true" }}
{{- end }}
- name: WATCH_NAMESPACE
  value: {{ ternary "" (include "mwa-staging.watchNamespaces" .) .Values.rbac.clusterWide | quote }}
- name: LOG_LEVEL
  value: {{ .Values.logging.level | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: KAFKA_TOPIC
  value: {{ .Values.kafka.topic | quote }}
{{- with .Values.listenAddress }}
- name: HTTP_BIND_ADDRESS
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* A user/password pair from an existing Secret: (dict "c" .Values.x.credentials "user" "ENV_USER" "password" "ENV_PASSWORD"). */}}
{{- define "mwa-staging.credentialsEnv" -}}
{{- if .c.existingSecret }}
- name: {{ .user }}
  valueFrom:
    secretKeyRef:
      name: {{ .c.existingSecret }}
      key: {{ .c.userKey }}
- name: {{ .password }}
  valueFrom:
    secretKeyRef:
      name: {{ .c.existingSecret }}
      key: {{ .c.passwordKey }}
{{- end }}
{{- end }}

{{/* Shared volume mounts: /tmp and the CA bundles (dict "ctx" $ "cas" (list ...)). */}}
{{- define "mwa-staging.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "mwa-staging.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{/* A CA bundle Secret as a one-file volume: (dict "name" "scout-ca" "ca" .Values.scout.ca). */}}
{{- define "mwa-staging.caVolume" -}}
{{- if .ca.existingSecret }}
- name: {{ .name }}
  secret:
    secretName: {{ .ca.existingSecret }}
    defaultMode: 0444
    items:
      - key: {{ .ca.key }}
        path: ca.crt
{{- end }}
{{- end }}

{{- define "mwa-staging.caVolumeMount" -}}
{{- if .ca.existingSecret }}
- name: {{ .name }}
  mountPath: /etc/mwa-staging/{{ .name }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Pod networking: hostNetwork (the pods share the node's network namespace and bind
their ports on it; each component needs its own ports) and hostAliases.
*/}}
{{- define "mwa-staging.podNetwork" -}}
{{- if .Values.hostNetwork }}
{{- include "mwa-staging.hostPortsDistinct" . }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- with .Values.hostAliases }}
hostAliases:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Rolling update of a Deployment that may run more than one pod. On the host network
a surge pod would need the same host ports on the same node as the pod it
replaces and could never be scheduled there: then one pod is replaced at a time.
*/}}
{{- define "mwa-staging.rollingUpdate" -}}
type: RollingUpdate
rollingUpdate:
{{- if .Values.hostNetwork }}
  maxSurge: 0
  maxUnavailable: 1
{{- else }}
  maxSurge: 1
  maxUnavailable: 0
{{- end }}
{{- end }}

{{/*
On the host network every port of every component is bound on the node: refuse a
rendering where two of them are the same (the second pod would never start).
*/}}
{{- define "mwa-staging.hostPortsDistinct" -}}
{{- $ports := dict "operator.httpPort" .Values.operator.httpPort "bridge.httpPort" .Values.bridge.httpPort }}
{{- if .Values.gateway.enabled }}
{{- $_ := set $ports "gateway.port" .Values.gateway.port }}
{{- end }}
{{- if .Values.haproxy.enabled }}
{{- $_ := set $ports "haproxy.port" .Values.haproxy.port }}
{{- $_ := set $ports "haproxy.monitor.port" .Values.haproxy.monitor.port }}
{{- end }}
{{- if include "mwa-staging.bundledPostgres" . }}
{{- $_ := set $ports "postgresql.port" .Values.postgresql.port }}
{{- end }}
{{- $seen := dict }}
{{- range $key, $port := $ports }}
{{- $p := toString (int $port) }}
{{- if hasKey $seen $p }}
{{- fail (printf "hostNetwork: %s and %s are both port %s; on the host network every component needs a port of its own" (get $seen $p) $key $p) }}
{{- end }}
{{- $_ := set $seen $p $key }}
{{- end }}
{{- end }}
