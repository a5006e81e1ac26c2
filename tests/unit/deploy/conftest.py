"""Fixtures for the offline deployment checks: the helm and actionlint binaries and rendered charts.

Binaries come from ``.cache/bin`` (built by ``infra/setup.sh`` with ``go install``) or PATH. When
one is missing the checks fail, except on a machine without ``go``, where setup cannot build
them: there they skip with that reason. ``helm template`` output is cached per session, so each
values combination is rendered once.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "recmesh"
RELEASE = "rm"
NAMESPACE = "shop"
SERVICES = ("ingestion", "scoring", "feedback", "personalization", "training")


def find_tool(name: str) -> str:
    local = ROOT / ".cache" / "bin" / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    if shutil.which("go") is None:
        pytest.skip(f"{name} is not built and go is absent, so infra/setup.sh cannot build it")
    pytest.fail(f"{name} not found in .cache/bin or PATH: run `make setup` (infra/setup.sh builds it with go install)")


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def actionlint() -> str:
    return find_tool("actionlint")


class RenderError(Exception):
    """helm template failed; the message is helm's stderr."""


@pytest.fixture(scope="session")
def render(helm: str) -> Callable[..., list[dict[str, Any]]]:
    """``render(values_file, ..., set=(...), set_json=(...))`` → the manifests as dicts (cached)."""

    @cache
    def _render_text(files: tuple[str, ...], sets: tuple[str, ...], set_json: tuple[str, ...]) -> str:
        cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for f in files:
            cmd += ["-f", str(CHART / f)]
        for s in sets:
            cmd += ["--set", s]
        for s in set_json:
            cmd += ["--set-json", s]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RenderError(proc.stderr.strip())
        return proc.stdout

    def _render(*files: str, set: tuple[str, ...] = (), set_json: tuple[str, ...] = (), text: bool = False) -> Any:
        out = _render_text(tuple(files), tuple(set), tuple(set_json))
        if text:
            return out
        return [d for d in yaml.safe_load_all(out) if d]

    return _render


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Manifests of one kind by component label (or name when there is none)."""
    out = {}
    for d in docs:
        if d["kind"] == kind:
            labels = d["metadata"].get("labels") or {}
            out[labels.get("app.kubernetes.io/component", d["metadata"]["name"])] = d
    return out
