"""deploy/kubernetes: lint the example manifests without a cluster and without network.

Every document parses (yaml.safe_load), names its apiVersion/kind/name, and is listed in the
kustomization; the ConfigMap's serve.toml is a config airlock serve accepts (load_config, the real
parser) with [state] on PostgreSQL and [limits] on Redis, its secrets read from files; no Secret
value is written in the repository; every container drops all capabilities, forbids privilege
escalation, has a read-only root, resources and a pinned image; the gateway's probes are the
documented health paths; NetworkPolicies deny by default and let the gateway reach only PostgreSQL,
Redis and DNS. Each check is also run against a broken copy to prove it can fail.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from airlock.gateway import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
DOC = ROOT / "docs" / "kubernetes.md"
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


DOCS = _documents()


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in _by_kind(kind) if doc["metadata"]["name"] == name]
    return found


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod_spec(doc)
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def _container_problems(doc: dict[str, Any]) -> list[str]:
    """Every way a workload's containers fall short of the hardening rules."""
    problems = []
    for c in _containers(doc):
        where = f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation not false")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities do not drop ALL")
        if (sc.get("capabilities") or {}).get("add"):
            problems.append(f"{where}: adds capabilities")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem writable")
        image = c.get("image", "")
        match = re.fullmatch(r"[^@\s]+?(?::([\w][\w.-]{0,127}))?(@sha256:[0-9a-f]{64})?", image)
        tag, digest = (match.group(1), match.group(2)) if match else (None, None)
        if not digest and (tag is None or tag == "latest"):
            problems.append(f"{where}: image {image!r} not pinned")
        resources = c.get("resources") or {}
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(part) or {}):
                problems.append(f"{where}: resources.{part} needs cpu and memory")
    return problems


def _secret_problems(docs: list[dict[str, Any]]) -> list[str]:
    return [
        f"Secret/{doc['metadata']['name']} holds {key} inline"
        for doc in docs
        if doc["kind"] == "Secret"
        for key in ("data", "stringData")
        if doc.get(key)
    ]


def test_every_document_is_a_named_resource_listed_in_the_kustomization() -> None:
    assert len(DOCS) >= 12
    for name, doc in DOCS:
        assert isinstance(doc, dict), name
        assert doc.get("apiVersion") and doc.get("kind"), name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"]), name
        # everything lands in the kustomization's namespace (no namespace pinned elsewhere)
        assert doc["metadata"].get("namespace") is None, name
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert kustomization["namespace"] == _one("Namespace", "airlock")["metadata"]["name"]


def test_the_configmap_holds_a_valid_serve_config_on_postgresql_and_redis(tmp_path: Path) -> None:
    text = _one("ConfigMap", "airlock-config")["data"]["serve.toml"]
    (tmp_path / "serve.toml").write_text(text)
    config = load_config(tmp_path / "serve.toml")
    assert config.state_backend is not None and config.state_backend.url.startswith("postgresql://")
    assert config.limits_backend is not None and config.limits_backend.url.startswith("redis")
    # secrets come from files mounted from Secrets, never from the URL or the ConfigMap
    assert config.state_backend.password_file == Path("/run/secrets/airlock-postgres/password")
    assert config.limits_backend.password_file == Path("/run/secrets/airlock-redis/password")
    assert config.audit.key_file == Path("/run/secrets/airlock-audit/key")
    assert config.tls is not None and config.tls.key == Path("/run/secrets/airlock-tls/tls.key")
    assert config.server.host == "0.0.0.0"  # noqa: S104 (every pod address, behind [tls])
    assert config.server.port == 8443
    assert [m.name for m in config.models] == ["affine"]
    # every file the config names is mounted into the gateway container at that path
    mounts = {
        m["mountPath"]
        for m in _one("Deployment", "airlock-gateway")["spec"]["template"]["spec"]["containers"][0][
            "volumeMounts"
        ]
    }
    named = [
        config.state_backend.password_file,
        config.limits_backend.password_file,
        config.audit.key_file,
        config.audit.head_file,
        config.tls.cert,
        config.tls.key,
        config.server.state,
        *(m.path for m in config.models),
    ]
    for path in named:
        assert path.is_absolute() and not path.is_relative_to(tmp_path), path
        assert any(str(path).startswith(mount + "/") for mount in mounts), path
    assert "/etc/airlock" in mounts  # the ConfigMap itself


def test_no_secret_value_is_in_the_repository() -> None:
    assert _secret_problems([doc for _, doc in DOCS]) == []
    broken = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}}
    assert _secret_problems([broken]) == ["Secret/x holds stringData inline"]
    # the Secrets the manifests mount are created by the operator, each one documented
    referenced = {
        volume["secret"]["secretName"]
        for _, doc in DOCS
        if doc["kind"] in WORKLOADS
        for volume in _pod_spec(doc).get("volumes", [])
        if "secret" in volume
    }
    assert referenced == {"airlock-postgres", "airlock-redis", "airlock-audit", "airlock-tls"}
    doc_text = DOC.read_text()
    for name in referenced:
        assert f"create secret generic {name}" in doc_text or f"create secret tls {name}" in doc_text, name
    assert "airlock-models" in doc_text


def test_every_container_is_hardened_pinned_and_bounded() -> None:
    workloads = [doc for _, doc in DOCS if doc["kind"] in WORKLOADS]
    assert {d["metadata"]["name"] for d in workloads} == {
        "airlock-gateway",
        "airlock-migrate",
        "airlock-postgres",
        "airlock-redis",
    }
    for doc in workloads:
        assert _container_problems(doc) == []
        pod = _pod_spec(doc)
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, doc["metadata"]["name"]
    # the checks can fail: a copy with each rule broken once is caught, by rule
    gateway = copy.deepcopy(_one("Deployment", "airlock-gateway"))
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "registry.example.com/model-airlock:latest"
    container["securityContext"]["allowPrivilegeEscalation"] = True
    container["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    del container["resources"]["limits"]["memory"]
    init = gateway["spec"]["template"]["spec"]["initContainers"][0]
    init["image"] = "registry.example.com/model-airlock"
    init["securityContext"]["readOnlyRootFilesystem"] = False
    assert _container_problems(gateway) == [
        "Deployment/airlock-gateway/doctor: root filesystem writable",
        "Deployment/airlock-gateway/doctor: image 'registry.example.com/model-airlock' not pinned",
        "Deployment/airlock-gateway/gateway: allowPrivilegeEscalation not false",
        "Deployment/airlock-gateway/gateway: capabilities do not drop ALL",
        "Deployment/airlock-gateway/gateway: image 'registry.example.com/model-airlock:latest' not pinned",
        "Deployment/airlock-gateway/gateway: resources.limits needs cpu and memory",
    ]


def test_gateway_probes_doctor_replicas_and_disruption_budget() -> None:
    gateway = _one("Deployment", "airlock-gateway")
    assert gateway["spec"]["replicas"] >= 2
    pod = gateway["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["serve", "--config", "/etc/airlock/serve.toml"]
    port = container["ports"][0]
    assert port["containerPort"] == 8443
    probes = {k: container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["path"] == "/v2/health/live"
    assert probes["startupProbe"]["path"] == "/v2/health/live"
    for probe in probes.values():
        assert probe["port"] == port["name"] and probe["scheme"] == "HTTPS"
    # both health paths are the ones docs/serve.md documents
    serve_doc = (ROOT / "docs" / "serve.md").read_text()
    assert "`GET /v2/health/live`" in serve_doc and "`GET /v2/health/ready`" in serve_doc
    # doctor runs first and stops the pod when the standard level cannot run
    (doctor,) = pod["initContainers"]
    assert doctor["args"] == ["doctor", "--level", "standard"]
    # what the sandbox needs is set explicitly, not left to the runtime's defaults
    assert pod["hostUsers"] is False
    assert pod["securityContext"]["seccompProfile"]["type"] == "Unconfined"
    assert container["securityContext"]["procMount"] == "Unmasked"
    migrate = _one("Job", "airlock-migrate")
    assert "airlock serve --config /etc/airlock/serve.toml --migrate" in " ".join(
        _pod_spec(migrate)["containers"][0]["args"]
    )
    pdb = _one("PodDisruptionBudget", "airlock-gateway")
    labels = pod.get("labels") or gateway["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one("Service", "airlock-gateway")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def _egress_targets(policy: dict[str, Any]) -> set[tuple[str, int]]:
    out = set()
    for rule in policy["spec"].get("egress", []):
        assert rule.get("to"), "an egress rule without `to` allows every destination"
        for peer in rule["to"]:
            assert "ipBlock" not in peer, "no egress to address ranges"
            selector = peer.get("podSelector", {}).get("matchLabels", {})
            name = selector.get("app.kubernetes.io/name") or selector.get("k8s-app", "?")
            for port in rule["ports"]:
                out.add((name, port["port"]))
    return out


@pytest.mark.parametrize("name", ["airlock-gateway", "airlock-migrate", "airlock-postgres", "airlock-redis"])
def test_network_policies_deny_by_default_and_allow_only_the_datastores(name: str) -> None:
    deny = _one("NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    policy = _one("NetworkPolicy", name)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    workload = next(d for _, d in DOCS if d["kind"] in WORKLOADS and d["metadata"]["name"] == name)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    expected = {
        "airlock-gateway": {
            ("airlock-postgres", 5432),
            ("airlock-redis", 6379),
            ("kube-dns", 53),
        },
        "airlock-migrate": {("airlock-postgres", 5432), ("kube-dns", 53)},
        "airlock-postgres": set(),
        "airlock-redis": set(),
    }[name]
    assert _egress_targets(policy) == expected
    # a rule that allows everything is caught
    open_policy = copy.deepcopy(policy)
    open_policy["spec"]["egress"] = [{"ports": [{"port": 443}]}]
    with pytest.raises(AssertionError, match="without `to`"):
        _egress_targets(open_policy)


def test_kustomize_builds_every_resource_into_the_namespace() -> None:
    """`kubectl kustomize` (offline: no cluster is contacted) renders what `kubectl apply -k` sends."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the other tests lint the same files without it)")
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    built = [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for _, d in DOCS
    )
    for doc in built:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "airlock", doc["metadata"]["name"]
        if doc["kind"] in WORKLOADS:
            assert _container_problems(doc) == []
