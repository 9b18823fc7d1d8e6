"""Every test on the shared stack passes in `token` mode too (issue 28): they run again, in a pytest of their own, with
TUBEFLOW_TEST_AUTH=token — the stack has TUBEFLOW_API_TOKEN, and what talks to it (httpx, `tubeflow get`, the page)
carries the token (tests/conftest.py). The outer run is `none` mode, the default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TEST_AUTH

pytestmark = [pytest.mark.e2e, pytest.mark.token_mode]


@pytest.mark.timeout(3000)
@pytest.mark.skipif(TEST_AUTH == "token", reason="this run is the token-mode run already")
def test_the_shared_stack_tests_pass_in_token_mode(tmp_path):
    env = {**os.environ, "TUBEFLOW_TEST_AUTH": "token"}
    env.pop("TUBEFLOW_NATS_URL", None)  # its own NATS, as a fresh run would
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "shared_stack", "-q", "-p", "no:cacheprovider", "--basetemp",
         str(tmp_path / "run")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=2900,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-3:]
    assert done.returncode == 0, "\n".join(done.stdout.splitlines()[-80:]) + done.stderr[-2000:]
    assert any("passed" in line for line in summary) and "the shared stack's auth: token" in done.stdout, summary
