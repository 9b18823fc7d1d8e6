"""Automatic cool-down across processes (issue 27): a site that answers 429 gets no request from any downloader or
the scheduler until its cool-down is over, another site's jobs complete meanwhile, then everything of it completes;
the queue shows it (and can end it early), and the event is on TUBEFLOW_SYSTEM."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import httpx
import nats
import pytest

from bench.harness import FinishedJobs, nats_server, tubeflow
from contracts.system import parse_system_event
from services.runtime.nats.topology import SYSTEM_STREAM
from tests.support.processes import wait_for

pytestmark = pytest.mark.e2e

COOLDOWN = 8.0


async def _system_events(url: str) -> list:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(SYSTEM_STREAM)
        return [
            parse_system_event((await js.get_msg(SYSTEM_STREAM, seq)).data)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await nc.close()


def test_a_site_answering_429_cools_down_for_every_process_while_another_site_goes_on(media):
    media.refusals.clear()
    media.limit_after, media.limit_seconds, media._limited, media._limited_until = 3, 1.0, 0, 0.0
    limited = [media.limited_url(media.fresh("clip1.mp4")) for _ in range(4)]
    local = media.base.replace("127.0.0.1", "localhost")  # the same server under another site's name
    others = [f"{local}/media/{media.fresh('clip2.mp4')}" for _ in range(3)]
    env = {"TUBEFLOW_SITE_COOLDOWN": f"{COOLDOWN:g}s", "TUBEFLOW_DOWNLOAD_CONCURRENCY": "2"}
    services = ["api", "progress", "downloader", "downloader", "scheduler"]
    try:
        with nats_server() as server, tubeflow(server.url, services, env) as stack:
            finished = FinishedJobs(stack.base)
            try:
                with httpx.Client(timeout=30) as client:
                    post = lambda url: client.post(f"{stack.base}/api/jobs", json={"url": url, "metadata": False})  # noqa: E731
                    ids = [post(url).json()["id"] for url in limited]
                    refused_at = wait_for(lambda: media.refusals[:1], 60, "429")[0]
                    queue = wait_for(
                        lambda: (q := client.get(f"{stack.base}/api/queue").json())["cooldowns"] and q, 10, "cool-down"
                    )
                    (cooling,) = queue["cooldowns"]
                    assert cooling["site"] == "127.0.0.1" and cooling["code"] == "site_rate_limited", cooling
                    until = datetime.fromisoformat(cooling["until"])
                    # Meanwhile: another site's jobs, and a subscription of the cooling site (it must not check yet).
                    other_ids = [post(url).json()["id"] for url in others]
                    entry = media.fresh("clip1.mp4")
                    made = client.post(
                        f"{stack.base}/api/subscriptions",
                        json={"url": media.feed_url(entry), "interval": "1h", "name": "cooling"},
                    )
                    assert made.status_code == 201, made.text
                    finished.wait(other_ids, timeout=60)
                    others_done = time.monotonic()
                    subscription = made.json()["id"]
                    sub = wait_for(
                        lambda: (
                            (s := client.get(f"{stack.base}/api/subscriptions/{subscription}").json())["new_items"]
                            and s
                        ),
                        90,
                        "the subscription's check",
                    )
                    finished.wait(ids + [sub["last_job_id"]] if sub.get("last_job_id") else ids, timeout=120)
                    views = [client.get(f"{stack.base}/api/jobs/{job}").json() for job in ids + other_ids]
            finally:
                finished.close()
            system = asyncio.run(_system_events(server.url))
    finally:
        media.limit_after = None
    assert {v["status"] for v in views} == {"completed"}, [(v["status"], v["error"]) for v in views]
    # Nothing reached the cooling site from any process (a request already on its way excepted, 1 s).
    during = [
        (round(at - refused_at, 2), path)
        for at, host, path in media.arrivals
        if host.startswith("127.0.0.1") and refused_at + 1.0 < at < refused_at + COOLDOWN - 0.5
    ]
    assert during == [], during
    # The other site's jobs were done within the cool-down.
    assert others_done < refused_at + COOLDOWN, others_done - refused_at
    # The subscription checked only once the cool-down was over (its feed was asked for after it).
    feed_asked = [at for at, host, path in media.arrivals if path == f"/feed.xml?items={entry}"]
    assert feed_asked and min(feed_asked) >= refused_at + COOLDOWN - 0.5, (feed_asked, refused_at)
    assert datetime.fromisoformat(sub["last_check_at"]) >= until
    assert [e.type for e in system][:1] == ["site.cooling"] and system[0].data.site == "127.0.0.1", system


def test_a_cool_down_ended_from_the_queue_lets_its_items_start_at_once(media):
    media.refusals.clear()
    media.limit_after, media.limit_seconds, media._limited, media._limited_until = 1, 0.5, 0, 0.0
    env = {"TUBEFLOW_SITE_COOLDOWN": "10m"}
    try:
        with nats_server() as server, tubeflow(server.url, ["api", "progress", "downloader"], env) as stack:
            finished = FinishedJobs(stack.base)
            try:
                with httpx.Client(timeout=30) as client:
                    post = lambda url: client.post(f"{stack.base}/api/jobs", json={"url": url, "metadata": False})  # noqa: E731
                    ids = [post(media.limited_url(media.fresh("clip1.mp4"))).json()["id"] for _ in range(2)]
                    wait_for(lambda: client.get(f"{stack.base}/api/queue").json()["cooldowns"], 60, "cool-down")

                    def held() -> bool:
                        """Both jobs held by the cool-down, as their views say: an item waiting `site_cooldown`, or a
                        resolve waiting (no items yet: which request the site refused decides), and nothing refused
                        for 1.5 s."""
                        if time.monotonic() - media.refusals[-1] < 1.5:
                            return False
                        views = [client.get(f"{stack.base}/api/jobs/{job}").json() for job in ids]
                        return all(
                            not view["items"]
                            or any((i.get("waiting") or {}).get("code") == "site_cooldown" for i in view["items"])
                            for view in views
                        ) and any(view["items"] for view in views)

                    wait_for(held, 30, "both jobs held by the cool-down")
                    unknown = client.post(f"{stack.base}/api/queue/cooldowns/example.org/resume")
                    assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "site", unknown.text
                    bad = client.post(f"{stack.base}/api/queue/cooldowns/{'x' * 300}/resume")
                    assert bad.status_code == 422, bad.text
                    resumed = client.post(f"{stack.base}/api/queue/cooldowns/127.0.0.1/resume")
                    assert resumed.status_code == 200, resumed.text
                    (ended,) = resumed.json()["cooldowns"]
                    assert datetime.fromisoformat(ended["until"]) - datetime.fromisoformat(ended["since"]) < timedelta(
                        minutes=1
                    ), ended
                    asked = time.monotonic()
                finished.wait(ids, timeout=60)
                done = time.monotonic() - asked
            finally:
                finished.close()
    finally:
        media.limit_after = None
    # A 10-minute cool-down ended on request: both jobs done within seconds (retries wait at most ~5 s to look again).
    assert done < 30, done
