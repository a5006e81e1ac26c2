"""Harness for scoring integration tests: tiny artifacts in a real registry, the real app
(HTTP + gRPC + consumers) served by uvicorn in a thread, and a publisher of model versions."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from recmesh.core.artifacts import ModelArtifact
from recmesh.core.bus import EventProducer
from recmesh.core.events import ModelPublished, now_ms
from recmesh.core.registry import Registry, VersionInfo
from recmesh.core.topics import MODELS_PUBLISHED
from recmesh.scoring.app import build_app
from recmesh.scoring.settings import ScoringSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_artifact(n_items: int = 300, dim: int = 16, seed: int = 0, n_users: int = 50) -> ModelArtifact:
    rng = np.random.default_rng(seed)
    return ModelArtifact(
        name="default",
        kind="vectors",
        item_ids=[f"i{j}" for j in range(n_items)],
        popularity=np.linspace(1.0, 0.0, n_items, dtype=np.float32),
        item_vectors=rng.standard_normal((n_items, dim)).astype(np.float32),
        user_ids=[f"u{j}" for j in range(n_users)],
        user_vectors=rng.standard_normal((n_users, dim)).astype(np.float32),
    )


def register(registry_uri: str, version: str, art: ModelArtifact, champion: bool = True) -> str:
    reg = Registry(registry_uri)
    uri = reg.version_uri(art.name, version)
    art.save(uri)
    reg.register(VersionInfo(name=art.name, version=version, uri=uri, kind=art.kind, created_at=now_ms()))
    if champion:
        reg.set_champion(art.name, version)
    return uri


class ServerThread:
    """The scoring app under uvicorn (uvloop, like production) in a background thread."""

    def __init__(self, settings: ScoringSettings) -> None:
        self.settings = settings
        self.app = build_app(settings)
        self.port = settings.http.port
        self.grpc_port = settings.scoring.grpc_port
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                             loop="uvloop", http="httptools", lifespan="on")  # fmt: skip
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("scoring server did not start")
            time.sleep(0.05)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while httpx.get(self.url + "/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise AssertionError("scoring never became ready")
            time.sleep(0.1)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def scoring_settings(settings_factory: Callable[..., Any], tmp_path: Path) -> Callable[..., ScoringSettings]:
    def make(overrides: dict[str, Any] | None = None, **scoring: Any) -> ScoringSettings:
        base = {"grpc_port": free_port(), "registry_poll_s": 0, "popular_refresh_s": 0.5}
        base.update(scoring)
        return settings_factory(  # type: ignore[no-any-return]
            ScoringSettings, http={"port": free_port()}, scoring=base, **(overrides or {})
        )

    return make


@pytest.fixture
def serve() -> Iterator[Callable[[ScoringSettings], ServerThread]]:
    started: list[ServerThread] = []

    def start(settings: ScoringSettings) -> ServerThread:
        srv = ServerThread(settings).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def http() -> Iterator[Callable[[str], Any]]:
    """httpx clients closed at teardown, even when the test fails."""
    import httpx

    clients: list[httpx.Client] = []

    def make(base_url: str) -> httpx.Client:
        clients.append(httpx.Client(base_url=base_url, timeout=5))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def publish_model(settings_factory: Callable[..., Any], topics: Any) -> Iterator[Callable[..., None]]:
    settings = settings_factory()
    producer = EventProducer(settings.kafka, topics, client_id="test-publisher").start()

    def publish(name: str, version: str, uri: str, kind: str = "vectors") -> None:
        producer.send(MODELS_PUBLISHED, ModelPublished(name, version, uri, kind, published_at=now_ms()))
        assert producer.flush(10) == 0

    yield publish
    producer.close()
