"""Entry point: ``python -m recmesh.scoring`` (HTTP on RECMESH_HTTP__PORT, gRPC on RECMESH_SCORING__GRPC_PORT)."""

from __future__ import annotations

from recmesh.core.logs import configure_logging
from recmesh.core.web import serve
from recmesh.scoring.app import build_app
from recmesh.scoring.settings import ScoringSettings


def main() -> None:
    settings = ScoringSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    # uvloop (and httptools, uvicorn's "auto" choice when installed): the path is latency-bound
    serve(build_app(settings), settings.http, loop="uvloop", timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
