"""Local media for tests and benchmarks: clips made with ffmpeg, served by a threaded HTTP server on 127.0.0.1.

Routes: ``/media/NAME`` (Range supported), ``/slow/RATE/NAME`` (the same, throttled to RATE bytes/s),
``/stall/SECONDS/NAME`` (answers after a pause), ``/feed.xml`` (an RSS playlist of enclosures; ``?items=a.mp4,b.mp4@RATE``
picks the entries, ``@RATE`` throttling one), ``/page.html`` (a page with no media), ``/streams/DIR/FILE`` (a DASH or
HLS manifest and its segments, made by ``make_dash``/``make_hls``; ``/streams/slowMS/DIR/FILE`` waits MS milliseconds
before each segment, ``/streams/flakyN/…`` fails each segment N times), ``/live/DIR.m3u8`` (a live HLS playlist that
never ends, looping DIR's segments), ``/embed/DIR/MANIFEST.html`` (a page whose ``<video><source>`` is that manifest), anything else
404.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def make_image(path: Path, size: str = "60x90", color: str = "red") -> Path:
    """A still image of one ``color`` (its format from the suffix: .png, .jpg)."""
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c={color}:s={size}", "-frames:v", "1", str(path)],
        check=True,
    )
    return path


def image_size(path: Path) -> tuple[int, int]:
    """An image's width and height, as ffmpeg reads it."""
    frames = imageio_ffmpeg.read_frames(str(path))
    try:
        width, height = next(frames)["size"]
    finally:
        frames.close()
    return width, height


def make_clip(
    path: Path,
    *,
    seconds: float = 2.0,
    tone: int = 440,
    size: str = "160x120",
    bitrate: str = "200k",
    constant: bool = False,
) -> Path:
    """A short mp4 with an H.264 test pattern and an AAC sine tone. ``constant``: the video at exactly ``bitrate``
    (filler data), for a file of a known size (a test pattern alone compresses to a fraction of any bitrate)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate=15:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone}:sample_rate=22050:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            bitrate,
            *(
                ["-minrate", bitrate, "-maxrate", bitrate, "-bufsize", bitrate, "-x264-params", "nal-hrd=cbr"]
                if constant
                else []
            ),
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-shortest",
            "-movflags",
            "+faststart",
            str(tmp),
        ],
        check=True,
    )
    tmp.rename(path)
    return path


def make_source(path: Path, *, seconds: float = 6.0, size: str = "320x240", bitrate: str = "300k") -> Path:
    """A clip with a key frame every second, so that it cuts into segments of 1-2 s."""
    if path.exists():
        return path
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc=size={size}:rate=15:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-b:v", bitrate, "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-shortest", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def make_dash(source: Path, directory: Path) -> Path:
    """DASH with video and audio in separate adaptation sets (yt-dlp downloads both, then merges)."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.mpd"
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), "-map", "0:v", "-map", "0:a",
            "-c", "copy", "-f", "dash", "-seg_duration", "1", "-adaptation_sets", "id=0,streams=v id=1,streams=a",
            str(manifest),
        ],
        check=True,
    )  # fmt: skip
    return manifest


def make_long_dash(directory: Path, *, hours: float = 3.0) -> Path:
    """DASH of a long, tiny video (16x16 at 60 fps) with separate audio: a few MB to download, but hundreds of
    thousands of packets, so yt-dlp's merge (and each remux after it) takes seconds on these machines."""
    manifest = directory / "manifest.mpd"
    if manifest.exists():
        return manifest
    directory.mkdir(parents=True, exist_ok=True)
    seconds = int(hours * 3600)
    source = directory.parent / f"{directory.name}-source.mp4"
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"color=c=black:size=16x16:rate=60:duration={seconds}",
            "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "600", "-c:a", "aac", "-b:a", "8k", "-shortest",
            str(source),
        ],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), "-map", "0:v", "-map", "0:a",
            "-c", "copy", "-f", "dash", "-seg_duration", "600", "-adaptation_sets", "id=0,streams=v id=1,streams=a",
            str(directory / "manifest.tmp.mpd"),
        ],
        check=True,
    )  # fmt: skip
    source.unlink()
    (directory / "manifest.tmp.mpd").rename(manifest)
    return manifest


def make_hls(source: Path, directory: Path, *, split: bool) -> Path:
    """HLS: with ``split``, a video rendition and a separate audio rendition group (a master playlist); otherwise
    one muxed stream."""
    directory.mkdir(parents=True, exist_ok=True)
    if split:
        args = [
            "-map", "0:v", "-map", "0:a", "-c", "copy", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
            "-master_pl_name", "master.m3u8", "-var_stream_map", "v:0,agroup:aud a:0,agroup:aud,default:yes",
            "-hls_segment_filename", str(directory / "%v_%03d.ts"), str(directory / "%v.m3u8"),
        ]  # fmt: skip
        manifest = directory / "master.m3u8"
    else:
        manifest = directory / "index.m3u8"
        args = [
            "-c", "copy", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
            "-hls_segment_filename", str(directory / "seg_%03d.ts"), str(manifest),
        ]  # fmt: skip
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), *args], check=True)
    return manifest


_CONTENT_TYPES = {
    ".mpd": "application/dash+xml",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".html": "text/html; charset=utf-8",
    ".vtt": "text/vtt",
    ".jpg": "image/jpeg",
}


# The cookie /private/NAME wants (name, value): what a cookie profile must hold to download from it.
PRIVATE_COOKIE = ("tubeflow_session", "s3cr3t-c00kie-value")


@dataclass
class MediaServer:
    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[str] = field(default_factory=list)
    ranges: list[tuple[str, str | None]] = field(default_factory=list)
    # (time.monotonic(), Host header, path) of every request, in order.
    arrivals: list[tuple[float, str, str]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # media bytes written per file name
    # /limited/<name>: after this many requests (over all of them), a site that answers 429 for limit_seconds
    # (then serves again); when each 429 went out (time.monotonic()) is in ``refusals``.
    limit_after: int | None = None
    limit_seconds: float = 1.0
    refusals: list[float] = field(default_factory=list)
    _limited: int = 0
    _limited_until: float = 0.0
    _counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _copies: int = 0
    # The send buffer of each connection (None: the kernel's, which grows to megabytes on loopback and takes a whole
    # file at once, so ``sent`` would not follow what a slow reader reads).
    send_buffer: int | None = None
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, name: str, *, rate: int | None = None) -> str:
        return f"{self.base}/slow/{rate}/{name}" if rate else f"{self.base}/media/{name}"

    def fresh(self, name: str) -> str:
        """A copy of a clip under a new name: a URL no earlier job downloaded, so tubeflow can't reuse a file."""
        with self._lock:
            self._copies += 1
            copy = f"{Path(name).stem}-copy{self._copies}{Path(name).suffix}"
        shutil.copyfile(self.root / name, self.root / copy)
        return copy

    def fresh_stream(self, directory: str, manifest: str) -> str:
        """A copy of a manifest's folder under a new name: a stream URL no earlier job downloaded."""
        with self._lock:
            self._copies += 1
            copy = f"{directory}-copy{self._copies}"
        shutil.copytree(self.root / directory, self.root / copy)
        return self.stream_url(copy, manifest)

    def redirect_url(self, target: str) -> str:
        return f"{self.base}/redirect?to={quote(target, safe='')}"

    def flaky_url(self, name: str, failures: int) -> str:
        """Answers 503 to the first ``failures`` requests for this name, then serves the file."""
        return f"{self.base}/flaky/{failures}/{name}"

    def stream_url(self, directory: str, manifest: str, *, segment_delay_ms: int = 0, segment_failures: int = 0) -> str:
        """``segment_failures``: each segment answers 404 that many times before it is served."""
        slow = (
            f"slow{segment_delay_ms}/" if segment_delay_ms else f"flaky{segment_failures}/" if segment_failures else ""
        )
        return f"{self.base}/streams/{slow}{directory}/{manifest}"

    def live_url(self, directory: str) -> str:
        """A never-ending live HLS stream made of ``directory``'s segments (see ``live_playlist``)."""
        return f"{self.base}/live/{directory}.m3u8"

    def embed_url(self, directory: str, manifest: str) -> str:
        return f"{self.base}/embed/{directory}/{manifest}.html"

    def limited_url(self, name: str) -> str:
        """Served like /media/, but answers 429 once ``limit_after`` requests to /limited/ came (see there)."""
        return f"{self.base}/limited/{name}"

    def feed_url(self, names: str | None = None) -> str:
        return f"{self.base}/feed.xml" + (f"?items={names}" if names else "")

    def start(self) -> "MediaServer":
        handler = type("Handler", (_MediaHandler,), {"media": self})
        self._server = _QuietServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="media-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "MediaServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _MediaHandler(BaseHTTPRequestHandler):
    """Serves a MediaServer's files and the shapes tests need: feeds, redirects, 503s, slow and stalled bodies."""

    media: "MediaServer"  # set on a subclass per server

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        if self.media.send_buffer:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.media.send_buffer)

    def do_HEAD(self) -> None:
        self.handle_request(head=True)

    def do_GET(self) -> None:
        self.handle_request(head=False)

    def handle_request(self, head: bool) -> None:
        self.media.requests.append(self.path)
        self.media.ranges.append((self.path, self.headers.get("Range")))
        self.media.arrivals.append((time.monotonic(), self.headers.get("Host") or "", self.path))
        path, _, query = self.path.partition("?")
        if path == "/feed.xml":
            return self.send_feed(query, head)
        if path == "/redirect":
            target = unquote(query.partition("to=")[2])
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        flaky = re.fullmatch(r"/flaky/(\d+)/([\w.-]+)", path)
        if flaky:
            with self.media._lock:
                seen = self.media._counts.get(path, 0)
                self.media._counts[path] = seen + 1
            if seen < int(flaky.group(1)):
                return self.send_body(b"try again", "text/plain", head, status=503)
            path = f"/media/{flaky.group(2)}"
        streams = re.fullmatch(r"/streams/(?:slow(\d+)/|flaky(\d+)/)?([\w-]+)/([\w.-]+)", path)
        if streams:
            target = self.media.root / streams.group(3) / streams.group(4)
            if not target.is_file():
                return self.send_body(b"not found", "text/plain", head, status=404)
            if streams.group(2) and target.suffix not in (".mpd", ".m3u8"):
                with self.media._lock:
                    seen = self.media._counts.get(path, 0)
                    self.media._counts[path] = seen + 1
                if seen < int(streams.group(2)):  # the first N requests of each segment fail, as on a CDN edge
                    # that has not got it yet (yt-dlp retries a fragment's 404; a 5xx goes to its HTTP retries)
                    return self.send_body(b"not yet", "text/plain", head, status=404)
            if streams.group(1) and target.suffix not in (".mpd", ".m3u8"):
                time.sleep(min(int(streams.group(1)), 5000) / 1000)
            return self.send_file(target, None, head, _CONTENT_TYPES.get(target.suffix, "application/octet-stream"))
        live = re.fullmatch(r"/live/([\w-]+)\.m3u8", path)
        if live:
            return self.send_body(self.live_playlist(live.group(1)), "application/vnd.apple.mpegurl", head)
        embed = re.fullmatch(r"/embed/([\w-]+)/([\w.-]+)\.html", path)
        if embed:
            source = f"/streams/{embed.group(1)}/{embed.group(2)}"
            kind = "application/dash+xml" if source.endswith(".mpd") else "application/vnd.apple.mpegurl"
            body = (
                f"<html><head><title>Embedded {embed.group(1)}</title></head><body>"
                f'<video controls><source src="{source}" type="{kind}"></video></body></html>'
            ).encode()
            return self.send_body(body, "text/html; charset=utf-8", head)
        limited = re.fullmatch(r"/limited/([\w.-]+)", path)
        if limited:
            with self.media._lock:
                now = time.monotonic()
                self.media._limited += 1
                after = self.media.limit_after
                if after is not None and self.media._limited == after + 1:
                    self.media._limited_until = now + self.media.limit_seconds
                refuse = now < self.media._limited_until
                if refuse:
                    self.media.refusals.append(now)
            if refuse:
                return self.send_body(b"Too Many Requests", "text/plain", head, status=429)
            path = f"/media/{limited.group(1)}"
        private = re.fullmatch(r"/private/([\w.-]+)", path)
        if private:  # a site that wants a login: 403 without the session cookie
            if f"{PRIVATE_COOKIE[0]}={PRIVATE_COOKIE[1]}" not in (self.headers.get("Cookie") or ""):
                return self.send_body(b"sign in first", "text/plain", head, status=403)
            path = f"/media/{private.group(1)}"
        if path == "/endless.html":  # a page that never ends (cut at 64 MiB, so this server is bounded too)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            if not head:
                with contextlib.suppress(OSError):
                    for _ in range(1024):
                        self.wfile.write(b"<p>" + b"x" * 65536 + b"</p>")
            return None
        if path == "/page.html":
            body = b"<html><head><title>Nothing here</title></head><body><p>No media.</p></body></html>"
            return self.send_body(body, "text/html; charset=utf-8", head)
        match = re.fullmatch(r"/(?:media|slow/(\d+)|stall/(\d+(?:\.\d+)?))/([\w.-]+)", path)
        target = self.media.root / match.group(3) if match else None
        if target is None or not target.is_file():
            return self.send_body(b"not found", "text/plain", head, status=404)
        if match.group(2):
            time.sleep(min(float(match.group(2)), 30.0))
        rate = int(match.group(1)) if match.group(1) else None
        self.send_file(target, rate, head)

    def live_playlist(self, directory: str) -> bytes:
        """A live HLS playlist that never ends: a window of three 1 s segments that moves on every second, the
        folder's segments played in a loop (a discontinuity where they start again)."""
        segments = sorted((self.media.root / directory).glob("seg_*.ts"))
        with self.media._lock:
            began = self.media._counts.setdefault(f"live-start:{directory}", int(time.monotonic()))
        first = int(time.monotonic()) - began
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for number in range(first, first + 3):
            if number and number % len(segments) == 0:
                lines.append("#EXT-X-DISCONTINUITY")
            lines += ["#EXTINF:1.000000,", f"/streams/{directory}/{segments[number % len(segments)].name}"]
        return ("\n".join(lines) + "\n").encode()

    def send_body(self, body: bytes, content_type: str, head: bool, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_feed(self, query: str, head: bool) -> None:
        names = sorted(p.name for p in self.media.root.glob("*.mp4"))
        if query.startswith("count="):  # count=N&name=X[&title=L]: N entries of X, each its own URL (?n=k), with
            # titles L characters long if asked
            params = dict(part.partition("=")[::2] for part in query.split("&"))
            count, name = int(params["count"]), params.get("name", "clip1.mp4")
            pad = "t" * int(params.get("title", "0"))
            url = self.media.url(name)
            body = (
                '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
                f"<title>Big feed</title><link>{self.media.base}/</link><description>many</description>"
                + "".join(
                    f"<item><title>{escape(name)} #{k}{pad}</title><guid>{k}</guid>"
                    f'<enclosure url="{escape(url)}?n={k}" type="video/mp4" length="1"/></item>'
                    for k in range(1, count + 1)
                )
                + "</channel></rss>"
            ).encode()
            return self.send_body(body, "application/rss+xml", head)
        if query.startswith("items="):
            names = [n for n in query[len("items=") :].split(",") if n]
        entries = []
        for entry in names:
            name, _, rate = entry.partition("@")
            if name.startswith("http"):  # a URL as it is, e.g. a redirect
                url = entry
                name = "external"
            elif name.startswith("flaky"):  # flaky2-clip1.mp4: 503 twice, then clip1.mp4
                count, _, real = name[len("flaky") :].partition("-")
                url = self.media.flaky_url(real, int(count))
            else:
                url = self.media.url(name, rate=int(rate) if rate.isdigit() else None)
            entries.append(
                f"<item><title>{escape(name)}</title><guid>{escape(entry)}</guid>"
                f'<enclosure url="{escape(url)}" type="video/mp4" length="1"/></item>'
            )
        entries = "".join(entries)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
            f"<title>Test feed</title><link>{self.media.base}/</link><description>clips</description>"
            f"{entries}</channel></rss>"
        ).encode()
        self.send_body(body, "application/rss+xml", head)

    def send_file(self, target: Path, rate: int | None, head: bool, content_type: str = "video/mp4") -> None:
        size = target.stat().st_size
        start, end = 0, size - 1
        status = 200
        header = self.headers.get("Range")
        if header:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                end = min(end, size - 1)
                if start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        chunk = 16 * 1024
        with target.open("rb") as f:
            f.seek(start)
            left = end - start + 1
            began = time.monotonic()
            sent = 0
            while left > 0:
                data = f.read(min(chunk, left))
                if not data:
                    break
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return
                left -= len(data)
                sent += len(data)
                with self.media._lock:
                    self.media.sent[target.name] = self.media.sent.get(target.name, 0) + len(data)
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        # yt-dlp closes connections early on purpose (probing a URL); that is not worth a traceback.
        pass


def as_served():  # noqa: ANN201
    """Download options that keep a file byte for byte as the server sent it (no metadata embedded)."""
    from contracts.options import DownloadOptions

    return DownloadOptions(metadata=False)
