"""The ``recmesh`` command (typer + rich).

Sub-commands are mounted from the module that owns them; a module whose extra is not
installed shows up with a hint instead of breaking ``recmesh --help``.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="recmesh",
    help="Recmesh: event-driven recommendations (Kafka + Avro, Redis, real models).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, attribute, command name, help, extra that provides it)
_SUBCOMMANDS: list[tuple[str, str, str, str, str]] = [
    ("recmesh.core.topics_cli", "app", "topics", "Create, list and replay Kafka topics.", ""),
    ("recmesh.training.cli", "model_app", "model", "Offline models: fit, recommend, evaluate.", "training"),
    (
        "recmesh.training.registry_cli",
        "models_app",
        "models",
        "Model registry: list/show/promote/rollback.",
        "training",
    ),
    (
        "recmesh.training.registry_cli",
        "train_app",
        "train",
        "Train from the lake or a file; register.",
        "training",
    ),
    ("recmesh.ingestion.cli", "app", "ingest", "Batch importers: files, SQL, HTTP APIs.", "ingestion"),
    ("recmesh.k8s", "app", "k8s", "Inspect and restart Recmesh on Kubernetes.", "k8s"),
    ("recmesh.stack", "app", "stack", "Start and stop the local stack (Kafka, Redis, services).", ""),
]


def _mount() -> None:
    for module, attr, name, help_text, extra in _SUBCOMMANDS:
        try:
            sub = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
                continue  # not written yet in this checkout
            missing = exc.name or "a dependency"
            hint = f"needs {missing}: pip install 'recmesh[{extra}]'" if extra else f"needs {missing}"

            def _missing(hint: str = hint) -> None:
                typer.echo(hint, err=True)
                raise typer.Exit(2)

            app.command(name=name, help=f"{help_text} [{hint}]")(_missing)
            continue
        except AttributeError:
            continue
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=name, help=help_text)
        else:
            app.command(name=name, help=help_text)(sub)


@app.command()
def status() -> None:
    """Show each service of the local stack: up/down, port, model version, consumer lag."""
    from recmesh.stack import status_cmd

    status_cmd()


@app.command()
def demo(
    data: str = typer.Option(None, help="Directory with MovieLens-100K files (default: provision it)."),
    keep_running: bool = typer.Option(True, help="Leave the stack running afterwards."),
) -> None:
    """The main job: stack up, MovieLens-100K in, train, promote, recommend, see a click change results."""
    from recmesh.demo import run_demo

    run_demo(data=data, keep_running=keep_running)


@app.callback()
def _root() -> None:
    """Recmesh: event-driven recommendations (Kafka + Avro, Redis, real models)."""


@app.command()
def version() -> None:
    """Print the Recmesh version."""
    from recmesh import __version__

    typer.echo(__version__)


_mount()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
