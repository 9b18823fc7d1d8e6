"""yt-dlp updated at run time (issue 27): a version installed from the configured package index into a folder of its
own (``<TUBEFLOW_ENGINE_DIR>/<version>/``, by default under the data dir), checked before anyone uses it, then run by new slot processes
from a zygote whose ``sys.path`` starts with that folder (``SlotConfig.engine_path``).

The install is ``uv pip install`` (or pip) ``--target`` a temporary folder with ``--no-deps`` (yt-dlp's optional
dependencies are the project's own, already installed), yt-dlp-ejs beside it when the index has it. The check runs
the new yt-dlp in a fresh interpreter: its version, that it is imported from that folder, and a resolve and download
of a small clip this process serves itself on loopback. Only a folder that passed is renamed to its version; a
failure leaves nothing behind. The package index is the operator's (UV_INDEX_URL / PIP_INDEX_URL), never a
request's.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tubeflow.engine.updates")

# A version as the index names it (yt-dlp's are dates: 2026.11.20, 2026.11.20.235959.dev0).
VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!-]{0,39}$")
INSTALL_TIMEOUT = 300.0
SELF_TEST_TIMEOUT = 120.0
# The output of a failed command kept in the reason (the end of it says what went wrong).
REASON_MAX = 600


class UpdateFailed(Exception):
    """An install or its check failed: the reason, for `engine.update_failed`."""


@dataclass(frozen=True)
class Engine:
    """A yt-dlp a slot may run: its version and the folder put first on ``sys.path`` (None: the bundled one)."""

    version: str
    path: str | None = None


@functools.lru_cache(maxsize=1)
def bundled_version() -> str:
    """The yt-dlp this tubeflow was installed with, from its package metadata (importing yt-dlp to ask would load
    all of it into a process that otherwise never does: +60 MiB in `tubeflow up`'s main process)."""
    from importlib.metadata import version

    return version("yt-dlp")


def installed(root: Path) -> dict[str, Path]:
    """The versions installed in ``root`` (TUBEFLOW_ENGINE_DIR: folders that passed their check)."""
    folder = Path(root)
    if not folder.is_dir():
        return {}
    return {p.name: p for p in folder.iterdir() if p.is_dir() and VERSION.match(p.name) and (p / "yt_dlp").is_dir()}


def engine_for(root: Path, version: str) -> Engine | None:
    """The engine of ``version`` on this machine: the bundled one, or one installed in ``root`` (None: not here)."""
    if version == bundled_version():
        return Engine(version)
    path = installed(root).get(version)
    return Engine(version, str(path)) if path is not None else None


def _index_args() -> list[str]:
    index = os.environ.get("UV_INDEX_URL") or os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("PIP_INDEX_URL")
    return ["--index-url", index] if index else []


def _installer(target: Path, specs: list[str]) -> list[str]:
    uv = shutil.which("uv")
    if uv is not None:
        return [uv, "pip", "install", "--no-deps", "--no-cache", "--python", sys.executable, "--target", str(target)]
    with contextlib.suppress(ImportError):
        import pip  # noqa: F401

        return [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-cache-dir",
            "--disable-pip-version-check",
        ] + [
            "--target",
            str(target),
        ]
    raise UpdateFailed("neither uv nor pip is installed here: yt-dlp can't be updated at run time")


def _run_install(target: Path, specs: list[str], timeout: float) -> subprocess.CompletedProcess:
    command = _installer(target, specs) + _index_args() + specs
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise UpdateFailed(f"installing {' '.join(specs)} took over {timeout:.0f} s") from exc


def install(root: Path, version: str | None = None, timeout: float = INSTALL_TIMEOUT) -> Engine:
    """Install yt-dlp ``version`` (None: the newest on the index) in ``root`` (TUBEFLOW_ENGINE_DIR) and check it;
    the engine, or UpdateFailed naming what went wrong (nothing of it left behind)."""
    if version is not None and not VERSION.match(version):
        raise UpdateFailed(f"{version[:60]!r} is not a version")
    if version is not None and (known := engine_for(root, version)) is not None:
        return known
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f".installing-{uuid.uuid4().hex[:12]}"
    try:
        done = _run_install(target, [f"yt-dlp=={version}" if version else "yt-dlp"], timeout)
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()
            asked = f"yt-dlp {version}" if version else "yt-dlp"
            raise UpdateFailed(f"{asked} could not be installed from the package index: {said[-REASON_MAX:]}")
        # The challenge solver's scripts follow yt-dlp where the index has them; else the bundled ones serve.
        solver = _run_install(target, ["yt-dlp-ejs"], timeout)
        if solver.returncode != 0:
            log.info("yt-dlp-ejs not installed beside it (the bundled one is used): %s", solver.stderr.strip()[-200:])
        found = self_test(target)
        if version is not None and found != version:
            raise UpdateFailed(f"asked for yt-dlp {version}, the index gave {found}")
        final = root / found
        if final.exists():
            return Engine(found, str(final))
        target.rename(final)
        log.info("yt-dlp %s installed in %s", found, final)
        return Engine(found, str(final))
    finally:
        shutil.rmtree(target, ignore_errors=True)


_SELF_TEST = r"""
import json, os, sys
folder, url, out = sys.argv[1], sys.argv[2], sys.argv[3]
import yt_dlp
from yt_dlp.version import __version__
where = os.path.dirname(os.path.abspath(yt_dlp.__file__))
if not where.startswith(os.path.abspath(folder)):
    sys.exit(f"yt_dlp was imported from {where}, not from the new folder")
params = {"quiet": True, "no_warnings": True, "noprogress": True, "outtmpl": os.path.join(out, "%(id)s.%(ext)s")}
with yt_dlp.YoutubeDL(params) as ydl:
    info = ydl.extract_info(url, download=True)
files = [os.path.join(out, name) for name in os.listdir(out)]
size = sum(os.path.getsize(f) for f in files)
if not size:
    sys.exit("the test clip was resolved but nothing was downloaded")
print(json.dumps({"version": __version__, "size": size, "title": info.get("title")}))
"""


def self_test(folder: Path, timeout: float = SELF_TEST_TIMEOUT) -> str:
    """Run the yt-dlp in ``folder`` in a fresh interpreter against a clip served here on loopback; its version."""
    with tempfile.TemporaryDirectory(prefix="tubeflow-selftest-") as scratch, _served_clip(Path(scratch)) as url:
        out = Path(scratch) / "out"
        out.mkdir()
        env = {**os.environ, "PYTHONPATH": str(folder)}
        try:
            done = subprocess.run(
                [sys.executable, "-B", "-c", _SELF_TEST, str(folder), url, str(out)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                stdin=subprocess.DEVNULL,
                cwd=scratch,
            )
        except subprocess.TimeoutExpired as exc:
            raise UpdateFailed(f"the new yt-dlp's self-test took over {timeout:.0f} s") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()
        raise UpdateFailed(f"the new yt-dlp failed its self-test: {said[-REASON_MAX:]}")
    try:
        return str(json.loads(done.stdout.strip().splitlines()[-1])["version"])
    except (ValueError, KeyError, IndexError) as exc:
        raise UpdateFailed(f"the new yt-dlp's self-test said nothing readable: {done.stdout[-200:]!r}") from exc


@contextlib.contextmanager
def _served_clip(scratch: Path):  # noqa: ANN202
    """A one-second clip, made with ffmpeg and served on 127.0.0.1 for as long as the block runs: its URL."""
    import imageio_ffmpeg

    clip = scratch / "tubeflow-self-test.mp4"
    made = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=10"]
        + ["-pix_fmt", "yuv420p", "-y", str(clip)],
        capture_output=True,
        timeout=60,
    )
    if made.returncode != 0 or not clip.exists():
        raise UpdateFailed(f"no test clip for the self-test: {made.stderr.decode(errors='replace')[-200:]}")

    with serve_folder(scratch) as base:
        yield f"{base}/{clip.name}"


@contextlib.contextmanager
def serve_folder(folder: Path):  # noqa: ANN201
    """``folder``'s files over HTTP on 127.0.0.1 for as long as the block runs; the base URL."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="serve-folder", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
