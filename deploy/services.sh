#!/usr/bin/env bash
# Bring the services up/down: docker compose when a Docker engine answers, else deploy/local.
# CX_SERVICES=local|compose forces one.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/.."
mode="${CX_SERVICES:-}"
if [[ -z "$mode" ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then mode=compose; else mode=local; fi
fi
case "$mode:${1:-status}" in
  compose:up) docker compose up -d --wait kafka clickhouse prometheus grafana ;;
  compose:down) docker compose down ;;
  compose:status) docker compose ps ;;
  local:*) exec "$HERE/local/services.sh" "${1:-status}" ;;
  *) echo "usage: $0 up|down|status (CX_SERVICES=local|compose)" >&2; exit 2 ;;
esac
