"""The prod overlay's NATS configuration, as rendered by kustomize, run for real: three nats-server processes on
loopback with its TLS (clients and routes) and its accounts; tubeflow's commands get in only as the TUBEFLOW
account's user, over TLS with the CA, and the streams land in that account with 3 replicas (issue 13, item 5)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from bench.harness import stop_all
from services.runtime.embedded import nats_server_binary
from tests.conftest import free_port
from tests.e2e.test_nats_connection import make_certificates, tubeflow
from tests.unit.test_deploy import of_kind, render

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

PASSWORD, SYSTEM_PASSWORD = "correct-horse-battery", "staple-system"


def prod_nats_conf() -> str:
    _, objects = render("prod")
    return of_kind(objects, "ConfigMap")["nats-config"]["data"]["nats.conf"]


def localised(conf: str, i: int, certs: tuple[Path, Path, Path], store: Path, ports: dict[str, list[int]]) -> str:
    """The pod's configuration with this machine's paths and ports: certificates, store, client/monitor/route ports,
    and the routes to the other pods' DNS names pointed at the other processes."""
    ca, cert, key = certs
    conf = conf.replace("/etc/nats-tls/ca.crt", str(ca)).replace("/etc/nats-tls/tls.crt", str(cert))
    conf = conf.replace("/etc/nats-tls/tls.key", str(key)).replace("/data/jetstream", str(store))
    conf = conf.replace("http_port: 8222", f"http_port: {ports['monitor'][i]}")
    conf = re.sub(r"^port: 4222$", f"port: {ports['client'][i]}", conf, flags=re.M)
    conf = re.sub(r"^(\s+)port: 6222$", rf"\g<1>port: {ports['route'][i]}", conf, flags=re.M)
    return re.sub(
        r"nats://nats-(\d)\.nats-headless\.tubeflow\.svc\.cluster\.local:6222",
        lambda m: f"nats://127.0.0.1:{ports['route'][int(m.group(1))]}",
        conf,
    )


@pytest.fixture
def prod_cluster(tmp_path):
    certs = make_certificates(tmp_path)
    ports = {kind: [free_port() for _ in range(3)] for kind in ("client", "monitor", "route")}
    conf = prod_nats_conf()
    processes = []
    for i in range(3):
        path = tmp_path / f"n{i}.conf"
        path.write_text(localised(conf, i, certs, tmp_path / f"js{i}", ports))
        env = {
            **os.environ,
            "POD_NAME": f"nats-{i}",
            "NATS_TUBEFLOW_PASSWORD": PASSWORD,
            "NATS_SYSTEM_PASSWORD": SYSTEM_PASSWORD,
        }
        processes.append(
            subprocess.Popen(
                [nats_server_binary(), "-c", str(path)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / f"n{i}.log", "ab"),
                stdin=subprocess.DEVNULL,
            )
        )
    try:
        yield certs[0], ports
    finally:
        stop_all(processes, grace=10)


def test_the_prod_overlays_nats_takes_tls_and_the_account_and_nothing_else(prod_cluster):
    ca, ports = prod_cluster
    url = ",".join(f"tls://127.0.0.1:{port}" for port in ports["client"])
    env = {
        "TUBEFLOW_NATS_URL": url,
        "TUBEFLOW_NATS_USER": "tubeflow",
        "TUBEFLOW_NATS_PASSWORD": PASSWORD,
        "TUBEFLOW_NATS_TLS_CA": str(ca),
        "TUBEFLOW_STREAM_REPLICAS": "3",
        "TUBEFLOW_NATS_CONNECT_TIMEOUT": "3",
    }
    # The cluster elects its JetStream leader over TLS routes first: setup is tried until it goes through.
    deadline = time.monotonic() + 60
    while True:
        code, output, _ = tubeflow("setup", env=env)
        if code == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert code == 0, output
    assert PASSWORD not in output
    code, output, _ = tubeflow("verify", env=env)
    assert code == 0, output

    # The streams live in the TUBEFLOW account (the one KEDA's triggers name), with a copy on each node.
    monitor = f"http://127.0.0.1:{ports['monitor'][0]}/jsz?accounts=true&streams=true&config=true"
    with urllib.request.urlopen(monitor, timeout=5) as answer:
        accounts = {a["name"]: a for a in json.load(answer)["account_details"]}
    streams = {s["name"]: s for s in accounts["TUBEFLOW"]["stream_detail"]}
    assert streams["TUBEFLOW_EVENTS"]["config"]["num_replicas"] == 3

    refused = {
        "a wrong password": {**env, "TUBEFLOW_NATS_PASSWORD": "wrong"},
        "no user": {k: v for k, v in env.items() if k not in ("TUBEFLOW_NATS_USER", "TUBEFLOW_NATS_PASSWORD")},
        "no CA (TLS not trusted)": {k: v for k, v in env.items() if k != "TUBEFLOW_NATS_TLS_CA"},
    }
    for what, bad in refused.items():
        code, output, took = tubeflow("verify", env=bad)
        assert code != 0 and took < 20, (what, output)
        assert "authorization" in output.lower() or "certificate" in output.lower(), (what, output)
        assert "wrong" not in output and PASSWORD not in output, (what, output)
    # The system account's user gets in but has no JetStream: its streams are not tubeflow's to touch.
    code, output, _ = tubeflow(
        "verify", env={**env, "TUBEFLOW_NATS_USER": "system", "TUBEFLOW_NATS_PASSWORD": SYSTEM_PASSWORD}
    )
    assert code != 0 and SYSTEM_PASSWORD not in output, output
    assert "JetStream not enabled for account" in output and "Traceback" not in output, output
