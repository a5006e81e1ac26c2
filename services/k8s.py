"""``recmesh k8s``: inspect and restart a Recmesh release on Kubernetes.

Owns the operator's view of a cluster install made with ``charts/recmesh``:

- ``recmesh k8s status`` lists, for each Recmesh service in a namespace, ready/desired replicas,
  the image tag, the HorizontalPodAutoscaler's current and target metrics (or "KEDA" when a
  ScaledObject owns the HPA), and, for scoring, the model version each pod serves.
- ``recmesh k8s restart SERVICE`` rolls a service's pods, as ``kubectl rollout restart`` does
  (it sets ``kubectl.kubernetes.io/restartedAt`` on the pod template).

Services are found by the chart's labels: ``app.kubernetes.io/part-of=recmesh`` plus
``app.kubernetes.io/component=<service>`` (and ``app.kubernetes.io/instance=<release>`` with
``--release``). The model version comes from each scoring pod's ``/readyz`` JSON, read through
the API server's pod proxy (``GET /api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/readyz``), so
no port-forward is needed; it needs RBAC ``get`` on ``pods/proxy``, and a NetworkPolicy that
restricts the scoring port must admit the API server. Scoring's ``/readyz`` carries
``"models": {name: version}``, shown as ``name=version``; a ``model_version`` field (or
``model.version``) is read too. A pod whose ``/readyz`` answers 503 is shown as not ready with
whatever version it reports.

Credentials come from ``--kubeconfig``/``--context``, else the in-cluster service account when
running in a pod, else the default kubeconfig. Responses are read as plain JSON rather than the
client's generated models, which change shape between client major versions.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

SERVICES = ("ingestion", "scoring", "feedback", "personalization", "training")
PART_OF = "app.kubernetes.io/part-of=recmesh"
COMPONENT = "app.kubernetes.io/component"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

app = typer.Typer(no_args_is_help=True, help="Inspect and restart Recmesh on Kubernetes.")


@dataclass
class PodModel:
    """What one scoring pod reports on /readyz."""

    pod: str
    ready: bool
    model_version: str | None
    error: str | None = None


@dataclass
class ServiceStatus:
    """One Recmesh service as the cluster sees it."""

    service: str
    deployment: str
    ready: int
    desired: int
    image_tag: str
    autoscaler: str = "-"
    metrics: list[str] = field(default_factory=list)
    pods: list[PodModel] = field(default_factory=list)


class Cluster:
    """The few API calls ``recmesh k8s`` makes, returning plain JSON."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)

    @staticmethod
    def _json(response: Any) -> Any:
        data = response.data
        return json.loads(data.decode() if isinstance(data, bytes) else data)

    def deployments(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp = self.apps.list_namespaced_deployment(namespace, label_selector=selector, _preload_content=False)
        return list(self._json(resp).get("items", []))

    def hpas(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp = self.autoscaling.list_namespaced_horizontal_pod_autoscaler(
            namespace, label_selector=selector, _preload_content=False
        )
        return list(self._json(resp).get("items", []))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        return list(self._json(resp).get("items", []))

    def pod_get(self, namespace: str, pod: str, port: int, path: str) -> tuple[int, str]:
        """GET ``path`` on a pod's port through the API server proxy: (status, body)."""
        from kubernetes.client.exceptions import ApiException

        try:
            resp: Any = self.core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod}:{port}", namespace, path.lstrip("/"), _preload_content=False, _request_timeout=5
            )
        except ApiException as exc:  # a 503 from /readyz arrives as an exception with the body
            return int(exc.status or 0), str(exc.body or "")
        data = resp.data
        return int(resp.status), data.decode() if isinstance(data, bytes) else str(data)

    def restart(self, namespace: str, deployment: str, when: str) -> None:
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: when}}}}}
        self.apps.patch_namespaced_deployment(
            deployment,
            namespace,
            body,
            _content_type="application/strategic-merge-patch+json",
            _preload_content=False,
        )


def connect(kubeconfig: str | None = None, context: str | None = None) -> Cluster:
    """An API client from kubeconfig, or from the pod's service account when in a cluster."""
    from kubernetes import client, config

    if kubeconfig or context or "KUBERNETES_SERVICE_HOST" not in os.environ:
        cfg = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=cfg
        )
    else:
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return Cluster(client.ApiClient(cfg))


def selector(release: str | None, service: str | None = None) -> str:
    parts = [PART_OF]
    if release:
        parts.append(f"app.kubernetes.io/instance={release}")
    if service:
        parts.append(f"{COMPONENT}={service}")
    return ",".join(parts)


def image_tag(image: str) -> str:
    """The tag (or digest) of an image reference; ``latest`` when none is given."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def find_model_version(payload: Any) -> str | None:
    """The served model version(s) in a /readyz JSON body.

    Scoring reports ``"models": {name: version}`` (one champion per model name), rendered as
    ``name=version`` pairs; a ``model_version`` field anywhere, or ``model.version``, also counts.
    """
    if isinstance(payload, dict):
        models = payload.get("models")
        if isinstance(models, dict) and models:
            pairs = []
            for name, v in sorted(models.items()):
                version = v.get("version") if isinstance(v, dict) else v
                if version not in (None, ""):
                    pairs.append(f"{name}={version}")
            if pairs:
                return ", ".join(pairs)
        value = payload.get("model_version")
        if value not in (None, ""):
            return str(value)
        model = payload.get("model")
        if isinstance(model, dict) and model.get("version") not in (None, ""):
            return str(model["version"])
        for child in payload.values():
            found = find_model_version(child)
            if found:
                return found
    elif isinstance(payload, list):
        for child in payload:
            found = find_model_version(child)
            if found:
                return found
    return None


def _quantity(value: Any) -> str:
    return "?" if value is None else str(value)


def hpa_metrics(hpa: dict[str, Any]) -> list[str]:
    """``cpu 42%/70%``-style lines: current over target for each metric of an autoscaling/v2 HPA."""
    current: dict[str, str] = {}
    for m in (hpa.get("status") or {}).get("currentMetrics") or []:
        kind = m.get("type", "")
        key = kind[:1].lower() + kind[1:]
        spec = m.get(key) or {}
        name = (spec.get("name") or (spec.get("metric") or {}).get("name") or kind).lower()
        cur = spec.get("current") or {}
        if "averageUtilization" in cur:
            current[name] = f"{cur['averageUtilization']}%"
        else:
            current[name] = _quantity(cur.get("averageValue", cur.get("value")))
    lines = []
    for m in (hpa.get("spec") or {}).get("metrics") or []:
        kind = m.get("type", "")
        key = kind[:1].lower() + kind[1:]
        spec = m.get(key) or {}
        name = (spec.get("name") or (spec.get("metric") or {}).get("name") or kind).lower()
        target = spec.get("target") or {}
        if "averageUtilization" in target:
            tgt = f"{target['averageUtilization']}%"
        else:
            tgt = _quantity(target.get("averageValue", target.get("value")))
        lines.append(f"{name} {current.get(name, '?')}/{tgt}")
    return lines


def _http_port(deployment: dict[str, Any]) -> int | None:
    for c in deployment["spec"]["template"]["spec"].get("containers", []):
        for p in c.get("ports") or []:
            if p.get("name") == "http":
                return int(p["containerPort"])
    return None


def _pod_ready(pod: dict[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def scoring_models(cluster: Cluster, namespace: str, deployment: dict[str, Any]) -> list[PodModel]:
    """Ask each running scoring pod which model version it serves."""
    port = _http_port(deployment) or 8000
    labels = deployment["spec"]["selector"].get("matchLabels") or {}
    sel = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    out = []
    for pod in cluster.pods(namespace, sel):
        name = pod["metadata"]["name"]
        if (pod.get("status") or {}).get("phase") != "Running":
            out.append(PodModel(name, False, None, (pod.get("status") or {}).get("phase", "unknown")))
            continue
        status, body = cluster.pod_get(namespace, name, port, "readyz")
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        error = None if status in (200, 503) else f"HTTP {status}"
        out.append(PodModel(name, status == 200 and _pod_ready(pod), find_model_version(payload), error))
    return out


def collect_status(cluster: Cluster, namespace: str, release: str | None = None) -> list[ServiceStatus]:
    """The status of every Recmesh service found in ``namespace`` (in pipeline order)."""
    deployments = cluster.deployments(namespace, selector(release))
    hpas = cluster.hpas(namespace, selector(release))
    by_target = {h["spec"]["scaleTargetRef"]["name"]: h for h in hpas}
    out = []
    for dep in deployments:
        labels = dep["metadata"].get("labels") or {}
        service = labels.get(COMPONENT, "")
        if service not in SERVICES:
            continue
        name = dep["metadata"]["name"]
        containers = dep["spec"]["template"]["spec"].get("containers") or [{}]
        st = ServiceStatus(
            service=service,
            deployment=name,
            ready=int((dep.get("status") or {}).get("readyReplicas") or 0),
            desired=int(dep["spec"].get("replicas", 1) or 0),
            image_tag=image_tag(containers[0].get("image", "")),
        )
        hpa = by_target.get(name)
        if hpa is not None:
            owner = (hpa["metadata"].get("labels") or {}).get("scaledobject.keda.sh/name")
            spec = hpa["spec"]
            bounds = f"{spec.get('minReplicas', 1)}-{spec['maxReplicas']}"
            st.autoscaler = f"KEDA {bounds}" if owner else f"HPA {bounds}"
            st.metrics = hpa_metrics(hpa)
        if service == "scoring":
            st.pods = scoring_models(cluster, namespace, dep)
        out.append(st)
    out.sort(key=lambda s: (SERVICES.index(s.service), s.deployment))
    return out


def render(statuses: list[ServiceStatus], namespace: str, console: Console) -> None:
    table = Table(title=f"Recmesh in namespace {namespace}")
    for col in ("service", "ready", "image", "autoscaler", "metrics (current/target)", "model version"):
        table.add_column(col)
    for s in statuses:
        models = "-"
        if s.pods:
            models = "\n".join(
                f"{p.pod}: {p.model_version or '?'}{'' if p.ready else ' (not ready)'}"
                f"{f' [{p.error}]' if p.error else ''}"
                for p in s.pods
            )
        style = "green" if s.ready >= s.desired and s.desired > 0 else "yellow"
        table.add_row(
            s.service,
            f"[{style}]{s.ready}/{s.desired}[/{style}]",
            s.image_tag,
            s.autoscaler,
            "\n".join(s.metrics) or "-",
            models,
        )
    console.print(table)


@app.command()
def status(
    namespace: str = typer.Option("recmesh", "--namespace", "-n", help="Namespace of the release."),
    release: str | None = typer.Option(None, "--release", help="Only this Helm release."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help="kubeconfig file (default: usual)."),
    context: str | None = typer.Option(None, "--context", help="kubeconfig context."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Replicas, autoscalers, image tags and the model version each scoring pod serves."""
    cluster = connect(kubeconfig, context)
    statuses = collect_status(cluster, namespace, release)
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in statuses], indent=2))
        return
    if not statuses:
        typer.echo(f"no Recmesh services found in namespace {namespace!r}", err=True)
        raise typer.Exit(1)
    render(statuses, namespace, Console())


@app.command()
def restart(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    namespace: str = typer.Option("recmesh", "--namespace", "-n", help="Namespace of the release."),
    release: str | None = typer.Option(None, "--release", help="Only this Helm release."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help="kubeconfig file (default: usual)."),
    context: str | None = typer.Option(None, "--context", help="kubeconfig context."),
) -> None:
    """Rolling restart of one service (what ``kubectl rollout restart`` does)."""
    if service not in SERVICES:
        typer.echo(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}", err=True)
        raise typer.Exit(2)
    cluster = connect(kubeconfig, context)
    deps = cluster.deployments(namespace, selector(release, service))
    if not deps:
        typer.echo(f"no {service} deployment in namespace {namespace!r}", err=True)
        raise typer.Exit(1)
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for dep in deps:
        cluster.restart(namespace, dep["metadata"]["name"], when)
        typer.echo(f"restarted {dep['metadata']['name']} at {when}")
