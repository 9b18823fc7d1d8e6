"""What real sites need, proven offline in slot processes with yt-dlp's own interfaces and local fakes (issue 24).

- The JS runtime: yt-dlp's challenge framework, inside a slot, finds Deno (the one `uv sync` installed, handed by
  path) and the yt-dlp-ejs solver scripts, and Deno runs the solver on input built the way yt-dlp builds it. What an
  offline test can't show: that the solver finds the functions in YouTube's real player code (that takes the real
  player, which changes weekly); here the solver runs on a synthetic player and says it can't find them.
- Deno's sandbox: the options yt-dlp runs it with deny network, files, environment and subprocesses.
- Impersonation: a TLS server that records ClientHellos sees a browser's handshake (GREASE, h2 in ALPN, another
  cipher list) from an impersonated download, and the file arrives; curl's requests go through the slot's guard, so a
  name or a redirect to a forbidden address is refused.
- PO tokens: with a fake provider speaking the bgutil HTTP protocol (on an address the policy refuses), the plugin is
  listed and a token request through yt-dlp's PO-token framework returns the fake's token; the provider's address is
  exempt for the provider's requests only.
- Plugin folders (TUBEFLOW_PLUGIN_DIRS) are loaded by every slot.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from importlib.metadata import version
from pathlib import Path

import pytest

from contracts.options import DownloadOptions
from services.engine.realsites import RealSites
from services.engine.slots import SlotConfig, SlotPool
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.failures import MediaError
from tests.support.pot_provider import TOKEN, FakePotProvider
from tests.support.tls import TlsMediaServer

OUTSIDE_ONLY = AddressPolicy(allowed_networks=parse_networks("127.0.0.2/32"))
# The test's TLS servers have certificates of their own making.
NO_VERIFY = (("nocheckcertificate", True),)


@pytest.fixture(scope="module")
def slot():
    pool = SlotPool(1, SlotConfig(policy=AddressPolicy(allow_private=True)), resolve_timeout=120)
    yield pool
    pool.close()


def test_yt_dlps_challenge_framework_in_a_slot_finds_deno_and_the_solver_scripts(slot):
    from deno import find_deno_bin

    facts = slot.facts()
    runtime = facts["js_runtime"]
    assert runtime["name"] == "deno" and runtime["supported"], runtime
    assert runtime["version"] == version("deno")
    assert runtime["path"] == find_deno_bin()  # handed by path: the slot needs no PATH
    solver = facts["solver"]
    assert solver == {"version": version("yt-dlp-ejs"), "source": "python package", "error": None}
    # The self-test: the solver's scripts, loaded in Deno the way yt-dlp loads them, define the solver function.
    assert facts["remote_components"] == []
    assert {"CurlCFFI", "Requests", "Urllib", "Websockets"} <= set(facts["request_handlers"])


def test_deno_runs_the_solver_on_input_built_the_way_yt_dlp_builds_it(slot):
    import yt_dlp
    from yt_dlp.extractor.youtube.jsc._director import initialize_jsc_director
    from yt_dlp.extractor.youtube.jsc.provider import JsChallengeRequest, JsChallengeType, NChallengeInput

    # Built here with yt-dlp's own method (lib script, core script, the JSON of the challenge), run in the slot.
    ydl = yt_dlp.YoutubeDL({"quiet": True, "js_runtimes": {"deno": {}}})
    provider = initialize_jsc_director(ydl.get_info_extractor("Youtube")).providers["Deno"]
    player = "var tubeflowPlayer = function (a) { return a.split('').reverse().join(''); };"
    request = JsChallengeRequest(
        JsChallengeType.N, NChallengeInput("https://www.youtube.com/s/player/0000/player.js", ["abcdef"])
    )
    answer = slot.facts(script=provider._construct_stdin(player, False, [request]))["script_output"]
    # The solver ran in Deno, parsed the synthetic player and said it is not YouTube's (its own error, thrown from
    # its code: not a Deno failure to start, nor a permission refused).
    assert "unexpected structure" in answer, answer
    assert "NotCapable" not in answer and "permission" not in answer.lower()


class Listener:
    """A TCP port on loopback that counts who connects (nobody may, from Deno)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def test_deno_is_denied_network_files_environment_and_subprocesses(slot, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the solver")
    listener = Listener()
    script = f"""
    const out = {{}};
    const attempt = async (name, action) => {{
      try {{ await action(); out[name] = "allowed"; }} catch (e) {{ out[name] = e.name + ": " + e.message; }}
    }};
    await attempt("fetch", () => fetch("http://127.0.0.1:{listener.port}/"));
    await attempt("connect", () => Deno.connect({{hostname: "127.0.0.1", port: {listener.port}}}));
    await attempt("read", () => Deno.readTextFile({json.dumps(str(secret))}));
    await attempt("write", () => Deno.writeTextFile({json.dumps(str(tmp_path / "written.txt"))}, "x"));
    await attempt("env", () => Deno.env.get("HOME"));
    await attempt("run", () => new Deno.Command("true").output());
    console.log(JSON.stringify(out));
    """
    try:
        out = json.loads(slot.facts(script=script)["script_output"])
    finally:
        listener.close()
    assert set(out) == {"fetch", "connect", "read", "write", "env", "run"}, out
    for name, said in out.items():
        assert said != "allowed", (name, out)
        assert "NotCapable" in said or "Requires net access" in said, (name, said)
    assert listener.accepted == 0
    assert not (tmp_path / "written.txt").exists()


@pytest.fixture(scope="module")
def tls_servers(media, tmp_path_factory):
    root = tmp_path_factory.mktemp("tls-media")
    shutil.copyfile(media.root / "clip1.mp4", root / "clip1.mp4")
    with (
        TlsMediaServer(root, "127.0.0.2") as outside,
        TlsMediaServer(root, "127.0.0.3") as inside,
        TlsMediaServer(root, "127.0.0.1", names=("localhost",)) as local,
    ):
        yield outside, inside, local


@pytest.fixture(scope="module")
def guarded_pool():
    """Slots whose policy allows 127.0.0.2 only: impersonated (curl) requests go through the slot's guard proxy."""
    pool = SlotPool(1, SlotConfig(policy=OUTSIDE_ONLY, operator_params=NO_VERIFY), download_timeout=60)
    yield pool
    pool.close()


def assert_same_media(done, source: Path) -> None:  # noqa: ANN001
    """The file arrived (the metadata tubeflow embeds makes its bytes differ from the source's a little)."""
    size = source.stat().st_size
    assert done.path.is_file() and abs(done.path.stat().st_size - size) < size * 0.05, (done, size)


def download(pool: SlotPool, url: str, directory: Path, impersonate: str | None):
    options = DownloadOptions(impersonate=impersonate) if impersonate else None
    directory.mkdir(parents=True, exist_ok=True)
    return pool.download(url, directory=directory, stem="0001", format=None, hook=lambda d: None, options=options)


def test_an_impersonated_download_sends_a_browsers_handshake_and_the_file_arrives(guarded_pool, tls_servers, tmp_path):
    outside, _, _ = tls_servers
    before = len(outside.hellos)
    plain = download(guarded_pool, outside.url("clip1.mp4"), tmp_path / "plain", None)
    plain_hellos = outside.hellos[before:]
    before = len(outside.hellos)
    chrome = download(guarded_pool, outside.url("clip1.mp4"), tmp_path / "chrome", "chrome")
    chrome_hellos = outside.hellos[before:]
    for done in (plain, chrome):
        assert_same_media(done, outside.root / "clip1.mp4")
    assert plain_hellos and chrome_hellos
    python_hello, browser_hello = plain_hellos[0], chrome_hellos[0]
    # Python's TLS: no GREASE, only http/1.1 offered. Chrome's (through curl_cffi): GREASE, h2 first, its ciphers.
    assert not python_hello.greased and python_hello.alpn == ("http/1.1",), python_hello
    assert browser_hello.greased, browser_hello
    assert browser_hello.alpn[:1] == ("h2",), browser_hello.alpn
    assert browser_hello.ciphers != python_hello.ciphers
    assert browser_hello.extensions != python_hello.extensions
    assert all(hello == browser_hello or hello.greased for hello in chrome_hellos)


def test_a_site_rule_impersonates_only_its_site(tls_servers, tmp_path):
    outside, _, _ = tls_servers
    sites = RealSites(impersonate=(("127.0.0.2", "safari"), ("*", "")))
    assert sites.target_for(outside.url("clip1.mp4")) == "safari"
    assert sites.target_for("https://example.org/x") is None
    assert sites.target_for("https://example.org/x", "chrome") == "chrome"  # a job's option wins
    pool = SlotPool(1, SlotConfig(policy=OUTSIDE_ONLY, operator_params=NO_VERIFY, sites=sites), download_timeout=60)
    try:
        before = len(outside.hellos)
        download(pool, outside.url("clip1.mp4"), tmp_path, None)
        assert outside.hellos[before:] and all(h.alpn[:1] == ("h2",) for h in outside.hellos[before:])
    finally:
        pool.close()


@pytest.mark.parametrize("case", ["inside-address", "name-resolving-inside", "redirect-inside"])
def test_impersonated_requests_to_a_forbidden_address_are_refused(guarded_pool, tls_servers, tmp_path, case):
    outside, inside, local = tls_servers
    if case == "inside-address":
        url, target = inside.url("clip1.mp4"), inside
    elif case == "name-resolving-inside":
        # localhost resolves to 127.0.0.1, which the policy refuses; curl would resolve it itself.
        url, target = local.url("clip1.mp4", host="localhost"), local
    else:
        url, target = f"{outside.base}/redirect?to={inside.url('clip1.mp4')}", inside
    before = target.connections
    with pytest.raises(MediaError) as caught:
        download(guarded_pool, url, tmp_path, "chrome")
    assert caught.value.code == "forbidden_address", (caught.value.code, caught.value.message)
    assert target.connections == before, f"{target.host} was reached"


def test_an_impersonation_target_not_available_fails_with_its_code(guarded_pool, tls_servers, tmp_path):
    outside, _, _ = tls_servers
    with pytest.raises(MediaError) as caught:
        download(guarded_pool, outside.url("clip1.mp4"), tmp_path, "opera")
    assert caught.value.code == "impersonate_unavailable", (caught.value.code, caught.value.message)


def test_the_po_token_provider_answers_through_yt_dlps_framework_and_only_it_is_exempt(media, tmp_path):
    # The provider sits on 127.0.0.3, an address the policy refuses (as a cluster-internal service would be).
    with FakePotProvider("127.0.0.3", clip=media.root / "clip1.mp4") as provider:
        sites = RealSites(pot_provider_url=provider.url)
        pool = SlotPool(1, SlotConfig(policy=OUTSIDE_ONLY, sites=sites), resolve_timeout=60, download_timeout=60)
        try:
            facts = pool.facts(po_token_for="CgtWaXNpdG9yRGF0YQ")
            assert "bgutil:http" in facts["pot_providers"]
            assert facts["po_token"]["token"] == TOKEN
            assert "bgutil:http" in facts["po_token"]["providers"]
            assert "/ping" in provider.paths and "/get_pot" in provider.paths
            assert provider.asked[-1]["content_binding"] == "CgtWaXNpdG9yRGF0YQ"
            # The exemption is for the provider's requests: a job's URL on the same host and port is refused.
            asked = len(provider.paths)
            with pytest.raises(MediaError) as caught:
                download(pool, f"{provider.url}/clip.mp4", tmp_path, None)
            assert caught.value.code == "forbidden_address"
            assert provider.paths[asked:] == []
        finally:
            pool.close()


def test_with_the_provider_down_other_downloads_are_unaffected(media, tmp_path):
    closed = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    from services.engine.realsites import ping_provider

    said = ping_provider(url, timeout=2)
    assert said.answering is False and said.error
    sites = RealSites(pot_provider_url=url)
    pool = SlotPool(1, SlotConfig(policy=AddressPolicy(allow_private=True), sites=sites), download_timeout=60)
    try:
        done = download(pool, media.url("clip1.mp4"), tmp_path, None)
        assert_same_media(done, media.root / "clip1.mp4")
        assert pool.facts(po_token_for="visitor")["po_token"]["token"] is None  # no token, no failure
    finally:
        pool.close()


PLUGIN = """
from yt_dlp.extractor.common import InfoExtractor


class TubeflowProbeIE(InfoExtractor):
    _VALID_URL = r"tubeflowprobe:(?P<id>[a-z0-9]+)"

    def _real_extract(self, url):
        video_id = self._match_id(url)
        return {"id": video_id, "title": f"probe {video_id} from a plugin", "url": "http://127.0.0.1:9/none.mp4"}
"""


def test_plugin_folders_are_loaded_by_every_slot(tmp_path, monkeypatch):
    folder = tmp_path / "plugins" / "tubeflow-probe" / "yt_dlp_plugins" / "extractor"
    folder.mkdir(parents=True)
    (folder / "tubeflow_probe.py").write_text(PLUGIN)
    sites = RealSites(plugin_dirs=(str(tmp_path / "plugins"),))
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # both resolves in one process
    pool = SlotPool(2, SlotConfig(policy=AddressPolicy(allow_private=True), sites=sites), resolve_timeout=60)
    try:
        assert "TubeflowProbeIE" in pool.facts()["plugins"]
        # Two calls at once (two lanes of one process): both answer with the plugin's extractor.
        results: list[str | None] = []
        threads = [
            threading.Thread(target=lambda: results.append(pool.resolve("tubeflowprobe:abc", max_items=5).title))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == ["probe abc from a plugin"] * 2
        assert pool.processes_started == 2  # the facts' process (retired after), then one for both resolves
    finally:
        pool.close()
