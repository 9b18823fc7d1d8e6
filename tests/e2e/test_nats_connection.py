"""Reaching NATS: a list of servers, credentials, and commands that fail within the connect timeout with one clear
line instead of hanging (issue 13, items 1-2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.runtime.embedded import EmbeddedNats
from tests.conftest import free_port

pytestmark = pytest.mark.e2e


def tubeflow(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


@pytest.mark.parametrize("command", [["verify"], ["setup"], ["service", "downloader"]])
def test_a_command_against_dead_servers_fails_within_the_timeout_in_one_line(command):
    dead = [f"nats://127.0.0.1:{free_port()}" for _ in range(2)]
    code, output, took = tubeflow(
        *command, env={"TUBEFLOW_NATS_URL": ",".join(dead), "TUBEFLOW_NATS_CONNECT_TIMEOUT": "2"}
    )
    assert code != 0 and took < 15, (code, took, output)
    assert "Traceback" not in output, output
    assert f"could not connect to NATS at {dead[0]}, {dead[1]} within 2 s" in output, output


def test_any_server_of_the_list_will_do(tmp_path):
    server = EmbeddedNats(tmp_path / "nats")
    try:
        live = server.start()
        dead = f"nats://127.0.0.1:{free_port()}"
        code, output, _ = tubeflow("setup", env={"TUBEFLOW_NATS_URL": f"{dead},{live}"})
        assert code == 0, output
    finally:
        server.stop()


def test_credentials_are_used_and_wrong_ones_are_refused_clearly(tmp_path):
    server = EmbeddedNats(tmp_path / "nats", extra_args=("--user", "tubeflow", "--pass", "right-horse"))
    try:
        url = server.start()
        base = {"TUBEFLOW_NATS_URL": url, "TUBEFLOW_NATS_CONNECT_TIMEOUT": "3", "TUBEFLOW_NATS_USER": "tubeflow"}
        code, output, took = tubeflow("setup", env={**base, "TUBEFLOW_NATS_PASSWORD": "wrong-battery"})
        assert code != 0 and took < 15, output
        assert "authorization" in output.lower() and "wrong-battery" not in output, output
        code, output, _ = tubeflow("setup", env={**base, "TUBEFLOW_NATS_PASSWORD": "right-horse"})
        assert code == 0 and "right-horse" not in output, output
        code, output, _ = tubeflow("verify", env={**base, "TUBEFLOW_NATS_PASSWORD": "right-horse"})
        assert code == 0, output
    finally:
        server.stop()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA made here, and a server certificate for 127.0.0.1 signed by it (openssl)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test's CA (.ci/run installs it)"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=tubeflow test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


def test_tls_with_a_ca_made_here_works_and_an_untrusted_server_is_refused(tmp_path):
    ca, cert, key = make_certificates(tmp_path)
    server = EmbeddedNats(tmp_path / "nats", extra_args=("--tls", "--tlscert", str(cert), "--tlskey", str(key)))
    try:
        url = server.start().replace("nats://", "tls://")
        base = {"TUBEFLOW_NATS_URL": url, "TUBEFLOW_NATS_CONNECT_TIMEOUT": "3"}
        code, output, _ = tubeflow("setup", env={**base, "TUBEFLOW_NATS_TLS_CA": str(ca)})
        assert code == 0, output
        code, output, took = tubeflow("setup", env=base)  # the system's CAs don't know ours
        assert code != 0 and took < 15 and "certificate" in output.lower(), output
    finally:
        server.stop()
