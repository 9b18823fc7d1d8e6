"""`tubeflow doctor` from a shell: exit 0 on a complete environment (a provider answering), 1 naming each problem
(the runtime hidden, the provider down, NATS away), 2 with one line for a setting it can't use."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.support.pot_provider import FakePotProvider

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def closed_port() -> int:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def doctor(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUBEFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "doctor", *args],
        cwd=ROOT,
        env={**clean, "TUBEFLOW_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def provider():
    with FakePotProvider("127.0.0.1") as running:
        yield running


def test_a_complete_environment_is_all_good(tmp_path, provider, nats_url):
    done = doctor(tmp_path, TUBEFLOW_POT_PROVIDER_URL=provider.url, TUBEFLOW_NATS_URL=nats_url)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "JavaScript runtime: deno" in out and "challenge solver: yt-dlp-ejs" in out
    assert "impersonation: " in out and "chrome" in out
    assert f"PO-token provider: {provider.url} (answering" in out
    assert "NATS: " in out and "answers" in out
    assert out.rstrip().endswith("all good")


def test_each_problem_is_one_line_and_the_exit_code_says_so(tmp_path):
    down = f"http://127.0.0.1:{closed_port()}"
    done = doctor(
        tmp_path,
        TUBEFLOW_JS_RUNTIME="none",
        TUBEFLOW_POT_PROVIDER_URL=down,
        TUBEFLOW_NATS_URL=f"nats://127.0.0.1:{closed_port()}",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    problems = [line for line in done.stdout.splitlines() if line.startswith("! ")]
    assert len(problems) == 3, done.stdout
    assert "no JavaScript runtime" in problems[0]
    assert f"PO-token provider at {down} does not answer" in problems[1]
    assert "NATS at nats://127.0.0.1:" in problems[2]
    assert done.stdout.rstrip().endswith("3 problems")


def test_json_and_a_rule_it_cant_follow(tmp_path):
    done = doctor(tmp_path, "--json", TUBEFLOW_IMPERSONATE="vimeo.com=chrome,example.org=opera")
    assert done.returncode == 1, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["facts"]["impersonate_rules"] == {"vimeo.com": "chrome", "example.org": "opera"}
    assert answer["problems"] == [
        "TUBEFLOW_IMPERSONATE: example.org=opera is not available here (see the targets listed above)"
    ]


def test_a_setting_it_cant_use_is_one_line(tmp_path):
    done = doctor(tmp_path, TUBEFLOW_POT_PROVIDER_URL="ftp://x")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: TUBEFLOW_POT_PROVIDER_URL must be an http(s) URL (e.g. http://bgutil:4416), not 'ftp://x'"
    ]


def test_a_downloader_asked_for_a_target_it_cant_send_refuses_to_start_naming_the_setting(tmp_path, nats_url):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUBEFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "service", "downloader"],
        cwd=ROOT,
        env={
            **clean,
            "TUBEFLOW_DATA_DIR": str(tmp_path / "data"),
            "TUBEFLOW_NATS_URL": nats_url,
            "TUBEFLOW_IMPERSONATE": "vimeo.com=chrome,example.org=opera",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines() if "TUBEFLOW_IMPERSONATE" in line]
    assert said and "example.org=opera not available here" in said[0], done.stdout + done.stderr
    assert "vimeo.com=chrome" not in said[0]


def test_cookie_profiles_about_to_expire_are_named(tmp_path):
    import time as clock

    from services.runtime.cookies import CookieStore

    store = CookieStore(tmp_path / "data")
    soon, later = int(clock.time()) + 2 * 86400, int(clock.time()) + 90 * 86400
    store.put("youtube", f".youtube.com\tTRUE\t/\tTRUE\t{soon}\tSID\tx\n".encode())
    store.put("vimeo", f".vimeo.com\tTRUE\t/\tTRUE\t{later}\tsession\ty\n".encode())
    done = doctor(tmp_path)
    problems = [line for line in done.stdout.splitlines() if line.startswith("! ")]
    assert done.returncode == 1 and len(problems) == 1, done.stdout
    assert "cookie profile 'youtube'" in problems[0] and "PUT /api/cookies/youtube" in problems[0]


def test_a_site_cooling_down_is_named_with_how_to_end_it_and_an_updated_yt_dlp_is_said(tmp_path, provider):
    import asyncio
    from datetime import datetime, timezone

    from contracts.system import EngineUpdated, EngineUpdatedData
    from services.runtime.cooldown import Cooldowns
    from services.runtime.embedded import EmbeddedNats
    from services.runtime.nats import connect, ensure_topology
    from services.runtime.nats.publish import publish_system
    from services.runtime.nats.topology import PACING_BUCKET

    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()

    async def cool() -> None:
        nc = await connect(url, "test")
        js = nc.jetstream()
        await ensure_topology(js)
        await Cooldowns(js, await js.key_value(PACING_BUCKET), 600.0, "test").strike(
            "https://www.youtube.com/watch?v=x", "bot_check", "Sign in to confirm you're not a bot"
        )
        # And a yt-dlp updated at run time (as `engine.updated` says).
        await publish_system(
            js,
            EngineUpdated(
                event_id="e1",
                type="engine.updated",
                occurred_at=datetime.now(timezone.utc),
                data=EngineUpdatedData(version="2099.01.01", previous="2026.10.26"),
            ),
        )
        await nc.close()

    try:
        asyncio.run(cool())
        done = doctor(tmp_path, TUBEFLOW_POT_PROVIDER_URL=provider.url, TUBEFLOW_NATS_URL=url)
    finally:
        server.stop()
    problems = [line for line in done.stdout.splitlines() if line.startswith("! ")]
    assert done.returncode == 1 and len(problems) == 1, done.stdout + done.stderr
    assert "youtube.com cools down until" in problems[0] and "bot_check" in problems[0], problems
    assert "POST /api/queue/cooldowns/youtube.com/resume" in problems[0]
    assert "  yt-dlp 20" in done.stdout  # the bundled engine's version, as ever
    assert "yt-dlp in force: 2099.01.01 (updated at run time" in done.stdout
