"""The local stack as processes: real Kafka and Redis from ``infra/``, topics, five services.

``python -m recmesh.stack up|down|status`` (``make up`` / ``make down`` / ``recmesh status``).
Each service runs as ``python -m recmesh.<service>`` with its log in ``<data>/logs/`` and
its pid in ``<data>/run/``; ``up`` waits for every ``/readyz`` (``/healthz`` for scoring,
which stays unready until a model or popularity exists) and fails with the tail of the log
of a service that exits. ``up`` twice starts nothing new; ``down`` with nothing running succeeds.
The e2e test and the benchmarks use the same code with other ports and data directories.

The commands take their ports from the environment (:meth:`StackConfig.from_env`):
``RECMESH_STACK_PORT_OFFSET`` shifts every default port (Kafka, controller, Redis, the services'
HTTP and gRPC ports); ``KAFKA_PORT``, ``KAFKA_CONTROLLER_PORT``, ``REDIS_PORT`` (the ``infra/``
scripts' variables), ``RECMESH_SCORING__GRPC_PORT``, ``RECMESH_KAFKA__BOOTSTRAP_SERVERS``,
``RECMESH_REDIS__URL`` and ``RECMESH_KAFKA__TOPIC_PREFIX`` win over what the offset gives.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
console = Console(stderr=True)

SERVICES = ("ingestion", "feedback", "personalization", "training", "scoring")
# Popen objects of the services this process started: kept so they are reaped on stop (and not
# garbage-collected while running, which Python reports as a ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
DEFAULT_PORTS = {"scoring": 8000, "ingestion": 8001, "feedback": 8002, "personalization": 8003, "training": 8004}
KAFKA_PORT, REDIS_PORT, GRPC_PORT = 9092, 6379, 50051


@dataclass
class StackConfig:
    """Where the stack lives: data dir, ports, topic prefix, tenant, extra env."""

    data: Path = ROOT / ".local"
    kafka_port: int = KAFKA_PORT
    redis_port: int = REDIS_PORT
    port_offset: int = 0
    grpc_port: int = GRPC_PORT
    kafka_controller_port: int | None = None  # None: kafka_port + 1
    topic_prefix: str = ""
    manage_infra: bool = True
    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = SERVICES
    ready_timeout_s: float = 90.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> StackConfig:
        """The config ``make up`` / ``down`` / ``status`` use: defaults shifted by
        ``RECMESH_STACK_PORT_OFFSET``, then explicit variables (see the module docstring), then
        ``overrides``. ``RECMESH_HTTP__PORT`` cannot apply to five services and is ignored."""
        env = os.environ if environ is None else environ

        def port(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise SystemExit(f"{name}={raw!r} is not a port number")
            return int(raw)

        raw_offset = env.get("RECMESH_STACK_PORT_OFFSET", "").strip() or "0"
        try:
            offset = int(raw_offset)
        except ValueError:
            raise SystemExit(f"RECMESH_STACK_PORT_OFFSET={raw_offset!r} is not an integer") from None
        kafka_port = port("KAFKA_PORT", KAFKA_PORT + offset)
        values: dict[str, Any] = {
            "port_offset": offset,
            "kafka_port": kafka_port,
            "kafka_controller_port": port("KAFKA_CONTROLLER_PORT", kafka_port + 1),
            "redis_port": port("REDIS_PORT", REDIS_PORT + offset),
            "grpc_port": port("RECMESH_SCORING__GRPC_PORT", GRPC_PORT + offset),
            "kafka_bootstrap": env.get("RECMESH_KAFKA__BOOTSTRAP_SERVERS") or None,
            "redis_url": env.get("RECMESH_REDIS__URL") or None,
            "topic_prefix": env.get("RECMESH_KAFKA__TOPIC_PREFIX", ""),
        }
        values.update(overrides)
        for name, base in DEFAULT_PORTS.items():
            if not 0 < base + values["port_offset"] < 65536:
                raise SystemExit(f"RECMESH_STACK_PORT_OFFSET={offset} puts {name} on port {base + offset}")
        return cls(**values)

    @property
    def controller_port(self) -> int:
        return self.kafka_controller_port or self.kafka_port + 1

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def redis(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    def port(self, service: str) -> int:
        return DEFAULT_PORTS[service] + self.port_offset

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.port(service)}"

    def service_env(self, service: str) -> dict[str, str]:
        env = {
            **os.environ,
            "RECMESH_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "RECMESH_KAFKA__TOPIC_PREFIX": self.topic_prefix,
            "RECMESH_REDIS__URL": self.redis,
            "RECMESH_REGISTRY__URI": str(self.data / "registry"),
            "RECMESH_HTTP__HOST": "127.0.0.1",
            "RECMESH_HTTP__PORT": str(self.port(service)),
            "RECMESH_SCORING__GRPC_PORT": str(self.grpc_port),
            "RECMESH_TRAINING__LAKE_URI": str(self.data / "lake"),
            "RECMESH_SERVICE_NAME": service,
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.env)
        return env


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def infra_env(cfg: StackConfig) -> dict[str, str]:
    """Environment of the ``infra/`` scripts for this stack (ports and data directories)."""
    return {**os.environ, "KAFKA_PORT": str(cfg.kafka_port), "KAFKA_CONTROLLER_PORT": str(cfg.controller_port),
            "KAFKA_DATA": str(cfg.data / "kafka"), "REDIS_PORT": str(cfg.redis_port),
            "REDIS_DATA": str(cfg.data / "redis")}  # fmt: skip


def _infra(cmd: str, cfg: StackConfig) -> None:
    env = infra_env(cfg)
    for script in ("kafka/kafka.sh", "redis/redis.sh") if cmd == "start" else ("redis/redis.sh", "kafka/kafka.sh"):
        r = subprocess.run([str(ROOT / "infra" / script), cmd], env=env)
        if r.returncode != 0:
            raise SystemExit(f"{script} {cmd} failed (exit {r.returncode})")


def ensure_topics(cfg: StackConfig) -> dict[str, str]:
    from confluent_kafka.admin import AdminClient

    from recmesh.core.topics import TopicRegistry

    return TopicRegistry(prefix=cfg.topic_prefix).ensure(AdminClient({"bootstrap.servers": cfg.bootstrap}))


def start_service(cfg: StackConfig, service: str) -> int:
    """Start one service in the background (no-op when its pid is alive). Returns the pid."""
    run, logs = cfg.data / "run", cfg.data / "logs"
    run.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    pidfile = run / f"{service}.pid"
    pid = _pid_alive(pidfile)
    if pid:
        console.print(f"{service}: already running (pid {pid}, port {cfg.port(service)})")
        return pid
    port = cfg.port(service)
    if _port_busy(port):
        raise SystemExit(f"{service}: port {port} is already in use by another process")
    if service == "scoring" and _port_busy(cfg.grpc_port):
        raise SystemExit(f"scoring: gRPC port {cfg.grpc_port} is already in use by another process")
    log = open(logs / f"{service}.log", "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", f"recmesh.{service}"], env=cfg.service_env(service), stdout=log, stderr=log,
        cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    log.close()
    _CHILDREN[proc.pid] = proc
    pidfile.write_text(str(proc.pid))
    return proc.pid


def wait_ready(cfg: StackConfig, service: str, require_ready: bool = True) -> None:
    """Wait for /readyz (or /healthz); fail with the log tail when the process dies or times out."""
    pidfile = cfg.data / "run" / f"{service}.pid"
    logfile = cfg.data / "logs" / f"{service}.log"
    deadline = time.monotonic() + cfg.ready_timeout_s
    path = "/readyz" if require_ready else "/healthz"
    while True:
        if not _pid_alive(pidfile):
            raise SystemExit(f"{service} exited during start-up; last lines of {logfile}:\n{_tail(logfile)}")
        try:
            if httpx.get(cfg.url(service) + path, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{service} not ready after {cfg.ready_timeout_s:.0f}s; last lines:\n{_tail(logfile)}")
        time.sleep(0.2)


def up(cfg: StackConfig) -> None:
    t0 = time.monotonic()
    if cfg.manage_infra:
        _infra("start", cfg)
    actions = ensure_topics(cfg)
    console.print(f"topics: {sum(a == 'created' for a in actions.values())} created, {len(actions)} in all")
    for s in cfg.services:
        start_service(cfg, s)
    for s in cfg.services:
        wait_ready(cfg, s, require_ready=s != "scoring")
        console.print(f"[green]{s}[/] ready on {cfg.url(s)}")
    console.print(f"stack up in {time.monotonic() - t0:.1f}s — logs: {cfg.data / 'logs'}")


def stop_service(cfg: StackConfig, service: str, timeout: float = 20.0) -> None:
    pidfile = cfg.data / "run" / f"{service}.pid"
    pid = _pid_alive(pidfile)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        child = _CHILDREN.get(pid)

        def alive() -> bool:
            # Our own child lingers as a zombie until reaped, so ask Popen rather than kill(0).
            return child.poll() is None if child is not None else _pid_alive(pidfile) is not None

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            time.sleep(0.1)
        if alive():
            console.print(f"{service}: no clean exit in {timeout:.0f}s, killing")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if child is not None:
            child.wait(timeout=10)
            _CHILDREN.pop(pid, None)
    pidfile.unlink(missing_ok=True)


def down(cfg: StackConfig) -> None:
    for s in reversed(cfg.services):
        stop_service(cfg, s)
    if cfg.manage_infra:
        _infra("stop", cfg)


_METRIC = re.compile(r"^recmesh_consumer_lag\{[^}]*\} ([0-9.eE+-]+)$", re.M)


def status_rows(cfg: StackConfig) -> list[dict[str, str]]:
    rows = []
    for s in cfg.services:
        pid = _pid_alive(cfg.data / "run" / f"{s}.pid")
        row = {"service": s, "state": "down", "port": str(cfg.port(s)), "model": "-", "lag": "-"}
        if pid:
            row["state"] = "up"
            try:
                ready = httpx.get(cfg.url(s) + "/readyz", timeout=1.0)
                row["state"] = "ready" if ready.status_code == 200 else "starting"
                body = ready.json()
                for k in ("model_version", "models"):
                    if k in body:
                        row["model"] = str(body[k])
                text = httpx.get(cfg.url(s) + "/metrics", timeout=1.0).text
                lags = [float(v) for v in _METRIC.findall(text)]
                row["lag"] = str(int(sum(lags))) if lags else "-"
            except (httpx.HTTPError, ValueError):
                row["state"] = "unresponsive"
        rows.append(row)
    return rows


app = typer.Typer(help="Local stack: Kafka, Redis, topics and the five services.", no_args_is_help=True)


@app.command("up")
def up_cmd() -> None:
    """Start Kafka, Redis, topics and the five services; wait until ready (ports: see RECMESH_STACK_PORT_OFFSET)."""
    if os.environ.get("RECMESH_HTTP__PORT"):
        console.print("RECMESH_HTTP__PORT is ignored by the stack (five services): use RECMESH_STACK_PORT_OFFSET")
    up(StackConfig.from_env())


@app.command("down")
def down_cmd() -> None:
    """Stop everything `up` started (safe when nothing runs)."""
    down(StackConfig.from_env())


@app.command("status")
def status_cmd() -> None:
    """Each service: state, port, model version served, consumer lag."""
    cfg = StackConfig.from_env()
    table = Table(title="recmesh local stack")
    for col in ("service", "state", "port", "model", "lag"):
        table.add_column(col)
    for row in status_rows(cfg):
        color = {"ready": "green", "down": "red"}.get(row["state"], "yellow")
        table.add_row(row["service"], f"[{color}]{row['state']}[/]", row["port"], row["model"], row["lag"])
    infra = []
    for name, script in (("kafka", "kafka/kafka.sh"), ("redis", "redis/redis.sh")):
        r = subprocess.run([str(ROOT / "infra" / script), "status"], capture_output=True, text=True, env=infra_env(cfg))
        infra.append(f"{name}: {'up' if r.returncode == 0 else 'down'}")
    Console().print(table)
    Console().print("  ".join(infra))


if __name__ == "__main__":
    app()
