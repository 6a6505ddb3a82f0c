{{/* vim: set filetype=mustache: */}}

{{/* The seven services, in start-up order of their dependencies' owners. */}}
{{- define "hypersdk.serviceNames" -}}
gateway identity policy secrets exporter audit webhooks
{{- end }}

{{/* Services that own a PostgreSQL database (and run migrations). */}}
{{- define "hypersdk.databaseServices" -}}
identity policy exporter audit webhooks
{{- end }}

{{- define "hypersdk.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every resource. If the release name contains the chart name it is used
as is, so `helm install hypersdk` gives hypersdk-gateway, not hypersdk-hypersdk-gateway.
Truncated so that "<fullname>-<service>-migrate" stays within 63 characters.
*/}}
{{- define "hypersdk.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hypersdk.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select every pod of the release. */}}
{{- define "hypersdk.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hypersdk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hypersdk.labels" -}}
helm.sh/chart: {{ include "hypersdk.chart" . }}
{{ include "hypersdk.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hypersdk
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one service: (dict "root" $ "service" "identity") */}}
{{- define "hypersdk.componentSelectorLabels" -}}
{{ include "hypersdk.selectorLabels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{- define "hypersdk.componentLabels" -}}
{{ include "hypersdk.labels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{/*
Network capability labels of a service's pods; the NetworkPolicies select on these.
(dict "root" $ "service" "identity" "rabbitmq" true)
*/}}
{{- define "hypersdk.networkLabels" -}}
{{- if .rabbitmq }}
hypersdk.io/egress-rabbitmq: "true"
{{- end }}
{{- if has .service (splitList " " (include "hypersdk.databaseServices" .root)) }}
hypersdk.io/egress-postgres: "true"
{{- end }}
{{- if include "hypersdk.vaultLogin" . }}
hypersdk.io/egress-vault: "true"
{{- end }}
{{- end }}

{{/*
How a service logs in to Vault: "approle", "token" or "" (no Vault login). The secrets
service always logs in; identity, policy, exporter, audit and webhooks only when
vault.transit.enabled (they sign with or read transit keys); the gateway never. A migration Job (.migration) never
logs in. A service that needs a login gets exactly one: its AppRole Secret, or (secrets
only) a token Secret. (dict "root" $ "service" "identity" ["migration" true])
*/}}
{{- define "hypersdk.vaultLogin" -}}
{{- $needs := or (eq .service "secrets") (and .root.Values.vault.transit.enabled (has .service (list "identity" "policy" "exporter" "audit" "webhooks"))) }}
{{- if and $needs (not .migration) }}
{{- $vault := (index .root.Values.services .service).vault | default dict }}
{{- if and $vault.approleSecret $vault.tokenSecret }}
{{- fail (printf "services.%s.vault: set approleSecret or tokenSecret, not both" .service) }}
{{- else if $vault.approleSecret }}approle
{{- else if $vault.tokenSecret }}token
{{- else if eq .service "secrets" }}
{{- fail "services.secrets.vault.approleSecret (or tokenSecret) is required: the secrets service logs in to Vault" }}
{{- else }}
{{- fail (printf "services.%s.vault.approleSecret is required: with vault.transit.enabled %s logs in to Vault" .service .service) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Resource name of one service: <fullname>-<service>. */}}
{{- define "hypersdk.componentName" -}}
{{- printf "%s-%s" (include "hypersdk.fullname" .root) .service }}
{{- end }}

{{/* Environment prefix of one service: HYPERSDK_<SERVICE>_ */}}
{{- define "hypersdk.envPrefix" -}}
{{- printf "HYPERSDK_%s_" (upper .) }}
{{- end }}

{{- define "hypersdk.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Environment of one service (shared by its Deployment and its migration Job).
Secrets only ever arrive through secretKeyRef or a mounted file.
(dict "root" $ "service" "identity")
*/}}
{{- define "hypersdk.env" -}}
{{- $svc := index .root.Values.services .service }}
{{- $prefix := include "hypersdk.envPrefix" .service }}
- name: {{ $prefix }}AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "services.%s.existingSecret is required" .service) $svc.existingSecret }}
      key: {{ $svc.secretKeys.amqpUrl }}
{{- if has .service (splitList " " (include "hypersdk.databaseServices" .root)) }}
- name: {{ $prefix }}DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $svc.existingSecret }}
      key: {{ required (printf "services.%s.secretKeys.databaseUrl is required" .service) $svc.secretKeys.databaseUrl }}
{{- end }}
{{- if eq .service "gateway" }}
- name: HYPERSDK_GATEWAY_HOST
  value: "0.0.0.0"
- name: HYPERSDK_GATEWAY_PORT
  value: {{ $svc.port | quote }}
{{- $tls := $svc.tls | default dict }}
{{- if $tls.existingSecret }}
- name: HYPERSDK_GATEWAY_TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" (trimSuffix "/" $tls.mountPath) | quote }}
- name: HYPERSDK_GATEWAY_TLS_KEY_FILE
  value: {{ printf "%s/tls.key" (trimSuffix "/" $tls.mountPath) | quote }}
{{- if $tls.clientCaKey }}
- name: HYPERSDK_GATEWAY_TLS_CLIENT_CA_FILE
  value: {{ printf "%s/client-ca.crt" (trimSuffix "/" $tls.mountPath) | quote }}
- name: HYPERSDK_GATEWAY_TLS_CLIENT_CERT_REQUIRED
  value: {{ $tls.clientCertRequired | quote }}
{{- end }}
{{- end }}
{{- with $svc.corsOrigins }}
- name: HYPERSDK_GATEWAY_CORS_ORIGINS
  value: {{ toJson . | quote }}
{{- end }}
{{- with $svc.trustedProxies }}
- name: HYPERSDK_GATEWAY_TRUSTED_PROXIES
  value: {{ toJson . | quote }}
{{- end }}
{{- with $svc.rateLimits }}
- name: HYPERSDK_GATEWAY_RATE_LIMITS
  value: {{ toJson . | quote }}
{{- end }}
{{- with $svc.bodyLimits }}
- name: HYPERSDK_GATEWAY_BODY_LIMITS
  value: {{ toJson . | quote }}
{{- end }}
- name: HYPERSDK_GATEWAY_CREDENTIAL_CACHE_SECONDS
  value: {{ $svc.credentialCacheSeconds | toString | quote }}
- name: HYPERSDK_GATEWAY_MAX_PENDING_EVENTS
  value: {{ $svc.maxPendingEvents | toString | quote }}
- name: HYPERSDK_GATEWAY_EVENT_BATCH_SIZE
  value: {{ $svc.eventBatchSize | toString | quote }}
- name: HYPERSDK_GATEWAY_EVENT_BATCH_WAIT_SECONDS
  value: {{ $svc.eventBatchWaitSeconds | toString | quote }}
- name: HYPERSDK_GATEWAY_HEADER_TIMEOUT_SECONDS
  value: {{ $svc.headerTimeoutSeconds | toString | quote }}
- name: HYPERSDK_GATEWAY_BODY_TIMEOUT_SECONDS
  value: {{ $svc.bodyTimeoutSeconds | toString | quote }}
- name: HYPERSDK_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS
  value: {{ $svc.maxConnectionsPerAddress | toString | quote }}
{{- else }}
- name: {{ $prefix }}HEALTH_HOST
  value: "0.0.0.0"
- name: {{ $prefix }}HEALTH_PORT
  value: {{ .root.Values.healthPort | quote }}
{{- end }}
{{- /* Topology comes from deploy/rabbitmq/definitions.json; users may not configure it. */}}
- name: {{ $prefix }}DECLARE_TOPOLOGY
  value: "false"
{{- $keys := trimSuffix "/" .root.Values.signing.mountPath }}
{{- $transit := .root.Values.vault.transit }}
{{- if not $transit.enabled }}
{{- if eq .service "identity" }}
- name: HYPERSDK_IDENTITY_SIGNING_KEY_FILE
  value: {{ printf "%s/identity.key" $keys | quote }}
- name: HYPERSDK_IDENTITY_POLICY_PUBLIC_KEY_FILE
  value: {{ printf "%s/policy.pub" $keys | quote }}
{{- else if eq .service "policy" }}
- name: HYPERSDK_POLICY_SIGNING_KEY_FILE
  value: {{ printf "%s/policy.key" $keys | quote }}
- name: HYPERSDK_POLICY_IDENTITY_PUBLIC_KEY_FILE
  value: {{ printf "%s/identity.pub" $keys | quote }}
{{- else if ne .service "gateway" }}
- name: {{ $prefix }}POLICY_PUBLIC_KEY_FILE
  value: {{ printf "%s/policy.pub" $keys | quote }}
{{- end }}
{{- if eq .service "audit" }}
- name: HYPERSDK_AUDIT_CHECKPOINT_KEY_FILE
  value: {{ printf "%s/audit.key" $keys | quote }}
{{- end }}
{{- else }}
{{- /* Decision 0046: identity and policy sign in transit; verifiers read its public keys. */}}
{{- $identityKey := required "vault.transit.identityKey is required" $transit.identityKey }}
{{- $policyKey := required "vault.transit.policyKey is required" $transit.policyKey }}
{{- if eq .service "identity" }}
- name: HYPERSDK_IDENTITY_TRANSIT_KEY
  value: {{ $identityKey | quote }}
- name: HYPERSDK_IDENTITY_POLICY_TRANSIT_KEY
  value: {{ $policyKey | quote }}
{{- else if eq .service "policy" }}
- name: HYPERSDK_POLICY_TRANSIT_KEY
  value: {{ $policyKey | quote }}
- name: HYPERSDK_POLICY_IDENTITY_TRANSIT_KEY
  value: {{ $identityKey | quote }}
{{- else if ne .service "gateway" }}
- name: {{ $prefix }}POLICY_TRANSIT_KEY
  value: {{ $policyKey | quote }}
{{- end }}
{{- if eq .service "audit" }}
{{- /* Decision 0047: audit signs the checkpoints of its log with its own transit key. */}}
- name: HYPERSDK_AUDIT_CHECKPOINT_TRANSIT_KEY
  value: {{ required "vault.transit.auditKey is required" $transit.auditKey | quote }}
{{- end }}
{{- end }}
{{- if eq .service "gateway" }}
- name: HYPERSDK_GATEWAY_SIGNING_KEY_FILE
  value: {{ printf "%s/gateway.key" $keys | quote }}
{{- else }}
- name: {{ $prefix }}GATEWAY_PUBLIC_KEY_FILE
  value: {{ printf "%s/gateway.pub" $keys | quote }}
{{- end }}
{{- $login := include "hypersdk.vaultLogin" . }}
{{- if $login }}
{{- $dir := trimSuffix "/" .root.Values.vault.mountPath }}
- name: {{ $prefix }}VAULT_ADDR
  value: {{ required "vault.addr is required" .root.Values.vault.addr | quote }}
{{- if eq $login "approle" }}
- name: {{ $prefix }}VAULT_ROLE_ID_FILE
  value: {{ printf "%s/role-id" $dir | quote }}
- name: {{ $prefix }}VAULT_SECRET_ID_FILE
  value: {{ printf "%s/secret-id" $dir | quote }}
{{- else }}
- name: {{ $prefix }}VAULT_TOKEN_FILE
  value: {{ printf "%s/token" $dir | quote }}
{{- end }}
{{- if .root.Values.vault.caSecret }}
- name: {{ $prefix }}VAULT_CA_FILE
  value: {{ printf "%s/ca.crt" $dir | quote }}
{{- end }}
{{- end }}
{{- if has .service (list "audit" "webhooks") }}
- name: {{ $prefix }}PUBLISHERS
  value: {{ toJson ($svc.publishers | default dict) | quote }}
{{- end }}
{{- if eq .service "webhooks" }}
{{- /* The Fernet keys that seal endpoints' signing secrets at rest, as files. */}}
{{- $sealing := trimSuffix "/" $svc.sealingKeyMountPath }}
- name: HYPERSDK_WEBHOOKS_SEALING_KEY_FILE
  value: {{ printf "%s/sealing-key" $sealing | quote }}
{{- with $svc.retiredSealingKeys }}
{{- $retired := list }}
{{- range . }}
{{- $retired = append $retired (printf "%s/%s" $sealing .) }}
{{- end }}
- name: HYPERSDK_WEBHOOKS_RETIRED_SEALING_KEY_FILES
  value: {{ toJson $retired | quote }}
{{- end }}
- name: HYPERSDK_WEBHOOKS_ALLOWED_NETWORKS
  value: {{ toJson ($svc.allowedNetworks | default list) | quote }}
- name: HYPERSDK_WEBHOOKS_ALLOWED_HOSTS
  value: {{ toJson ($svc.allowedHosts | default list) | quote }}
- name: HYPERSDK_WEBHOOKS_NAMESERVERS
  value: {{ toJson ($svc.nameservers | default list) | quote }}
{{- if $svc.brokerAuth.enabled }}
- name: HYPERSDK_WEBHOOKS_BROKER_AUTH_HOST
  value: "0.0.0.0"
- name: HYPERSDK_WEBHOOKS_BROKER_AUTH_PORT
  value: {{ $svc.brokerAuth.port | quote }}
{{- end }}
{{- end }}
{{- if eq .service "exporter" }}
- name: HYPERSDK_EXPORTER_EXPORT_DIR
  value: {{ $svc.exportDir | quote }}
{{- if $svc.labRoot }}
- name: HYPERSDK_EXPORTER_LAB_ROOT
  value: {{ $svc.labRoot | quote }}
{{- end }}
- name: HYPERSDK_EXPORTER_JOB_CONCURRENCY
  value: {{ $svc.jobConcurrency | default 1 | quote }}
- name: HYPERSDK_EXPORTER_PROVIDER_CONCURRENCY
  value: {{ $svc.providerConcurrency | default 4 | quote }}
- name: HYPERSDK_EXPORTER_MAX_JOB_ATTEMPTS
  value: {{ $svc.maxJobAttempts | default 5 | quote }}
- name: HYPERSDK_EXPORTER_STALE_JOB_SECONDS
  value: {{ $svc.staleJobSeconds | default 60 | quote }}
{{- with $svc.libvirtDiskRoots }}
- name: HYPERSDK_EXPORTER_LIBVIRT_DISK_ROOTS
  value: {{ toJson . | quote }}
{{- end }}
{{- end }}
{{- with $svc.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes of one service: /tmp always, plus its own. (dict "root" $ "service" "x") */}}
{{- define "hypersdk.volumes" -}}
{{- $svc := index .root.Values.services .service }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.tmpSizeLimit }}
- name: signing-keys
  secret:
    secretName: {{ required "signing.existingSecret is required" .root.Values.signing.existingSecret }}
    defaultMode: 288 # 0440: readable by the fsGroup only
    items:
      {{- if eq .service "gateway" }}
      - key: gateway.key
        path: gateway.key
      {{- else }}
      {{- if not .root.Values.vault.transit.enabled }}
      {{- if eq .service "identity" }}
      - key: identity.key
        path: identity.key
      {{- else if eq .service "policy" }}
      - key: policy.key
        path: policy.key
      - key: identity.pub
        path: identity.pub
      {{- end }}
      {{- if ne .service "policy" }}
      - key: policy.pub
        path: policy.pub
      {{- end }}
      {{- if eq .service "audit" }}
      - key: audit.key
        path: audit.key
      {{- end }}
      {{- end }}
      - key: gateway.pub
        path: gateway.pub
      {{- end }}
{{- $tls := $svc.tls | default dict }}
{{- if and (eq .service "gateway") $tls.existingSecret }}
- name: gateway-tls
  secret:
    secretName: {{ $tls.existingSecret }}
    defaultMode: 288 # 0440: readable by the fsGroup only
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      {{- if $tls.clientCaKey }}
      - key: {{ $tls.clientCaKey }}
        path: client-ca.crt
      {{- end }}
{{- end }}
{{- $login := include "hypersdk.vaultLogin" . }}
{{- if $login }}
{{- /* One directory: the service's own login (AppRole or token) and the CA bundle. */}}
- name: vault
  projected:
    defaultMode: 288 # 0440: readable by the fsGroup only
    sources:
      {{- if eq $login "approle" }}
      - secret:
          name: {{ $svc.vault.approleSecret }}
          items:
            - key: role-id
              path: role-id
            - key: secret-id
              path: secret-id
      {{- else }}
      - secret:
          name: {{ $svc.vault.tokenSecret }}
          items:
            - key: {{ required "services.secrets.vault.tokenKey is required" $svc.vault.tokenKey }}
              path: token
      {{- end }}
      {{- with .root.Values.vault.caSecret }}
      - secret:
          name: {{ . }}
          items:
            - key: {{ required "vault.caKey is required" $.root.Values.vault.caKey }}
              path: ca.crt
      {{- end }}
{{- end }}
{{- if eq .service "webhooks" }}
- name: sealing-keys
  secret:
    secretName: {{ required "services.webhooks.sealingKeySecret is required" $svc.sealingKeySecret }}
    defaultMode: 288 # 0440: readable by the fsGroup only
    items:
      - key: sealing-key
        path: sealing-key
      {{- range $svc.retiredSealingKeys }}
      {{- if eq . "sealing-key" }}
      {{- fail "services.webhooks.retiredSealingKeys: sealing-key is the current key, not a retired one" }}
      {{- end }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- if eq .service "exporter" }}
- name: exports
  persistentVolumeClaim:
    claimName: {{ include "hypersdk.exportsClaimName" .root }}
{{- if and $svc.labRoot $svc.labVolume }}
- name: lab
  {{- toYaml $svc.labVolume | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hypersdk.volumeMounts" -}}
{{- $svc := index .root.Values.services .service }}
- name: tmp
  mountPath: /tmp
{{- $tls := $svc.tls | default dict }}
{{- if and (eq .service "gateway") $tls.existingSecret }}
- name: gateway-tls
  mountPath: {{ $tls.mountPath }}
  readOnly: true
{{- end }}
- name: signing-keys
  mountPath: {{ .root.Values.signing.mountPath }}
  readOnly: true
{{- if include "hypersdk.vaultLogin" . }}
- name: vault
  mountPath: {{ .root.Values.vault.mountPath }}
  readOnly: true
{{- end }}
{{- if eq .service "webhooks" }}
- name: sealing-keys
  mountPath: {{ $svc.sealingKeyMountPath }}
  readOnly: true
{{- end }}
{{- if eq .service "exporter" }}
- name: exports
  mountPath: {{ $svc.exportDir }}
{{- if and $svc.labRoot $svc.labVolume }}
- name: lab
  mountPath: {{ $svc.labRoot }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "hypersdk.exportsClaimName" -}}
{{- .Values.services.exporter.persistence.existingClaim | default (printf "%s-exporter-exports" (include "hypersdk.fullname" .)) }}
{{- end }}

{{/* Pod-level settings shared by Deployments and Jobs. */}}
{{- define "hypersdk.podCommon" -}}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Name of the audit retention CronJob (and its ServiceAccount): <fullname>-audit-retention, the
fullname cut so the name stays within the 52 characters a CronJob may have (its Jobs add a
suffix of 11).
*/}}
{{- define "hypersdk.retentionName" -}}
{{- printf "%s-audit-retention" (include "hypersdk.fullname" . | trunc 36 | trimSuffix "-") }}
{{- end }}

{{/*
The audit retention settings, checked (decision 0048): "true" when the retention job is on,
"" when off; a misconfiguration fails the render. Used by the CronJob and by audit's migrate
Job, which provisions the retention role from the same Secret.
*/}}
{{- define "hypersdk.retentionEnabled" -}}
{{- $audit := .Values.services.audit }}
{{- $r := $audit.retention | default dict }}
{{- if $r.enabled }}
{{- if and (kindIs "invalid" $r.maxAgeDays) (kindIs "invalid" $r.maxEntries) }}
{{- fail "services.audit.retention: set maxAgeDays or maxEntries (or both): with neither the retention job cuts nothing" }}
{{- end }}
{{- if not $r.existingSecret }}
{{- fail "services.audit.retention.existingSecret is required: the Secret with the retention role's database URL (HYPERSDK_AUDIT_RETENTION_DATABASE_URL)" }}
{{- end }}
{{- if and (eq $r.existingSecret $audit.existingSecret) (eq $r.secretKey $audit.secretKeys.databaseUrl) }}
{{- fail "services.audit.retention: existingSecret/secretKey name the audit service's own database URL; the retention role is a login of its own" }}
{{- end }}
{{- include "hypersdk.checkMigrationAdmin" . }}
{{- true }}
{{- end }}
{{- end }}

{{/* The retention role's URL, from its Secret (the CronJob and audit's migrate Job only). */}}
{{- define "hypersdk.retentionDatabaseUrl" -}}
{{- $r := .Values.services.audit.retention }}
- name: HYPERSDK_AUDIT_RETENTION_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $r.existingSecret }}
      key: {{ required "services.audit.retention.secretKey is required" $r.secretKey }}
{{- end }}

{{/*
Refuses migration Jobs that cannot work (decision 0048): audit's schema is owned by a NOLOGIN
role only an administrator can create and act as, so audit's migrate stops without the
administrator's connection (HYPERSDK_AUDIT_MIGRATION_DATABASE_URL, from migrations.adminSecret).
Identity, policy and the exporter could still migrate as their own DBA-made roles; audit cannot.
Renders nothing. Called by migrations.yaml and by hypersdk.retentionEnabled, so the render
fails with this message whichever template comes first.
*/}}
{{- define "hypersdk.checkMigrationAdmin" -}}
{{- $m := .Values.migrations }}
{{- if and $m.enabled (not $m.adminSecret) (has "audit" (splitList " " (include "hypersdk.databaseServices" .))) }}
{{- $retention := "" }}
{{- if (.Values.services.audit.retention | default dict).enabled }}
{{- $retention = " (and the retention role)" }}
{{- end }}
{{- fail (printf "migrations.enabled needs migrations.adminSecret: audit's migrate Job must create the NOLOGIN owner of audit's schema%s and migrate as that owner, which takes an administrator's PostgreSQL connection (HYPERSDK_AUDIT_MIGRATION_DATABASE_URL; decision 0048). Set migrations.adminSecret to an existing Secret holding an administrator's URL (key migrations.adminSecretKey), or set migrations.enabled=false and run `hypersdk-audit migrate` with HYPERSDK_AUDIT_MIGRATION_DATABASE_URL yourself" $retention) }}
{{- end }}
{{- end }}
