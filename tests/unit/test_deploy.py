"""Deployment files, checked offline: kustomize renders every overlay, every object validates strictly against
Kubernetes 1.37's schemas, KEDA objects name real consumers, the Dockerfile and compose file follow the rules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from contracts.events import subject_filter
from services.downloader.queue import TICKETS
from services.extractor.main import COMPLETED_DOWNLOADS
from services.runtime.nats import STREAM
from services.runtime.nats.topology import WORK_STREAM
from tests.conftest import ROOT

BIN = Path(sys.executable).parent
OVERLAYS = ["dev", "prod"]


def render(overlay: str) -> tuple[str, list[dict]]:
    result = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(overlay, tmp_path):
    text, objects = render(overlay)
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(text)
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", "1.37.0", str(rendered)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Only KEDA's custom resource has no schema here; it is checked by hand below.
    unknown = [line for line in output.splitlines() if "Couldn't find schema" in line and "ScaledObject" not in line]
    assert not unknown, unknown
    assert len(objects) >= 20


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_probed_limited_and_locked_down(overlay):
    _, objects = render(overlay)
    workloads = {**of_kind(objects, "Deployment"), **of_kind(objects, "StatefulSet")}
    assert {"api", "downloader", "extractor", "progress", "scheduler", "notifier", "nats"} <= set(workloads)
    budgets = {
        o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for o in of_kind(objects, "PodDisruptionBudget").values()
    }
    for name, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["livenessProbe"] and container["readinessProbe"], name
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], name
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["capabilities"]["drop"] == ["ALL"], name
            assert context["allowPrivilegeEscalation"] is False, name
        assert name in budgets, f"{name} has no PodDisruptionBudget"
    for name in ("api", "downloader", "extractor", "progress", "scheduler", "notifier"):
        container = workloads[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:2] == ["service", name]
        paths = {container["livenessProbe"]["httpGet"]["path"], container["readinessProbe"]["httpGet"]["path"]}
        assert paths == {"/healthz", "/readyz"}
    job = of_kind(objects, "Job")["setup"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["setup"]
    config = of_kind(objects, "ConfigMap")["tubeflow"]["data"]
    assert config["TUBEFLOW_DECLARE"] == "false" and config["TUBEFLOW_HEALTH_PORT"] == "8081"


def test_prod_runs_a_three_node_jetstream_cluster_and_two_apis():
    _, objects = render("prod")
    nats = of_kind(objects, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    conf = of_kind(objects, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "cluster {" in conf and conf.count("nats-headless") == 3
    assert of_kind(objects, "ConfigMap")["tubeflow"]["data"]["TUBEFLOW_STREAM_REPLICAS"] == "3"
    assert of_kind(objects, "Deployment")["api"]["spec"]["replicas"] == 2
    _, dev = render("dev")
    assert of_kind(dev, "StatefulSet")["nats"]["spec"]["replicas"] == 1


def test_prod_takes_the_api_token_from_a_secret_and_commits_none():
    _, objects = render("prod")
    (api,) = of_kind(objects, "Deployment")["api"]["spec"]["template"]["spec"]["containers"]
    token = next(e for e in api["env"] if e["name"] == "TUBEFLOW_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "tubeflow-api", "key": "token"}
    assert "Secret" not in {o["kind"] for o in objects}, "a secret value is committed"


def test_prod_signs_people_in_with_openid_connect_and_its_settings_start():
    """The prod overlay's auth (issue 28): oidc, the client's secret from a Secret; the API's settings accept it."""
    from services.runtime.settings import Settings

    _, objects = render("prod")
    config = of_kind(objects, "ConfigMap")["tubeflow"]["data"]
    assert config["TUBEFLOW_AUTH"] == "oidc" and config["TUBEFLOW_OIDC_ISSUER"].startswith("https://")
    (api,) = of_kind(objects, "Deployment")["api"]["spec"]["template"]["spec"]["containers"]
    secret = next(e for e in api["env"] if e["name"] == "TUBEFLOW_OIDC_CLIENT_SECRET")
    assert secret["valueFrom"]["secretKeyRef"] == {"name": "tubeflow-oidc", "key": "client-secret"}
    fields = {k.removeprefix("TUBEFLOW_").lower(): v for k, v in config.items() if k.startswith("TUBEFLOW_OIDC")}
    assert Settings(auth="oidc", api_token="t", oidc_client_secret="s", **fields).auth_mode() == "oidc"


def pod_workloads(objects: list[dict]) -> dict[str, dict]:
    """tubeflow's own pods: its Deployments (not the PO-token provider's) and the setup Job."""
    own = {name: d for name, d in of_kind(objects, "Deployment").items() if name != "pot-provider"}
    return {**own, **of_kind(objects, "Job")}


def test_prod_nats_wants_tls_on_clients_and_routes_and_an_account_login():
    _, objects = render("prod")
    conf = of_kind(objects, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    client_tls, cluster = conf.split("accounts {")[0], conf.split("cluster {")[1]
    assert "tls {" in client_tls and "ca_file" in client_tls
    assert "tls {" in cluster and "verify: true" in cluster, "routes between NATS pods are not mutual TLS"
    assert "system_account: SYS" in conf and "jetstream: enabled" in conf.split("TUBEFLOW {")[1].split("}")[0]
    # Passwords come from the server's environment (a Secret), never the file.
    assert re.findall(r"password: (\S+)", conf) == ["$NATS_SYSTEM_PASSWORD", "$NATS_TUBEFLOW_PASSWORD"]
    nats_env = {
        e["name"]: e
        for e in of_kind(objects, "StatefulSet")["nats"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    for name in ("NATS_SYSTEM_PASSWORD", "NATS_TUBEFLOW_PASSWORD"):
        assert nats_env[name]["valueFrom"]["secretKeyRef"]["name"] == "tubeflow-nats"
    config = of_kind(objects, "ConfigMap")["tubeflow"]["data"]
    assert config["TUBEFLOW_NATS_URL"].startswith("tls://") and config["TUBEFLOW_NATS_USER"] == "tubeflow"
    for name, workload in pod_workloads(objects).items():
        pod = workload["spec"]["template"]["spec"]
        container = pod["containers"][0]
        password = next(e for e in container["env"] if e["name"] == "TUBEFLOW_NATS_PASSWORD")
        assert password["valueFrom"]["secretKeyRef"] == {"name": "tubeflow-nats", "key": "password"}, name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = next(v for v in pod["volumes"] if v["name"] == mounts["/etc/nats-tls"])
        # Only the CA: the server's key stays with the NATS pods.
        assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], name
        assert config["TUBEFLOW_NATS_TLS_CA"] == "/etc/nats-tls/ca.crt"
    for scaled in of_kind(objects, "ScaledObject").values():
        assert all(t["metadata"]["account"] == "TUBEFLOW" for t in scaled["spec"]["triggers"])
    assert "Secret" not in {o["kind"] for o in objects}, "a secret value is committed"


def test_dev_nats_stays_open_and_says_so():
    _, objects = render("dev")
    conf = of_kind(objects, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "accounts" not in conf and "tls" not in conf
    dev = (ROOT / "deploy" / "k8s" / "overlays" / "dev" / "kustomization.yaml").read_text()
    assert "no auth" in dev.lower() and "no tls" in dev.lower()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_tubeflow_pods_reach_nats_and_only_nats_pods_its_routes(overlay):
    _, objects = render(overlay)
    policy = of_kind(objects, "NetworkPolicy")["nats-ingress"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "nats"}
    assert policy["policyTypes"] == ["Ingress"]
    allowed = {rule["ports"][0]["port"]: rule["from"] for rule in policy["ingress"]}
    assert set(allowed) == {4222, 6222, 8222}
    assert allowed[4222] == [{"podSelector": {"matchExpressions": [{"key": "tubeflow/role", "operator": "Exists"}]}}]
    assert allowed[6222] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}]
    # Every tubeflow pod carries the label the policy lets in.
    for name, workload in pod_workloads(objects).items():
        assert "tubeflow/role" in workload["spec"]["template"]["metadata"]["labels"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_storage_ingress_and_egress_policy(overlay):
    _, objects = render(overlay)
    assert of_kind(objects, "PersistentVolumeClaim")["media"]["spec"]["accessModes"] == ["ReadWriteMany"]
    annotations = of_kind(objects, "Ingress")["tubeflow"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    policies = of_kind(objects, "NetworkPolicy")
    policy = policies["downloader-egress"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "downloader"
    # What fetches what a stranger named (sources, webhook targets) is held to public addresses the same way.
    others = policies["scheduler-notifier-egress"]
    selected = others["spec"]["podSelector"]["matchLabels"]
    workloads = of_kind(objects, "Deployment")
    for name in ("scheduler", "notifier"):
        labels = workloads[name]["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selected.items()), name
    for checked in (policy, others):
        blocked = [
            cidr
            for rule in checked["spec"]["egress"]
            for peer in rule.get("to", [])
            for cidr in peer.get("ipBlock", {}).get("except", [])
        ]
        for cidr in ("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "fe80::/10"):
            assert cidr in blocked


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_po_token_provider_is_reached_by_downloaders_and_the_scheduler_only(overlay):
    from services.runtime.settings import Settings

    _, objects = render(overlay)
    config = of_kind(objects, "ConfigMap")["tubeflow"]["data"]
    assert Settings(pot_provider_url=config["TUBEFLOW_POT_PROVIDER_URL"]).pot_provider_url == "http://pot-provider:4416"
    provider = of_kind(objects, "Deployment")["pot-provider"]
    labels = provider["spec"]["template"]["metadata"]["labels"]
    assert "tubeflow/role" not in labels  # not one of tubeflow's pods: NATS doesn't let it in
    assert of_kind(objects, "Service")["pot-provider"]["spec"]["ports"][0]["port"] == 4416
    policies = of_kind(objects, "NetworkPolicy")
    [rule] = policies["pot-provider"]["spec"]["ingress"]
    [peer] = rule["from"]
    roles = peer["podSelector"]["matchExpressions"][0]
    assert (roles["key"], roles["operator"], set(roles["values"])) == (
        "tubeflow/role",
        "In",
        {"downloader", "scheduler"},
    )
    assert rule["ports"] == [{"port": 4416, "protocol": "TCP"}]
    clients = policies["pot-provider-clients"]["spec"]
    assert clients["podSelector"]["matchExpressions"] == peer["podSelector"]["matchExpressions"]
    assert clients["egress"][0]["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "pot-provider"}}}]
    deployments = of_kind(objects, "Deployment")
    for name in ("downloader", "scheduler"):
        assert deployments[name]["spec"]["template"]["metadata"]["labels"]["tubeflow/role"] == name
    for name in ("api", "extractor", "progress", "notifier"):
        assert deployments[name]["spec"]["template"]["metadata"]["labels"]["tubeflow/role"] not in roles["values"]
    blocked = [
        c
        for r in policies["pot-provider"]["spec"]["egress"]
        for p in r["to"]
        for c in p.get("ipBlock", {}).get("except", [])
    ]
    assert "10.0.0.0/8" in blocked and "169.254.0.0/16" in blocked


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_workers_on_the_real_consumers(overlay):
    _, objects = render(overlay)
    deployments = of_kind(objects, "Deployment")
    scaled = of_kind(objects, "ScaledObject")
    # Downloaders scale on the download queue's tickets (one consumer per priority), extractors on their consumer.
    expected = {
        "downloader": [(WORK_STREAM, spec.durable) for spec in TICKETS],
        "extractor": [(STREAM, COMPLETED_DOWNLOADS.durable)],
    }
    assert set(scaled) == set(expected)
    for name, consumers in expected.items():
        spec = scaled[name]["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert spec["minReplicaCount"] >= 1 and spec["maxReplicaCount"] > spec["minReplicaCount"]
        assert [(t["metadata"]["stream"], t["metadata"]["consumer"]) for t in spec["triggers"]] == consumers
        for trigger in spec["triggers"]:
            assert trigger["type"] == "nats-jetstream"
            meta = trigger["metadata"]
            for key in ("natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"):
                assert meta.get(key), key
            assert int(meta["lagThreshold"]) > 0
            assert meta["natsServerMonitoringEndpoint"].endswith(":8222")
    assert subject_filter("item.queued").startswith("tubeflow.job.")


def test_dockerfile_is_pinned_non_root_and_has_no_secrets():
    text = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    copied_from = re.findall(r"COPY --from=(\S+:\S+)", text)
    assert bases and all(re.search(r":\d[\w.-]*", b) and ":latest" not in b for b in bases + copied_from), bases
    assert all(b.startswith("python:3.11") for b in bases)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "uv sync --locked" in text
    for line in re.findall(r"^(?:ENV|ARG)\s+.*$", text, re.MULTILINE):
        assert not re.search(r"(TOKEN|PASSWORD|SECRET|KEY)\s*=", line, re.IGNORECASE), line
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env*"} <= set(ignored)


def test_compose_runs_the_same_services_from_one_image():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"nats", "setup", "api", "downloader", "extractor", "progress", "scheduler", "notifier"} <= set(services)
    assert "-js" in services["nats"]["command"]
    for name in ("api", "downloader", "extractor", "progress", "scheduler", "notifier"):
        assert services[name]["image"] == services["setup"]["image"]
        assert services[name]["command"][:2] == ["service", name]
        assert "media:/data" in services[name]["volumes"]
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]
    assert set(compose["volumes"]) == {"nats", "media"}
    # The optional PO-token provider: on a network of its own with the downloader and the scheduler only.
    provider = services["pot-provider"]
    assert provider["profiles"] == ["pot"] and "pot" in provider["networks"]
    assert compose["networks"]["pot"]["internal"] is True
    assert {name for name, s in services.items() if "pot" in s.get("networks", [])} == {
        "downloader",
        "scheduler",
        "pot-provider",
    }
