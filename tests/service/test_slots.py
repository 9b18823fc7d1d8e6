"""yt-dlp in slot processes: a call that must stop does (cancel, deadline, crash), within seconds, and nothing one call
does holds another call or the caller's event loop."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.engine.slots import SlotConfig, SlotPool
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.cancellation import Aborted, CancelToken
from services.runtime.failures import MediaError
from tests.support.media import as_served

LOOPBACK_ONLY = AddressPolicy(allowed_networks=parse_networks("127.0.0.0/8"))


@pytest.fixture(scope="module")
def pool():
    pool = SlotPool(2, SlotConfig(policy=LOOPBACK_ONLY), resolve_timeout=60, download_timeout=60)
    pool.warm_up()
    yield pool
    pool.close()


def trip_later(token: CancelToken, seconds: float) -> None:
    threading.Timer(seconds, token.trip, args=("cancelled",)).start()


def test_resolve_and_download_run_in_reused_processes(pool, media, tmp_path):
    started = pool.processes_started
    url = media.url(media.fresh("clip1.mp4"))
    resolved = pool.resolve(url, max_items=10)
    assert resolved.kind == "video" and resolved.probe is None  # kept by the pool, not handed out
    reports: list[dict] = []
    done = pool.download(url, directory=tmp_path, stem="0001", format=None, hook=reports.append, options=as_served())
    assert done.path.is_file() and done.size == done.path.stat().st_size
    assert reports and reports[-1]["status"] == "finished"
    assert all("info_dict" not in r for r in reports)
    assert pool.probes_reused >= 1  # the resolve's extraction crossed back into the download
    assert pool.processes_started == started, "a slot process was replaced without a reason"


def test_cancel_stops_a_resolve_stuck_on_a_silent_server(pool, media):
    # The server says nothing for 30 s: no hook is ever called, only killing the process ends the wait.
    token = CancelToken("job")
    trip_later(token, 0.5)
    began = time.monotonic()
    with pytest.raises(Aborted):
        pool.resolve(f"{media.base}/stall/30/clip1.mp4", max_items=10, token=token)
    assert time.monotonic() - began < 3.0
    # The killed slot is replaced on its next use; the pool keeps working.
    assert pool.resolve(media.url("clip2.mp4"), max_items=10).kind == "video"


def test_cancel_stops_a_slow_download_within_seconds(pool, media, tmp_path):
    token = CancelToken("job")
    trip_later(token, 1.0)
    began = time.monotonic()
    with pytest.raises(Aborted):
        pool.download(
            media.url(media.fresh("long.mp4"), rate=20_000),
            directory=tmp_path,
            stem="0001",
            format=None,
            hook=lambda d: None,
            token=token,
        )
    assert time.monotonic() - began < 5.0


def test_a_resolve_past_its_deadline_fails_with_a_code(media):
    pool = SlotPool(1, SlotConfig(policy=LOOPBACK_ONLY), resolve_timeout=1.0)
    try:
        began = time.monotonic()
        with pytest.raises(MediaError) as caught:
            pool.resolve(f"{media.base}/stall/30/clip1.mp4", max_items=10)
        assert caught.value.code == "resolve_timeout" and not caught.value.transient
        assert "TUBEFLOW_RESOLVE_TIMEOUT" in caught.value.message
        assert time.monotonic() - began < 4.0
    finally:
        pool.close()


async def test_a_catastrophic_regex_holds_neither_the_loop_nor_another_download(media, tmp_path):
    """A format filter whose regex backtracks for minutes with the GIL held (the API refuses these; this is the
    depth below it): the other slot downloads meanwhile, the event loop keeps ticking, the deadline ends it."""
    name = "a" * 30 + ".mp4"
    shutil.copyfile(media.root / "clip1.mp4", media.root / name)
    pool = SlotPool(2, SlotConfig(policy=LOOPBACK_ONLY), download_timeout=4.0)
    executor = ThreadPoolExecutor(2)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(executor, pool.warm_up)
        stuck = loop.run_in_executor(
            executor,
            lambda: pool.download(
                media.url(name),
                directory=tmp_path / "stuck",
                stem="0001",
                format="best[url~='(a+)+c']",
                hook=lambda d: None,
            ),
        )
        ticks = 0
        began = loop.time()
        while loop.time() - began < 1.0:
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks > 50, "the event loop was held"
        other = await loop.run_in_executor(
            executor,
            lambda: pool.download(
                media.url(media.fresh("clip2.mp4")),
                directory=tmp_path / "other",
                stem="0001",
                format=None,
                hook=lambda d: None,
            ),
        )
        assert other.path.is_file()
        assert not stuck.done(), "the regex finished: this test proves nothing on this machine"
        with pytest.raises(MediaError) as caught:
            await stuck
        assert caught.value.code == "download_timeout"
    finally:
        pool.close()
        executor.shutdown()


def test_a_slot_process_that_dies_is_a_transient_failure_and_is_replaced(pool, media, tmp_path):
    token = CancelToken("job")
    pids: list[int] = []

    def kill_it(d: dict) -> None:
        if not pids:
            pids.extend(p for p in _slot_pids(pool))
            for pid in pids:
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(MediaError) as caught:
        pool.download(
            media.url(media.fresh("long.mp4"), rate=50_000),
            directory=tmp_path,
            stem="0001",
            format=None,
            hook=kill_it,
            token=token,
        )
    assert caught.value.code == "worker_crashed" and caught.value.transient
    assert pool.resolve(media.url("clip3.mp4"), max_items=10).kind == "video"


def _slot_pids(pool: SlotPool) -> list[int]:
    return [slot.pid for slot in pool._slots if slot.pid is not None]


def test_a_slot_dies_with_its_service_even_in_the_middle_of_a_regex(media, tmp_path):
    """The service is SIGKILLed while a slot backtracks in a regex with the GIL held (its inbox thread can't run):
    the kernel's parent-death signal still takes the slot within seconds."""
    name = "a" * 30 + ".mp4"
    shutil.copyfile(media.root / "clip1.mp4", media.root / name)
    script = f"""
import sys, threading, time
from services.engine.slots import SlotConfig, SlotPool
from services.runtime.addresses import AddressPolicy, parse_networks
pool = SlotPool(1, SlotConfig(policy=AddressPolicy(allowed_networks=parse_networks("127.0.0.0/8"))))
pool.warm_up()
print(pool._slots[0].pid, flush=True)
threading.Thread(target=lambda: pool.download({media.url(name)!r}, directory=__import__("pathlib").Path({str(tmp_path)!r}),
    stem="0001", format="best[url~='(a+)+c']", hook=lambda d: None), daemon=True).start()
time.sleep(600)
"""
    service = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        slot = int(service.stdout.readline())
        time.sleep(2.0)  # deep in the regex by now
        assert Path(f"/proc/{slot}").exists()
        service.kill()
        service.wait()
        deadline = time.monotonic() + 10
        while running(slot) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(slot), "the slot outlived its service"
    finally:
        if service.poll() is None:
            service.kill()


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
