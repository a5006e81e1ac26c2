"""Offline checks of the GitHub workflows (actionlint, pinned actions, least privilege, the same
make targets as local) and of the Terraform module (parsed with python-hcl2; the variables and
chart values it needs; canonical formatting when terraform is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from tests.unit.deploy.conftest import CHART, ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
MODULE = ROOT / "terraform" / "modules" / "recmesh"
EXAMPLE = ROOT / "terraform" / "examples" / "basic"


def _workflow(name: str) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_actionlint_passes(actionlint: str) -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 2
    proc = subprocess.run([actionlint, "-color=false", *files], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_actions_pinned_to_commit_shas_with_version_comment(name: str) -> None:
    uses = re.findall(r"uses:\s*(\S+)(.*)$", (WORKFLOWS / name).read_text(), re.M)
    assert uses
    for ref, rest in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{ref} is not pinned to a full commit SHA"
        assert re.match(r"\s*# v\d", rest), f"{ref} lacks a '# vX.Y.Z' comment"


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_least_privilege_and_concurrency(name: str) -> None:
    wf = _workflow(name)
    assert wf["permissions"] == {"contents": "read"}
    assert "group" in wf["concurrency"]
    for job_name, job in wf["jobs"].items():
        perms = job.get("permissions", {})
        assert set(perms.values()) <= {"read", "write"}
        writes = {k for k, v in perms.items() if v == "write"}
        assert writes <= {"packages"}, f"{job_name} writes {writes}"
        assert job.get("timeout-minutes"), f"{job_name} has no timeout"
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_ci_order_and_make_targets() -> None:
    wf = _workflow("ci.yml")
    jobs = wf["jobs"]
    assert list(jobs) == ["lint", "unit", "integration", "e2e", "chart", "actionlint"]
    assert jobs["unit"]["needs"] == "lint" and jobs["integration"]["needs"] == "unit"
    assert jobs["e2e"]["needs"] == "integration"
    assert jobs["chart"]["needs"] == "lint" and jobs["actionlint"]["needs"] == "chart"
    runs = {name: " ".join(s.get("run", "") for s in job["steps"]) for name, job in jobs.items()}
    assert "make lint" in runs["lint"]
    assert "make test-unit" in runs["unit"]
    assert "make test-integration" in runs["integration"]
    assert "make test-e2e" in runs["e2e"]
    assert "tests/unit/deploy" in runs["chart"]
    for name in ("integration", "e2e"):
        job = jobs[name]
        assert job["services"]["kafka"]["image"].startswith("apache/kafka:")
        assert job["services"]["redis"]["image"].startswith("redis:7")
        assert job["env"]["RECMESH_TEST_KAFKA"] == "127.0.0.1:9092"
        assert job["env"]["RECMESH_TEST_REDIS"].startswith("redis://127.0.0.1:6379")


def test_release_builds_every_service_image_and_pushes_the_chart() -> None:
    wf = _workflow("release.yml")
    assert wf[True] == {"push": {"tags": ["v*.*.*"]}}  # YAML 1.1 reads `on` as True; tags only (versions)
    images = wf["jobs"]["images"]
    assert images["strategy"]["matrix"]["service"] == [
        "ingestion",
        "scoring",
        "feedback",
        "personalization",
        "training",
    ]
    build = next(s for s in images["steps"] if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["file"] == "services/${{ matrix.service }}/Dockerfile"
    meta = next(s for s in images["steps"] if s.get("uses", "").startswith("docker/metadata-action@"))
    assert "type=semver,pattern={{version}}" in meta["with"]["tags"]
    chart_runs = " ".join(s.get("run", "") for s in wf["jobs"]["chart"]["steps"])
    assert "helm package charts/recmesh" in chart_runs and "helm push" in chart_runs and "oci://" in chart_runs


def _load(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        return hcl2.load(fh)


def _unquote(s: Any) -> Any:
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def _variables(directory: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in _load(directory / "variables.tf").get("variable", []):
        for name, body in block.items():
            out[_unquote(name)] = body
    return out


def test_module_variables_cover_what_the_chart_needs() -> None:
    variables = _variables(MODULE)
    needed = {
        "namespace", "release_name", "chart", "chart_version", "image_tag", "environment",
        "kafka_bootstrap_servers", "kafka_security_protocol", "kafka_sasl_mechanism",
        "kafka_sasl_username", "kafka_sasl_password", "redis_url", "redis_password", "api_keys", "registry_uri",
    }  # fmt: skip
    assert needed <= set(variables), needed - set(variables)
    for secret in ("kafka_sasl_username", "kafka_sasl_password", "redis_password", "api_keys"):
        assert variables[secret].get("sensitive") is True, f"{secret} must be sensitive"
    for name, body in variables.items():
        assert _unquote(body.get("description", "")), f"variable {name} has no description"
    assert "default" not in variables["kafka_bootstrap_servers"] and "default" not in variables["redis_url"]


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() if not k.startswith("__") for p in _paths(v, (*prefix, k))]
    return [prefix]


def test_module_chart_values_exist_in_the_chart_and_secrets_bypass_helm() -> None:
    main = _load(MODULE / "main.tf")
    chart_values = next(b["chart_values"] for b in main["locals"] if "chart_values" in b)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in _paths(chart_values):
        node: Any = values
        for key in path:
            assert isinstance(node, dict) and key in node, f"chart has no value {'.'.join(path)}"
            node = node[key]
    assert chart_values["existingSecret"] == "${local.secret_name}"
    text = (MODULE / "main.tf").read_text()
    # Credentials reach the cluster only through the Secret, under the env names the services read.
    for key in (
        "RECMESH_AUTH__API_KEYS",
        "RECMESH_KAFKA__SASL_USERNAME",
        "RECMESH_KAFKA__SASL_PASSWORD",
        "RECMESH_REDIS__PASSWORD",
    ):
        assert key in text
    helm_block = text.split('resource "helm_release"', 1)[1]
    for secret in ("kafka_sasl_password", "redis_password", "api_keys", "kafka_sasl_username"):
        assert f"var.{secret}" not in helm_block
    resources = {_unquote(k) for block in main["resource"] for k in block}
    assert {"helm_release", "kubernetes_namespace_v1", "kubernetes_secret_v1"} <= resources


def test_example_uses_the_module_with_its_required_variables() -> None:
    main = _load(EXAMPLE / "main.tf")
    module = next(iter(main["module"][0].values()))
    assert _unquote(module["source"]) == "../../modules/recmesh"
    required = {n for n, b in _variables(MODULE).items() if "default" not in b}
    assert required <= set(module), required - set(module)
    assert (EXAMPLE / "terraform.tfvars.example").is_file()
    assert not list(EXAMPLE.glob("*.tfvars")), "real tfvars must not be committed"


def test_terraform_fmt_is_clean() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed; files are kept in canonical style by hand and parsed above")
    proc = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", str(ROOT / "terraform")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
