#!/bin/sh
# Creates the tokens sentinel and Alertmanager share, once, before `kubectl apply -k deploy/`:
#   Secret sentinel-tokens          (namespace sentinel): webhook-token, oncall-token
#   Secret sentinel-webhook-token   (Alertmanager's namespace): token, the same webhook token
# Alertmanager reads it as /etc/alertmanager/secrets/sentinel-webhook-token/token (the path the
# Prometheus Operator mounts `spec.secrets` at; mount it there yourself otherwise).
# Give the on-call token to the people who may override sentinel (`sentinel --token-file`).
#
#   deploy/tokens.sh [ALERTMANAGER_NAMESPACE]     create or replace both Secrets (default: monitoring)
#   deploy/tokens.sh --print [NAMESPACE]          only print them, as YAML
set -eu
print=false
if [ "${1:-}" = "--print" ]; then print=true; shift; fi
am_ns="${1:-monitoring}"
kubectl="${KUBECTL:-kubectl}"
token() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
webhook="$(token)"
oncall="$(token)"
secrets() {
    "$kubectl" create secret generic sentinel-tokens --namespace sentinel \
        --from-literal=webhook-token="$webhook" --from-literal=oncall-token="$oncall" \
        --dry-run=client -o yaml
    echo "---"
    "$kubectl" create secret generic sentinel-webhook-token --namespace "$am_ns" \
        --from-literal=token="$webhook" --dry-run=client -o yaml
}
if $print; then
    secrets
else
    "$kubectl" create namespace sentinel --dry-run=client -o yaml | "$kubectl" apply -f -
    secrets | "$kubectl" apply -f -
    echo "tokens created: the on-call token is in Secret sentinel/sentinel-tokens, key oncall-token"
fi
