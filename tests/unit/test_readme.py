"""The README's configuration reference is the one generated from the settings classes."""

from __future__ import annotations

from pathlib import Path

from recmesh.configdoc import BEGIN, END, render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_config_reference_is_current() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README lacks the generated configuration reference"
    current = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert current == render(), "README config reference is stale: run `python -m recmesh.configdoc --write`"


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def _curl_bodies(path: str) -> list[object]:
    """JSON bodies of the README's `curl … <path> … -d '…'` examples (one or several lines)."""
    import json
    import re

    bodies = []
    for m in re.finditer(
        r"curl [^\n]*?" + re.escape(path) + r"[^\n]*?(?:\\\n[^\n]*?)?-d '(.*?)'", README.read_text(), re.S
    ):
        bodies.append(json.loads(m.group(1)))
    return bodies


def test_readme_request_examples_are_accepted_by_the_api_models() -> None:
    """The curl examples a newcomer copies must pass the same validation the services apply."""
    from recmesh.ingestion.api import EventIn
    from recmesh.scoring.api import RecommendBody

    events = _curl_bodies("/v1/events")
    assert events, "README lost its POST /v1/events example"
    for body in events:
        for ev in body if isinstance(body, list) else [body]:
            EventIn.model_validate(ev)
    recs = _curl_bodies("/v1/recommendations")
    assert recs, "README lost its POST /v1/recommendations example"
    for body in recs:
        RecommendBody.model_validate(body)
