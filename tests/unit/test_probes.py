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
