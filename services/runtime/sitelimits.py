"""Per-site limit settings (TUBEFLOW_SITE_CONCURRENCY, TUBEFLOW_SITE_RATE: ``youtube.com=2,*=6``; TUBEFLOW_SITE_PACING)
and which of them applies to a URL. Read by the settings (to refuse a bad value at start) and the downloader's site
gate."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit


def parse_site_values(text: str | None, name: str, example: str, check=None) -> dict[str, str]:  # noqa: ANN001
    """``"youtube.com=2,*=6"`` -> {"youtube.com": "2", "*": "6"}; ``check(value)`` returns why a value is wrong, or
    None. A clear ValueError naming the setting otherwise."""
    values: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        site, sep, value = part.partition("=")
        site, value = site.strip().lower().removeprefix("www."), value.strip()
        if not sep or not site:
            raise ValueError(f"{name}: {part!r} is not site=value (e.g. {example})")
        if site != "*" and not all(c.isalnum() or c in "-." for c in site):
            raise ValueError(f"{name}: {site!r} is not a host name")
        why = check(value) if check is not None else None
        if why:
            raise ValueError(f"{name}: {part!r}: {why} (e.g. {example})")
        values[site] = value
    return values


def parse_limits(text: str | None, name: str) -> dict[str, int]:
    """``"youtube.com=2,*=6"`` -> {"youtube.com": 2, "*": 6}; a clear ValueError naming the setting otherwise."""
    values = parse_site_values(
        text, name, "youtube.com=2,*=6", lambda value: None if value.isdigit() else f"{value!r} is not a number"
    )
    return {site: int(value) for site, value in values.items()}


def site_key(site: str) -> str:
    """A site as a bucket key part: ASCII letters, digits, - and _ (anything else, a dot or an IDN host's letters,
    becomes _), at most 200."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in site)[:200]


def site_of(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host.removeprefix("www.") or "unknown"


def matching_key(site: str, keys) -> str | None:  # noqa: ANN001
    """The longest key ``site`` is (or is under), else ``*`` if there is one, else None."""
    best = None
    for key in keys:
        if key != "*" and (site == key or site.endswith("." + key)) and (best is None or len(key) > len(best)):
            best = key
    if best is None and "*" in keys:
        best = "*"
    return best


def limit_for(site: str, limits: dict[str, int]) -> tuple[str, int] | None:
    """(the key the site is counted under, its limit), or None when no limit applies. The longest matching key wins;
    under ``*`` each site counts alone."""
    key = matching_key(site, limits)
    if key is None or limits[key] <= 0:
        return None
    return (site if key == "*" else key), limits[key]


@dataclass(frozen=True)
class Pacing:
    """How a site is paced (TUBEFLOW_SITE_PACING): yt-dlp sleeps ``requests`` seconds between its requests for one
    download, and a download from the site starts ``downloads`` (a range: a random gap in it) after the last one
    started from that site, in any downloader process."""

    requests: float | None = None
    downloads: tuple[float, float] | None = None


PACING_EXAMPLE = "youtube.com=requests:1s,downloads:5-30s;*=downloads:2s"
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# A gap longer than a day is a mistake, not a pace.
MAX_GAP = 86_400.0


def _span(text: str, name: str, setting: str = "TUBEFLOW_SITE_PACING") -> tuple[float, float]:
    found = _SPAN.match(text.strip().lower())
    if found is None:
        raise ValueError(f"{setting}: {name} {text!r} is not a duration or a range (e.g. 1s, 500ms, 5-30s)")
    low, high, unit = found.groups()
    lo = float(low) * _UNITS[unit]
    hi = float(high) * _UNITS[unit] if high is not None else lo
    if hi < lo or hi > MAX_GAP:
        raise ValueError(f"{setting}: {name} {text!r} must go from low to high, at most a day")
    return lo, hi


def parse_duration(text: str, setting: str) -> float:
    """``"10m"``, ``"30s"``, ``"1h"`` (at most a day) -> seconds; ``"off"`` or 0 -> 0; a ValueError naming the setting
    otherwise."""
    if text.strip().lower() in ("off", "0", ""):
        return 0.0
    low, high = _span(text, "value", setting)
    if low != high:
        raise ValueError(f"{setting}: {text!r} is a range; give one duration (e.g. 10m)")
    return low


def parse_pacing(text: str | None) -> dict[str, Pacing]:
    """``"youtube.com=requests:1s,downloads:5-30s;*=downloads:2s"`` -> {site: Pacing}: sites apart by ``;`` (or by a
    comma before the next ``site=``), each with ``requests:DURATION`` and/or ``downloads:DURATION-or-RANGE``. A clear
    ValueError naming the setting otherwise."""
    entries: list[str] = []
    for part in re.split(r"[;,]", text or ""):
        part = part.strip()
        if not part:
            continue
        if "=" in part or not entries:
            entries.append(part)
        else:
            entries[-1] += "," + part
    pacing: dict[str, Pacing] = {}
    for entry in entries:
        site, sep, rules = entry.partition("=")
        site = site.strip().lower().removeprefix("www.")
        if not sep or not site or (site != "*" and not all(c.isalnum() or c in "-." for c in site)):
            raise ValueError(f"TUBEFLOW_SITE_PACING: {entry!r} is not site=rules (e.g. {PACING_EXAMPLE})")
        requests, downloads = None, None
        for rule in rules.split(","):
            kind, colon, value = rule.strip().partition(":")
            if not colon or kind not in ("requests", "downloads"):
                raise ValueError(
                    f"TUBEFLOW_SITE_PACING: {rule.strip()!r} for {site} is not requests:… or downloads:… "
                    f"(e.g. {PACING_EXAMPLE})"
                )
            if kind == "requests":
                requests = _span(value, "requests")[1]
            else:
                downloads = _span(value, "downloads")
        pacing[site] = Pacing(requests, downloads)
    return pacing


def pacing_for(site: str, pacing: dict[str, Pacing]) -> tuple[str, Pacing] | None:
    """(the key the site is paced under, its pacing), or None. Under ``*`` each site is paced alone."""
    key = matching_key(site, pacing)
    if key is None:
        return None
    return (site if key == "*" else key), pacing[key]
