"""Entry point: ``python -m recmesh.training`` (settings → logging → app with sink + scheduler → uvicorn)."""

from __future__ import annotations

from recmesh.core.logs import configure_logging
from recmesh.core.web import serve
from recmesh.training.app import build_app
from recmesh.training.settings import TrainingSettings


def main() -> None:
    settings = TrainingSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    serve(build_app(settings), settings.http)


if __name__ == "__main__":
    main()
