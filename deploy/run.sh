#!/usr/bin/env bash
# `make run`: one scoring worker, one ClickHouse sink and the journey simulator, in the foreground; Ctrl-C stops both cleanly.
# Services, topics and the ClickHouse schema are set up by `make setup` before this runs.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/.."
BIN=.venv/bin
LOGS=.state/logs
mkdir -p "$LOGS"
METRICS_PORT="${CX_METRICS_PORT:-9464}"
SINK_METRICS_PORT="${CX_SINK_METRICS_PORT:-9466}"
SIM_RATE="${CX_SIM_RATE:-20}"
SIM_CUSTOMERS="${CX_SIM_CUSTOMERS:-200}"

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "[run] stopping worker, sink and simulator..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "[run] stopped. Services keep running: 'make services-down' stops them."
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

"$BIN/cxsignals" worker >"$LOGS/worker.log" 2>&1 &
pids+=($!)
echo "[run] worker started (pid $!), log: $LOGS/worker.log"
"$BIN/cxsignals" sink >"$LOGS/sink.log" 2>&1 &
pids+=($!)
echo "[run] sink started (pid $!), log: $LOGS/sink.log"
# Simulated customers react to the cart-recovery alerts actually sent (docs/alerts.md).
"$BIN/cxsignals" simulate --rate "$SIM_RATE" --customers "$SIM_CUSTOMERS" \
  --respond "${SIM_RESPOND:-cart_recovery=0.25}" &
pids+=($!)

cat <<EOT
[run] CX Signals is running. Where to look:
  metrics      http://127.0.0.1:$METRICS_PORT/metrics (worker), :$SINK_METRICS_PORT/metrics (sink)
  prometheus   http://127.0.0.1:9090  (query e.g. rate(cx_events_processed_total[1m]))
  alerts       $BIN/cxsignals tail marketing --from-beginning   (and: tail support, tail scores)
  dead letters $BIN/cxsignals dlq show --limit 20
  clickhouse   clickhouse-client --query 'SELECT rule, count() FROM cx.alerts GROUP BY rule'
  report       $BIN/cxsignals report --since 1h
Press Ctrl-C to stop.
EOT
wait -n "${pids[@]}" || true
echo "[run] the worker, the sink or the simulator exited on its own; see $LOGS/worker.log and $LOGS/sink.log"
