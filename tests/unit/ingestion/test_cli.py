"""``recmesh ingest`` in dry-run mode: options are parsed and the summary reports drops by reason."""

from __future__ import annotations

from typer.testing import CliRunner

from recmesh.cli import app

runner = CliRunner()


def test_ingest_file_dry_run_with_mapping_and_rules(tmp_path):
    p = tmp_path / "ratings.tsv"
    p.write_text("who\twhat\tstars\twhen\nu1\ti1\t5\t1700000000\nu1\ti2\t2\t1700000001\n\ti3\t4\t1700000002\n")
    res = runner.invoke(app, ["ingest", "file", str(p), "--map", "who=user_id", "--map", "what=item_id",
                              "--map", "stars=value", "--map", "when=timestamp", "--event-type", "rating",
                              "--rule", "rating>=4:like", "--ts-unit", "s", "--dry-run"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "missing_id 1" in res.output
    assert "rating→like 1" in res.output
    assert "would_produce: 2" in res.output


def test_ingest_rejects_bad_options(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    assert runner.invoke(app, ["ingest", "file", str(p), "--map", "nonsense", "--dry-run"]).exit_code == 2
    assert runner.invoke(app, ["ingest", "sql", "sqlite://", "--dry-run"]).exit_code == 2
    assert runner.invoke(app, ["ingest", "file", str(p), "--rule", "bad", "--dry-run"]).exit_code == 2
