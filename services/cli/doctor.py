"""`tubeflow doctor`: what this installation can do on real sites, and what is missing, each with what to do.

It asks a slot process, exactly as the downloader would build one from these settings (TUBEFLOW_JS_RUNTIME,
TUBEFLOW_IMPERSONATE, TUBEFLOW_POT_PROVIDER_URL, TUBEFLOW_PLUGIN_DIRS…), then checks what surrounds the engine:
the PO-token provider, ffmpeg, the cookie profiles, the free disk, NATS. Exits 1 with one line per problem."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from datetime import datetime, timedelta, timezone

from contracts.engine import EngineFacts
from contracts.options import impersonate_client
from contracts.system import SiteCooldown
from services.runtime.settings import Settings

COOKIES_EXPIRING = timedelta(days=7)
NATS_TIMEOUT = 3.0


def engine_facts(settings: Settings) -> tuple[EngineFacts, list[str]]:
    """The engine's facts as a slot built from ``settings`` finds them, and TUBEFLOW_IMPERSONATE's rules it can't
    follow."""
    from services.engine.realsites import RealSites, ping_provider, unavailable_rules
    from services.engine.slots import SlotConfig, SlotPool

    sites = RealSites.from_settings(settings)
    pool = SlotPool(
        1,
        SlotConfig.from_settings(settings, sites),
        resolve_timeout=120.0,
    )
    try:
        facts = EngineFacts.model_validate(pool.facts())
    finally:
        pool.close()
    facts.pot_provider = ping_provider(sites.pot_provider_url)
    return facts, unavailable_rules(sites, facts.impersonate_targets)


async def _nats_state(settings: Settings) -> tuple[str | None, list[SiteCooldown], str | None]:
    """(None when a server answers, else why not; the sites' cool-downs it holds; the yt-dlp version in force when
    one was updated at run time)."""
    from services.engine.versions import in_force
    from services.runtime.cooldown import read_cooldowns
    from services.runtime.nats import connect
    from services.runtime.nats.topology import PACING_BUCKET

    try:
        nc = await connect(settings.nats_url or "", "tubeflow-doctor", auth=settings.nats_auth(), timeout=NATS_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return str(exc) or type(exc).__name__, [], None
    try:
        cooldowns = await read_cooldowns(await nc.jetstream().key_value(PACING_BUCKET))
    except Exception:  # noqa: BLE001 - not set up yet: nothing cools down
        cooldowns = []
    try:
        current = await in_force(nc.jetstream())
    except Exception:  # noqa: BLE001 - not set up yet: the bundled one runs
        current = None
    await nc.close()
    return None, cooldowns, current.version if current is not None else None


def _auth_line(settings: Settings, problems: list[str]) -> str:
    """Who the API would answer (TUBEFLOW_AUTH); with oidc, whether the provider's discovery answers as it should."""
    mode = settings.auth_mode()
    if mode != "oidc":
        return f"auth: {mode}" + (
            " (the API serves loopback only unless TUBEFLOW_AUTH=none is said)" * (mode == "none")
        )
    from services.api.oidc import OidcClient, SignInError

    try:
        asyncio.run(OidcClient.from_settings(settings).discovery())
    except SignInError as exc:
        problems.append(f"TUBEFLOW_OIDC_ISSUER {settings.oidc_issuer}: {exc}; nobody can sign in until it answers")
        return f"auth: oidc ({settings.oidc_issuer}, not answering)"
    return f"auth: oidc ({settings.oidc_issuer}, discovery answers)"


def checks(settings: Settings) -> tuple[list[str], list[str], EngineFacts]:
    """(what is there, one line each; the problems, one line each with what to do; the engine's facts)."""
    from services.runtime.cookies import CookieStore

    now = datetime.now(timezone.utc)
    facts, unavailable = engine_facts(settings)
    problems = facts.problems(now.date())
    for rule in unavailable:
        problems.append(f"TUBEFLOW_IMPERSONATE: {rule} is not available here (see the targets listed above)")
    seen = [f"yt-dlp {facts.yt_dlp}" + (f" ({facts.age_days(now.date())} days old)" if facts.yt_dlp_released else "")]
    runtime = facts.js_runtime
    seen.append(
        f"JavaScript runtime: {runtime.name} {runtime.version} ({runtime.path})"
        if runtime
        else "JavaScript runtime: none"
    )
    solver = facts.solver
    seen.append(
        f"challenge solver: yt-dlp-ejs {solver.version} ({solver.source})"
        if solver and solver.version
        else "challenge solver: none"
    )
    clients = sorted({impersonate_client(t) for t in facts.impersonate_targets})
    seen.append(
        f"impersonation: {len(facts.impersonate_targets)} targets ({', '.join(clients)})"
        if clients
        else "impersonation: none"
    )
    if facts.impersonate_rules:
        seen.append(
            "TUBEFLOW_IMPERSONATE: " + ", ".join(f"{k}={v or '(none)'}" for k, v in facts.impersonate_rules.items())
        )
    provider = facts.pot_provider
    if provider.url:
        state = f"answering, version {provider.version or '?'}" if provider.answering else "not answering"
        seen.append(f"PO-token provider: {provider.url} ({state})")
    else:
        seen.append("PO-token provider: not set (TUBEFLOW_POT_PROVIDER_URL; YouTube may ask for one: docs/deploy.md)")
    seen.append(f"PO-token providers in yt-dlp: {', '.join(facts.pot_providers) or 'none'}")
    if facts.plugin_dirs:
        seen.append(f"plugin folders: {', '.join(facts.plugin_dirs)}")
    seen.append(f"ffmpeg: {facts.ffmpeg or 'none'}")
    for profile in CookieStore(settings.data_dir).list():
        if profile.expires is not None and profile.expires < now + COOKIES_EXPIRING:
            when = "expired" if profile.expires < now else f"expire {profile.expires:%Y-%m-%d}"
            problems.append(
                f"cookie profile {profile.name!r}: its cookies {when}: export them again from a signed-in browser "
                f"(PUT /api/cookies/{profile.name})"
            )
    folder = settings.data_dir if settings.data_dir.exists() else settings.data_dir.resolve().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    seen.append(f"free disk: {free / 1024**3:.1f} GiB at {folder}")
    if settings.min_free_disk and free < int(settings.min_free_disk):
        problems.append(
            f"free disk {free / 1024**3:.1f} GiB is under TUBEFLOW_MIN_FREE_DISK: downloads wait; free space or "
            "lower the setting"
        )
    seen.append(_auth_line(settings, problems))
    if settings.nats_url:
        why, cooldowns, updated = asyncio.run(_nats_state(settings))
        if why is None:
            seen.append(f"NATS: {settings.nats_url} answers")
            if updated is not None and updated != facts.yt_dlp:
                seen.append(f"yt-dlp in force: {updated} (updated at run time; `tubeflow engine rollback` undoes it)")
            for cooling in (c for c in cooldowns if c.in_force(now)):
                problems.append(
                    f"{cooling.site} cools down until {cooling.until:%Y-%m-%d %H:%M:%S} UTC (it answered {cooling.code}, "
                    f"cool-down {cooling.level} in a row): nothing is sent to it meanwhile; end it early with POST "
                    f"/api/queue/cooldowns/{cooling.site}/resume or the page's queue bar"
                )
        else:
            problems.append(f"NATS at {settings.nats_url} does not answer ({why}): start it or fix TUBEFLOW_NATS_URL")
    else:
        seen.append("NATS: TUBEFLOW_NATS_URL unset (`tubeflow up` starts its own)")
    return seen, problems, facts


def cmd_doctor(args: argparse.Namespace) -> int:
    settings = Settings()
    seen, problems, facts = checks(settings)
    if args.json:
        print(json.dumps({"facts": facts.model_dump(mode="json"), "seen": seen, "problems": problems}, indent=2))
    else:
        for line in seen:
            print(f"  {line}")
        for line in problems:
            print(f"! {line}")
        print("all good" if not problems else f"{len(problems)} problem{'s' if len(problems) > 1 else ''}")
    return 1 if problems else 0
