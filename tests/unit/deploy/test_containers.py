"""Offline checks of the container build and the compose stack: each service's Dockerfile installs
its own extra (scoring and ingestion without PyTorch) and runs its entry module as a non-root user
with a health check; docker-compose.yml gives every long-running service an image or build and a
health check, orders start-up with depends_on conditions, and publishes no host port twice; the
observability profile scrapes every service and provisions the dashboard."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest
import yaml

from tests.unit.deploy.conftest import ROOT, SERVICES

PORTS = {"scoring": 8000, "ingestion": 8001, "feedback": 8002, "personalization": 8003, "training": 8004}


def _pyproject_extras() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["project"]["optional-dependencies"]


def _dockerfile(name: str) -> str:
    return (ROOT / "services" / name / "Dockerfile").read_text()


def _entry_module(dockerfile: str) -> str:
    m = re.search(r'^ENTRYPOINT \["python", "-m", "([\w.]+)"\]$', dockerfile, re.M)
    assert m, "ENTRYPOINT must be exec form: python -m recmesh.<service>"
    return m.group(1)


S3_SERVICES = {"scoring", "training", "personalization"}


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_installs_its_own_extra_and_runs_its_module(name: str) -> None:
    text = _dockerfile(name)
    installs = re.findall(r'pip install [^\n]*"\.\[([\w,-]+)\]"', text)
    assert len(installs) == 1, f"installs {installs}, expected one extras list"
    own, *addons = installs[0].split(",")
    assert own == name, f"installs [{installs[0]}], expected its own extra {name!r} first"
    # the registry and the lake may live on S3: the services that read them carry s3fs, nothing else
    assert set(addons) <= ({"s3"} if name in S3_SERVICES else set()), f"{name} installs extra extras {addons}"
    assert name in _pyproject_extras(), f"pyproject has no extra {name!r}"
    module = _entry_module(text)
    assert module == f"recmesh.{name}"


@pytest.mark.parametrize("name", SERVICES)
def test_entry_module_of_each_image_exists(name: str) -> None:
    # recmesh.<name> is the package services/<name> (package-dir mapping); `python -m` runs __main__.py.
    module = _entry_module(_dockerfile(name))
    package = ROOT / "services" / module.split(".", 1)[1]
    assert (package / "__init__.py").is_file()
    assert (package / "__main__.py").is_file(), f"{package.relative_to(ROOT)}/__main__.py is missing"


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_is_multistage_slim_non_root_with_healthcheck(name: str) -> None:
    text = _dockerfile(name)
    froms = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    assert [alias for _, alias in froms] == ["build", "runtime"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert "COPY --from=build /opt/venv /opt/venv" in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0", "numeric non-root USER"
    hc = re.search(r"^HEALTHCHECK .*\n\s+CMD \[(.+)\]$", text, re.M)
    assert hc and "/healthz" in hc.group(1) and '"python"' in hc.group(1), "HEALTHCHECK via python on /healthz"
    assert f"RECMESH_HTTP__PORT={PORTS[name]}" in text
    assert "RECMESH_SCHEMA_DIR=/app/schemas" in text and "COPY schemas /app/schemas" in text
    assert "build-essential" not in text.split("AS runtime", 1)[1], "compilers belong in the build stage"


@pytest.mark.parametrize("name", ["scoring", "ingestion", "feedback"])
def test_light_images_carry_no_torch(name: str) -> None:
    extras = _pyproject_extras()
    seen: set[str] = set()
    todo = [name]
    while todo:  # follow recmesh[...] self-references
        extra = todo.pop()
        for req in extras.get(extra, []):
            m = re.match(r"recmesh\[([\w,]+)\]", req)
            if m:
                todo += m.group(1).split(",")
            seen.add(re.split(r"[<>=\[ ;]", req, maxsplit=1)[0].lower())
    assert "torch" not in seen and "pyspark" not in seen, f"{name} extra pulls {sorted(seen)}"
    assert "TORCH_INDEX_URL" not in _dockerfile(name)


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for heavy in (".git", ".venv", ".local", ".cache", "tests", "bench"):
        assert heavy in ignored
    for needed in ("services", "schemas", "protos", "pyproject.toml", "README.md"):
        assert needed not in ignored


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _host_port(mapping: str) -> tuple[int, int]:
    """ "${VAR:-8000}:8000" → (8000, 8000), resolving the default the way compose would."""
    resolved = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", mapping)
    host, container = resolved.rsplit(":", 1)
    return int(host.rsplit(":", 1)[-1]), int(container.split("/")[0])


def test_compose_services_have_images_healthchecks_and_ordered_start() -> None:
    compose = _compose()
    services = compose["services"]
    for name in (*SERVICES, "kafka", "redis", "topic-init", "prometheus", "grafana"):
        assert name in services, name
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name}: no image or build"
        one_shot = svc.get("restart") == "no"
        if not one_shot:
            hc = svc.get("healthcheck") or {}
            assert hc.get("test") and not hc.get("disable"), f"{name}: no healthcheck"
    for name in SERVICES:
        svc = services[name]
        assert svc["build"]["dockerfile"] == f"services/{name}/Dockerfile"
        assert svc["depends_on"] == {
            "kafka": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "topic-init": {"condition": "service_completed_successfully"},
        }
        assert str(svc["environment"]["RECMESH_HTTP__PORT"]) == str(PORTS[name])
        assert f"127.0.0.1:{PORTS[name]}/healthz" in " ".join(svc["healthcheck"]["test"])
        assert svc["read_only"] is True
        env = svc["environment"]
        assert env["RECMESH_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:19092" and env["RECMESH_REDIS__URL"].startswith(
            "redis://redis:"
        )
    init = services["topic-init"]
    assert init["entrypoint"] == ["recmesh", "topics", "ensure"]
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["redis"]["image"].startswith("redis:7")


def test_compose_ports_do_not_clash_and_volumes_are_declared() -> None:
    compose = _compose()
    host_ports: dict[int, str] = {}
    for name, svc in compose["services"].items():
        for mapping in svc.get("ports", []):
            host, container = _host_port(str(mapping))
            assert host not in host_ports, f"host port {host}: {host_ports.get(host)} and {name}"
            host_ports[host] = name
            if name in PORTS and container != 50051:
                assert container == PORTS[name]
    assert host_ports[8000] == "scoring" and host_ports[50051] == "scoring"
    declared = set(compose["volumes"])
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if not source.startswith("."):
                assert source in declared, f"{name} uses undeclared volume {source}"
            else:
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    assert {"kafka-data", "redis-data", "registry"} <= declared
    writers = [
        n for n, s in compose["services"].items() if any(v == "registry:/data/registry" for v in s.get("volumes", []))
    ]
    assert writers == ["training"]


def test_observability_profile_scrapes_every_service_and_provisions_the_dashboard() -> None:
    compose = _compose()
    for name in ("prometheus", "grafana"):
        assert compose["services"][name]["profiles"] == ["observability"]
    for name in SERVICES:
        assert "profiles" not in compose["services"][name]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    for name, port in PORTS.items():
        assert f"{name}:{port}" in targets

    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/recmesh.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dash = json.loads((ROOT / "deploy/grafana/dashboards/recmesh.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("recmesh_http_request_seconds_bucket", "recmesh_processed_total", "recmesh_consumer_lag",
                   "recmesh_feedback_clicks_total", "recmesh_scoring_model_version_info",
                   "recmesh_ingestion_events_accepted_total"):  # fmt: skip
        assert metric in exprs, metric
    assert "variant" in exprs
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == uid
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
