"""One bar over all of an item's streams: yt-dlp's per-stream progress reports turned into the item's.

When yt-dlp selects several formats (video and audio apart, `requested_formats`), it downloads them one after the
other and reports each from 0 to its own size; merged afterwards. ``StreamMeter`` knows the plan (which formats, in
which order, and what each is expected to weigh) and reports bytes over all of them: the streams already on disk
count with their real size, the running one with yt-dlp's size or estimate (never less than what it has), and the
ones still to come with their expected size. Runs on yt-dlp's worker thread; pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yt_dlp
from yt_dlp.postprocessor.common import PostProcessor

from services.runtime.failures import MediaError

# Bitrates assumed for a stream whose manifest gives none (kbit/s), to weigh it against the others.
DEFAULT_KBPS = {"audio": 128.0, "video": 1000.0, "av": 1100.0}


def stream_kind(fmt: dict[str, Any]) -> str:
    vcodec, acodec = fmt.get("vcodec"), fmt.get("acodec")
    if vcodec == "none":
        return "audio"
    if acodec == "none":
        return "video"
    if vcodec is None and acodec is None and fmt.get("resolution") == "audio only":
        return "audio"
    return "av"


@dataclass
class Stream:
    format_id: str
    kind: str
    size: int | None  # exact (filesize), or an estimate (filesize_approx, bitrate x duration)
    kbps: float
    done: int | None = None  # the real size once the stream is on disk
    # What it was expected to weigh while earlier streams ran (its size, or the running one's scaled by bitrate).
    expected: int | None = None


def plan_of(info: dict[str, Any]) -> list[Stream]:
    """The streams yt-dlp will download for ``info`` (several when it merges formats), in download order."""
    formats = info.get("requested_formats") or []
    if len(formats) < 2:
        return []
    duration = info.get("duration")
    streams = []
    for fmt in formats:
        kind = stream_kind(fmt)
        kbps = fmt.get("tbr") or fmt.get("vbr") or fmt.get("abr") or DEFAULT_KBPS[kind]
        size = fmt.get("filesize") or fmt.get("filesize_approx")
        if not size and duration:
            size = int(kbps * 1000 / 8 * duration)
        streams.append(Stream(str(fmt.get("format_id")), kind, int(size) if size else None, float(kbps)))
    return streams


class StreamMeter:
    """Turns yt-dlp's progress dicts of one item into the item's (the keys DownloadProgress has)."""

    def __init__(self) -> None:
        self.plan: list[Stream] = []

    def start(self, info: dict[str, Any]) -> None:
        self.plan = plan_of(info)

    def report(self, d: dict[str, Any]) -> dict[str, Any]:
        if not self.plan:
            return d  # one stream: yt-dlp's report is the item's (and nothing is built per block read)
        done = int(d.get("downloaded_bytes") or 0)
        total = d.get("total_bytes") or d.get("total_bytes_estimate")
        total = max(int(total), done) if total else None
        out: dict[str, Any] = {
            "status": d.get("status"),
            "downloaded_bytes": done,
            "total_bytes": total,
            "speed": d.get("speed"),
            "eta": d.get("eta"),
            "fragment_index": d.get("fragment_index"),
            "fragment_count": d.get("fragment_count"),
        }
        format_id = str((d.get("info_dict") or {}).get("format_id"))
        position = next((n for n, s in enumerate(self.plan) if s.format_id == format_id), None)
        if position is None:
            return out
        stream = self.plan[position]
        if total is None and d.get("fragment_count") and d.get("fragment_index"):
            # Fragments done so far say how much of the stream that is.
            total = max(done, int(done * d["fragment_count"] / d["fragment_index"]))
        if stream.expected:
            # yt-dlp's estimate after a fragment or two is far too small (seen: 3.8 KB for an 80 KB audio stream);
            # the weight the stream had while the ones before it ran holds until more is known.
            total = max(total or 0, stream.expected, done)
        if d.get("status") == "finished":
            stream.done = done
            total = done
        before = sum(s.done if s.done is not None else (s.size or 0) for s in self.plan[:position])
        later = self._expected_after(position, total)
        out.update(
            downloaded_bytes=before + done,
            total_bytes=before + total + later if total is not None and later is not None else None,
            stream_index=position + 1,
            stream_count=len(self.plan),
            format_id=stream.format_id[:200],
            stream_kind=stream.kind,
            stream_downloaded_bytes=done,
            stream_total_bytes=total,
        )
        return out

    def _expected_after(self, position: int, running_total: int | None) -> int | None:
        """Bytes expected from the streams after ``position``: their sizes, or else the running stream's size scaled
        by their bitrates."""
        current = self.plan[position]
        later = 0
        for stream in self.plan[position + 1 :]:
            if stream.size:
                stream.expected = stream.size
            elif running_total:
                stream.expected = int(running_total * stream.kbps / current.kbps)
            else:
                return None
            later += stream.expected
        return later


def check_size(limit: int | None, done: int | None, total: int | None) -> None:
    """Stop a download that is, or will be, bigger than it may be."""
    if not limit:
        return
    size = max(int(done or 0), int(total or 0))
    if size > limit:
        raise MediaError(
            "file_too_large",
            f"the item is {size} bytes (or more), over the {limit} it may take "
            "(TUBEFLOW_MAX_FILESIZE, or what is left of the job's TUBEFLOW_MAX_JOB_BYTES)",
        )


# What a format may be fetched over: HTTP and manifests of HTTP segments. RTMP, RTSP, MMS and the like would hand a
# stranger's address to ffmpeg with no proxy in between.
NETWORK_PROTOCOLS = frozenset(
    {"http", "https", "m3u8", "m3u8_native", "http_dash_segments", "http_dash_segments_generator"}
)


class StreamPlanPP(PostProcessor):
    """Runs just before the download (``before_dl``): hands the item's selected formats to its StreamMeter."""

    def __init__(self, ydl: yt_dlp.YoutubeDL, holder: dict[str, Any]) -> None:
        super().__init__(ydl)
        self._holder = holder

    def run(self, info):  # noqa: ANN001, ANN201 - yt-dlp's signature
        for fmt in info.get("requested_formats") or [info]:
            protocol = str(fmt.get("protocol") or "")
            scheme = str(fmt.get("url") or "").partition(":")[0].lower()
            if protocol not in NETWORK_PROTOCOLS or scheme not in ("http", "https"):
                raise MediaError(
                    "protocol_not_allowed",
                    f"format {fmt.get('format_id')} is served over {protocol or scheme or 'an unknown protocol'};"
                    " only http(s), HLS and DASH are fetched",
                )
        formats = info.get("requested_formats") or [info]
        known = [f.get("filesize") or f.get("filesize_approx") for f in formats]
        if all(known):
            check_size(self._holder["max_bytes"], None, sum(int(size) for size in known))  # type: ignore[arg-type]
        self._holder["meter"].start(info)
        return [], info
