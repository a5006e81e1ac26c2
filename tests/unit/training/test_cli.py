"""``recmesh model``: happy paths on a toy file, and bad input → one-line error, exit 2, no output."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
from typer.testing import CliRunner

from recmesh.core.artifacts import ModelArtifact
from recmesh.training.cli import model_app
from recmesh.training.models import REGISTRY, ModelError, model_names

from .conftest import toy_frame

runner = CliRunner()


@pytest.fixture()
def toy_csv(tmp_path):
    p = tmp_path / "events.csv"
    toy_frame(n_users=20, n_items=16, per_user=8).to_csv(p, index=False)
    return p


def _err_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_fit_recommend_evaluate(tmp_path, toy_csv) -> None:
    out = tmp_path / "art"
    r = runner.invoke(
        model_app, ["fit", "-i", str(toy_csv), "--model", "ease", "--params", '{"l2": 10}', "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    art = ModelArtifact.load(str(out))
    assert art.name == "ease" and art.params["l2"] == 10

    users = tmp_path / "users.txt"
    users.write_text("u0\nu1\nstranger\n")
    rec = tmp_path / "rec.csv"
    r = runner.invoke(
        model_app,
        [
            "recommend",
            "-a",
            str(out),
            "-u",
            str(users),
            "-k",
            "3",
            "--exclude-seen",
            "-i",
            str(toy_csv),
            "-o",
            str(rec),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(rec.read_text().splitlines()))
    assert [row["rank"] for row in rows if row["user_id"] == "u0"] == ["1", "2", "3"]
    stranger = [row["item_id"] for row in rows if row["user_id"] == "stranger"]
    third = sorted(art.popularity, reverse=True)[2]
    assert len(stranger) == 3 and all(art.popularity[art.item_index[i]] >= third for i in stranger)  # fallback
    seen = {row["item_id"] for row in csv.DictReader(toy_csv.read_text().splitlines()) if row["user_id"] == "u0"}
    assert not seen & {row["item_id"] for row in rows if row["user_id"] == "u0"}

    report, js = tmp_path / "r.html", tmp_path / "r.json"
    r = runner.invoke(
        model_app,
        [
            "evaluate",
            "-i",
            str(toy_csv),
            "--split",
            "per-user-temporal:0.25",
            "--models",
            "popularity,ease",
            "--report",
            str(report),
            "--json",
            str(js),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(js.read_text())
    assert set(doc["models"]) == {"popularity", "ease"} and "ndcg@10" in doc["models"]["ease"]["metrics"]
    assert "data:image/png;base64," in report.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--model", "ease", "--params", '{"l2": -1}'], "invalid params for ease: l2"),
        (["--model", "ease", "--params", '{"bogus": 1}'], "invalid params for ease: bogus"),
        (["--model", "ease", "--params", "{not json"], "--params is not valid JSON"),
    ],
)
def test_fit_bad_model_or_params(tmp_path, toy_csv, args, message) -> None:
    out = tmp_path / "art"
    r = runner.invoke(model_app, ["fit", "-i", str(toy_csv), "-o", str(out), *args])
    assert r.exit_code == 2
    assert message in _err_line(r)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["events.csv"]


def test_fit_sasrec_heads_not_dividing_dim_is_one_line(tmp_path, toy_csv) -> None:
    """Caught by the config, before torch builds anything."""
    if "sasrec" not in model_names():
        pytest.skip("torch not installed")
    out = tmp_path / "art"
    params = '{"dim": 30, "n_heads": 4}'
    r = runner.invoke(model_app, ["fit", "-i", str(toy_csv), "-o", str(out), "--model", "sasrec", "--params", params])
    assert r.exit_code == 2
    assert _err_line(r) == "error: invalid params for sasrec: dim 30 is not a multiple of n_heads 4"
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["events.csv"]


@pytest.mark.parametrize("exc", [ValueError("diverged\nsecond line"), ModelError("diverged")])
def test_fit_time_errors_are_one_line_and_leave_no_output(tmp_path, toy_csv, monkeypatch, exc) -> None:
    """A model that refuses its params only once it sees the data (a ValueError from fit)."""

    def refuse(dataset, config):
        raise exc

    monkeypatch.setitem(REGISTRY, "popularity", dataclasses.replace(REGISTRY["popularity"], fit=refuse))
    out = tmp_path / "art"
    r = runner.invoke(model_app, ["fit", "-i", str(toy_csv), "-o", str(out), "--model", "popularity"])
    assert r.exit_code == 2, r.output  # an escaped exception would give 1 and a traceback
    want = "error: fitting popularity failed: diverged" if type(exc) is ValueError else "error: diverged"
    assert _err_line(r) == want
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["events.csv"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("user_id,item_id\nu,a\n", "missing column(s) timestamp"),
        ("user_id,item_id,timestamp\nu,a,noon\n", "non-numeric"),
        ("user_id,item_id,timestamp\n,a,1700000000000\n", "user_id has 1 null"),
    ],
)
def test_fit_bad_files(tmp_path, content, message) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    out = tmp_path / "art"
    r = runner.invoke(model_app, ["fit", "-i", str(bad), "--model", "popularity", "-o", str(out)])
    assert r.exit_code == 2 and message in _err_line(r)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.csv"]


def test_evaluate_bad_split_and_model(toy_csv) -> None:
    r = runner.invoke(model_app, ["evaluate", "-i", str(toy_csv), "--split", "sideways:0.2", "--models", "ease"])
    assert r.exit_code == 2 and "unknown split" in _err_line(r)
    r = runner.invoke(model_app, ["evaluate", "-i", str(toy_csv), "--models", "ease,nope"])
    assert r.exit_code == 2 and "unknown model 'nope'" in _err_line(r)


def test_recommend_missing_artifact(tmp_path) -> None:
    users = tmp_path / "u.txt"
    users.write_text("u1\n")
    out = tmp_path / "rec.csv"
    r = runner.invoke(model_app, ["recommend", "-a", str(tmp_path / "none"), "-u", str(users), "-o", str(out)])
    assert r.exit_code == 2 and "no model artifact" in _err_line(r)
    assert not out.exists()


def test_fit_refuses_non_empty_output(tmp_path, toy_csv) -> None:
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = runner.invoke(model_app, ["fit", "-i", str(toy_csv), "--model", "popularity", "-o", str(out)])
    assert r.exit_code == 2 and "already exists" in _err_line(r)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("model", ["ease", "als"])
def test_recommend_from_the_artifact_alone_uses_the_training_histories(tmp_path, toy_csv, model) -> None:
    """`model fit` stores the users' histories, so `model recommend` without --interactions scores
    known users from them (not the popularity fallback) and --exclude-seen drops what they saw."""
    out = tmp_path / "art"
    assert runner.invoke(model_app, ["fit", "-i", str(toy_csv), "--model", model, "-o", str(out)]).exit_code == 0
    assert ModelArtifact.load(str(out)).histories is None  # services never load them
    art = ModelArtifact.load(str(out), histories=True)
    assert art.histories is not None and len(art.histories.user_ids) == 20
    users = tmp_path / "users.txt"
    users.write_text("u0\nu1\nstranger\n")

    def recommend(*extra: str) -> dict[str, list[str]]:
        rec = tmp_path / f"rec{len(extra)}.csv"
        args = ["recommend", "-a", str(out), "-u", str(users), "-k", "4", *extra, "-o", str(rec)]
        r = runner.invoke(model_app, args)
        assert r.exit_code == 0, r.output
        rows = list(csv.DictReader(rec.read_text().splitlines()))
        return {u: [row["item_id"] for row in rows if row["user_id"] == u] for u in ("u0", "u1", "stranger")}

    plain, excl = recommend(), recommend("--exclude-seen")
    with_file = tmp_path / "f.csv"
    r = runner.invoke(model_app, ["recommend", "-a", str(out), "-u", str(users), "-k", "4", "--exclude-seen",
                                  "-i", str(toy_csv), "-o", str(with_file)])  # fmt: skip
    assert r.exit_code == 0, r.output
    from_file = {
        u: [row["item_id"] for row in csv.DictReader(with_file.read_text().splitlines()) if row["user_id"] == u]
        for u in ("u0", "u1", "stranger")
    }
    assert excl == from_file, "the stored histories give what the interaction file gives"
    rows = list(csv.DictReader(toy_csv.read_text().splitlines()))
    for u in ("u0", "u1"):
        seen = {row["item_id"] for row in rows if row["user_id"] == u}
        assert len(excl[u]) == 4 and not seen & set(excl[u])
    assert plain["u0"] != plain["u1"], "known users are personalised, not both on the popularity list"
    assert excl["stranger"] == plain["stranger"]  # nothing to exclude for an unknown user
