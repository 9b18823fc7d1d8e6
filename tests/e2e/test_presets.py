"""Presets (issue 14, item 2): the shipped examples, presets saved through the API (events on their own stream,
folded by every API replica, read again after a restart), a job taking a preset plus its own overrides, the
operator's read-only file, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from bench.harness import stop_all
from tests.conftest import ROOT, free_port, spawn_cli, wait_ready
from tests.e2e.test_e2e import submit, wait_finished
from tests.e2e.test_options import the_file

pytestmark = pytest.mark.e2e


def second_api(stack, tmp_path, **env: str) -> tuple[subprocess.Popen, str]:
    """Another API replica against the same NATS and data dir."""
    port = free_port()
    process = spawn_cli(
        "service",
        "api",
        "--port",
        str(port),
        env={
            **os.environ,
            "TUBEFLOW_NATS_URL": stack.nats_url,
            "TUBEFLOW_DATA_DIR": str(stack.data_dir),
            "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8",
            **env,
        },
        log=tmp_path / "api2.log",
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, timeout=30)
    return process, base


def presets_of(base: str) -> dict[str, dict]:
    return {p["name"]: p for p in httpx.get(f"{base}/api/presets", timeout=10).json()["presets"]}


def test_a_saved_preset_shapes_jobs_reaches_every_replica_and_can_be_overridden(stack, media, tmp_path):
    shipped = presets_of(stack.base)
    assert {"audio-mp3", "1080p-mp4", "podcast", "archive"} <= set(shipped)
    assert shipped["1080p-mp4"]["source"] == "example" and shipped["1080p-mp4"]["fields"]["quality"] == "1080"

    name = f"small-{uuid.uuid4().hex[:6]}"
    saved = httpx.put(
        f"{stack.base}/api/presets/{name}",
        json={"quality": "worst", "container": "mkv", "description": "the smallest, in MKV"},
        timeout=10,
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["fields"] == {"quality": "worst", "container": "mkv"} and saved.json()["source"] == "api"

    ladder = f"{media.base}/streams/ladder/manifest.mpd"
    plain = wait_finished(stack, submit(stack, url=ladder, preset=name)["id"], timeout=90)
    path, item = the_file(stack, plain)
    assert plain["preset"] == name and plain["options"]["quality"] == "worst", plain["options"]
    assert item["download"]["chosen"]["height"] == 240 and path.suffix == ".mkv"
    overridden = wait_finished(stack, submit(stack, url=ladder, preset=name, quality="360")["id"], timeout=90)
    path, item = the_file(stack, overridden)
    assert item["download"]["chosen"]["height"] == 360 and path.suffix == ".mkv"

    # A replica started now reads the preset from the stream; one it saves reaches the first replica.
    process, other = second_api(stack, tmp_path)
    try:
        assert presets_of(other)[name]["fields"] == {"quality": "worst", "container": "mkv"}
        again = f"{name}-2"
        assert httpx.put(f"{other}/api/presets/{again}", json={"mode": "audio"}, timeout=10).status_code == 200
        deadline = time.monotonic() + 5
        while again not in presets_of(stack.base):
            assert time.monotonic() < deadline, "a preset saved on one replica did not reach the other"
            time.sleep(0.1)
        assert httpx.delete(f"{other}/api/presets/{again}", timeout=10).status_code == 204
    finally:
        stop_all([process])

    assert httpx.delete(f"{stack.base}/api/presets/{name}", timeout=10).status_code == 204
    assert httpx.delete(f"{stack.base}/api/presets/{name}", timeout=10).status_code == 404
    gone = httpx.post(f"{stack.base}/api/jobs", json={"url": ladder, "preset": name}, timeout=10)
    assert gone.status_code == 422 and gone.json()["errors"][0]["code"] == "unknown_preset"
    # A job keeps what its preset gave it, after the preset is gone.
    assert httpx.get(f"{stack.base}/api/jobs/{plain['id']}", timeout=10).json()["options"]["container"] == "mkv"


@pytest.mark.parametrize(
    "method, name, body, status, code",
    [
        ("PUT", "audio-mp3", {"mode": "video"}, 409, "read_only_preset"),
        ("DELETE", "archive", None, 409, "read_only_preset"),
        ("PUT", "Bad Name", {"mode": "audio"}, 422, "invalid_preset"),
        ("PUT", "fine", {"quality": "999"}, 422, "invalid"),
        ("PUT", "fine", {"url": "https://example.com/"}, 422, "unknown_field"),
        ("PUT", "fine", {"format": "best[height~='.*']"}, 422, "invalid_format"),
        ("PUT", "fine", {"clip": {"start": "2:00", "end": "1:00"}}, 422, "invalid_clip"),
    ],
)
def test_bad_presets_are_refused(stack, method, name, body, status, code):
    answer = httpx.request(method, f"{stack.base}/api/presets/{name}", json=body, timeout=10)
    assert answer.status_code == status, answer.text
    assert any(e["code"] == code for e in answer.json()["errors"]), answer.json()


def test_a_job_whose_overrides_break_its_preset_is_refused_naming_the_field(stack, media):
    httpx.put(f"{stack.base}/api/presets/clipped", json={"clip": {"start": "0:05"}}, timeout=10)
    answer = httpx.post(
        f"{stack.base}/api/jobs", json={"url": media.url("clip1.mp4"), "preset": "clipped", "quality": "1"}, timeout=10
    )
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "quality", answer.text


def test_the_operators_preset_file_is_read_only_and_a_bad_one_stops_the_api(stack, tmp_path):
    good = tmp_path / "presets.json"
    good.write_text(json.dumps({"house-style": {"description": "ours", "quality": "720", "thumbnail": "embed"}}))
    process, base = second_api(stack, tmp_path, TUBEFLOW_PRESETS_FILE=str(good))
    try:
        house = presets_of(base)["house-style"]
        assert house["source"] == "file" and house["fields"] == {"quality": "720", "thumbnail": "embed"}
        assert httpx.put(f"{base}/api/presets/house-style", json={}, timeout=10).status_code == 409
    finally:
        stop_all([process])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"broken": {"quality": "999"}}))
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "service", "api", "--port", str(free_port())],
        cwd=ROOT,
        env={**os.environ, "TUBEFLOW_NATS_URL": stack.nats_url, "TUBEFLOW_PRESETS_FILE": str(bad)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "preset 'broken'" in result.stderr and "quality" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
