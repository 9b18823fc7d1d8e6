"""A resolve's probe as it travels to another downloader: plain data only, compressed, bounded."""

from __future__ import annotations

import os

from services.engine.media import MAX_CARRIED_PROBE, PROBE_TTL, pack_probe, unpack_probe
from services.runtime.nats.topology import MAX_PROBE_BYTES, PROBES_TTL


def test_plain_data_travels_and_what_is_not_data_is_left_out():
    probe = {
        "id": "clip",
        "formats": [{"format_id": "0", "url": "http://x/clip.mp4", "http_headers": {"A": "b"}}],
        "_format_sort_fields": ("res", "br"),
        "tags": {"a"},
        "duration": 10.5,
        "__post_extractor": lambda: {"comments": []},
    }
    back = unpack_probe(pack_probe(probe))
    assert back == {
        "id": "clip",
        "formats": [{"format_id": "0", "url": "http://x/clip.mp4", "http_headers": {"A": "b"}}],
        "_format_sort_fields": ["res", "br"],
        "tags": ["a"],
        "duration": 10.5,
    }


def test_what_cant_travel_is_not_carried():
    assert pack_probe({"formats": [{"url": "u", "fragments": lambda: []}]}) is None  # a format would lose its parts
    assert pack_probe({"entries": [object()]}) is None
    assert pack_probe({"blob": os.urandom(2 * MAX_CARRIED_PROBE).hex()}) is None  # too large even compressed
    assert unpack_probe(b"not zlib") is None


def test_the_bucket_keeps_probes_as_long_as_a_process_does():
    assert (PROBES_TTL, MAX_PROBE_BYTES) == (PROBE_TTL, MAX_CARRIED_PROBE)


async def test_a_jobs_summary_is_read_once_a_second():
    from datetime import datetime, timezone

    from nats.js.errors import KeyNotFoundError

    from contracts.views import JobSummary
    from services.runtime.nats.views import SummaryReader

    class Entry:
        def __init__(self, value: bytes) -> None:
            self.value = value

    class FakeKv:
        def __init__(self) -> None:
            self.gets = 0
            self.values = {
                "j1": JobSummary(
                    id="j1",
                    url="http://x/",
                    mode="video",
                    audio_format="mp3",
                    status="cancelled",
                    created_at=datetime.now(timezone.utc),
                    updated_at=datetime.now(timezone.utc),
                )
                .model_dump_json()
                .encode()
            }

        async def get(self, key: str) -> Entry:
            self.gets += 1
            if key not in self.values:
                raise KeyNotFoundError
            return Entry(self.values[key])

    now = [100.0]
    kv = FakeKv()
    reader = SummaryReader(kv, clock=lambda: now[0])
    assert (await reader.get("j1")).status == "cancelled"
    assert (await reader.get("j1")).status == "cancelled"
    assert await reader.get("nope") is None and await reader.get("nope") is None
    assert kv.gets == 2
    now[0] += 1.5
    await reader.get("j1")
    assert kv.gets == 3
