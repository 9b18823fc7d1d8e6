"""Every benchmark runs once in --quick mode: a smoke test of the harness and the JSON it writes. No timing is
asserted here; numbers belong in docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.__main__ import BENCHMARKS
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_runs_quick_and_writes_json(name, tmp_path):
    out = tmp_path / f"{name}.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", name, "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["benchmark"] and report["rows"]
    assert f"== {report['benchmark']}" in result.stdout
