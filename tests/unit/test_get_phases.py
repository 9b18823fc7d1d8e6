"""`tubeflow get` names what an item is doing, as the page does."""

from __future__ import annotations

from datetime import datetime

from services.cli.get import phase_of


def item(status: str, download: dict | None = None, postprocess: dict | None = None) -> dict:
    return {
        "status": status,
        "download": {"status": "running", "stream_index": None, "stream_count": None, **(download or {})},
        "postprocess": postprocess or {"status": "none", "name": None},
    }


def test_phases_in_words():
    assert phase_of(item("downloading", {"stream_index": 1, "stream_count": 2, "stream_kind": "video"})) == "video 1/2"
    assert phase_of(item("downloading", {"stream_index": 2, "stream_count": 2, "stream_kind": "audio"})) == "audio 2/2"
    assert phase_of(item("downloading")) == ""  # one stream: the bar says it all
    assert (
        phase_of(item("processing", postprocess={"status": "running", "name": "Merger"})) == "merging video and audio"
    )
    assert phase_of(item("processing", postprocess={"status": "running", "name": "FixupM3u8"})) == (
        "fixing the container"
    )
    assert phase_of(item("processing", postprocess={"status": "running", "name": "SomethingNew"})) == (
        "post-processing (SomethingNew)"
    )
    # With the ffmpeg's progress (issue 26): the step in words and how far it is.
    merging = {"status": "running", "name": "Merger", "label": "merging video and audio", "percent": 63.4}
    assert phase_of(item("processing", postprocess=merging)) == "merging video and audio · 63 %"
    assert phase_of(item("extracting", {"status": "completed"})) == "extracting audio"
    assert phase_of(item("recording", {"recorded_seconds": 12.4, "percent": None})) == "recording live 12 s"
    assert phase_of(item("stopping", {"recorded_seconds": 30.0, "percent": None})) == "stopping 30 s"
    waiting = {**item("queued", {"status": "queued"}), "waiting": {"code": "disk_low", "message": "12 MiB free"}}
    assert phase_of(waiting) == "waiting: disk_low"
    # A paced site's turn (issue 27): the local time the item starts.
    paced = {**waiting, "waiting": {"code": "site_pacing", "message": "…", "until": "2026-12-03T07:29:09Z"}}
    local = datetime.fromisoformat("2026-12-03T07:29:09+00:00").astimezone()
    assert phase_of(paced) == f"waiting: site_pacing until {local:%H:%M:%S}"
