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
