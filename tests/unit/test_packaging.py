"""The installed package contains every sub-package (the services/ -> recmesh mapping lists
them by hand) and the ``recmesh`` command starts with its sub-commands mounted."""

from __future__ import annotations

import tomllib
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"recmesh": "services"}
    listed = set(config["packages"])
    on_disk = {
        ".".join(("recmesh", *init.parent.relative_to(ROOT / "services").parts))
        for init in (ROOT / "services").rglob("__init__.py")
    }
    missing = sorted(on_disk - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    stale = sorted(listed - on_disk)
    assert not stale, f"listed but no __init__.py: {stale}"


def test_schemas_ship_with_the_repository() -> None:
    """Every topic's value schema is a file of schemas/ (the wire contract travels with the code)."""
    from recmesh.core.topics import ALL

    on_disk = {p.name.split(".")[0] for p in (ROOT / "schemas").glob("*.avsc")}
    needed = {spec.value.SCHEMA.rsplit(".", 1)[-1] for spec in ALL if spec.value is not None}
    assert needed and needed <= on_disk, f"schemas/ lacks {sorted(needed - on_disk)}"


def test_recmesh_help_lists_topics() -> None:
    from recmesh.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "topics" in result.output


def test_topics_help_lists_its_commands() -> None:
    from recmesh.cli import app

    result = CliRunner().invoke(app, ["topics", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("ensure", "list", "replay", "dlq"):
        assert command in result.output


def test_replay_needs_exactly_one_starting_point() -> None:
    from recmesh.cli import app

    result = CliRunner().invoke(app, ["topics", "replay", "interactions.v1", "--group", "g"])
    assert result.exit_code == 2
    assert "exactly one" in result.output
