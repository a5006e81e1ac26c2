#!/usr/bin/env bash
# Real Redis 7 on loopback with its data under .local/redis (redis-server from Debian's packages).
# Usage: infra/redis/redis.sh install|start|stop|status|logs
# Env: REDIS_PORT (6379) REDIS_DATA (.local/redis) REDIS_PERSIST (1: AOF everysec; 0: no persistence, for tests)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PORT=${REDIS_PORT:-6379}
DATA=${REDIS_DATA:-$ROOT/.local/redis}
PERSIST=${REDIS_PERSIST:-1}
PIDFILE=$DATA/redis.pid
LOG=$DATA/redis.log

die() { echo "redis: $*" >&2; exit 1; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

install() {
  command -v redis-server >/dev/null && return 0
  command -v apt-get >/dev/null || die "redis-server is missing and apt-get is not available; install Redis 7"
  echo "redis: installing redis-server from Debian's packages"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  # Debian starts a system redis on 6379 after install; the stack runs its own.
  $sudo systemctl disable --now redis-server >/dev/null 2>&1 || $sudo service redis-server stop >/dev/null 2>&1 || true
}

start() {
  if running; then echo "redis: already running (pid $(cat "$PIDFILE"), port $PORT)"; return 0; fi
  port_busy "$PORT" && die "port $PORT is already in use by another process (set REDIS_PORT)"
  install
  mkdir -p "$DATA"
  local persist=(--save "" --appendonly no)
  [ "$PERSIST" = 1 ] && persist=(--save "" --appendonly yes --appendfsync everysec)
  redis-server --bind 127.0.0.1 --port "$PORT" --dir "$DATA" --daemonize yes \
      --pidfile "$PIDFILE" --logfile "$LOG" --protected-mode yes "${persist[@]}" \
      || die "redis-server failed to start: $(tail -5 "$LOG" 2>/dev/null)"
  for _ in $(seq 1 100); do
    if redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG; then
      echo "redis: ready on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), data $DATA)"; return 0
    fi
    sleep 0.1
  done
  tail -20 "$LOG" >&2; die "not ready after 10s"
}

stop() {
  if ! running; then rm -f "$PIDFILE"; echo "redis: not running"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "redis: stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "redis: up (pid $(cat "$PIDFILE"), port $PORT)"; else echo "redis: down"; exit 3; fi ;;
  logs) tail -n "${LINES:-100}" "$LOG" ;;
  *) echo "usage: $0 install|start|stop|status|logs" >&2; exit 2 ;;
esac
