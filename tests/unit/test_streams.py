"""The downloader's stream meter: yt-dlp's per-stream reports as one item's bytes over all of its streams."""

from __future__ import annotations

from services.engine.streams import StreamMeter, plan_of

INFO = {
    "duration": None,
    "requested_formats": [
        {"format_id": "v1", "vcodec": "avc1", "acodec": "none", "tbr": 240.0},
        {"format_id": "a1", "vcodec": "none", "acodec": "mp4a", "tbr": 60.0},
    ],
}


def report(format_id: str, done: int, estimate: int | None, status: str = "downloading", **extra) -> dict:
    return {
        "status": status,
        "downloaded_bytes": done,
        "total_bytes_estimate": estimate,
        "total_bytes": done if status == "finished" else None,
        "info_dict": {"format_id": format_id},
        **extra,
    }


def test_bytes_add_up_over_the_streams_and_the_total_never_counts_the_next_stream_short():
    meter = StreamMeter()
    meter.start(INFO)
    first = meter.report(report("v1", 100, 400))
    # The audio stream to come weighs a quarter of the video (by bitrate): 400 + 100.
    assert first["downloaded_bytes"] == 100 and first["total_bytes"] == 500
    assert (first["stream_index"], first["stream_count"], first["stream_kind"]) == (1, 2, "video")
    done = meter.report(report("v1", 420, None, status="finished"))
    assert done["downloaded_bytes"] == 420 and done["total_bytes"] == 420 + 105
    # yt-dlp's estimate after the first audio fragment is tiny; the weight the stream had holds.
    audio = meter.report(report("a1", 4, 6, fragment_index=1, fragment_count=20))
    assert audio["downloaded_bytes"] == 424 and audio["total_bytes"] == 420 + 105
    assert (audio["stream_index"], audio["stream_kind"]) == (2, "audio")
    last = meter.report(report("a1", 90, None, status="finished"))
    assert last["downloaded_bytes"] == last["total_bytes"] == 510


def test_one_stream_is_reported_as_yt_dlp_reports_it():
    meter = StreamMeter()
    meter.start({"requested_formats": None, "format_id": "18"})
    raw = report("18", 10, 100)
    assert meter.report(raw) is raw
    assert plan_of({"requested_formats": [{"format_id": "x"}]}) == []


def test_sizes_come_from_the_manifest_or_bitrate_times_duration():
    plan = plan_of(
        {
            "duration": 10,
            "requested_formats": [
                {"format_id": "v", "vcodec": "vp9", "acodec": "none", "filesize": 5000, "tbr": 100},
                {"format_id": "a", "vcodec": "none", "acodec": "opus", "abr": 64},
            ],
        }
    )
    assert [(s.format_id, s.kind, s.size) for s in plan] == [("v", "video", 5000), ("a", "audio", 80_000)]
