"""Configuration reference generated from the settings classes (the README's table).

``python -m recmesh.configdoc`` prints Markdown: one table of the shared ``RECMESH_*`` settings
and one per service section; ``--write`` updates README.md in place. ``tests/unit/test_readme.py``
fails when the README's copy is stale, so the documented settings are always the real ones.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from recmesh.core.settings import ServiceSettings

SERVICES = {
    "ingestion": ("recmesh.ingestion.settings", "IngestionSettings"),
    "scoring": ("recmesh.scoring.settings", "ScoringSettings"),
    "personalization": ("recmesh.personalization.settings", "PersonalizationSettings"),
    "feedback": ("recmesh.feedback.settings", "FeedbackSettings"),
    "training": ("recmesh.training.settings", "TrainingSettings"),
}
BEGIN, END = "<!-- BEGIN CONFIG REFERENCE -->", "<!-- END CONFIG REFERENCE -->"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, SecretStr):
        return "(secret)"
    text = json.dumps(value, default=_json)
    return text if len(text) <= 60 else text[:57] + "..."


def _json(obj: Any) -> Any:
    """Nested settings (e.g. experiment variants) as the JSON an environment variable takes."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, SecretStr):
        return "(secret)"
    return str(obj)


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        env = f"{prefix}{name.upper()}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(_rows(ann, env + "__"))
            continue
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append((env, _default(field).replace("|", "\\|"), desc))
    return rows


def _table(rows: list[tuple[str, str, str]]) -> str:
    out = ["| variable | default | meaning |", "|---|---|---|"]
    out += [f"| `{env}` | `{default}` | {desc} |" for env, default, desc in rows]
    return "\n".join(out)


def render() -> str:
    shared = _rows(ServiceSettings, "RECMESH_")
    shared_names = {r[0] for r in shared}
    parts = [BEGIN, "", "#### Shared by every service", "", _table(shared)]
    for service, (module, cls) in SERVICES.items():
        settings_cls = getattr(importlib.import_module(module), cls)
        own = [r for r in _rows(settings_cls, "RECMESH_") if r[0] not in shared_names]
        if own:
            parts += ["", f"#### {service}", "", _table(own)]
    parts += ["", END]
    return "\n".join(parts)


def write_readme(path: Path = Path(__file__).resolve().parents[1] / "README.md") -> bool:
    """Replace the README's reference between the markers; True when it changed."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} lacks the {BEGIN} … {END} markers")
    new = text[: text.index(BEGIN)] + render() + text[text.index(END) + len(END) :]
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        print("README.md updated" if write_readme() else "README.md already current")  # noqa: T201
    else:
        print(render())  # noqa: T201
