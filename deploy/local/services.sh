#!/usr/bin/env bash
# Native local services for machines without a Docker engine: Apache Kafka 3.9.1 (KRaft, jars
# from Maven Central), Debian's clickhouse-server and Debian's prometheus, all on 127.0.0.1.
#
#   deploy/local/services.sh up       start what is not running, wait until each answers
#   deploy/local/services.sh down     stop only the processes this script started (pid files)
#   deploy/local/services.sh status   print what answers where
#
# Idempotent: a service that already answers on its port is left alone (and not stopped by
# `down` unless this script started it). State lives in $CX_STATE_DIR (default: <repo>/.state);
# the Kafka jars are cached in $CX_CACHE_DIR (default: ~/.cache/cxsignals) across clones.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STATE="${CX_STATE_DIR:-$REPO/.state}"
CACHE="${CX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cxsignals}"
KAFKA_VERSION="3.9.1"
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
CH_TCP_PORT=9000
CH_HTTP_PORT=8123
PROM_PORT=9090
WAIT_S="${CX_SERVICES_WAIT_S:-90}"

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() {
  local f="$STATE/$1.pid"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

wait_for() { # name, seconds, command...
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  until "$@"; do
    if (( SECONDS - start >= limit )); then
      die "$name did not answer within ${limit}s; see its log under $STATE/logs/"
    fi
    if [[ -f "$STATE/$name.pid" ]] && ! pid_alive "$name"; then
      tail -n 30 "$STATE/logs/$name.log" >&2 || true
      die "$name exited during start-up; last lines of $STATE/logs/$name.log are above"
    fi
    sleep 0.5
  done
  log "$name answers (${SECONDS}s since start of 'up')"
}

apt_install() { # package...
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
    die "missing Debian package(s) $*: run 'sudo apt-get install -y $*' and try again"
  fi
  local sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  log "installing Debian package(s): $*"
  if ! { $sudo apt-get install -y -qq "$@" >/dev/null 2>&1 ||
         { $sudo apt-get update -qq >/dev/null 2>&1 &&
           DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null; }; }; then
    die "apt-get could not install $*: check the network/apt sources, then run 'apt-get install -y $*'"
  fi
}

require_cmd() { # command, hint
  command -v "$1" >/dev/null || die "'$1' is not installed: $2"
}

# ---------------------------------------------------------------- Kafka
kafka_jars() {
  if [[ -f "$KAFKA_LIBS/.complete" ]]; then return; fi
  require_cmd java "install a Java 17 runtime, e.g. 'apt-get install -y openjdk-17-jre-headless'"
  require_cmd mvn "install Maven, e.g. 'apt-get install -y maven'"
  log "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies (Maven Central)"
  mkdir -p "$KAFKA_LIBS"
  mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -Dkafka.version="$KAFKA_VERSION" -DoutputDirectory="$KAFKA_LIBS" \
    || die "Maven could not resolve the Kafka jars: check that Maven Central is reachable"
  touch "$KAFKA_LIBS/.complete"
}

kafka_up() {
  if port_open $KAFKA_PORT; then log "kafka already answers on 127.0.0.1:$KAFKA_PORT"; return; fi
  require_cmd java "install a Java 17 runtime, e.g. 'apt-get install -y openjdk-17-jre-headless'"
  kafka_jars
  local dir="$STATE/kafka"
  mkdir -p "$dir/data" "$STATE/logs"
  sed -e "s#@DATA_DIR@#$dir/data#" "$HERE/kafka/server.properties" > "$dir/server.properties"
  sed -e "s#@LOG_DIR@#$STATE/logs#" "$HERE/kafka/log4j.properties" > "$dir/log4j.properties"
  local cp="$KAFKA_LIBS/*"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    java -cp "$cp" -Dlog4j.configuration="file:$dir/log4j.properties" kafka.tools.StorageTool \
      format -t "$cluster_id" -c "$dir/server.properties" --ignore-formatted >"$STATE/logs/kafka-format.log" 2>&1 \
      || { cat "$STATE/logs/kafka-format.log" >&2; die "kafka storage format failed"; }
  fi
  log "starting kafka $KAFKA_VERSION (KRaft, broker 127.0.0.1:$KAFKA_PORT, controller :$KAFKA_CONTROLLER_PORT)"
  nohup java -Xms512m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$dir/log4j.properties" -Dkafka.logs.dir="$STATE/logs" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >"$STATE/logs/kafka.log" 2>&1 &
  echo $! > "$STATE/kafka.pid"
}

kafka_ready() {
  port_open $KAFKA_PORT && grep -qs "Kafka Server started" "$STATE/logs/kafka-server.log"
}

# ---------------------------------------------------------------- ClickHouse
clickhouse_up() {
  if port_open $CH_TCP_PORT; then log "clickhouse already answers on 127.0.0.1:$CH_TCP_PORT"; return; fi
  command -v clickhouse-server >/dev/null || [[ -x /usr/sbin/clickhouse-server ]] \
    || apt_install clickhouse-server clickhouse-client
  local bin; bin="$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)"
  local dir="$STATE/clickhouse"
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$STATE/logs"
  python3 "$HERE/clickhouse_config.py" --state "$dir" --logs "$STATE/logs" \
    --tcp-port $CH_TCP_PORT --http-port $CH_HTTP_PORT
  log "starting clickhouse-server ($(dpkg-query -W -f='${Version}' clickhouse-server 2>/dev/null || echo '?')) on 127.0.0.1:$CH_TCP_PORT / :$CH_HTTP_PORT"
  nohup "$bin" --config-file="$dir/config.xml" >"$STATE/logs/clickhouse.log" 2>&1 &
  echo $! > "$STATE/clickhouse.pid"
}

clickhouse_ready() {
  [[ "$(curl -fsS "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null)" == "Ok." ]]
}

# ---------------------------------------------------------------- Prometheus
prometheus_up() {
  if port_open $PROM_PORT; then log "prometheus already answers on 127.0.0.1:$PROM_PORT"; return; fi
  command -v prometheus >/dev/null || apt_install prometheus
  local dir="$STATE/prometheus"
  mkdir -p "$dir/data" "$STATE/logs"
  log "starting prometheus ($(prometheus --version 2>&1 | head -n1)) on 127.0.0.1:$PROM_PORT"
  nohup prometheus --config.file="$REPO/deploy/prometheus/prometheus.native.yml" \
    --storage.tsdb.path="$dir/data" --web.listen-address="127.0.0.1:$PROM_PORT" \
    --web.enable-lifecycle --storage.tsdb.retention.time=2d >"$STATE/logs/prometheus.log" 2>&1 &
  echo $! > "$STATE/prometheus.pid"
}

prometheus_ready() { curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1; }

# ---------------------------------------------------------------- commands
stop_one() {
  local name="$1" f="$STATE/$1.pid"
  if ! [[ -f "$f" ]]; then return; fi
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "$name did not stop in 30 s: SIGKILL"; kill -9 "$pid" 2>/dev/null || true; }
  fi
  rm -f "$f"
}

status() {
  local name port
  for pair in kafka:$KAFKA_PORT clickhouse:$CH_TCP_PORT prometheus:$PROM_PORT; do
    name="${pair%%:*}"; port="${pair##*:}"
    if port_open "$port"; then
      if pid_alive "$name"; then
        printf '  %-11s up    127.0.0.1:%s (pid %s, started by deploy/local)\n' "$name" "$port" "$(cat "$STATE/$name.pid")"
      else
        printf '  %-11s up    127.0.0.1:%s (not started by deploy/local)\n' "$name" "$port"
      fi
    else
      printf '  %-11s down  127.0.0.1:%s\n' "$name" "$port"
    fi
  done
}

up() {
  local t0=$SECONDS
  mkdir -p "$STATE"
  kafka_up
  clickhouse_up
  prometheus_up
  wait_for clickhouse "$WAIT_S" clickhouse_ready
  wait_for prometheus "$WAIT_S" prometheus_ready
  if pid_alive kafka; then wait_for kafka "$WAIT_S" kafka_ready; else wait_for kafka "$WAIT_S" port_open $KAFKA_PORT; fi
  log "all services answer after $((SECONDS - t0)) s"
  status
}

case "${1:-status}" in
  up) up ;;
  down) stop_one prometheus; stop_one clickhouse; stop_one kafka; status ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
