"""Nothing reaches an inside address, whatever the media points at: yt-dlp's own requests through the guarded name
resolution, and ffmpeg's (HLS that yt-dlp hands to ffmpeg, e.g. SAMPLE-AES) through the slot's guard proxy.

Two loopback servers stand for outside and inside: 127.0.0.2 is allowed (TUBEFLOW_ALLOWED_NETWORKS), 127.0.0.3 is
not, and must never see a request."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.engine.guard_proxy import GuardProxy
from services.engine.slots import SlotConfig, SlotPool
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.failures import MediaError
from tests.support.media import MediaServer

OUTSIDE_ONLY = AddressPolicy(allowed_networks=parse_networks("127.0.0.2/32"))


@pytest.fixture(scope="module")
def servers(media, tmp_path_factory):
    root = tmp_path_factory.mktemp("two-hosts")
    for name in ("clip1.mp4",):
        shutil.copyfile(media.root / name, root / name)
    shutil.copytree(media.root / "hlsmux", root / "hlsmux")
    shutil.copytree(media.root / "dash", root / "dash")
    (root / "keys").mkdir()
    (root / "keys" / "k.bin").write_bytes(bytes(range(16)))
    with MediaServer(root, host="127.0.0.2") as outside, MediaServer(root, host="127.0.0.3") as inside:
        yield outside, inside


@pytest.fixture(scope="module")
def pool():
    pool = SlotPool(1, SlotConfig(policy=OUTSIDE_ONLY), resolve_timeout=60, download_timeout=60)
    yield pool
    pool.close()


def hls_playlist(root: Path, name: str, *, key: str | None, segments: list[str]) -> None:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:0"]
    if key:
        lines.append(f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="{key}",KEYFORMAT="identity"')
    for segment in segments:
        lines += ["#EXTINF:1.0,", segment]
    lines.append("#EXT-X-ENDLIST")
    (root / name).mkdir(exist_ok=True)
    (root / name / "index.m3u8").write_text("\n".join(lines) + "\n")


def dash_pointing_at(root: Path, name: str, base: str) -> None:
    manifest = (root / "dash" / "manifest.mpd").read_text()
    (root / name).mkdir(exist_ok=True)
    (root / name / "manifest.mpd").write_text(
        manifest.replace("<Period ", f"<BaseURL>{base}/streams/dash/</BaseURL><Period ", 1)
    )


def attempt(pool: SlotPool, url: str, tmp_path: Path) -> MediaError:
    with pytest.raises(MediaError) as caught:
        pool.download(url, directory=tmp_path, stem="0001", format=None, hook=lambda d: None)
    return caught.value


def test_hls_whose_key_and_segments_are_inside_goes_to_ffmpeg_and_is_refused(pool, servers, tmp_path):
    outside, inside = servers
    segment = f"{inside.base}/streams/hlsmux/seg_000.ts"
    hls_playlist(outside.root, "sample-aes-in", key=f"{inside.base}/streams/keys/k.bin", segments=[segment])
    error = attempt(pool, outside.stream_url("sample-aes-in", "index.m3u8"), tmp_path)
    assert error.code == "forbidden_address", (error.code, error.message)
    assert "127.0.0.3" in error.message
    assert inside.requests == []


def test_ffmpeg_reaches_an_allowed_host_through_the_guard_but_not_a_redirect_inside(pool, servers, tmp_path):
    outside, inside = servers
    before = len(outside.requests)
    redirect = outside.redirect_url(f"{inside.base}/streams/hlsmux/seg_000.ts")
    hls_playlist(outside.root, "sample-aes-redirect", key=f"{outside.base}/streams/keys/k.bin", segments=[redirect])
    error = attempt(pool, outside.stream_url("sample-aes-redirect", "index.m3u8"), tmp_path)
    # ffmpeg fetched the key and asked for the segment on the allowed host (through the proxy), and was refused
    # where the redirect pointed.
    seen = outside.requests[before:]
    assert any(path.endswith("/keys/k.bin") for path in seen), seen
    assert any(path.startswith("/redirect") for path in seen), seen
    assert error.code == "forbidden_address", (error.code, error.message)
    assert inside.requests == []


@pytest.mark.parametrize("case", ["native-hls-segments", "dash-base-url", "redirect"])
def test_yt_dlps_own_requests_to_inside_are_refused(pool, servers, tmp_path, case):
    outside, inside = servers
    if case == "native-hls-segments":
        hls_playlist(outside.root, "hls-in", key=None, segments=[f"{inside.base}/streams/hlsmux/seg_000.ts"])
        url = outside.stream_url("hls-in", "index.m3u8")
    elif case == "dash-base-url":
        dash_pointing_at(outside.root, "dash-in", inside.base)
        url = outside.stream_url("dash-in", "manifest.mpd")
    else:
        url = outside.redirect_url(inside.url("clip1.mp4"))
    error = attempt(pool, url, tmp_path)
    assert error.code == "forbidden_address", (error.code, error.message)
    assert inside.requests == []


def test_an_allowed_download_still_works(pool, servers, tmp_path):
    outside, _ = servers
    done = pool.download(outside.url("clip1.mp4"), directory=tmp_path, stem="0001", format=None, hook=lambda d: None)
    assert done.path.is_file()


def test_tubeflow_proxy_carries_the_downloads(servers, tmp_path):
    """TUBEFLOW_PROXY is the one way to use a proxy: yt-dlp's requests go through it (here a guard proxy of the
    test's own, counting what it serves)."""
    outside, _ = servers
    upstream = GuardProxy(AddressPolicy(allow_private=True)).start()
    served: list[object] = []
    original = upstream._serve
    upstream._serve = lambda client: (served.append(client), original(client))[1]  # type: ignore[method-assign]
    pool = SlotPool(1, SlotConfig(policy=OUTSIDE_ONLY, proxy=upstream.url), download_timeout=60)
    try:
        done = pool.download(
            outside.url("clip1.mp4"), directory=tmp_path, stem="0001", format=None, hook=lambda d: None
        )
        assert done.path.is_file()
        assert served, "the download did not go through TUBEFLOW_PROXY"
    finally:
        pool.close()
        upstream.close()


class CountingUpstream:
    """An operator's proxy (TUBEFLOW_PROXY) on loopback: a guard proxy with an open policy, recording each request
    line it was asked for."""

    def __init__(self) -> None:
        self.proxy = GuardProxy(AddressPolicy(allow_private=True)).start()
        self.asked: list[str] = []
        original = self.proxy._serve

        def serve(client) -> None:  # noqa: ANN001
            head = client.recv(65536, __import__("socket").MSG_PEEK)
            self.asked.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            original(client)

        self.proxy._serve = serve  # type: ignore[method-assign]

    def close(self) -> None:
        self.proxy.close()


@pytest.mark.parametrize("case", ["redirect", "dash-base-url", "hls-key-inside"])
def test_with_tubeflow_proxy_the_policy_still_holds(servers, tmp_path, case):
    """Issue 23: with TUBEFLOW_PROXY set the address policy was off (a redirect to a forbidden address was asked of
    the proxy). Now the slot's guard checks every destination and asks the proxy only for the addresses it allowed."""
    outside, inside = servers
    upstream = CountingUpstream()
    pool = SlotPool(1, SlotConfig(policy=OUTSIDE_ONLY, proxy=upstream.proxy.url), download_timeout=60)
    try:
        if case == "redirect":
            url = outside.redirect_url(inside.url("clip1.mp4"))
        elif case == "dash-base-url":
            dash_pointing_at(outside.root, "dash-in-proxy", inside.base)
            url = outside.stream_url("dash-in-proxy", "manifest.mpd")
        else:
            hls_playlist(
                outside.root, "sample-aes-proxy", key=f"{inside.base}/streams/keys/k.bin",
                segments=[f"{outside.base}/streams/hlsmux/seg_000.ts"],
            )  # fmt: skip
            url = outside.stream_url("sample-aes-proxy", "index.m3u8")
        error = attempt(pool, url, tmp_path)
        assert error.code == "forbidden_address", (error.code, error.message)
        assert inside.requests == []
        targets = [line.split(" ")[1] for line in upstream.asked]
        hosts = {urlsplit(t).hostname if "://" in t else t.rpartition(":")[0] for t in targets}
        assert hosts == {"127.0.0.2"}, upstream.asked  # the proxy was asked only for what the policy allows
    finally:
        pool.close()
        upstream.close()


def test_a_second_request_on_a_kept_alive_connection_is_never_relayed_unchecked(servers):
    """The guard checks a plain request's target once per connection: a client keeping the connection alive and
    sending its next request (to an inside host) on it had that request relayed, unchecked, to the first host's
    server (found while making TUBEFLOW_PROXY go through the guard, issue 23). Now the answer closes the connection,
    and a request sent anyway goes nowhere."""
    import socket

    outside, inside = servers
    guard = GuardProxy(OUTSIDE_ONLY).start()
    before = list(outside.requests)
    try:
        host, port = guard.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            first = f"GET {outside.url('clip1.mp4')} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
            second = f"GET {inside.url('clip1.mp4')} HTTP/1.1\r\nHost: y\r\n\r\n"
            conn.sendall((first + second).encode())
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.0 200") or head.startswith(b"http/1.1 200"), head
        assert b"connection: close" in head and answer.count(b"HTTP/1.") == 1
    finally:
        guard.close()
    assert inside.requests == []
    assert [r for r in outside.requests[len(before) :] if "127.0.0.3" in r] == [], outside.requests[len(before) :]
