#!/usr/bin/env bash
# Real Apache Kafka 4.x broker (KRaft, combined broker+controller) from Maven Central jars.
# Usage: infra/kafka/kafka.sh fetch|start|stop|status|logs
# `start` returns once the broker answers an admin (metadata) request, within KAFKA_START_TIMEOUT;
# a broker that exits meanwhile fails it with the tail of its log. A second `start` starts nothing.
# Env (all optional): KAFKA_PORT (9092) KAFKA_CONTROLLER_PORT (9093) KAFKA_DATA (.local/kafka)
#                     KAFKA_HEAP (512m) KAFKA_JARS (.cache/kafka-jars) KAFKA_START_TIMEOUT (90)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PORT=${KAFKA_PORT:-9092}
CPORT=${KAFKA_CONTROLLER_PORT:-9093}
DATA=${KAFKA_DATA:-$ROOT/.local/kafka}
JARS=${KAFKA_JARS:-$ROOT/.cache/kafka-jars}
HEAP=${KAFKA_HEAP:-512m}
TIMEOUT=${KAFKA_START_TIMEOUT:-90}
PIDFILE=$DATA/kafka.pid
LOG=$DATA/kafka.log

die() { echo "kafka: $*" >&2; exit 1; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# Readiness: the broker answers an admin request (metadata, then DescribeConfigs of broker 1)
# through the jars already fetched, so no Python or extra tool is needed. Bounded by $1 seconds.
probe() {
  local left=$(( $1 < 1 ? 1 : ($1 > 15 ? 15 : $1) ))
  local req=$(( left * 1000 < 3000 ? left * 1000 : 3000 ))
  printf 'default.api.timeout.ms=%d\nrequest.timeout.ms=%d\n' "$((left * 1000))" "$req" >"$DATA/probe.properties"
  timeout "$((left + 2))" java -cp "$JARS/*" -Xms32m -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
      "-Dlog4j2.configurationFile=$DATA/log4j2.yaml" kafka.admin.ConfigCommand \
      --bootstrap-server "127.0.0.1:$PORT" --command-config "$DATA/probe.properties" \
      --entity-type brokers --entity-name 1 --describe >"$DATA/probe.log" 2>&1
}

fetch() {
  if [ -f "$JARS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is required to fetch the Kafka jars"
  echo "kafka: fetching jars from Maven Central into $JARS"
  rm -rf "$JARS"
  mvn -q -B -f "$ROOT/infra/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$JARS" -DincludeScope=runtime
  touch "$JARS/.complete"
}

write_config() {
  mkdir -p "$DATA/logs"
  cat > "$DATA/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA/logs
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
  cp "$ROOT/infra/kafka/log4j2.yaml" "$DATA/log4j2.yaml"
}

start() {
  if running; then echo "kafka: already running (pid $(cat "$PIDFILE"), port $PORT)"; return 0; fi
  port_busy "$PORT" && die "port $PORT is already in use by another process (set KAFKA_PORT)"
  port_busy "$CPORT" && die "controller port $CPORT is already in use by another process (set KAFKA_CONTROLLER_PORT)"
  fetch
  command -v java >/dev/null || die "Java 17+ is required"
  write_config
  local cp="$JARS/*"
  local jopts=(-Xms128m "-Xmx$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
               "-Dlog4j2.configurationFile=$DATA/log4j2.yaml" "-Dkafka.logs.dir=$DATA")
  if [ ! -f "$DATA/logs/meta.properties" ]; then
    local cid
    if ! cid=$(java -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool random-uuid 2>"$DATA/format.log"); then
      tail -20 "$DATA/format.log" >&2
      die "kafka.tools.StorageTool failed (jar cache $JARS incomplete? delete it and re-run)"
    fi
    cid=$(echo "$cid" | tail -1)
    java -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool format --standalone -t "$cid" \
        -c "$DATA/server.properties" >"$DATA/format.log" 2>&1 || { tail -20 "$DATA/format.log" >&2; die "storage format failed"; }
  fi
  : >"$LOG"
  local t0=$SECONDS
  nohup java -cp "$cp" "${jopts[@]}" kafka.Kafka "$DATA/server.properties" >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  # Cheap checks first (log line, open port), then the real probe: a metadata answer.
  local phase=log
  while :; do
    if ! running; then tail -30 "$LOG" >&2; rm -f "$PIDFILE"; die "broker exited during start-up (log above: $LOG)"; fi
    local left=$(( TIMEOUT - (SECONDS - t0) ))
    if (( left <= 0 )); then
      tail -30 "$LOG" >&2
      [ "$phase" = probe ] && grep -v ' INFO ' "$DATA/probe.log" 2>/dev/null | tail -5 >&2
      stop >/dev/null; die "broker not ready after ${TIMEOUT}s (waiting for: $phase; log above: $LOG)"
    fi
    if [ "$phase" = log ]; then
      if grep -q "Kafka Server started" "$LOG" 2>/dev/null && port_busy "$PORT"; then phase=probe; continue; fi
      sleep 0.2
    else
      if probe "$left"; then break; fi
      sleep 0.5
    fi
  done
  echo "kafka: ready on 127.0.0.1:$PORT in $((SECONDS - t0))s (pid $(cat "$PIDFILE"), data $DATA)"
}

stop() {
  if ! running; then rm -f "$PIDFILE"; echo "kafka: not running"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then echo "kafka: did not stop in 30s, killing" >&2; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
  echo "kafka: stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "kafka: up (pid $(cat "$PIDFILE"), port $PORT)"; else echo "kafka: down"; exit 3; fi ;;
  logs) tail -n "${LINES:-100}" "$LOG" ;;
  *) echo "usage: $0 fetch|start|stop|status|logs" >&2; exit 2 ;;
esac
