"""Offline checks of charts/recmesh: helm lint, helm template, Kubernetes schema validation and the
properties an operator relies on (autoscaling, probes, resources, hardened pods, no leaked secrets).

Rendered three ways: default values, ci/values-production.yaml (every feature on, with known fake
credentials passed by --set), and ci/values-bundled.yaml (Kafka and Redis inside the release).
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy.conftest import CHART, NAMESPACE, SERVICES, RenderError, by_kind

SCHEMAS = Path(__file__).parent / "schemas"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # oldest and newest the validator knows within the chart's range

FAKE_API_KEY = "fake-api-key-0123456789abcdef"
FAKE_SASL_USER = "fake-sasl-user-7f3a"
FAKE_SASL_PASSWORD = "fake-sasl-password-9c1e"
FAKE_REDIS_PASSWORD = "fake-redis-password-4b2d"
FAKES = (FAKE_API_KEY, FAKE_SASL_USER, FAKE_SASL_PASSWORD, FAKE_REDIS_PASSWORD)
PROD_SET = (
    f"kafka.saslUsername={FAKE_SASL_USER}",
    f"kafka.saslPassword={FAKE_SASL_PASSWORD}",
    f"redis.password={FAKE_REDIS_PASSWORD}",
)
PROD_JSON = (f'auth.apiKeys={{"{FAKE_API_KEY}": "*"}}',)

SCENARIOS = {
    "default": ((), (), ()),
    "production": (("ci/values-production.yaml",), PROD_SET, PROD_JSON),
    "bundled": (("ci/values-bundled.yaml",), (), ()),
}
SCALABLE = ("scoring", "ingestion", "feedback", "personalization")


def rendered(render: Any, scenario: str, text: bool = False) -> Any:
    files, sets, set_json = SCENARIOS[scenario]
    return render(*files, set=sets, set_json=set_json, text=text)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_helm_lint(helm: str, scenario: str) -> None:
    files, sets, set_json = SCENARIOS[scenario]
    cmd = [helm, "lint", str(CHART), "--strict"]
    for f in files:
        cmd += ["-f", str(CHART / f)]
    for s in sets:
        cmd += ["--set", s]
    for s in set_json:
        cmd += ["--set-json", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _crd_validator(doc: dict[str, Any]) -> jsonschema.Draft7Validator | None:
    group_version = doc["apiVersion"].replace("/", "_")
    path = SCHEMAS / f"{group_version}_{doc['kind']}.json"
    return jsonschema.Draft7Validator(json.loads(path.read_text())) if path.exists() else None


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_manifests_match_kubernetes_schemas(render: Any, scenario: str, version: str) -> None:
    docs = rendered(render, scenario)
    assert docs, "nothing rendered"
    errors = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        crd = _crd_validator(doc)
        if crd is not None:
            errors += [f"{where}: {e.message}" for e in crd.iter_errors(doc)]
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {str(exc).splitlines()[0]}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{where}: no schema (vendor one under tests/unit/deploy/schemas)")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_standard_labels_on_every_resource(render: Any, scenario: str) -> None:
    for doc in rendered(render, scenario):
        labels = doc["metadata"].get("labels") or {}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/part-of", "app.kubernetes.io/version", "helm.sh/chart"):  # fmt: skip
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"


def test_default_scalable_services_have_hpa_on_cpu_and_memory_for_apis(render: Any) -> None:
    docs = rendered(render, "default")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == set(SCALABLE)  # training is a single writer by default
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == f"rm-recmesh-{name}"
        resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"]}
        assert resources == ({"cpu", "memory"} if name in ("scoring", "ingestion") else {"cpu"}), name
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == set(SERVICES)
    for name in SCALABLE:  # the HPA owns the replica count; a fixed one would fight it on every upgrade
        assert "replicas" not in deployments[name]["spec"], name
    assert deployments["training"]["spec"]["replicas"] == 1
    assert not by_kind(docs, "ScaledObject") and not by_kind(docs, "TriggerAuthentication")


def test_production_consumers_scale_on_kafka_lag_with_keda(render: Any) -> None:
    docs = rendered(render, "production")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    scaled = by_kind(docs, "ScaledObject")
    assert set(scaled) == {"feedback", "personalization"}
    assert set(hpas) == {"scoring", "ingestion", "training"}  # never an HPA and a ScaledObject on one target
    for name in SCALABLE:
        assert name in hpas or name in scaled, f"{name} has no autoscaler"
    for name, so in scaled.items():
        kafka = next(t for t in so["spec"]["triggers"] if t["type"] == "kafka")
        md = kafka["metadata"]
        assert md["consumerGroup"] == f"recmesh-{name}"
        assert md["bootstrapServers"].startswith("b-1.kafka.example.internal:9096")
        assert (md["sasl"], md["tls"]) == ("scram_sha512", "enable")
        assert kafka["authenticationRef"]["name"] == "rm-recmesh-kafka"
        assert any(t["type"] == "cpu" for t in so["spec"]["triggers"])
    auth = by_kind(docs, "TriggerAuthentication")["rm-recmesh-kafka"]
    keys = {r["parameter"]: r["key"] for r in auth["spec"]["secretTargetRef"]}
    assert keys == {"username": "RECMESH_KAFKA__SASL_USERNAME", "password": "RECMESH_KAFKA__SASL_PASSWORD"}


def test_keda_only_when_enabled_and_watches_the_services_consumer_group(render: Any) -> None:
    docs = render(set=("feedback.keda.enabled=true", "kafka.topicPrefix=acme."))
    scaled = by_kind(docs, "ScaledObject")
    assert set(scaled) == {"feedback"}
    # Group ids are the services' settings (RECMESH_FEEDBACK__GROUP_ID); topic prefixes do not apply.
    assert scaled["feedback"]["spec"]["triggers"][0]["metadata"]["consumerGroup"] == "recmesh-feedback"
    assert "feedback" not in by_kind(docs, "HorizontalPodAutoscaler")
    assert not by_kind(docs, "TriggerAuthentication")  # no SASL, nothing to authenticate with
    lake = render(set=("training.keda.enabled=true", "training.keda.consumerGroup=acme-lake"))
    assert by_kind(lake, "ScaledObject")["training"]["spec"]["triggers"][0]["metadata"]["consumerGroup"] == "acme-lake"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_workloads_are_hardened_probed_and_sized(render: Any, scenario: str) -> None:
    docs = rendered(render, scenario)
    pods = [(d, d["spec"]["template"]) for d in docs if d["kind"] in ("Deployment", "Job", "StatefulSet")]
    recmesh_pods = [(d, t) for d, t in pods if not d["metadata"]["name"].endswith(("-kafka", "-redis"))]
    assert len(recmesh_pods) == 6  # five services + the topic Job
    for doc, tpl in pods:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        pod_sc = tpl["spec"]["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc.get("runAsUser", 0) != 0, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert tpl["spec"]["automountServiceAccountToken"] is False, where
        for c in tpl["spec"]["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"].get("cpu") and c["resources"]["requests"].get("memory"), where
            assert c["resources"]["limits"].get("memory"), where
            assert c.get("readinessProbe") or doc["kind"] == "Job", where
    for doc, tpl in recmesh_pods:
        c = tpl["spec"]["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, doc["metadata"]["name"]
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        if doc["kind"] == "Deployment":
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert c["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_ports_env_and_services_agree_with_values(render: Any) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = rendered(render, "default")
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    for name in SERVICES:
        port = values[name]["port"]
        c = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["RECMESH_HTTP__PORT"] == str(port)
        assert {"name": "http", "containerPort": port, "protocol": "TCP"} in c["ports"]
        assert c["image"] == f"ghcr.io/recmesh/recmesh-{name}:0.1.0"
        assert services[name]["spec"]["ports"][0] == {
            "name": "http",
            "port": port,
            "targetPort": "http",
            "protocol": "TCP",
        }
        assert services[name]["spec"]["selector"]["app.kubernetes.io/component"] == name
        refs = [next(iter(src.values()))["name"] for src in c["envFrom"]]
        assert refs == ["rm-recmesh", "rm-recmesh"]  # ConfigMap, then Secret
    scoring = deployments["scoring"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in scoring["env"]}["RECMESH_SCORING__GRPC_PORT"] == "50051"
    assert any(p["name"] == "grpc" and p["port"] == 50051 for p in services["scoring"]["spec"]["ports"])
    cm = by_kind(docs, "ConfigMap")["rm-recmesh"]["data"]
    assert cm["RECMESH_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092" and cm["RECMESH_HTTP__HOST"] == "0.0.0.0"
    assert cm["RECMESH_SCHEMA_DIR"] == "/app/schemas" and cm["RECMESH_ENV"] == "prod"


def test_registry_volume_written_by_training_only(render: Any) -> None:
    docs = rendered(render, "default")
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert claims == {"rm-recmesh-registry", "rm-recmesh-lake"}
    mounts = {}
    for name, dep in by_kind(docs, "Deployment").items():
        c = dep["spec"]["template"]["spec"]["containers"][0]
        mounts[name] = next((m for m in c["volumeMounts"] if m["name"] == "registry"), None)
    assert mounts["training"] == {"name": "registry", "mountPath": "/data/registry", "readOnly": False}
    assert mounts["scoring"]["readOnly"] is True and mounts["personalization"]["readOnly"] is True
    assert mounts["ingestion"] is None and mounts["feedback"] is None
    # The lake: training only, read-write, at the path its settings name.
    training = by_kind(docs, "Deployment")["training"]
    c = training["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "lake", "mountPath": "/data/lake"} in c["volumeMounts"]
    assert {"name": "RECMESH_TRAINING__LAKE_URI", "value": "/data/lake"} in c["env"]
    assert training["spec"]["strategy"]["type"] == "Recreate"  # ReadWriteOnce lake
    prod = rendered(render, "production")
    assert not by_kind(prod, "PersistentVolumeClaim")  # s3:// registry and lake: no volume at all
    assert by_kind(prod, "ConfigMap")["rm-recmesh"]["data"]["RECMESH_REGISTRY__URI"] == "s3://recmesh-models/registry"
    prod_training = by_kind(prod, "Deployment")["training"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "RECMESH_TRAINING__LAKE_URI", "value": "s3://recmesh-lake/interactions"} in prod_training["env"]
    names = [e["name"] for e in prod_training["env"]]
    assert len(names) == len(set(names)), "duplicate env names"


def test_no_secret_value_in_plain_manifests(render: Any) -> None:
    text = rendered(render, "production", text=True)
    for fake in FAKES:
        assert fake not in text, f"{fake} appears in plain text"
    docs = rendered(render, "production")
    secrets = [d for d in docs if d["kind"] == "Secret"]
    decoded = {k: base64.b64decode(v).decode() for s in secrets for k, v in s["data"].items()}
    assert json.loads(decoded["RECMESH_AUTH__API_KEYS"]) == {FAKE_API_KEY: "*"}
    assert decoded["RECMESH_KAFKA__SASL_PASSWORD"] == FAKE_SASL_PASSWORD
    assert decoded["RECMESH_REDIS__PASSWORD"] == FAKE_REDIS_PASSWORD
    # Nothing but a Secret may carry them, even encoded (e.g. an annotation or an env value).
    encoded = [base64.b64encode(f.encode()).decode() for f in FAKES]
    for doc in docs:
        if doc["kind"] != "Secret":
            dumped = json.dumps(doc)
            assert not any(e in dumped for e in encoded), f"{doc['kind']}/{doc['metadata']['name']}"


def test_existing_secret_replaces_the_charts_secret(render: Any) -> None:
    docs = render(set=("existingSecret=recmesh-creds", "kafka.saslUsername=ignored", "kafka.saslMechanism=PLAIN"))
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == []
    for dep in by_kind(docs, "Deployment").values():
        env_from = dep["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "recmesh-creds"}} in env_from
    job = by_kind(docs, "Job")["topics"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert refs["RECMESH_KAFKA__SASL_PASSWORD"] == "recmesh-creds"


def test_generated_api_key_when_none_given(render: Any) -> None:
    secret = next(d for d in rendered(render, "default") if d["kind"] == "Secret")
    keys = json.loads(base64.b64decode(secret["data"]["RECMESH_AUTH__API_KEYS"]))
    assert len(keys) == 1 and list(keys.values()) == ["*"] and len(next(iter(keys))) == 40


def test_prod_without_any_api_key_source_is_refused(render: Any) -> None:
    with pytest.raises(RenderError, match="env=prod needs API keys"):
        render(set=("auth.generateApiKey=false",))
    dev = render(set=("auth.generateApiKey=false", "env=dev"))
    secret = next(d for d in dev if d["kind"] == "Secret")
    assert base64.b64decode(secret["data"]["RECMESH_AUTH__API_KEYS"]) == b"{}"


def test_values_schema_rejects_typos_and_bad_types(render: Any) -> None:
    with pytest.raises(RenderError, match="kafak"):
        render(set=("kafak.bootstrapServers=x",))
    with pytest.raises(RenderError, match="minimum"):
        render(set=("scoring.port=0",))


def test_topic_job_is_a_hook_that_runs_recmesh_topics_ensure(render: Any) -> None:
    prod = rendered(render, "production")
    job = by_kind(prod, "Job")["topics"]
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["recmesh", "topics", "ensure"]
    assert c["image"] == "ghcr.io/recmesh/recmesh-ingestion:1.2.3"
    env = {e["name"]: e for e in c["env"]}
    assert env["RECMESH_KAFKA__SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    # The hook runs before the release's Secret exists: its credentials come from a hook Secret made first.
    hook_secret = next(d for d in prod if d["kind"] == "Secret" and d["metadata"]["name"] == "rm-recmesh-topics")
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(ann["helm.sh/hook-weight"])
    assert env["RECMESH_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "rm-recmesh-topics"
    bundled = by_kind(rendered(render, "bundled"), "Job")["topics"]
    assert bundled["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


def test_bundled_kafka_and_redis_are_wired(render: Any) -> None:
    docs = rendered(render, "bundled")
    sts = by_kind(docs, "StatefulSet")
    assert set(sts) == {"kafka", "redis"}
    assert sts["kafka"]["spec"]["template"]["spec"]["containers"][0]["image"].startswith("apache/kafka:")
    cm = by_kind(docs, "ConfigMap")["rm-recmesh"]["data"]
    assert cm["RECMESH_KAFKA__BOOTSTRAP_SERVERS"] == "rm-recmesh-kafka:9092"
    assert cm["RECMESH_REDIS__URL"] == "redis://rm-recmesh-redis:6379/0"
    assert "rm-recmesh-kafka" in by_kind(docs, "Service")["kafka"]["metadata"]["name"]


def test_production_observability_and_network_policies(render: Any) -> None:
    docs = rendered(render, "production")
    sm = by_kind(docs, "ServiceMonitor")["rm-recmesh"]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "http" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    policies = by_kind(docs, "NetworkPolicy")
    assert set(policies) == set(SERVICES)
    scoring_ports = {p["port"] for p in policies["scoring"]["spec"]["ingress"][0]["ports"]}
    assert scoring_ports == {"http", "grpc"}
    assert policies["feedback"]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]
    assert "Egress" in policies["scoring"]["spec"]["policyTypes"]
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == set(SERVICES)


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, (*path, k))]
    return [path]


def _schema_at(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for key in path:
        if node is None:
            return None
        props = node.get("properties") or {}
        if key in props:
            node = props[key]
        elif (
            isinstance(node.get("additionalProperties"), dict)
            or node.get("type") == "object"
            and "properties" not in node
        ):
            return node  # a free-form map (resources, annotations, env): its keys are the user's
        else:
            return None
    return node


def test_every_value_is_typed_in_the_schema_and_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing = [".".join(p) for p in _leaves(values) if _schema_at(schema, p) is None]
    assert not missing, f"not in values.schema.json: {missing}"

    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    documented_parents: list[int] = []  # indents of open parent keys that carry a "# --" doc
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        documented_parents = [d for d in documented_parents if d < indent]
        j = i - 1
        doc = False
        while j >= 0 and lines[j].strip().startswith("#"):
            doc = doc or lines[j].strip().startswith("# --")
            j -= 1
        is_parent = stripped.endswith(":") and i + 1 < len(lines)
        if doc and is_parent:
            documented_parents.append(indent)
        if not is_parent and not doc and not documented_parents:
            undocumented.append(f"line {i + 1}: {stripped}")
    assert not undocumented, "values without a '# --' doc comment:\n" + "\n".join(undocumented)
