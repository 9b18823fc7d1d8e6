"""`tubeflow get`: submit and follow from a terminal, with exit codes scripts can rely on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, free_port
from tests.support.processes import run_cli

pytestmark = pytest.mark.e2e


def tubeflow_get(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return run_cli("get", *args, timeout=timeout, cwd=ROOT)


def test_json_mode_prints_snapshots_and_exits_0_when_completed(stack, media):
    result = tubeflow_get(media.feed_url("clip1.mp4,clip2.mp4"), "--mode", "audio", "--api", stack.base, "--json")
    assert result.returncode == 0, result.stderr
    snapshots = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(snapshots) >= 2
    final = snapshots[-1]
    assert final["status"] == "completed" and len(final["items"]) == 2
    assert all(item["extract"]["file"].endswith(".mp3") for item in final["items"])
    percents = [s["progress"]["percent"] for s in snapshots]
    assert percents == sorted(percents)


def test_bars_mode_prints_the_files_and_exits_1_on_failure(stack, media):
    good = tubeflow_get(media.url("clip3.mp4"), "--api", stack.base)
    assert good.returncode == 0, good.stderr
    assert "completed" in good.stdout and f"{stack.base}/media/" in good.stdout
    bad = tubeflow_get(media.base + "/missing.mp4", "--api", stack.base)
    assert bad.returncode == 1 and "http_404" in bad.stdout


def test_bad_input_and_no_server_are_explained():
    nobody = f"http://127.0.0.1:{free_port()}"
    result = tubeflow_get("http://example.com/v", "--api", nobody)
    assert result.returncode == 1 and "tubeflow up" in result.stdout


def test_bad_url_is_refused_with_the_field(stack):
    result = tubeflow_get("ftp://example.com/v", "--api", stack.base)
    assert result.returncode == 1 and "url" in result.stdout and "invalid_url" in result.stdout


def test_ctrl_c_exits_130_and_leaves_the_job_running(stack, media):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "get",
            media.url(media.fresh("long.mp4"), rate=30_000),
            "--api",
            stack.base,
            "--json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        # As from a terminal: a shell without job control starts background commands with SIGINT ignored, and a
        # Python started like that keeps ignoring it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    line = process.stdout.readline()  # the first snapshot: the job exists and is being followed
    job_id = json.loads(line)["id"]
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert job_id in err and "keeps running" in err


def test_option_flags_make_the_job_and_the_result_lists_format_and_files(stack, media):
    ladder = f"{media.base}/streams/ladder/manifest.mpd"
    result = tubeflow_get(
        ladder, "--quality", "360", "--container", "mkv", "--folder", "from-get", "--no-metadata", "--api", stack.base
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "360p" in result.stdout and "/media/from-get/" in result.stdout and ".mkv" in result.stdout, result.stdout
    page = f"{media.base}/streams/pages/html5.html"
    subs = tubeflow_get(page, "--subs", "en", "--subs-as-files", "--thumbnail", "file", "--api", stack.base, "--json")
    final = json.loads(subs.stdout.splitlines()[-1])
    assert final["options"]["subtitles"]["embed"] is False and final["options"]["metadata"] is True
    assert sorted(f.rsplit(".", 2)[-2:][-1] for f in final["items"][0]["download"]["files"]) == ["jpg", "srt"]
    # A preset plus an override: the job has both.
    preset = tubeflow_get(ladder, "--preset", "720p-mp4", "--quality", "worst", "--api", stack.base, "--json")
    final = json.loads(preset.stdout.splitlines()[-1])
    assert final["preset"] == "720p-mp4" and final["options"]["quality"] == "worst"
    assert final["options"]["container"] == "mp4" and final["items"][0]["download"]["chosen"]["height"] == 240


def test_priority_and_skip_downloaded_flags(stack, media):
    name = media.fresh("clip2.mp4")
    feed = media.feed_url(name)
    first = tubeflow_get(feed, "--priority", "high", "--api", stack.base, "--json")
    final = json.loads(first.stdout.splitlines()[-1])
    assert first.returncode == 0 and final["priority"] == "high"
    again = tubeflow_get(feed, "--skip-downloaded", "--api", stack.base, "--json")
    final = json.loads(again.stdout.splitlines()[-1])
    assert again.returncode == 0, again.stdout + again.stderr
    assert final["status"] == "completed" and final["items"][0]["status"] == "skipped"
    assert final["items"][0]["download"]["existing"]
