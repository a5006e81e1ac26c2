"""Entry point: ``python -m recmesh.personalization`` (settings → logging → app → uvicorn)."""

from __future__ import annotations

from recmesh.core.logs import configure_logging
from recmesh.core.web import serve
from recmesh.personalization.app import build_app
from recmesh.personalization.settings import PersonalizationSettings


def main() -> None:
    settings = PersonalizationSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    serve(build_app(settings), settings.http)


if __name__ == "__main__":
    main()
