"""Each item is extracted once and its file asked for no more often than bare yt-dlp asks (issue 25), even when the
downloader that takes an item's ticket is not the one that resolved the job: what the resolve found travels with the
item (the probe bucket), so nothing is fetched again."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import httpx
import pytest
import yt_dlp

from bench.harness import FinishedJobs, nats_server, tubeflow

pytestmark = pytest.mark.e2e


def requests_for(media, names: list[str], since: int = 0) -> collections.Counter:
    seen = media.requests[since:]
    return collections.Counter(sum(path.endswith(f"/{name}") for path in seen) for name in names)


def bare_requests(media) -> int:
    """What bare yt-dlp asks for one such file: extract and download with a fresh YoutubeDL."""
    name = media.fresh("clip1.mp4")
    before = len(media.requests)
    out = Path(tempfile.mkdtemp(prefix="bare-"))
    yt_dlp.YoutubeDL({"quiet": True, "outtmpl": "%(id)s.%(ext)s", "paths": {"home": str(out)}}).extract_info(
        media.url(name), download=True
    )
    return sum(path.endswith(f"/{name}") for path in media.requests[before:])


def test_with_two_downloaders_every_file_is_asked_for_as_often_as_bare_yt_dlp_asks(media):
    bare = bare_requests(media)
    assert bare >= 1
    with nats_server() as nats:
        with tubeflow(nats.url, ["api", "progress", "downloader", "downloader"]) as stack:
            finished = FinishedJobs(stack.base)
            try:
                names = [media.fresh("clip1.mp4") for _ in range(16)]
                with httpx.Client(timeout=30) as client:
                    ids = [
                        client.post(f"{stack.base}/api/jobs", json={"url": media.url(n), "metadata": False}).json()[
                            "id"
                        ]
                        for n in names
                    ]
                finished.wait(ids, timeout=180)
                resolvers, views = {}, {}
                with httpx.Client(timeout=30) as client:
                    for job_id in ids:
                        views[job_id] = client.get(f"{stack.base}/api/jobs/{job_id}").json()
                        events = client.get(f"{stack.base}/api/jobs/{job_id}/events").json()
                        resolvers[job_id] = next(e["data"]["worker"] for e in events if e["type"] == "resolve.started")
            finally:
                finished.close()
    assert {v["status"] for v in views.values()} == {"completed"}
    elsewhere = [job for job, view in views.items() if view["items"][0]["worker"] != resolvers[job]]
    assert elsewhere, "every item was downloaded where it was resolved: the case this test is for did not happen"
    counts = requests_for(media, names)
    assert counts == collections.Counter({bare: len(names)}), (counts, bare, len(elsewhere))
