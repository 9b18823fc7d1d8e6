"""Schemathesis fuzzes the HTTP API from its own OpenAPI document: no server errors, no schema violations.

The API runs as `tubeflow service api` on its own NATS server with no workers, so nothing it accepts is fetched."""

from __future__ import annotations

import os
import signal
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.runtime.embedded import EmbeddedNats
from tests.conftest import free_port, spawn_cli, wait_ready

pytestmark = pytest.mark.e2e

JOB = "01m80kr9ngrx981wzxbmtbw7d3"


@pytest.fixture(scope="module")
def api_base(tmp_path_factory):
    store = tmp_path_factory.mktemp("fuzz")
    server = EmbeddedNats(store / "nats")
    port = free_port()
    env = {
        **os.environ,
        "TUBEFLOW_NATS_URL": server.start(),
        "TUBEFLOW_DATA_DIR": str(store / "data"),
        "TUBEFLOW_RATE_LIMIT": "0",
    }
    media = store / "data" / "media" / JOB
    media.mkdir(parents=True)
    (media / "a.mp4").write_bytes(bytes(range(256)) * 4)
    (media / "empty.mp4").write_bytes(b"")
    process = spawn_cli("service", "api", "--port", str(port), env=env, log=store / "api.log")
    base = f"http://127.0.0.1:{port}"
    wait_ready(base)
    yield base
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    server.stop()


def test_api_has_no_server_errors_and_keeps_its_schema(api_base):
    # Schemathesis' pytest plugin does not load under pytest 9 here, so its strategies run under plain hypothesis.
    # Not an engine update: each schema-valid one installs from a package index (here a closed loopback port, ~11 s
    # of retries each); tests/e2e/test_engine_update.py and tests/unit/test_engine_updates.py cover its input.
    schema = schemathesis.openapi.from_url(f"{api_base}/schema/openapi.json").exclude(
        path_regex=r".*/stream$|^/api/engine/(update|rollback)$"
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            # Schema-valid data may still be refused for reasons a schema can't state (a URL without a host, a
            # forbidden address), so "valid data accepted" is not checked; every other built-in check is.
            case.call_and_validate(base_url=api_base, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # collect them all, then fail with every operation's problem
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_media_answers_every_range_and_path_with_a_4xx_or_the_right_bytes(api_base):
    printable = st.characters(min_codepoint=32, max_codepoint=126)
    ranges = st.one_of(
        st.none(),
        st.text(printable, max_size=80).map(str.strip),
        st.from_regex(r"bytes=[0-9]{0,25}-[0-9]{0,25}", fullmatch=True),
        st.from_regex(r"bytes=-?[0-9]{1,5}(-[0-9]{1,5})?(,[0-9]{1,4}-[0-9]{1,4})?", fullmatch=True),
    )
    names = st.one_of(st.sampled_from(["a.mp4", "empty.mp4"]), st.text(printable, min_size=1, max_size=40))

    @given(byte_range=ranges, name=names)
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(byte_range, name):
        headers = {"Range": byte_range} if byte_range is not None else {}
        response = httpx.get(f"{api_base}/media/{JOB}/{quote(name, safe='')}", headers=headers, timeout=10)
        assert response.status_code in (200, 206, 400, 404, 416), (byte_range, name, response.status_code)
        if response.status_code in (200, 206):
            assert len(response.content) == int(response.headers["content-length"])
            assert response.headers["x-content-type-options"] == "nosniff"
        if response.status_code == 206:
            first, last = response.headers["content-range"].split()[1].split("/")[0].split("-")
            assert (bytes(range(256)) * 4)[int(first) : int(last) + 1] == response.content

    check()
