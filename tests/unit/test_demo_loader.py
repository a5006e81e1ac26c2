"""The demo reads every MovieLens layout through the importers (GroupLens files are '|'-separated)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recmesh.demo import load_movielens

GENRES_OFF = "|".join(["0"] * 19)


def _genres(*on: int) -> str:
    flags = ["0"] * 19
    for i in on:
        flags[i] = "1"
    return "|".join(flags)


def test_grouplens_ml100k_files(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("2\t10\t5\t881250949\n1\t10\t3\t881250000\n1\t11\t4\t881260000\n")
    (tmp_path / "u.item").write_text(
        f"10|Toy Story (1995)|01-Jan-1995||http://x|{_genres(3, 4, 5)}\n11|GoldenEye (1995)|01-Jan-1995||http://y|{_genres(1)}\n",
        encoding="latin-1",
    )
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    items, users, events = load_movielens(tmp_path)
    assert [(i.item_id, i.title, i.categories) for i in items] == [
        ("10", "Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
        ("11", "GoldenEye (1995)", ["Action"]),
    ]
    assert [(u.user_id, u.attributes["occupation"]) for u in users] == [("1", "technician"), ("2", "other")]
    assert [(e.user_id, e.item_id, e.value) for e in events] == [("1", "10", 3.0), ("2", "10", 5.0), ("1", "11", 4.0)]
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    assert all(e.event_type == "rating" and e.timestamp == 881250000000 for e in events[:1])
    again = load_movielens(tmp_path)[2]
    assert [e.event_id for e in again] == [e.event_id for e in events], "event ids are derived, so a re-run dedupes"


def test_directory_without_ratings_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "u.item").write_text(f"1|X|01-Jan-1995||u|{GENRES_OFF}\n")
    with pytest.raises(SystemExit, match="no MovieLens ratings"):
        load_movielens(tmp_path)
