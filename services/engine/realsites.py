"""What real sites need from the engine, and what it can do there.

- A JavaScript runtime and the challenge-solver scripts: YouTube's signatures are solved by yt-dlp-ejs's scripts
  running in Deno (both installed by ``uv sync``). yt-dlp is handed the runtime's path (a slot may not have the
  venv's bin on PATH) and may fetch no code at run time (``remote_components`` stays empty). yt-dlp runs Deno with
  ``deno run --no-prompt --no-remote --no-npm --cached-only …`` and no ``--allow-*`` flag: no network, no files, no
  environment, no subprocesses (``tests/service/test_real_sites.py`` proves each).
- Browser impersonation (curl_cffi): per site (TUBEFLOW_IMPERSONATE) or per job (the ``impersonate`` option). curl
  resolves names itself, past the guarded ``getaddrinfo``: in a slot whose policy is not open, every request yt-dlp
  sends through curl goes through the slot's guard proxy, which checks each destination (``route_curl``).
- A PO-token provider (bgutil-ytdlp-pot-provider, an HTTP server): TUBEFLOW_POT_PROVIDER_URL is handed to the
  plugin, and the plugin's requests to that URL, and nothing else, are exempt from the address policy.
- Operator plugins (TUBEFLOW_PLUGIN_DIRS), loaded by every slot.

This module's top level imports no yt-dlp: the service's process builds ``RealSites`` from its settings and pings
the provider; the functions marked "slot side" run in a slot process.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import urllib.request
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from contracts.engine import EngineFacts, JsRuntime, PoTokenProvider, SolverScripts, target_available
from services.runtime.jsruntime import default_js_runtime
from services.runtime.sitelimits import matching_key, site_of

log = logging.getLogger("tubeflow.realsites")

POT_EXTRACTOR_ARGS = "youtubepot-bgutilhttp"
# True while yt-dlp's PO-token framework is asking its providers for a token (see ``prepare_slot``).
_asking_for_token: ContextVar[bool] = ContextVar("tubeflow_asking_for_token", default=False)
PING_TIMEOUT = 5.0


@dataclass(frozen=True)
class RealSites:
    js_runtime: str | None = field(default_factory=default_js_runtime)
    # TUBEFLOW_IMPERSONATE as (site, target) pairs; an empty target: none.
    impersonate: tuple[tuple[str, str], ...] = ()
    pot_provider_url: str | None = None
    plugin_dirs: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Any) -> "RealSites":
        from services.runtime.settings import impersonate_rules

        return cls(
            js_runtime=settings.js_runtime_path(),
            impersonate=tuple(impersonate_rules(settings.impersonate).items()),
            pot_provider_url=settings.pot_provider_url,
            plugin_dirs=settings.plugin_dir_list(),
        )

    def target_for(self, url: str, asked: str | None = None) -> str | None:
        """The impersonation target a call for ``url`` uses: the job's, else the rule for the URL's site."""
        if asked:
            return asked
        rules = dict(self.impersonate)
        key = matching_key(site_of(url), rules)
        return (rules[key] or None) if key is not None else None

    def params(self) -> dict[str, Any]:
        """YoutubeDL params: the runtime by path (or none at all), no remote code, the PO-token provider's URL."""
        params: dict[str, Any] = {
            "js_runtimes": {"deno": {"path": self.js_runtime}} if self.js_runtime else {},
            "remote_components": [],
        }
        if self.pot_provider_url:
            params["extractor_args"] = {POT_EXTRACTOR_ARGS: {"base_url": [self.pot_provider_url]}}
        return params

    def provider_endpoint(self) -> tuple[str, int] | None:
        if not self.pot_provider_url:
            return None
        parts = urlsplit(self.pot_provider_url)
        return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)

    def is_provider_request(self, url: str) -> bool:
        """A request of the PO-token provider plugin to the provider (its two endpoints), made while yt-dlp's
        PO-token framework asks for a token: the only requests exempt from the address policy. A job's URL on the
        provider's host is not (it is never fetched inside the framework)."""
        return (
            bool(self.pot_provider_url)
            and _asking_for_token.get()
            and url in (f"{self.pot_provider_url}/ping", f"{self.pot_provider_url}/get_pot")
        )


def unavailable_rules(sites: RealSites, targets: list[str]) -> list[str]:
    """TUBEFLOW_IMPERSONATE's targets this engine can't send (``targets``: what it can)."""
    return [
        f"{site}={target}" for site, target in sites.impersonate if target and not target_available(target, targets)
    ]


def merged_params(*layers: dict[str, Any]) -> dict[str, Any]:
    """Layers of YoutubeDL params, later ones winning, except ``extractor_args``, merged per extractor."""
    merged: dict[str, Any] = {}
    arguments: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
        for key, value in (layer.get("extractor_args") or {}).items():
            arguments[key] = {**arguments.get(key, {}), **value}
    if arguments:
        merged["extractor_args"] = arguments
    return merged


def ping_provider(url: str | None, timeout: float = PING_TIMEOUT) -> PoTokenProvider:
    """Does the PO-token provider answer its ``/ping`` (the bgutil HTTP protocol: ``{"version": …}``)?"""
    if not url:
        return PoTokenProvider()
    try:
        # Straight to the provider, never through a proxy of the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{url}/ping", timeout=timeout) as answer:
            body = json.loads(answer.read(64 * 1024) or b"{}")
        version = body.get("version") if isinstance(body, dict) else None
        return PoTokenProvider(url=url, answering=True, version=str(version)[:40] if version else None)
    except Exception as exc:  # noqa: BLE001 - any failure is "not answering", said with its reason
        return PoTokenProvider(url=url, answering=False, error=f"{type(exc).__name__}: {exc}"[:300])


# --- slot side -------------------------------------------------------------------------------------------------


def prepare_slot(sites: RealSites) -> None:
    """Before the slot's first YoutubeDL: Deno's cache in a folder of its own (a read-only home still works), no
    update check, and the operator's plugin folders loaded."""
    os.environ.setdefault("DENO_DIR", os.path.join(tempfile.gettempdir(), f"tubeflow-deno-{os.getuid()}"))
    os.environ["DENO_NO_UPDATE_CHECK"] = "1"
    os.environ["NO_COLOR"] = "1"
    _mark_token_requests()
    if sites.plugin_dirs:
        import importlib

        from yt_dlp.globals import plugin_dirs
        from yt_dlp.plugins import load_all_plugins

        # The default plugins (the PO-token provider's) were loaded by the zygote: only the operator's folders
        # are searched now (loading a plugin twice registers its providers twice, which yt-dlp refuses loudly).
        plugin_dirs.value = list(sites.plugin_dirs)
        importlib.invalidate_caches()  # yt-dlp's plugin finder forgets the namespace it found before
        load_all_plugins()
        plugin_dirs.value = ["default", *sites.plugin_dirs]


def _mark_token_requests() -> None:
    """While yt-dlp's PO-token framework asks for a token, say so (``is_provider_request``)."""
    from yt_dlp.extractor.youtube.pot._director import PoTokenRequestDirector

    asking = PoTokenRequestDirector.get_po_token
    if getattr(asking, "_tubeflow_marked", False):
        return

    def get_po_token(self, request):  # noqa: ANN001, ANN202 - yt-dlp's signature
        token = _asking_for_token.set(True)
        try:
            return asking(self, request)
        finally:
            _asking_for_token.reset(token)

    get_po_token._tubeflow_marked = True  # type: ignore[attr-defined]
    PoTokenRequestDirector.get_po_token = get_po_token  # type: ignore[method-assign]


def route_curl(guard_url: str) -> None:
    """Every request yt-dlp's curl_cffi handler sends goes through the guard proxy at ``guard_url`` (plain http in
    absolute form, https through CONNECT: the TLS handshake, the browser's fingerprint, stays end to end). Without the
    hook this relies on, the handler is taken away rather than left unguarded."""
    from yt_dlp.networking import _curlcffi

    handler = getattr(_curlcffi, "CurlCFFIRH", None)
    if handler is None:
        return
    if not callable(getattr(handler, "_get_proxies", None)):  # pragma: no cover - a yt-dlp that changed its handlers
        from yt_dlp.networking.common import _REQUEST_HANDLERS

        _REQUEST_HANDLERS.pop(handler.RH_KEY, None)
        log.warning("curl_cffi's handler has no proxy hook in this yt-dlp: impersonation is off in this slot")
        return
    handler._get_proxies = lambda self, request: {"all": guard_url}


def collect_facts(ydl: Any, sites: RealSites, script: str | None = None) -> dict[str, Any]:
    """What this slot's yt-dlp says it can do: its version, the JS runtime and the solver scripts as its challenge
    framework finds them (and whether the scripts load and run in the runtime), impersonation targets, PO-token
    providers, plugins. ``script``: run it the way yt-dlp runs the solver and return what it printed (tests)."""
    import imageio_ffmpeg
    import yt_dlp.version
    from yt_dlp.extractor.youtube.pot._registry import _pot_providers
    from yt_dlp.globals import plugin_ies, plugin_pps

    facts = EngineFacts(
        checked_at=datetime.now(timezone.utc),
        yt_dlp=yt_dlp.version.__version__,
        remote_components=sorted(ydl.params.get("remote_components") or ()),
        impersonate_rules=dict(sites.impersonate),
        pot_provider=PoTokenProvider(url=sites.pot_provider_url),
        pot_providers=sorted(p.PROVIDER_NAME for p in _pot_providers.value.values()),
        plugin_dirs=list(sites.plugin_dirs),
        request_handlers=sorted(ydl._request_director.handlers),
    )
    try:
        year, month, day = (int(part) for part in facts.yt_dlp.split(".")[:3])
        facts.yt_dlp_released = datetime(year, month, day).date()
    except ValueError:
        pass
    runtime = (getattr(ydl, "_js_runtimes", None) or {}).get("deno")
    if runtime is not None and runtime.info is not None:
        info = runtime.info
        facts.js_runtime = JsRuntime(name=info.name, version=info.version, path=info.path, supported=info.supported)
    facts.solver, ran = _solver(ydl, script)
    facts.impersonate_targets = sorted({str(target) for target, _ in ydl._get_available_impersonate_targets()})
    try:
        facts.ffmpeg = imageio_ffmpeg.get_ffmpeg_version()
    except Exception:  # noqa: BLE001 - no binary: no ffmpeg (a problem the facts name)
        facts.ffmpeg = None
    answer = facts.model_dump(mode="json")
    answer["plugins"] = sorted({*plugin_ies.value, *plugin_pps.value})
    answer["script_output"] = ran
    return answer


SELF_TEST = "console.log(JSON.stringify({jsc: typeof jsc, lib: typeof lib}));"


def _solver(ydl: Any, script: str | None) -> tuple[SolverScripts, str | None]:
    """The Deno challenge provider as yt-dlp's framework builds it for YouTube: its scripts (which version, from
    where), then the scripts loaded in the runtime the way yt-dlp loads them (``jsc`` must come out a function)."""
    from yt_dlp.extractor.youtube.jsc._director import initialize_jsc_director

    try:
        director = initialize_jsc_director(ydl.get_info_extractor("Youtube"))
        provider = next((p for p in director.providers.values() if p.PROVIDER_NAME == "deno"), None)
        if provider is None or not provider.is_available():
            return SolverScripts(error="yt-dlp's Deno provider is not available (no runtime)"), None
        lib, core = provider._lib_script, provider._core_script
        scripts = SolverScripts(version=core.version, source=core.source.value)
        if lib.version != core.version:
            scripts.error = f"lib {lib.version} and core {core.version} differ"
        loaded = json.loads(
            provider._run_js_runtime(f"{lib.code}\nObject.assign(globalThis, lib);\n{core.code}\n{SELF_TEST}")
        )
        if loaded.get("jsc") != "function":
            scripts.error = f"the solver did not load in {provider.JS_RUNTIME_NAME}: {loaded}"
        ran = None
        if script is not None:
            try:
                ran = provider._run_js_runtime(script)
            except Exception as exc:  # noqa: BLE001 - what the runtime said is the answer
                ran = f"error: {exc}"
        return scripts, ran
    except Exception as exc:  # noqa: BLE001 - said as the solver's error; the doctor names it
        return SolverScripts(error=f"{type(exc).__name__}: {exc}"[:300]), None


def request_po_token(ydl: Any, visitor_data: str) -> dict[str, Any]:
    """Ask yt-dlp's PO-token framework for a token as the YouTube extractor would (a GVS token for the web client):
    which providers it has, and what it got (tests: a fake provider speaking the bgutil protocol answers)."""
    from yt_dlp.extractor.youtube.pot._director import initialize_pot_director
    from yt_dlp.extractor.youtube.pot.provider import PoTokenContext, PoTokenRequest

    director = initialize_pot_director(ydl.get_info_extractor("Youtube"))
    request = PoTokenRequest(
        context=PoTokenContext.GVS,
        innertube_context={"client": {"clientName": "WEB", "clientVersion": "2.20260101.00.00"}},
        visitor_data=visitor_data,
        bypass_cache=True,
    )
    return {
        "providers": sorted(p.PROVIDER_NAME for p in director.providers.values()),
        "token": director.get_po_token(request),
    }
