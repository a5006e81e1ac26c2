"""``recmesh k8s status`` / ``restart`` against a local HTTP stub of the Kubernetes API.

No cluster runs here: a stub of the few API paths the command reads (deployments, HPAs, pods,
the pod proxy to a scoring pod's /readyz) and writes (the deployment patch) is served by
``http.server`` on 127.0.0.1 (port 0), and the real ``kubernetes`` client talks to it through a
kubeconfig written for the test. What is checked is what an operator would read: replicas,
image tags, HPA current/target metrics, KEDA ownership, the model version per scoring pod
(including a pod whose /readyz answers 503), and that restart patches the pod template.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
from typer.testing import CliRunner

pytest.importorskip("kubernetes")

from recmesh import k8s  # noqa: E402

NS = "shop"


def _deployment(service: str, replicas: int, ready: int, image: str, port: int) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": "recmesh",
        "app.kubernetes.io/instance": "rm",
        "app.kubernetes.io/component": service,
    }
    return {
        "metadata": {"name": f"rm-recmesh-{service}", "labels": {**labels, "app.kubernetes.io/part-of": "recmesh"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": service, "image": image, "ports": [{"name": "http", "containerPort": port}]}
                    ]
                },
            },
        },
        "status": {"replicas": replicas, "readyReplicas": ready},
    }


def _pod(name: str, ready: bool, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


DEPLOYMENTS = [
    _deployment("training", 1, 1, "ghcr.io/recmesh/recmesh-training:1.2.3", 8004),
    _deployment("scoring", 3, 2, "ghcr.io/recmesh/recmesh-scoring:1.2.3", 8000),
    _deployment("feedback", 2, 2, "ghcr.io/recmesh/recmesh-feedback@sha256:abc", 8002),
]
HPAS = [
    {
        "metadata": {"name": "rm-recmesh-scoring", "labels": {}},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "rm-recmesh-scoring"},
            "minReplicas": 2,
            "maxReplicas": 20,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                },
                {
                    "type": "Resource",
                    "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}},
                },
            ],
        },
        "status": {
            "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 42}}},
                {"type": "Resource", "resource": {"name": "memory", "current": {"averageUtilization": 55}}},
            ]
        },
    },
    {
        "metadata": {
            "name": "keda-hpa-rm-recmesh-feedback",
            "labels": {"scaledobject.keda.sh/name": "rm-recmesh-feedback"},
        },
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "rm-recmesh-feedback"},
            "minReplicas": 1,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {"name": "s0-kafka-recmesh-feedback"},
                        "target": {"type": "AverageValue", "averageValue": "2k"},
                    },
                }
            ],
        },
        "status": {
            "currentMetrics": [
                {
                    "type": "External",
                    "external": {"metric": {"name": "s0-kafka-recmesh-feedback"}, "current": {"averageValue": "350"}},
                }
            ]
        },
    },
]
SCORING_PODS = [
    _pod("rm-recmesh-scoring-a", True),
    _pod("rm-recmesh-scoring-b", False),
    _pod("rm-recmesh-scoring-c", False, "Pending"),
]
READYZ = {
    "rm-recmesh-scoring-a:8000": (200, {"ready": True, "models": {"als": "v7", "ease": "v2"}, "redis": True}),
    "rm-recmesh-scoring-b:8000": (503, {"ready": False, "checks": {"model_version": "v6"}}),
}


class _Stub(BaseHTTPRequestHandler):
    patches: list[tuple[str, str, Any]] = []
    queries: list[tuple[str, dict[str, list[str]]]] = []

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        q = parse_qs(url.query)
        self.queries.append((url.path, q))
        sel = q.get("labelSelector", [""])[0]
        if url.path == f"/apis/apps/v1/namespaces/{NS}/deployments":
            want = dict(kv.split("=") for kv in sel.split(",") if kv)
            items = [d for d in DEPLOYMENTS if all(d["metadata"]["labels"].get(k) == v for k, v in want.items())]
            return self._send(200, {"kind": "DeploymentList", "items": items})
        if url.path == f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers":
            return self._send(200, {"kind": "HorizontalPodAutoscalerList", "items": HPAS})
        if url.path == f"/api/v1/namespaces/{NS}/pods":
            items = SCORING_PODS if "component=scoring" in sel else []
            return self._send(200, {"kind": "PodList", "items": items})
        prefix = f"/api/v1/namespaces/{NS}/pods/"
        if url.path.startswith(prefix) and url.path.endswith("/proxy/readyz"):
            # The client escapes "pod:port" as "pod%3Aport"; the API server accepts both.
            target = unquote(url.path[len(prefix) : -len("/proxy/readyz")])
            status, body = READYZ.get(target, (404, {"kind": "Status", "code": 404}))
            return self._send(status, body)
        return self._send(404, {"kind": "Status", "code": 404, "message": url.path})

    def do_PATCH(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        self.patches.append((self.path, self.headers.get("Content-Type", ""), body))
        name = self.path.rstrip("/").rsplit("/", 1)[-1]
        dep = next(d for d in DEPLOYMENTS if d["metadata"]["name"] == name)
        return self._send(200, dep)


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    _Stub.patches = []
    _Stub.queries = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stub", "cluster": {"server": f"http://{host}:{port}"}}],
        "users": [{"name": "stub", "user": {"token": "stub-token"}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": NS}}],
        "current-context": "stub",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(cfg))
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_status_json_reports_replicas_autoscalers_and_models(kubeconfig: Path) -> None:
    result = CliRunner().invoke(
        k8s.app, ["status", "-n", NS, "--release", "rm", "--kubeconfig", str(kubeconfig), "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["service"]: r for r in json.loads(result.stdout)}
    assert list(rows) == ["scoring", "feedback", "training"]  # pipeline order, not API order

    scoring = rows["scoring"]
    assert (scoring["ready"], scoring["desired"], scoring["image_tag"]) == (2, 3, "1.2.3")
    assert scoring["autoscaler"] == "HPA 2-20"
    assert scoring["metrics"] == ["cpu 42%/70%", "memory 55%/80%"]
    pods = {p["pod"]: p for p in scoring["pods"]}
    assert pods["rm-recmesh-scoring-a"] == {
        "pod": "rm-recmesh-scoring-a",
        "ready": True,
        "model_version": "als=v7, ease=v2",
        "error": None,
    }
    assert pods["rm-recmesh-scoring-b"]["ready"] is False and pods["rm-recmesh-scoring-b"]["model_version"] == "v6"
    assert pods["rm-recmesh-scoring-c"]["error"] == "Pending" and pods["rm-recmesh-scoring-c"]["model_version"] is None

    assert rows["feedback"]["autoscaler"] == "KEDA 1-6"
    assert rows["feedback"]["metrics"] == ["s0-kafka-recmesh-feedback 350/2k"]
    assert rows["feedback"]["image_tag"] == "sha256:abc"
    assert rows["training"]["autoscaler"] == "-" and rows["training"]["pods"] == []

    selectors = [q["labelSelector"][0] for path, q in _Stub.queries if path.endswith("/deployments")]
    assert selectors == ["app.kubernetes.io/part-of=recmesh,app.kubernetes.io/instance=rm"]


def test_status_table_renders(kubeconfig: Path) -> None:
    result = CliRunner().invoke(k8s.app, ["status", "-n", NS, "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0, result.output
    assert "scoring" in result.stdout and "2/3" in result.stdout and "als=v7" in result.stdout


def test_restart_patches_pod_template_annotation(kubeconfig: Path) -> None:
    result = CliRunner().invoke(k8s.app, ["restart", "scoring", "-n", NS, "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0, result.output
    assert len(_Stub.patches) == 1
    path, ctype, body = _Stub.patches[0]
    assert path == f"/apis/apps/v1/namespaces/{NS}/deployments/rm-recmesh-scoring"
    assert ctype.startswith("application/strategic-merge-patch+json")
    stamp = body["spec"]["template"]["metadata"]["annotations"][k8s.RESTARTED_AT]
    assert stamp.endswith("Z") and "T" in stamp


def test_restart_rejects_unknown_service_without_calling_the_api(kubeconfig: Path) -> None:
    result = CliRunner().invoke(k8s.app, ["restart", "kafka", "-n", NS, "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 2
    assert _Stub.patches == [] and _Stub.queries == []


def test_restart_of_absent_service_fails(kubeconfig: Path) -> None:
    result = CliRunner().invoke(k8s.app, ["restart", "ingestion", "-n", NS, "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 1
    assert _Stub.patches == []


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"ready": True, "model_version": "v3"}, "v3"),
        ({"ready": True, "models": {"als": "20240101-1", "ease": {"version": "3"}}}, "als=20240101-1, ease=3"),
        ({"ready": False, "models": {}, "popular_fallback": True}, None),
        ({"ready": True, "model": {"version": 12}}, "12"),
        ({"ready": False, "checks": [{"name": "model", "model_version": "x"}]}, "x"),
        ({"ready": False, "error": "no model"}, None),
    ],
)
def test_find_model_version(payload: dict[str, Any], expected: str | None) -> None:
    assert k8s.find_model_version(payload) == expected


@pytest.mark.parametrize(
    ("image", "tag"),
    [("ghcr.io/o/r-scoring:1.0", "1.0"), ("localhost:5000/r", "latest"), ("r@sha256:ff", "sha256:ff")],
)
def test_image_tag(image: str, tag: str) -> None:
    assert k8s.image_tag(image) == tag
