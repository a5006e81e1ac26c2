"""Retraining schedule decisions and the registry/train CLI (no broker: --no-publish)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from recmesh.core.registry import Registry
from recmesh.training.app import Scheduler
from recmesh.training.registry_cli import models_app, train_app
from recmesh.training.settings import TrainingSettings


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _scheduler(tmp_path, rows, clock, **training):
    settings = TrainingSettings(training={"lake_uri": str(tmp_path / "lake"), **training})
    return Scheduler(settings, Registry(str(tmp_path / "reg")), None, rows_seen=lambda: rows[0], clock=clock)


def test_due_after_new_events_or_interval(tmp_path):
    rows, clock = [0], Clock()
    s = _scheduler(tmp_path, rows, clock, retrain_every_minutes=10, retrain_after_events=100)
    assert s.due() is None
    rows[0] = 99
    assert s.due() is None
    rows[0] = 100
    assert s.due() == "100 new events"
    rows[0] = 0
    s.rows_at_last_run = 0
    clock.t += 599
    assert s.due() is None
    clock.t += 1
    assert s.due() == "schedule"


def test_run_on_empty_lake_is_skipped_not_fatal(tmp_path):
    rows, clock = [0], Clock()
    s = _scheduler(tmp_path, rows, clock, retrain_on_start=True, model="popularity")
    assert s.due() == "requested"
    assert s.run_once("requested") is None
    assert "no interactions" in s.last_error and s.due() is None


def test_cli_train_list_show_promote_rollback(tmp_path, toy, monkeypatch):
    path = tmp_path / "inter.csv"
    toy.to_csv(path, index=False)
    reg_uri = str(tmp_path / "reg")
    monkeypatch.setenv("RECMESH_REGISTRY__URI", reg_uri)
    runner = CliRunner()
    reg = Registry(reg_uri)
    args = ["run", "--model", "popularity", "--interactions", str(path), "--no-publish"]
    res = runner.invoke(train_app, args)
    assert res.exit_code == 0 and "promoted" in res.output, res.output
    v1 = reg.champion("popularity").version
    res = runner.invoke(train_app, args)
    assert res.exit_code == 0 and "kept as challenger" in res.output, res.output
    (v2,) = (v.version for v in reg.versions("popularity") if v.version != v1)
    assert reg.champion("popularity").version == v1  # the identical second version did not clear the gate
    out = runner.invoke(models_app, ["list"]).output
    assert v1 in out and v2 in out and "champion" in out
    shown = json.loads(runner.invoke(models_app, ["show", "popularity", v2, "--json"]).output)
    assert shown["status"] == "challenger" and shown["dataset_hash"] and "ndcg@10" in shown["metrics"]
    assert runner.invoke(models_app, ["promote", "popularity", v2, "--no-publish"]).exit_code == 0
    assert reg.champion("popularity").version == v2
    assert runner.invoke(models_app, ["rollback", "popularity", "--no-publish"]).exit_code == 0
    assert reg.champion("popularity").version == v1
    bad = runner.invoke(models_app, ["rollback", "popularity", "--no-publish"])
    assert bad.exit_code == 1 and "no previous champion" in bad.output


def test_cli_needs_exactly_one_source(tmp_path):
    res = CliRunner().invoke(train_app, ["run", "--model", "als"])
    assert res.exit_code == 1 and "exactly one" in res.output
