"""yt-dlp's failures as error codes users and frontends can rely on, each with what to do about it."""

from __future__ import annotations

import re

from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, PostProcessingError, UnsupportedError

from services.runtime.failures import MediaError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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
    if isinstance(cause, ExtractorError) and cause.exc_info and cause.exc_info[1] is not None:
        if isinstance(cause.exc_info[1], (HTTPError, TransportError)):
            cause = cause.exc_info[1]
    if "forbidden_address" in message:
        return MediaError("forbidden_address", message.replace("forbidden_address: ", ""))
    if "not found, unable to continue" in message and "fragment" in message:
        return MediaError("fragment_missing", message)
    if isinstance(cause, PostProcessingError) or message.startswith("Postprocessing:"):
        return MediaError("postprocess_failed", message)
    if isinstance(cause, HTTPError):
        status = cause.status
        return MediaError(f"http_{status}", message, transient=status >= 500 or status in (408, 429))
    if isinstance(cause, UnsupportedError) or "Unsupported URL" in message:
        return MediaError("unsupported_url", message)
    if isinstance(cause, TransportError):
        return MediaError("network", message, transient=True)
    if "is not a valid URL" in message:
        return MediaError("invalid_url", message)
    if isinstance(cause, SyntaxError) or "Invalid format specification" in message:
        return MediaError("bad_format", message)
    if "Requested format is not available" in message:
        return MediaError("format_unavailable", message)
    if isinstance(cause, ExtractorError):
        return MediaError("extraction_error", message)
    return MediaError("download_error", message)
