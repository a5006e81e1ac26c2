"""Entry point: ``python -m recmesh.ingestion`` (settings → logging → app → uvicorn)."""

from __future__ import annotations

from recmesh.core.logs import configure_logging
from recmesh.core.web import serve
from recmesh.ingestion.settings import IngestionSettings


def main() -> None:
    settings = IngestionSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    if settings.http.workers > 1:
        import uvicorn

        # Each worker process builds its own settings, producer and Redis client from the environment.
        uvicorn.run("recmesh.ingestion.app:app_from_env", factory=True, host=settings.http.host,
                    port=settings.http.port, workers=settings.http.workers, log_config=None,
                    access_log=False)  # fmt: skip
        return
    from recmesh.ingestion.app import build_app

    serve(build_app(settings), settings.http)


if __name__ == "__main__":
    main()
