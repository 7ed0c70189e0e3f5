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
# Ports: overridable so that a second copy (CX_STATE_DIR=/tmp/x) can run beside the usual one.
KAFKA_PORT="${CX_KAFKA_PORT:-9092}"
KAFKA_SECURE_PORT="${CX_KAFKA_SECURE_PORT:-9093}"
KAFKA_CONTROLLER_PORT="${CX_KAFKA_CONTROLLER_PORT:-9095}"
CH_TCP_PORT="${CX_CLICKHOUSE_TCP_PORT:-9000}"
CH_TLS_PORT="${CX_CLICKHOUSE_TLS_PORT:-9440}"
CH_HTTP_PORT="${CX_CLICKHOUSE_HTTP_PORT:-8123}"
PROM_PORT="${CX_PROMETHEUS_PORT:-9090}"
TLS="$STATE/tls"
# SCRAM principals of the secured listener (docs/security.md); cx-admin is a super user.
KAFKA_PRINCIPALS=(cx-admin cx-worker cx-publisher cx-reader)
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

# ---------------------------------------------------------------- TLS and credentials
# A private CA and one server certificate (CN localhost, SAN localhost + 127.0.0.1) for Kafka's
# SASL_SSL listener and ClickHouse's TLS port. Generated once; an existing CA is kept (rotation:
# docs/security.md). PEM everywhere: Python clients read ca.pem, Kafka a PEM keystore.
tls_setup() {
  mkdir -p "$TLS"; chmod 700 "$TLS"
  require_cmd openssl "install OpenSSL, e.g. 'apt-get install -y openssl'"
  if [[ ! -f "$TLS/ca.pem" || ! -f "$TLS/ca.key" ]]; then
    log "generating a local CA under $TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=CX Signals local CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null || die "openssl could not create the CA"
    rm -f "$TLS/server.pem"
  fi
  if [[ ! -f "$TLS/server.pem" || ! -f "$TLS/server.key" || ! -f "$TLS/kafka-keystore.pem" ]]; then
    log "issuing the server certificate (localhost, 127.0.0.1) from the local CA"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null || die "openssl req failed"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' > "$TLS/server.ext"
    openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
      -CAcreateserial -days 825 -extfile "$TLS/server.ext" -out "$TLS/server.pem" 2>/dev/null \
      || die "openssl could not sign the server certificate"
    # Kafka's PEM keystore: the unencrypted PKCS#8 key, then the certificate chain.
    cat "$TLS/server.key" "$TLS/server.pem" "$TLS/ca.pem" > "$TLS/kafka-keystore.pem"
    rm -f "$TLS/server.csr" "$TLS/server.ext"
  fi
  chmod 600 "$TLS"/*.key "$TLS/kafka-keystore.pem"
}

# A random password per principal, kept across runs in $STATE/credentials/<name> (0600).
password_of() {
  local f="$STATE/credentials/$1"
  if [[ ! -s "$f" ]]; then
    mkdir -p "$STATE/credentials"; chmod 700 "$STATE/credentials"
    (umask 077; openssl rand -hex 24 > "$f")
  fi
  cat "$f"
}

# SCRAM credentials live in the KRaft metadata log. A new cluster gets them at format time
# (kafka_up); a log dir formatted before the secured listener existed (no stamp, or a stamp of
# another cluster id) gets them here through the PLAINTEXT listener (ANONYMOUS is a super user).
kafka_scram_setup() {
  local dir="$STATE/kafka" stamp="$STATE/kafka/scram.applied" cluster
  cluster="$(sed -n 's/^cluster.id=//p' "$dir/data/meta.properties" 2>/dev/null || true)"
  if [[ -n "$cluster" && -f "$stamp" && "$(cat "$stamp")" == "$cluster" ]]; then return; fi
  kafka_jars
  local name out="$STATE/credentials/kafka-scram.log"
  log "setting SCRAM-SHA-512 credentials on an existing cluster (one JVM per principal)"
  for name in "${KAFKA_PRINCIPALS[@]}"; do
    # The password is on this JVM's command line for a few seconds (kafka-configs reads no
    # stdin), visible to local users in `ps`: acceptable for a loopback development broker only.
    # Its output may echo the password: it stays in the 0700 credentials dir.
    java -cp "$KAFKA_LIBS/*" -Dlog4j.configuration="file:$dir/log4j.properties" \
      kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
      --add-config "SCRAM-SHA-512=[iterations=8192,password=$(password_of "$name")]" \
      --entity-type users --entity-name "$name" >"$out" 2>&1 \
      || { grep -v password "$out" >&2; die "could not set the SCRAM credentials of $name (see $out)"; }
  done
  rm -f "$out"
  echo "$cluster" > "$stamp"
  log "SCRAM-SHA-512 credentials set for ${KAFKA_PRINCIPALS[*]}"
}

# ACLs of cx-worker, cx-publisher and cx-reader for the default names (topics cx.*, app id
# cx-signals): `cxsignals acls apply`, run with the project's virtualenv when it exists
# (`make setup` runs it too). Idempotent.
kafka_acls_setup() {
  local cli="$REPO/.venv/bin/cxsignals"
  if [[ ! -x "$cli" ]]; then
    log "no $REPO/.venv yet: run 'make setup' (or 'cxsignals acls apply') to apply the Kafka ACLs"
    return
  fi
  KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT" KAFKA_SECURITY_PROTOCOL=PLAINTEXT \
    "$cli" acls apply >"$STATE/logs/kafka-acls.log" 2>&1 \
    || { cat "$STATE/logs/kafka-acls.log" >&2; die "cxsignals acls apply failed"; }
  log "Kafka ACLs applied ($(tail -n1 "$STATE/logs/kafka-acls.log"))"
}

# The env files of docs/security.md: `set -a; . .state/secure.env; set +a` runs as cx-worker.
write_env() { # file, principal, clickhouse url
  local file="$1" tmp="$1.tmp"
  (umask 077
   {
     echo "# Written by deploy/local/services.sh: principal $2 (docs/security.md). Secret: mode 0600."
     echo "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_SECURE_PORT"
     echo "KAFKA_SECURITY_PROTOCOL=SASL_SSL"
     echo "KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
     echo "KAFKA_SASL_USERNAME=$2"
     echo "KAFKA_SASL_PASSWORD=$(password_of "$2")"
     echo "KAFKA_SSL_CAFILE=$TLS/ca.pem"
     if [[ -n "$3" ]]; then echo "CLICKHOUSE_URL=$3"; fi
   } > "$tmp")
  mv "$tmp" "$file"; chmod 600 "$file"
}

secure_env_files() {
  local ch="clickhouses://%s:%s@127.0.0.1:$CH_TLS_PORT/cx?ca_certs=$TLS/ca.pem"
  # shellcheck disable=SC2059
  write_env "$STATE/secure.env" cx-worker "$(printf "$ch" cx_writer "$(password_of cx_writer)")"
  write_env "$STATE/secure-publisher.env" cx-publisher ""
  # shellcheck disable=SC2059
  write_env "$STATE/secure-reader.env" cx-reader "$(printf "$ch" cx_reader "$(password_of cx_reader)")"
  # shellcheck disable=SC2059
  write_env "$STATE/secure-admin.env" cx-admin "$(printf "$ch" default "")"
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
  sed -e "s#@DATA_DIR@#$dir/data#" -e "s#@TLS_DIR@#$TLS#" -e "s#@PLAINTEXT_PORT@#$KAFKA_PORT#" \
      -e "s#@SECURE_PORT@#$KAFKA_SECURE_PORT#" -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#" \
      "$HERE/kafka/server.properties" > "$dir/server.properties"
  sed -e "s#@LOG_DIR@#$STATE/logs#" "$HERE/kafka/log4j.properties" > "$dir/log4j.properties"
  local cp="$KAFKA_LIBS/*"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local cluster_id name scram=()
    cluster_id="$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    # A new cluster gets its SCRAM credentials with the format (no extra JVM start).
    for name in "${KAFKA_PRINCIPALS[@]}"; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$name,iterations=8192,password=$(password_of "$name")]")
    done
    java -cp "$cp" -Dlog4j.configuration="file:$dir/log4j.properties" kafka.tools.StorageTool \
      format -t "$cluster_id" -c "$dir/server.properties" --ignore-formatted "${scram[@]}" \
      >"$STATE/logs/kafka-format.log" 2>&1 \
      || { grep -v password "$STATE/logs/kafka-format.log" >&2; die "kafka storage format failed"; }
    echo "$cluster_id" > "$dir/scram.applied"
  fi
  log "starting kafka $KAFKA_VERSION (KRaft, PLAINTEXT 127.0.0.1:$KAFKA_PORT, SASL_SSL :$KAFKA_SECURE_PORT, controller :$KAFKA_CONTROLLER_PORT)"
  nohup java -Xms512m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$dir/log4j.properties" -Dkafka.logs.dir="$STATE/logs" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >"$STATE/logs/kafka.log" 2>&1 &
  echo $! > "$STATE/kafka.pid"
}

kafka_ready() {
  # log4j rotates kafka-server.log: a broker that has run for a while logged its start in a
  # rotated file (kafka-server.log.1, ...).
  port_open $KAFKA_PORT && grep -qs "Kafka Server started" "$STATE/logs/kafka-server.log"*
}

# ---------------------------------------------------------------- ClickHouse
clickhouse_up() {
  if port_open $CH_TCP_PORT; then log "clickhouse already answers on 127.0.0.1:$CH_TCP_PORT"; return; fi
  command -v clickhouse-server >/dev/null || [[ -x /usr/sbin/clickhouse-server ]] \
    || apt_install clickhouse-server clickhouse-client
  local bin; bin="$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)"
  local dir="$STATE/clickhouse"
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$STATE/logs"
  CX_CH_WRITER_PASSWORD="$(password_of cx_writer)" CX_CH_READER_PASSWORD="$(password_of cx_reader)" \
  python3 "$HERE/clickhouse_config.py" --state "$dir" --logs "$STATE/logs" \
    --tcp-port "$CH_TCP_PORT" --http-port "$CH_HTTP_PORT" --tls-port "$CH_TLS_PORT" \
    --tls-dir "$TLS"
  log "starting clickhouse-server ($(dpkg-query -W -f='${Version}' clickhouse-server 2>/dev/null || echo '?')) on 127.0.0.1:$CH_TCP_PORT / TLS :$CH_TLS_PORT / HTTP :$CH_HTTP_PORT"
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
  for pair in kafka:$KAFKA_PORT kafka-sasl-ssl:$KAFKA_SECURE_PORT clickhouse:$CH_TCP_PORT \
              clickhouse-tls:$CH_TLS_PORT prometheus:$PROM_PORT; do
    name="${pair%%:*}"; port="${pair##*:}"
    if port_open "$port"; then
      if pid_alive "${name%%-*}"; then
        printf '  %-15s up    127.0.0.1:%s (pid %s, started by deploy/local)\n' "$name" "$port" "$(cat "$STATE/${name%%-*}.pid")"
      else
        printf '  %-15s up    127.0.0.1:%s (not started by deploy/local)\n' "$name" "$port"
      fi
    else
      printf '  %-15s down  127.0.0.1:%s\n' "$name" "$port"
    fi
  done
}

up() {
  local t0=$SECONDS
  mkdir -p "$STATE" "$STATE/logs"
  tls_setup
  kafka_up
  clickhouse_up
  prometheus_up
  wait_for clickhouse "$WAIT_S" clickhouse_ready
  wait_for prometheus "$WAIT_S" prometheus_ready
  if pid_alive kafka; then wait_for kafka "$WAIT_S" kafka_ready; else wait_for kafka "$WAIT_S" port_open "$KAFKA_PORT"; fi
  if port_open "$KAFKA_SECURE_PORT"; then
    kafka_scram_setup
    secure_env_files
    kafka_acls_setup
  else
    log "kafka on :$KAFKA_PORT has no SASL_SSL listener on :$KAFKA_SECURE_PORT (started before"
    log "the secured set-up?): restart it with '$0 down; $0 up' to get one (docs/security.md)"
  fi
  log "all services answer after $((SECONDS - t0)) s"
  status
}

case "${1:-status}" in
  up) up ;;
  down) stop_one prometheus; stop_one clickhouse; stop_one kafka; status ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
