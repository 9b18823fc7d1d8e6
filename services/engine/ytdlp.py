"""The yt-dlp adapter: resolving URLs and downloading items with pooled YoutubeDL instances, off the event loop.

Creating a YoutubeDL costs ~100 ms, so instances are kept in a pool and reused; each runs one call at a time and
gets its per-call settings (output path, format, progress hook) just before the call.
"""

from __future__ import annotations

import calendar
import logging
import os
import queue
import re
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import imageio_ffmpeg
import yt_dlp
from yt_dlp.downloader.common import FileDownloader
from yt_dlp.networking import Request
from yt_dlp.networking.impersonate import ImpersonateTarget

from contracts.library import show_images
from contracts.options import DownloadOptions
from services.engine import postprocess
from services.engine.errors import classify
from services.engine.guard_proxy import FFMPEG_PROTOCOLS
from services.engine.library import place_in_library
from services.engine.media import Downloaded, Entry, PlaylistPlace, Probes, ProgressHook, Resolution, Reuse
from services.engine.mp4info import mp4_facts
from services.engine.options import signature, ytdlp_params
from services.engine.outputs import chosen_format, made_files, media_length, place
from services.engine.realsites import RealSites, collect_facts, merged_params, request_po_token
from services.engine.recording import record
from services.engine.streams import StreamMeter, StreamPlanPP, check_size
from services.runtime.addresses import AddressPolicy, guarded
from services.runtime.cancellation import CancelToken
from services.runtime.failures import MediaError
from services.runtime.sitelimits import matching_key, site_of

log = logging.getLogger("tubeflow.ytdlp")


def ffmpeg_on_path() -> None:
    """Put imageio-ffmpeg's binary on PATH as ``ffmpeg``: yt-dlp passes ``ffmpeg_location`` to its post-processors,
    but decides whether ffmpeg can *download* (clips: ``download_ranges``) by looking on PATH only."""
    import os
    import shutil
    import tempfile

    if shutil.which("ffmpeg"):
        return
    folder = Path(tempfile.gettempdir()) / f"tubeflow-ffmpeg-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    link = folder / "ffmpeg"
    if not link.exists():
        try:
            link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
        except FileExistsError:
            pass
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


ffmpeg_on_path()
postprocess.install()

# yt-dlp's own bookkeeping steps, instant and of no interest to a user.
QUIET_POSTPROCESSORS = frozenset({"MoveFiles", "StreamPlan"})
# The block a paced download reads at a time (see ``YtDlp.download``).
PACED_BLOCK = 16 * 1024


class _QuietLogger:
    """yt-dlp's messages go to our log instead of the terminal; errors reach us as exceptions. Fragment retries are
    counted for the download running on this instance (``holder``), so its progress can say so."""

    def __init__(self, holder: dict[str, Any] | None = None) -> None:
        self._holder = holder

    def debug(self, msg: str) -> None:
        # yt-dlp says "[download] Got error: … Retrying fragment N (1/2)..." on screen, which a logger gets here.
        if self._holder is not None and "Retrying fragment" in msg:
            self._holder["fragment_retries"] += 1
        log.debug(msg)

    def info(self, msg: str) -> None:
        log.debug(msg)

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp error: %s", msg)


def media_key(info: dict[str, Any], format: str | None, options: str = "{}") -> str | None:
    """Identity of a download: extractor, media id, format and options (their ``signature``); for generic pages also
    the URL (ids are file names)."""
    extractor, media_id = info.get("extractor_key") or info.get("ie_key"), info.get("id")
    if not extractor or not media_id or info.get("_type") in ("url", "url_transparent", "playlist"):
        return None
    parts = [str(extractor), str(media_id), format or "default"]
    if options != "{}":
        parts.append(options)
    if str(extractor).lower() == "generic":
        parts.append(str(info.get("webpage_url") or info.get("url") or ""))
    return "\x1f".join(parts)


MAX_ENTRY_URL = 4096


def _published(entry: dict[str, Any]) -> float | None:
    """When a flat playlist entry was published, if its source says (a feed's pubDate, a channel's upload date)."""
    stamp = entry.get("timestamp") or entry.get("release_timestamp")
    if isinstance(stamp, (int, float)):
        return float(stamp)
    day = entry.get("upload_date") or entry.get("release_date")
    if isinstance(day, str) and len(day) == 8 and day.isdigit():
        return float(calendar.timegm((int(day[:4]), int(day[4:6]), int(day[6:]), 0, 0, 0)))
    return None


def _measure(ydl: yt_dlp.YoutubeDL, path: Path) -> dict[str, Any]:
    """The facts of the file a download made: what the last post-processor's ffmpeg said of it when it wrote it, else
    an MP4's own boxes, else ffmpeg's description of it (~25 ms); the bitrate over the whole file when only its
    length is known."""
    made = ydl._tubeflow_hook.get("last_output")  # type: ignore[attr-defined]
    facts = postprocess.measured_run(made[1]) if made and made[0] == path.name else {}
    if not facts:
        facts = mp4_facts(str(path)) or {}
    if not facts.get("duration") or not (facts.get("vcodec") or facts.get("acodec")):
        facts = postprocess.measured(postprocess.probe(str(path)))
    if not facts.get("bitrate") and facts.get("duration"):
        facts["bitrate"] = round(path.stat().st_size * 8 / facts["duration"] / 1000, 1)
    return facts


def _read_bounded(ydl: yt_dlp.YoutubeDL, url: str, most: int = 10 * 1024 * 1024) -> bytes:
    """A small file (a thumbnail) through yt-dlp's own requests (the address guard, the proxy), at most ``most``."""
    with ydl.urlopen(url) as response:
        return response.read(most + 1)[:most]


def _is_youtube(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "youtu.be" or host == "youtube.com" or host.endswith(".youtube.com")


class _YoutubeDL(yt_dlp.YoutubeDL):
    """YoutubeDL without the work of printing nothing.

    Before each download yt-dlp's ``_forceprint`` renders the formats, thumbnails and subtitles tables and a file
    name into a copy of the info, then prints the templates of ``--print``, which this service never sets: about 8 %
    of a download's CPU (profiled with py-spy in the throughput benchmark). With no template for ``key`` there is
    nothing to print, and the copy is all the callers use.
    """

    def urlopen(self, req):  # noqa: ANN001, ANN201 - yt-dlp's signature
        """Every request yt-dlp sends: the PO-token provider's (and only those) under a policy that lets them reach
        it; the rest with the call's impersonation target, unless the extractor asked for one itself."""
        sites: RealSites | None = getattr(self, "_tubeflow_sites", None)
        url = req if isinstance(req, str) else getattr(req, "url", "")
        if sites is not None and sites.is_provider_request(url):
            with guarded(self._tubeflow_provider_policy):  # type: ignore[attr-defined]
                return super().urlopen(req)
        if isinstance(req, Request) and req.proxies:
            # Proxies come from TUBEFLOW_PROXY only (through the guard): a request may not choose its own, nor none.
            req.proxies = {}
        holder = getattr(self, "_tubeflow_hook", None)
        target = holder.get("impersonate") if holder else None
        if target:
            if isinstance(req, str):
                req = Request(req)
            if isinstance(req, Request) and not req.extensions.get("impersonate"):
                req.extensions["impersonate"] = ImpersonateTarget.from_str(target)
        return super().urlopen(req)

    def post_process(self, filename, info, files_to_move=None):  # noqa: ANN001, ANN201 - yt-dlp's signature
        """The post-processors after the download, planned first: each one's place among them (``step`` of
        ``steps``) and the media's length go with its reports (see ``postprocess``)."""
        holder = getattr(self, "_tubeflow_hook", None)
        if holder is None or holder["hook"] is None:
            return super().post_process(filename, info, files_to_move)
        planned = (info.get("__postprocessors") or []) + self._pps["post_process"] + self._pps["after_move"]
        steps = sum(1 for pp in planned if pp.pp_key() not in QUIET_POSTPROCESSORS)
        holder["pp_plan"] = {"steps": steps or None, "step": 0, "duration": media_length(info), "done_seconds": 0.0}
        try:
            return super().post_process(filename, info, files_to_move)
        finally:
            holder["pp_plan"] = None

    def _forceprint(self, key, info_dict):  # noqa: ANN001, ANN202 - yt-dlp's signature
        if (
            info_dict is not None
            and not self.params["forceprint"].get(key)
            and not self.params["print_to_file"].get(key)
        ):
            return dict(info_dict)
        return super()._forceprint(key, info_dict)


_report_progress = FileDownloader.report_progress


def _report_progress_unless_quiet(self, s):  # noqa: ANN001, ANN202 - yt-dlp's signature
    """yt-dlp formats every progress line (two output templates per report) even with ``noprogress``, only for a
    printer that prints nothing: ~7 % of a small download's CPU in a slot (py-spy, bench breakdown). Our own hooks
    still see every report; only the line nobody reads is skipped."""
    if s.get("status") == "downloading" and isinstance(self.ydl, _YoutubeDL) and self.params.get("noprogress"):
        return
    _report_progress(self, s)


FileDownloader.report_progress = _report_progress_unless_quiet


def _base_params(logger: _QuietLogger, proxy: str | None) -> dict[str, Any]:
    return {
        # TUBEFLOW_PROXY, or none: never a proxy from the environment ("" tells yt-dlp not to look there).
        "proxy": proxy or "",
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": logger,
        "ffmpeg_location": imageio_ffmpeg.get_ffmpeg_exe(),
        "restrictfilenames": True,
        "noplaylist": True,
        "continuedl": True,
        "retries": 2,
        "fragment_retries": 2,
        # A fragment still missing after its retries fails the item (fragment_missing) instead of leaving a silent
        # gap in the file.
        "skip_unavailable_fragments": False,
        "socket_timeout": 20,
        # An ffmpeg yt-dlp starts for a download may open network inputs of these protocols only (all of them go
        # through the slot's address guard, see guard_proxy).
        "external_downloader_args": {"ffmpeg_i": ["-protocol_whitelist", FFMPEG_PROTOCOLS]},
        "color": {"stdout": "no_color", "stderr": "no_color"},
    }


MAX_IDLE_CUSTOM = 4


class YtDlp:
    """A pool of reusable YoutubeDL instances; every method blocks and is meant for a worker thread."""

    def __init__(
        self,
        size: int,
        policy: AddressPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_recording: float = 6 * 3600.0,
        proxy: str | None = None,
        operator_params: dict[str, Any] | None = None,
        sites: RealSites | None = None,
        request_sleeps: dict[str, float] | None = None,
    ) -> None:
        self._size = size
        self._sites = sites or RealSites()
        # TUBEFLOW_SITE_PACING's requests:…: site key -> seconds between yt-dlp's requests for its downloads.
        self._request_sleeps = request_sleeps or {}
        self._proxy = proxy
        self._operator = operator_params or {}
        self._max_recording = max_recording
        self._policy = policy or AddressPolicy()
        endpoint = self._sites.provider_endpoint()
        # The PO-token provider's requests alone may reach its address (often inside the network).
        self._provider_policy = replace(self._policy, exempt=frozenset({endpoint})) if endpoint else self._policy
        self._pool: queue.Queue[yt_dlp.YoutubeDL] = queue.Queue()
        # YoutubeDL instances made for other options than the defaults, idle, by options signature (a few kept).
        self._custom: OrderedDict[str, list[yt_dlp.YoutubeDL]] = OrderedDict()
        self._default_signature = signature(None)
        self._created = 0
        self._lock = threading.Lock()
        # What resolving a single video found, kept for its download (see `resolve`).
        self._probes = Probes(clock)

    @property
    def probes_reused(self) -> int:
        return self._probes.reused

    def warm_up(self, extractors: bool = True, instances: int | None = None) -> None:
        """Pay yt-dlp's first-call costs before the first job does: the YoutubeDL instances (~0.2 s each; all of
        them, or ``instances``) and the URL patterns of ~1,800 extractors, compiled on first use (~0.35 s), which the
        first resolve would wait for (unless ``extractors`` is False: a slot process has them from its zygote)."""
        from yt_dlp.extractor import gen_extractor_classes

        for extractor in gen_extractor_classes() if extractors else ():
            extractor.suitable("http://127.0.0.1/warm-up.mp4")
        made = []
        while (instances is None or len(made) < instances) and (ydl := self._new_instance()) is not None:
            ydl.get_info_extractor("Generic")
            made.append(ydl)
        for ydl in made:
            self._release(ydl)

    def _acquire(self, options: DownloadOptions | None = None, cookies: Path | None = None) -> yt_dlp.YoutubeDL:
        if cookies is not None:
            # A job's cookies are its own: a YoutubeDL of its own (its cookie jar loads once), reading a private copy
            # (yt-dlp writes its jar back to the file it was given), dropped after the call.
            ydl = self._make(options)
            fd, copy = tempfile.mkstemp(prefix="tubeflow-cookies-", suffix=".txt")
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(cookies.read_bytes())
            ydl.params["cookiefile"] = copy
            ydl._tubeflow_cookie_copy = copy  # type: ignore[attr-defined]
            return ydl
        key = signature(options)
        if key != self._default_signature:
            with self._lock:
                idle = self._custom.get(key)
                if idle:
                    self._custom.move_to_end(key)
                    return idle.pop()
            return self._make(options)
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        ydl = self._new_instance()
        return ydl if ydl is not None else self._pool.get()

    def _new_instance(self) -> yt_dlp.YoutubeDL | None:
        """A new YoutubeDL, unless the pool has made all it may (then None: wait for one to come back)."""
        with self._lock:
            if self._created >= self._size:
                return None
            self._created += 1
        return self._make(None)

    def _make(self, options: DownloadOptions | None) -> yt_dlp.YoutubeDL:
        """A YoutubeDL for ``options`` (their params over our base ones), with our hooks and post-processor."""
        holder: dict[str, Any] = {
            "hook": None,
            "meter": StreamMeter(),
            "postprocessor": None,
            "pp_plan": None,
            "last_output": None,
            "fragment_retries": 0,
            "fragmented": False,
            "max_bytes": None,
            "impersonate": None,
        }
        ydl = _YoutubeDL(
            merged_params(
                _base_params(_QuietLogger(holder), self._proxy),
                self._sites.params(),
                self._operator,
                ytdlp_params(options),
            )
        )
        ydl._tubeflow_signature = signature(options)  # type: ignore[attr-defined]
        ydl._tubeflow_sites = self._sites  # type: ignore[attr-defined]
        ydl._tubeflow_provider_policy = self._provider_policy  # type: ignore[attr-defined]

        def on_progress(d: dict[str, Any], holder: dict[str, Any] = holder) -> None:
            if holder["hook"] is not None:
                if d.get("fragment_count"):
                    holder["fragmented"] = True
                report = holder["meter"].report(d)
                # Bytes on disk over all streams so far, and this stream's exact size if the server said it (the
                # estimates of streams still to come are not held against the item).
                check_size(holder["max_bytes"], report.get("downloaded_bytes"), d.get("total_bytes"))
                if holder["fragment_retries"]:
                    report = {**report, "fragment_retries": holder["fragment_retries"]}
                holder["hook"](report)

        def on_postprocess(d: dict[str, Any], holder: dict[str, Any] = holder) -> None:
            name = d.get("postprocessor")
            if holder["hook"] is None or name in QUIET_POSTPROCESSORS or d.get("status") == "processing":
                return
            started = d.get("status") == "started"
            holder["postprocessor"] = name if started else None
            report = {"status": "postprocess", "postprocessor": name, "pp_status": d.get("status")}
            plan = holder["pp_plan"]
            if plan is not None:
                if started:
                    plan["step"] += 1
                    plan["done_seconds"] = 0.0
                report.update(pp_step=plan["step"], pp_steps=max(plan["steps"] or 0, plan["step"]))
            holder["hook"](report)

        ydl.add_progress_hook(on_progress)
        ydl.add_postprocessor_hook(on_postprocess)
        ydl.add_post_processor(StreamPlanPP(ydl, holder), when="before_dl")
        ydl._tubeflow_hook = holder  # type: ignore[attr-defined]
        return ydl

    def _pace_requests(self, ydl: yt_dlp.YoutubeDL, url: str) -> None:
        """TUBEFLOW_SITE_PACING's ``requests:…`` for the URL's site: yt-dlp sleeps that long between its requests
        (a playlist's pages, a video's extraction). The instance's own value (the operator's, if any) comes back at
        release."""
        key = matching_key(site_of(url), self._request_sleeps)
        if key is not None:
            ydl._tubeflow_hook["sleep_before"] = ydl.params.get("sleep_interval_requests")  # type: ignore[attr-defined]
            ydl.params["sleep_interval_requests"] = self._request_sleeps[key]

    def _release(self, ydl: yt_dlp.YoutubeDL) -> None:
        holder = ydl._tubeflow_hook  # type: ignore[attr-defined]
        holder["hook"], holder["meter"], holder["postprocessor"], holder["pp_plan"] = None, StreamMeter(), None, None
        holder["last_output"] = None
        if "sleep_before" in holder:
            ydl.params["sleep_interval_requests"] = holder.pop("sleep_before")
        holder["fragment_retries"], holder["fragmented"], holder["max_bytes"] = 0, False, None
        holder["impersonate"] = None
        ydl.format_selector = None
        copy = getattr(ydl, "_tubeflow_cookie_copy", None)
        if copy is not None:
            Path(copy).unlink(missing_ok=True)
            return
        key = ydl._tubeflow_signature  # type: ignore[attr-defined]
        if key == self._default_signature:
            self._pool.put(ydl)
            return
        with self._lock:
            self._custom.setdefault(key, []).append(ydl)
            self._custom.move_to_end(key)
            while sum(len(idle) for idle in self._custom.values()) > MAX_IDLE_CUSTOM:
                oldest = next(iter(self._custom))
                self._custom[oldest].pop(0)
                if not self._custom[oldest]:
                    del self._custom[oldest]

    def resolve(
        self,
        url: str,
        *,
        max_items: int,
        items: str | None = None,
        token: CancelToken | None = None,
        cookies: Path | None = None,
        impersonate: str | None = None,
    ) -> Resolution:
        """One video, or a playlist's entries (``items``: yt-dlp's playlist_items syntax, e.g. "1-3,7"); with the
        cookie profile file ``cookies`` for sites that want a login, ``impersonate``: the job's browser target."""
        ydl = self._acquire(None, cookies)
        try:
            ydl._tubeflow_hook["impersonate"] = self._sites.target_for(url, impersonate)  # type: ignore[attr-defined]
            self._pace_requests(ydl, url)
            ydl.params["extract_flat"] = "in_playlist"
            ydl.params["noplaylist"] = False
            if items:
                ydl.params["playlist_items"] = items
            else:
                ydl.params["playlistend"] = max_items + 1
            with guarded(self._policy):
                found = ydl.extract_info(url, download=False, process=False)
                # A single video needs no processing to be queued; a playlist's entries (or a link to another
                # extractor) are processed as before, flat.
                single = found is not None and found.get("_type", "video") == "video"
                info = found if single or found is None else ydl.process_ie_result(found, download=False)
        except Exception as exc:
            raise classify(exc) from exc
        finally:
            ydl.params.pop("extract_flat", None)
            ydl.params["noplaylist"] = True
            ydl.params.pop("playlistend", None)
            ydl.params.pop("playlist_items", None)
            self._release(ydl)
        if info is None:
            raise MediaError("extraction_error", f"yt-dlp found nothing at {url}")
        if info.get("_type") in ("playlist", "multi_video"):
            raw = [e for e in (info.get("entries") or []) if e]
            truncated = len(raw) > max_items
            entries = [
                Entry(
                    index=i,
                    url=e.get("url") or e.get("webpage_url") or "",
                    title=e.get("title"),
                    id=str(e["id"])[:300] if e.get("id") else None,
                    timestamp=_published(e),
                )
                for i, e in enumerate(raw[:max_items], start=1)
            ]
            # An entry without a URL, or with one longer than any real link (a view holds every item's URL), is left
            # out.
            entries = [e for e in entries if e.url and len(e.url) <= MAX_ENTRY_URL]
            if not entries:
                raise MediaError("empty_playlist", f"the playlist at {url} has no entries")
            images = show_images(info, base=info.get("webpage_url") or url)
            return Resolution("playlist", info.get("title"), entries, truncated, images=images)
        item_url = info.get("webpage_url") or info.get("original_url") or url
        if info.get("_type", "video") == "video" and cookies is None:
            # The item's download, if it runs here soon, starts from this instead of extracting the URL again (not
            # what was extracted with someone's cookies: another job could take it).
            self._probes.keep(item_url, info)
        return Resolution("video", info.get("title"), [Entry(1, item_url, info.get("title"))], False, probe=info)

    def facts(self, script: str | None = None, po_token_for: str | None = None) -> dict[str, Any]:
        """What this yt-dlp can do on real sites (see ``realsites``)."""
        ydl = self._acquire()
        try:
            with guarded(self._policy):
                found = collect_facts(ydl, self._sites, script)
                if po_token_for is not None:
                    found["po_token"] = request_po_token(ydl, po_token_for)
            return found
        finally:
            self._release(ydl)

    def _record_live(
        self,
        ydl: yt_dlp.YoutubeDL,
        found: dict[str, Any],
        directory: Path,
        stem: str,
        hook: ProgressHook,
        max_bytes: int | None,
    ) -> Downloaded:
        """A live stream is recorded by ffmpeg under our control (see ``recording``), not by yt-dlp's own ffmpeg,
        which would report nothing and could only be killed. Runs inside the address guard."""
        info = ydl.process_ie_result(found, download=False)
        if info.get("requested_formats"):
            raise MediaError(
                "live_not_supported",
                "live streams with separate video and audio are not recorded yet; pick one format (e.g. format=best)",
            )
        stream_url = info.get("url")
        if not stream_url:
            raise MediaError("extraction_error", "yt-dlp found no stream URL for the live stream")
        parts = urlsplit(stream_url)
        # The name is resolved here, through the address policy, before ffmpeg connects to it by itself.
        socket.getaddrinfo(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        name = re.sub(r"[^\w.-]+", "_", str(info.get("id") or "live"))[:40]
        target = directory / f"{stem}-live-{name}.mkv"
        hook({"status": "live"})  # a slot process gives a recording its own deadline (TUBEFLOW_MAX_RECORDING)
        size, seconds, stopped = record(
            stream_url,
            target,
            headers=info.get("http_headers"),
            max_seconds=self._max_recording,
            max_bytes=max_bytes,
            hook=hook,
        )
        return Downloaded(target, size, info.get("title"), seconds, stopped_early=stopped)

    @staticmethod
    def _finished(
        ydl: yt_dlp.YoutubeDL,
        info: dict[str, Any],
        path: Path,
        directory: Path,
        options: DownloadOptions | None,
        playlist: PlaylistPlace | None,
    ) -> Downloaded:
        """The download as made: its other files, the format chosen, and, when the job named a folder or a template,
        moved there."""
        others = made_files(info, path)
        if options is not None and options.library is not None:
            path, others = place_in_library(
                info,
                path,
                others,
                options.library,
                directory.parent,
                options.output.folder if options.output is not None else None,
                playlist.title if playlist is not None else None,
                fetch=lambda url: _read_bounded(ydl, url),
            )
        elif options is not None and options.output is not None:
            named = dict(info)
            if playlist is not None:
                named.update(playlist_title=playlist.title or "playlist", playlist_index=playlist.index)
                named.setdefault("playlist", playlist.title or "playlist")
            path, others = place(ydl, named, path, others, options.output, directory.parent, playlist is not None)
        size = path.stat().st_size
        return Downloaded(
            path,
            size,
            info.get("title"),
            media_length(info),
            files=tuple(others),
            chosen=chosen_format(info, lambda: _measure(ydl, path), size),
        )

    def download(
        self,
        url: str,
        *,
        directory: Path,
        stem: str,
        format: str | None,
        hook: ProgressHook,
        reuse: Reuse | None = None,
        token: CancelToken | None = None,
        probe: dict[str, Any] | None = None,
        max_bytes: int | None = None,
        options: DownloadOptions | None = None,
        playlist: PlaylistPlace | None = None,
        cookies: Path | None = None,
        paced: bool = False,
    ) -> Downloaded:
        """Download one item. ``probe``: its extraction from a resolve, if there was one; ``token`` is heard through
        ``hook``, which raises when it trips; ``max_bytes``: what the item may take on disk (file_too_large beyond:
        refused before the download when the sizes are known, stopped when the bytes pass it otherwise);
        ``options``: the job's download options (services/engine/options.py), ``playlist``: where the item sits
        in its playlist (for names); ``paced``: its rate is held by the caller's hook (the schedule's budget), so
        yt-dlp reads in small blocks of a fixed size (left to grow, a block reaches 4 MiB, read at the server's
        full speed before the hook can wait)."""
        ydl = self._acquire(options, cookies)
        # As they were (absent ones removed again: yt-dlp reads `params.get("buffersize", 1024)`, and a None there
        # made every later download of this pooled instance read its whole response in one read, with no progress).
        blocks = {name: ydl.params[name] for name in ("buffersize", "noresizebuffer") if name in ydl.params}
        if paced:
            ydl.params.update(buffersize=PACED_BLOCK, noresizebuffer=True)
        try:
            ydl._tubeflow_hook["max_bytes"] = max_bytes or None  # type: ignore[attr-defined]
            ydl._tubeflow_hook["impersonate"] = self._sites.target_for(  # type: ignore[attr-defined]
                url, options.impersonate if options is not None else None
            )
            self._pace_requests(ydl, url)
            ydl.params["paths"] = {"home": str(directory)}
            ydl.params["outtmpl"]["default"] = base = f"{stem}-%(title).60B-%(id).40B"
            ydl.params["outtmpl"]["default"] += ".%(ext)s"
            ydl.params["outtmpl"]["chapter"] = f"{base}-chapter-%(section_number)03d-%(section_title).60B.%(ext)s"
            ydl.format_selector = ydl.build_format_selector(format) if format else None
            ydl._tubeflow_hook["hook"] = hook  # type: ignore[attr-defined]
            with guarded(self._policy):
                # One extraction: identify the media first, so a file another job already has can be used instead.
                found = probe or self._probes.take(url) or ydl.extract_info(url, download=False, process=False)
                if found and (found.get("is_live") or found.get("live_status") == "is_live"):
                    return self._record_live(ydl, found, directory, stem, hook, max_bytes)
                if found and found.get("live_status") == "is_upcoming":
                    raise MediaError("live_not_started", f"{url} is a live stream that has not started yet")
                key = media_key(found, format, signature(options)) if found else None
                if key is not None and reuse is not None:
                    existing = reuse(key)
                    if existing is not None:
                        return existing
                # The hook raises when the job was cancelled meanwhile: nothing is fetched after the probe then.
                hook({"status": "starting"})
                info = ydl.process_ie_result(found, download=True) if found else None
            if info is None:
                raise MediaError("extraction_error", f"yt-dlp found nothing at {url}")
            downloads = info.get("requested_downloads") or []
            path = Path(
                downloads[0].get("filepath") if downloads else info.get("filepath") or ydl.prepare_filename(info)
            )
            if not path.is_file():
                raise MediaError("download_error", f"yt-dlp reported {path.name} but the file is missing")
            made = {**info, **downloads[0]} if downloads else info  # the download's own fields over the media's
            return self._finished(ydl, made, path, directory, options, playlist)
        except MediaError:
            raise
        except Exception as exc:
            error = classify(exc)
            holder = ydl._tubeflow_hook  # type: ignore[attr-defined]
            if holder["fragmented"] and error.code == "download_error" and "Giving up after" in error.message:
                # A fragment that kept failing (yt-dlp's words: "Got error: HTTP Error 404 … Giving up after 2
                # retries"): the stream can't be completed.
                error.code = "fragment_missing"
                error.message = (
                    f"a fragment of the stream could not be fetched: {error.message.removeprefix('[download] ')}"
                )
            if error.code == "format_unavailable" and not self._sites.js_runtime and _is_youtube(url):
                error.message += (
                    " (this downloader has no JavaScript runtime, which YouTube's formats need: see `tubeflow doctor`)"
                )
            # A post-processor that started and never finished is the step that failed (e.g. Merger).
            error.step = holder["postprocessor"]
            if error.step == "Merger" and error.code == "postprocess_failed":
                error.code = "merge_failed"
            raise error from exc
        finally:
            for name in ("buffersize", "noresizebuffer"):
                ydl.params.pop(name, None)
            ydl.params.update(blocks)
            self._release(ydl)
