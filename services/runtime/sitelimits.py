"""Per-site limit settings (TUBEFLOW_SITE_CONCURRENCY, TUBEFLOW_SITE_RATE): ``youtube.com=2,*=6``, and which of
them applies to a URL. Read by the settings (to refuse a bad value at start) and the downloader's site gate."""

from __future__ import annotations

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
