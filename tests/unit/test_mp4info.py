"""An MP4's facts from its boxes (what a finished download is measured with before ffmpeg is asked)."""

from __future__ import annotations

import struct

from services.engine.mp4info import mp4_facts
from services.engine.postprocess import measured, probe
from tests.support.media import make_clip


def test_an_mp4s_boxes_say_what_ffmpeg_says(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=2, size="160x120")
    facts = mp4_facts(str(clip))
    assert facts == {"duration": facts["duration"], "vcodec": "avc1", "width": 160, "height": 120, "acodec": "mp4a"}
    described = measured(probe(str(clip)))
    assert abs(facts["duration"] - described["duration"]) < 0.1
    assert (described["vcodec"], described["acodec"], described["width"]) == ("avc1", "mp4a", 160)


def test_what_is_not_an_mp4_or_lies_about_its_boxes_gives_nothing(tmp_path):
    cases = {
        "empty": b"",
        "text": b"not a video at all" * 10,
        "huge moov": struct.pack(">I4s", 1, b"moov") + struct.pack(">Q", 1 << 40),
        "zero-length box": struct.pack(">I4s", 4, b"ftyp") + b"x" * 20,
        "moov cut short": struct.pack(">I4s", 200, b"moov") + b"\0" * 20,
    }
    for name, body in cases.items():
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(body)
        assert not mp4_facts(str(path)), name
