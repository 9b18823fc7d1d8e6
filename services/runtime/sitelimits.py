"""Per-site limit settings (TUBEFLOW_SITE_CONCURRENCY, TUBEFLOW_SITE_RATE): ``youtube.com=2,*=6``, and which of
them applies to a URL. Read by the settings (to refuse a bad value at start) and the downloader's site gate."""

from __future__ import annotations

from urllib.parse import urlsplit


def parse_limits(text: str | None, name: str) -> dict[str, int]:
    """``"youtube.com=2,*=6"`` -> {"youtube.com": 2, "*": 6}; a clear ValueError naming the setting otherwise."""
    limits: dict[str, int] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        site, sep, value = part.partition("=")
        site = site.strip().lower().removeprefix("www.")
        if not sep or not site or not value.strip().isdigit():
            raise ValueError(f"{name}: {part!r} is not site=number (e.g. youtube.com=2,*=6)")
        if site != "*" and not all(c.isalnum() or c in "-." for c in site):
            raise ValueError(f"{name}: {site!r} is not a host name")
        limits[site] = int(value)
    return limits


def site_of(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host.removeprefix("www.") or "unknown"


def limit_for(site: str, limits: dict[str, int]) -> tuple[str, int] | None:
    """(the key the site is counted under, its limit), or None when no limit applies. The longest matching key wins;
    under ``*`` each site counts alone."""
    best = None
    for key, limit in limits.items():
        if key != "*" and (site == key or site.endswith("." + key)) and (best is None or len(key) > len(best[0])):
            best = (key, limit)
    if best is None and "*" in limits:
        best = (site, limits["*"])
    if best is None or best[1] <= 0:
        return None
    return best
