"""What a downloader's engine can do on real sites, as it found out in one of its slot processes (yt-dlp's own
answers), and what is missing: the facts `tubeflow doctor`, `GET /api/info` and the page show, and the problems
they name, each with what to do about it. Pure: the engine fills it in, the API reads it from a bucket."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

# yt-dlp older than this is called stale: sites change, and an old yt-dlp is the usual reason one stops working.
STALE_YTDLP_DAYS = 60


def _target_parts(target: str) -> tuple[str, str, str, str]:
    browser, _, system = target.partition(":")
    client, _, version = browser.partition("-")
    os_name, _, os_version = system.partition("-")
    return client, version, os_name, os_version


def target_available(target: str, available: list[str]) -> bool:
    """Is ``target`` (``chrome``, ``chrome-131``, ``safari:ios``…) among ``available`` (full targets), the way yt-dlp
    matches one: every part the target names must be equal, the parts it leaves out match anything."""
    wanted = _target_parts(target)
    return any(
        all(not want or want == have for want, have in zip(wanted, _target_parts(full), strict=True))
        for full in available
    )


def engine_key(worker: str) -> str:
    """A worker's key in the engine bucket (bucket keys allow letters, digits and -_=.)."""
    return "".join(c if c.isalnum() or c in "-_=." else "_" for c in worker)[:200] or "worker"


class JsRuntime(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    version: str | None = None
    path: str | None = None
    supported: bool = Field(description="yt-dlp accepts this version")


class SolverScripts(BaseModel):
    """yt-dlp's JavaScript challenge solver (the yt-dlp-ejs scripts), as yt-dlp's challenge framework found them."""

    model_config = ConfigDict(extra="ignore")

    version: str | None = None
    source: str | None = Field(default=None, description="where yt-dlp took them from: python package, builtin…")
    error: str | None = None


class PoTokenProvider(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str | None = Field(default=None, description="TUBEFLOW_POT_PROVIDER_URL (unset: none configured)")
    answering: bool | None = Field(default=None, description="its /ping answered at `checked_at` (None: unset)")
    version: str | None = None
    error: str | None = None


class EngineFacts(BaseModel):
    model_config = ConfigDict(extra="ignore")

    worker: str = ""
    checked_at: datetime | None = None
    yt_dlp: str = "unknown"
    yt_dlp_released: date | None = None
    js_runtime: JsRuntime | None = None
    solver: SolverScripts | None = None
    remote_components: list[str] = Field(default_factory=list, description="code yt-dlp may fetch: none, always")
    impersonate_targets: list[str] = Field(default_factory=list, description="what `impersonate` may name here")
    impersonate_rules: dict[str, str] = Field(default_factory=dict, description="TUBEFLOW_IMPERSONATE: site -> target")
    pot_provider: PoTokenProvider = Field(default_factory=PoTokenProvider)
    pot_providers: list[str] = Field(default_factory=list, description="PO-token providers yt-dlp has registered")
    plugin_dirs: list[str] = Field(default_factory=list)
    request_handlers: list[str] = Field(default_factory=list)
    ffmpeg: str | None = None

    def age_days(self, today: date) -> int | None:
        return (today - self.yt_dlp_released).days if self.yt_dlp_released else None

    def problems(self, today: date) -> list[str]:
        """One line per thing a real site needs that is missing or wrong, each saying what to do about it."""
        found = []
        runtime = self.js_runtime
        if runtime is None:
            found.append(
                'no JavaScript runtime: YouTube drops formats without one ("Requested format is not available"); '
                "`uv sync` installs Deno with tubeflow, or set TUBEFLOW_JS_RUNTIME to a deno binary"
            )
        elif not runtime.supported:
            found.append(
                f"{runtime.name} {runtime.version or '?'} is too old for yt-dlp: install a current Deno 2.x "
                "(`uv sync`) or point TUBEFLOW_JS_RUNTIME at one"
            )
        elif self.solver is None or self.solver.version is None or self.solver.error:
            why = f" ({self.solver.error})" if self.solver is not None and self.solver.error else ""
            found.append(
                f"no challenge-solver scripts{why}: YouTube's signatures can't be solved; `uv sync` installs yt-dlp-ejs"
            )
        if not self.impersonate_targets:
            found.append(
                "no browser impersonation (curl_cffi missing): sites behind bot protection answer 403; `uv sync` "
                "installs it"
            )
        provider = self.pot_provider
        if provider.url and not provider.answering:
            found.append(
                f"the PO-token provider at {provider.url} does not answer ({provider.error or 'no answer'}): start it "
                "(docs/deploy.md: PO tokens) or unset TUBEFLOW_POT_PROVIDER_URL"
            )
        age = self.age_days(today)
        if age is not None and age > STALE_YTDLP_DAYS:
            found.append(f"yt-dlp {self.yt_dlp} is {age} days old: update it (README: Updating yt-dlp)")
        if not self.ffmpeg:
            found.append("no ffmpeg: merges and audio fail; `uv sync` installs imageio-ffmpeg")
        return found
