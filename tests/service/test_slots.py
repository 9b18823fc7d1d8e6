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

from services.engine.slots import STALL, SlotConfig, SlotPool
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.cancellation import Aborted, CancelToken
from services.runtime.failures import MediaError
from tests.support.media import as_served
from tests.support.processes import processes_mentioning, wait_for

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


async def test_a_catastrophic_regex_holds_neither_the_loop_nor_another_download(media, tmp_path, monkeypatch):
    """A format filter whose regex backtracks for minutes with the GIL held (the API refuses these; this is the
    depth below it): the event loop keeps ticking; the other download, sharing the stuck call's process, stalls
    there until the process is seen to stop beating, then runs again in a process of its own and finishes while
    the regex still runs; a cancel ends the stuck one within seconds."""
    name = "a" * 30 + ".mp4"
    shutil.copyfile(media.root / "clip1.mp4", media.root / name)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # both calls in one process
    pool = SlotPool(2, SlotConfig(policy=LOOPBACK_ONLY), download_timeout=120.0)
    executor = ThreadPoolExecutor(2)
    loop = asyncio.get_running_loop()
    token = CancelToken("job")
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
                token=token,
            ),
        )
        ticks = 0
        began = loop.time()
        while loop.time() - began < 1.0:
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks > 50, "the event loop was held"
        began = loop.time()
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
        assert loop.time() - began < STALL + 10.0
        assert not stuck.done(), "the regex finished: this test proves nothing on this machine"
        token.trip("cancelled")
        began = loop.time()
        with pytest.raises(Aborted):
            await stuck
        assert loop.time() - began < 8.0
    finally:
        pool.close()
        executor.shutdown()


def test_calls_share_a_process_and_a_kill_for_one_runs_the_other_again(media, tmp_path, monkeypatch):
    """Two calls run in one process (lanes); the resolve stuck on a silent server is cancelled, which takes that
    process down: the download beside it runs again in a new process (resuming its partial file) and finishes."""
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # else a pool spreads its calls over one process per CPU
    pool = SlotPool(2, SlotConfig(policy=LOOPBACK_ONLY), resolve_timeout=60, download_timeout=60)
    try:
        pool.warm_up()
        reports: list[dict] = []
        pids: set[int] = set()

        def download() -> object:
            return pool.download(
                media.url(media.fresh("long.mp4"), rate=50_000),
                directory=tmp_path,
                stem="0001",
                format=None,
                hook=lambda d: (reports.append(d), pids.update(_slot_pids(pool))),
                options=as_served(),
            )

        with ThreadPoolExecutor(1) as executor:
            running = executor.submit(download)
            while not reports:
                time.sleep(0.05)
            token = CancelToken("job")
            trip_later(token, 0.5)
            began = time.monotonic()
            with pytest.raises(Aborted):
                pool.resolve(f"{media.base}/stall/30/clip1.mp4", max_items=10, token=token)
            assert time.monotonic() - began < 3.0
            assert len(pids) == 1, "the two calls did not share a process"
            done = running.result(timeout=60)
        assert done.path.is_file() and done.size == (media.root / "long.mp4").stat().st_size
        assert pool.processes_started == 2  # the first, killed with the stuck resolve; the download's second
    finally:
        pool.close()


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
from services.engine.slots import STALL, SlotConfig, SlotPool
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


def _ffmpeg_writing_in(directory: Path) -> list[int]:
    """The ffmpeg processes whose command line names a file in ``directory``."""
    return processes_mentioning(str(directory), program="ffmpeg")


def test_a_merge_reports_its_progress_and_a_cancel_ends_its_ffmpeg_within_a_second(pool, media, long_merge, tmp_path):
    url = media.stream_url(long_merge, "manifest.mpd")
    reports: list[dict] = []
    done = pool.download(url, directory=tmp_path / "a", stem="0001", format=None, hook=reports.append)
    assert done.path.is_file()
    merge = [r for r in reports if r["status"] == "postprocessing" and r["postprocessor"] == "Merger"]
    seconds = [r["pp_seconds"] for r in merge]
    assert len(set(seconds)) >= 3 and seconds == sorted(seconds), seconds
    assert all(r["pp_total_seconds"] == pytest.approx(3 * 3600, abs=2) for r in merge)
    assert merge[0]["pp_step"] == 1 and merge[0]["pp_steps"] >= 1
    finished = next(i for i, r in enumerate(reports) if r.get("pp_status") == "finished")
    assert reports.index(merge[-1]) < finished

    # Again, cancelled while ffmpeg merges: the call ends, its ffmpeg is gone, and so is what ffmpeg was writing.
    token = CancelToken("job")
    tripped: list[float] = []

    def hook(d: dict) -> None:
        if d["status"] == "postprocessing" and not tripped and d["pp_seconds"] > 600:
            tripped.append(time.monotonic())
            token.trip("cancelled")

    target = tmp_path / "b"
    with pytest.raises(Aborted):
        pool.download(url, directory=target, stem="0001", format=None, hook=hook, token=token)
    assert tripped, "the merge never reported"
    assert time.monotonic() - tripped[0] < 1.0
    assert not _ffmpeg_writing_in(target)
    assert not [p.name for p in target.iterdir() if ".temp." in p.name or p.name.endswith("manifest.mp4")]
    # The streams stay for a retry: downloaded, not merged.
    assert len([p for p in target.iterdir() if ".f" in p.name]) == 2


@pytest.mark.parametrize(
    ("page", "metadata"),
    [(False, False), (True, False), (False, True)],
    ids=["direct-mp4", "html5-video-page", "direct-mp4-metadata-remuxed"],
)
def test_what_came_out_is_measured_when_ytdlp_did_not_know_it(pool, media, tmp_path, page, metadata):
    # A direct file and a page's <video>: yt-dlp knows neither the height nor the codecs (the generic extractor).
    # Probed after the download; with the metadata remux, read from what that ffmpeg said of the file it wrote.
    url = f"{media.base}/streams/pages/html5.html" if page else media.url(media.fresh("clip2.mp4"))
    options = None if metadata else as_served()
    done = pool.download(url, directory=tmp_path, stem="0001", format=None, hook=lambda d: None, options=options)
    chosen = done.chosen
    assert (chosen["width"], chosen["height"]) == ((320, 240) if page else (160, 120)), chosen
    assert chosen["vcodec"] == "avc1" and chosen["acodec"] == "mp4a", chosen  # as yt-dlp names them
    assert chosen["duration"] == pytest.approx(6.0 if page else 2.0, abs=0.2), chosen
    assert chosen["bitrate"] > 0, chosen


def _zygote_family(idle: str) -> list[int]:
    """The zygote started with idle time ``idle`` and the slot processes it forked (they share its command line)."""
    found = []
    for pid in processes_mentioning("services.engine.zygote"):
        try:
            if Path(f"/proc/{pid}/cmdline").read_text().split("\0")[-2] == idle:
                found.append(pid)
        except (OSError, IndexError):
            pass
    return found


def test_an_idle_slot_then_its_zygote_end_and_the_next_call_starts_them_again(media, tmp_path):
    pool = SlotPool(2, SlotConfig(policy=LOOPBACK_ONLY, idle_seconds=1.25), resolve_timeout=60, download_timeout=60)
    try:
        url = media.url(media.fresh("clip1.mp4"))
        assert pool.resolve(url, max_items=10).kind == "video"
        first = _zygote_family("1.25")
        assert len(first) == 2, f"expected the zygote and one slot: {first}"
        # A download longer than the idle time: its slot is busy, not idle, and is not ended under it.
        began = time.monotonic()
        done = pool.download(
            media.url(media.fresh("long.mp4"), rate=(media.root / "long.mp4").stat().st_size // 4),  # ~4 s
            directory=tmp_path,
            stem="0001",
            format=None,
            hook=lambda d: None,
            options=as_served(),
        )
        assert done.path.is_file()
        assert time.monotonic() - began > 2.5, "the download was too quick to outlast the idle time"
        assert pool.processes_started == 1, "a busy slot process was ended"
        wait_for(lambda: not _zygote_family("1.25"), 20, "the idle slot and then its zygote to end", _zygote_family)
        # The next call starts a zygote and a slot again.
        assert pool.resolve(media.url(media.fresh("clip1.mp4")), max_items=10).kind == "video"
        again = _zygote_family("1.25")
        assert len(again) == 2 and not set(again) & set(first)
        assert pool.processes_started == 2
    finally:
        pool.close()
    wait_for(lambda: not _zygote_family("1.25"), 20, "the pool's processes to end with it", _zygote_family)
