"""yt-dlp's failures as error codes users and frontends can rely on, each with what to do about it."""

from __future__ import annotations

import re

from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError, PostProcessingError, UnsupportedError

from services.runtime.failures import MediaError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# What a site says when it refuses, as yt-dlp passes it on (its own words, or the site's reason it quotes: YouTube's
# playability reasons, extractor/youtube/_video.py; raise_login_required, raise_geo_restricted and report_drm in
# extractor/common.py and YoutubeDL.py). First match wins: "Sign in to confirm you're not a bot" is a bot check, not a
# login; an age gate says "Sign in" too.
SITE_REFUSALS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("drm", ("DRM protected",)),
    ("bot_check", ("not a bot", "captcha challenge")),
    ("age_restricted", ("confirm your age", "age-restricted", "age restricted", "inappropriate for some users")),
    ("members_only", ("members-only", "Join this channel", "channel's members", "available to members")),
    ("private", ("Private video", "This video is private", "video is private")),
    (
        "geo_blocked",
        (
            "not available from your location",
            "not made this video available in your country",
            "geo restriction",
            "geo-restricted",
        ),
    ),
    ("site_rate_limited", ("rate-limited", "Too Many Requests", "This content isn't available, try again later")),
    (
        "login_required",
        (
            "only available for registered users",
            "--cookies for the authentication",
            "login required",
            "Login required",
            "requires authentication",
            "needs to be logged in",
        ),
    ),
    (
        "unavailable",
        (
            "Video unavailable",
            "This video is unavailable",
            "This video is no longer available",
            "has been removed",
            "This video does not exist",
        ),
    ),
)
# After a site's rate limit (HTTP 429, YouTube's "try again later"): at least this long before the next try.
RATE_LIMITED_DELAY = 300.0


def _refusal(message: str, cause: BaseException | None) -> MediaError | None:
    if isinstance(cause, GeoRestrictedError):
        return MediaError("geo_blocked", message)
    for code, phrases in SITE_REFUSALS:
        if any(phrase.lower() in message.lower() for phrase in phrases):
            if code == "site_rate_limited":
                return MediaError(code, message, transient=True, retry_after=RATE_LIMITED_DELAY)
            return MediaError(code, message)
    return None


def classify(exc: BaseException) -> MediaError:
    """Map a yt-dlp exception to an error code users and frontends can rely on."""
    if isinstance(exc, MediaError):
        return exc
    if isinstance(exc, DownloadError) and exc.exc_info and isinstance(exc.exc_info[1], MediaError):
        return exc.exc_info[1]
    message = _ANSI.sub("", str(exc)).removeprefix("ERROR: ").strip() or type(exc).__name__
    cause: BaseException | None = exc
    if isinstance(exc, DownloadError) and exc.exc_info and exc.exc_info[1] is not None:
        cause = exc.exc_info[1]
    if isinstance(cause, ExtractorError):
        inner = getattr(cause, "cause", None) or (cause.exc_info[1] if cause.exc_info else None)
        if isinstance(inner, (HTTPError, TransportError)):
            cause = inner
    if "forbidden_address" in message:
        return MediaError("forbidden_address", message.replace("forbidden_address: ", ""))
    if "not found, unable to continue" in message and "fragment" in message:
        return MediaError("fragment_missing", message)
    if isinstance(cause, PostProcessingError) or message.startswith("Postprocessing:"):
        return MediaError("postprocess_failed", message)
    if isinstance(cause, HTTPError) and cause.status == 429:
        return MediaError("site_rate_limited", message, transient=True, retry_after=RATE_LIMITED_DELAY)
    refused = _refusal(message, cause)
    if refused is not None:
        return refused
    if isinstance(cause, HTTPError):
        status = cause.status
        return MediaError(f"http_{status}", message, transient=status >= 500 or status == 408)
    if isinstance(cause, UnsupportedError) or "Unsupported URL" in message:
        return MediaError("unsupported_url", message)
    if isinstance(cause, TransportError):
        return MediaError("network", message, transient=True)
    if "is not a valid URL" in message:
        return MediaError("invalid_url", message)
    if isinstance(cause, SyntaxError) or "Invalid format specification" in message:
        return MediaError("bad_format", message)
    if re.search(r"Impersonate target .* is not available", message):
        return MediaError("impersonate_unavailable", message)
    if "Requested format is not available" in message:
        return MediaError("format_unavailable", message)
    if isinstance(cause, ExtractorError):
        return MediaError("extraction_error", message)
    return MediaError("download_error", message)
