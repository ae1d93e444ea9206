{{- /*
haproxy.cfg of the Scout API front, the one source of it: the chart renders it into
the HAProxy ConfigMap (templates/haproxy.yaml) and the local development stack
renders the same template with loopback values (haproxy.bindAddress,
haproxy.tls.certFile, scout.backendTls.caFile, scout.nodes).

Settings from docs/contracts.md (Scout API): round robin over the Scout nodes,
retries 3, option redispatch, timeout connect 4s, client 30s, server 30s.
The Scout API has no health endpoint: the active check asks for the cache state
(GET /v1/fscache), which a live node answers with 200, or 401 without a token.

Layer-7 retries (retry-on) apply to requests HAProxy could buffer whole; a large
stage call is still retried on connection failures (retries + redispatch).
Staging or cancelling a path twice is harmless, so replaying a PUT is safe.
*/ -}}
{{- $h := .Values.haproxy -}}
{{- $scout := .Values.scout -}}
{{- $caFile := default "/usr/local/etc/haproxy/scout-ca/ca.crt" $scout.backendTls.caFile -}}
global
    log stdout format raw local0 info
    maxconn {{ $h.maxconn }}
    # No chroot, user or pid file: the process starts as an unprivileged user on a
    # read-only root filesystem.
    ssl-default-bind-options ssl-min-ver {{ $h.tls.minVersion }} no-tls-tickets
    ssl-default-server-options ssl-min-ver {{ $h.tls.minVersion }} no-tls-tickets
    tune.ssl.default-dh-param 2048
    {{- if $h.statsSocket }}
    stats socket {{ $h.statsSocket }} mode 600 level admin
    {{- end }}

defaults
    mode http
    log global
    option dontlognull
    option http-keep-alive
    option forwardfor
    option redispatch
    retries {{ $h.retries }}
    retry-on {{ $h.retryOn }}
    timeout connect {{ $h.timeouts.connect }}
    timeout client {{ $h.timeouts.client }}
    timeout server {{ $h.timeouts.server }}
    timeout check {{ $h.timeouts.check }}
    timeout http-request {{ $h.timeouts.httpRequest }}
    timeout http-keep-alive 10s
    timeout queue 30s

# /healthz for the kubelet's probes{{ if $h.monitor.prometheusExporter }}, /metrics for Prometheus{{ end }}.
frontend monitor
    bind {{ $h.monitor.bindAddress }}:{{ $h.monitor.port }}
    monitor-uri /healthz
    {{- if $h.monitor.prometheusExporter }}
    http-request use-service prometheus-exporter if { path /metrics }
    {{- end }}
    no log

frontend scout
    bind {{ $h.bindAddress }}:{{ $h.port }}{{ if $h.tls.enabled }} ssl crt {{ $h.tls.certFile }} alpn http/1.1{{ end }}
    option httplog
    default_backend scout_nodes

backend scout_nodes
    balance {{ $h.balance }}
    option httpchk {{ $h.healthCheck.request }}
    http-check expect rstatus {{ $h.healthCheck.expectStatus }}
    # init-addr: start even while a node name does not resolve (it stays down until it does).
    default-server init-addr libc,none check inter {{ $h.healthCheck.interval }} rise {{ $h.healthCheck.rise }} fall {{ $h.healthCheck.fall }}{{ if $scout.backendTls.enabled }} ssl verify required ca-file {{ $caFile }}{{ end }}
    {{- range $scout.nodes }}
    server {{ .name }} {{ .address }}:{{ .port }}{{ if and $scout.backendTls.enabled .sni }} sni str({{ .sni }}) check-sni {{ .sni }}{{ end }}
    {{- end }}
