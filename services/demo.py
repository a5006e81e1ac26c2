"""``make demo``: the whole system doing real work on MovieLens-100K, in one command.

1. Start the local stack (real Kafka, Redis, five services).
2. Provision MovieLens-100K (the recbole==1.2.1 wheel, or ``--data DIR``).
3. Import items and users through the ingestion API, then replay the 100,000 ratings as
   events through ``POST /v1/events`` in time order, with a progress bar.
4. Wait for the training service's lake sink to hold them, train the ``default`` recipe
   from the lake with a short tuning budget, evaluate it against the baselines, register and
   promote it; scoring hot-loads the new version.
5. Show recommendations for three users with titles and reasons; post a few new
   interactions for one of them and show the list change, timed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from recmesh.core.events import Interaction, ItemUpdate, UserUpdate
from recmesh.ingestion.client import HttpSink, replay_via_http
from recmesh.stack import ROOT, StackConfig, up, wait_ready

console = Console()


def provision(data: str | None) -> Path:
    if data:
        return Path(data)
    out = subprocess.run(
        [str(ROOT / "infra" / "data" / "ml100k.sh")], capture_output=True, text=True, check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


def load_movielens(d: Path) -> tuple[list[ItemUpdate], list[UserUpdate], list[Interaction]]:
    """(items, users, ratings in time order) from any MovieLens layout the importers know.

    The ingestion importers' MovieLens sources read GroupLens ``u.data``/``u.item``/``u.user``,
    ``ratings.dat``/``movies.dat``, ``ratings.csv``/``movies.csv`` and RecBole atomic files, and
    clean and normalise them exactly as ``recmesh ingest movielens`` does (derived event ids, so a
    second run is accepted as duplicates, not twice).
    """
    from recmesh.ingestion.cleaning import CleaningOptions
    from recmesh.ingestion.importers.base import run_import
    from recmesh.ingestion.importers.files import ImportFormatError, movielens_sources

    collected: dict[str, list[Any]] = {"items": [], "users": [], "interactions": []}

    class Collect:
        def write(self, kind: str, events: list[Any]) -> None:
            collected[kind].extend(events)

        def close(self) -> dict[str, int]:
            return {"produced": 0, "failed": 0}

    try:
        run_import(movielens_sources(d), Collect(), CleaningOptions(source="movielens"))
    except ImportFormatError as exc:
        raise SystemExit(f"MovieLens: {exc}") from None
    events = sorted(collected["interactions"], key=lambda e: e.timestamp)
    return collected["items"], collected["users"], events


def wait_for_lake(lake: Path, expected: int, timeout_s: float = 120.0) -> None:
    """Wait until the training service's lake sink has written ``expected`` interactions."""
    from recmesh.training.lake import read_lake

    deadline = time.monotonic() + timeout_s
    rows = 0
    with console.status("waiting for the lake sink…") as status:
        while time.monotonic() < deadline:
            try:
                rows = len(read_lake(str(lake)))
            except (FileNotFoundError, ValueError):
                rows = 0
            status.update(f"lake holds {rows:,} of {expected:,} interactions")
            if rows >= expected:
                console.print(f"lake: {rows:,} interactions in Parquet under {lake}")
                return
            time.sleep(1.0)
    raise SystemExit(f"the lake sink wrote {rows:,} of {expected:,} interactions in {timeout_s:.0f}s")


def recommendations(cfg: StackConfig, user: str, k: int = 5) -> dict[str, Any]:
    r = httpx.get(f"{cfg.url('scoring')}/v1/users/{user}/recommendations", params={"k": k, "exclude_seen": "true"},
                  timeout=5)  # fmt: skip
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def show(user: str, rec: dict[str, Any], titles: dict[str, str], title: str) -> None:
    t = Table(title=f"{title} — user {user} (model {rec.get('model_version')}, variant {rec.get('variant')})")
    for col in ("#", "movie", "score", "source", "reason"):
        t.add_column(col)
    for it in rec["items"]:
        t.add_row(str(it["rank"]), titles.get(it["item_id"], it["item_id"]), f"{it['score']:.3f}", it["source"],
                  it.get("reason") or "")  # fmt: skip
    console.print(t)


def run_demo(data: str | None = None, keep_running: bool = True) -> None:
    t_start = time.perf_counter()
    cfg = StackConfig.from_env()
    console.rule("[bold]1. local stack")
    up(cfg)
    console.rule("[bold]2. MovieLens-100K")
    d = provision(data)
    items, users, events = load_movielens(d)
    titles = {i.item_id: i.title or i.item_id for i in items}
    console.print(f"{len(events):,} ratings, {len(items):,} movies, {len(users):,} users from {d}")

    console.rule("[bold]3. ingest through the HTTP API")
    catalog = HttpSink(cfg.url("ingestion"), batch=1000)
    try:
        catalog.write("items", items)
        catalog.write("users", users)
    finally:
        catalog.close()
    console.print(f"{len(items):,} movies and {len(users):,} users accepted through /v1/items and /v1/users")
    totals = replay_via_http(events, cfg.url("ingestion"), batch=2000)
    if totals["rejected"]:
        raise SystemExit(f"ingestion rejected {totals['rejected']:,} ratings")
    console.print(f"{totals['accepted']:,} events accepted ({totals['duplicates']:,} already sent before)")

    console.rule("[bold]4. train the default recipe from the lake, evaluate, gate, promote")
    env = cfg.service_env("training")
    wait_for_lake(Path(env["RECMESH_TRAINING__LAKE_URI"]), len(events))
    report = cfg.data / "reports" / "demo.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    console.print("[bold]offline comparison against the baselines (same ratings, per-user temporal split)")
    cli = [sys.executable, "-m", "recmesh.cli"]
    baselines = "popularity,itemknn,als,ease,default"
    subprocess.run([*cli, "model", "evaluate", "--interactions", str(d), "--split", "per-user-temporal:0.2",
                    "--models", baselines, "--report", str(report)], env=env, check=True)  # fmt: skip
    r = subprocess.run([*cli, "train", "run", "--model", "default", "--from-lake", "--tune-trials", "4", "--promote"],
                       env=env)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit("training failed (see above)")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(cfg.url("scoring") + "/readyz", timeout=2)
            if ready.status_code == 200 and ready.json().get("models"):
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    wait_ready(cfg, "scoring")

    console.rule("[bold]5. recommendations")
    for user in ("1", "42", "405"):
        show(user, recommendations(cfg, user), titles, "Recommended")
    user = "42"
    before = recommendations(cfg, user, k=5)
    clicked = [it["item_id"] for it in before["items"][:2]]
    with httpx.Client(base_url=cfg.url("ingestion"), timeout=10) as client:
        t0 = time.perf_counter()
        resp = client.post("/v1/events", json=[{"user_id": user, "item_id": i, "event_type": "click"} for i in clicked])
        resp.raise_for_status()
        after = before
        gone = False
        while time.perf_counter() - t0 < 5:
            after = recommendations(cfg, user, k=5)
            if not set(clicked) & {i["item_id"] for i in after["items"]}:
                gone = True
                break
            time.sleep(0.005)
        took_ms = (time.perf_counter() - t0) * 1000
    console.print(f"user {user} clicked: {', '.join(titles.get(i, i) for i in clicked)}")
    show(user, after, titles, f"After the clicks ({took_ms:.0f} ms later)")
    if not gone:
        console.print("[bold red]the clicked movies were still recommended after 5 s: check `make logs` "
                      "(personalization and feedback consumers)")  # fmt: skip
    elif took_ms > 1000:
        console.print(f"[yellow]the list changed, but after {took_ms:.0f} ms (more than a second): the machine is busy")
    else:
        console.print(f"[green]the list reflected the clicks {took_ms:.0f} ms after ingestion accepted them")

    console.rule("[bold]6. next")
    console.print(f"API docs:      {cfg.url('scoring')}/docs  and  {cfg.url('ingestion')}/docs")
    console.print(f"metrics:       {cfg.url('scoring')}/metrics (each service on its port)")
    console.print(f"report:        {cfg.data / 'reports' / 'demo.html'}")
    console.print("stack status:  recmesh status      stop it:  make down")
    console.print(f"[bold green]demo finished in {time.perf_counter() - t_start:.0f}s")
    if not keep_running:
        from recmesh.stack import down

        down(cfg)
