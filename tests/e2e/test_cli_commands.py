"""The CLI's API commands as a person types them (`tubeflow queue`, `queue schedule`, `engine`, `subscribe`, `feed`)
against a running API: what they print, `--json`, a refusal's errors and exit code 2, and exit 1 when nothing
answers."""

from __future__ import annotations

import json

import pytest

from bench.harness import nats_server, tubeflow
from tests.support.processes import run_cli

pytestmark = pytest.mark.e2e


def test_queue_schedule_engine_subscribe_and_feed_commands(media):
    with nats_server() as nats, tubeflow(nats.url, ["api"]) as stack:
        api = ("--api", stack.base)
        shown = run_cli("queue", *api)
        assert shown.returncode == 0 and shown.stdout.startswith("queue running: 0 downloading"), shown
        paused = run_cli("queue", "pause", *api)
        assert paused.returncode == 0 and "queue paused" in paused.stdout, paused
        assert json.loads(run_cli("queue", "resume", "--json", *api).stdout)["paused"] is False

        made = run_cli(
            "queue", "schedule", "set", "--window", "mon-fri 22:00-06:00", "--rate", "5M", "--site-cap",
            "example.com=2G", "--timezone", "Europe/Berlin", *api,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert "window: mon,tue,wed,thu,fri 22:00-06:00 (Europe/Berlin)" in made.stdout
        assert "budget: 5M/s" in made.stdout and "2G from example.com" in made.stdout
        schedule = json.loads(run_cli("queue", "schedule", "show", "--json", *api).stdout)
        assert schedule["rate"] == "5M" and schedule["site_caps"] == {"example.com": "2G"}
        # What is not given stays; a refusal names its field and exits 2.
        assert (
            json.loads(run_cli("queue", "schedule", "set", "--daily-cap", "20G", "--json", *api).stdout)["rate"] == "5M"
        )
        refused = run_cli("queue", "schedule", "set", "--timezone", "Mars/Olympus", *api)
        assert refused.returncode == 2 and "timezone" in refused.stderr, refused
        assert run_cli("queue", "schedule", "clear", *api).returncode == 0
        assert "windows: none" in run_cli("queue", "schedule", *api).stdout

        engine = run_cli("engine", *api)
        assert engine.returncode == 0 and engine.stdout.startswith("yt-dlp in force: "), engine

        subscribed = run_cli("subscribe", media.feed_url("clip1.mp4"), "--paused", *api)
        assert subscribed.returncode == 0 and subscribed.stdout.startswith("subscribed: sb"), subscribed
        subscription = subscribed.stdout.split()[1]
        url = run_cli("feed", subscription, *api).stdout.strip()
        assert url.startswith(f"{stack.base}/feeds/subscriptions/{subscription}.xml?key=")
        assert run_cli("feed", subscription, "--revoke", *api).stdout.strip() == "no feed (revoked)"
        unknown = run_cli("feed", "--preset", "no-such", *api)
        assert unknown.returncode == 2 and "preset" in unknown.stderr, unknown
        assert run_cli("feed", *api).returncode == 2  # neither a subscription, a folder nor a preset
        base = stack.base
    # Nothing answers there any more: exit 1, said on stderr.
    gone = run_cli("queue", "--api", base)
    assert gone.returncode == 1 and "did not answer" in gone.stderr, gone
