"""Each site refusal yt-dlp reports becomes its own code with a hint (issue 14, item 4). The failures are raised by a
real YoutubeDL running an extractor that fails the way yt-dlp's own extractors do: with yt-dlp's helpers
(raise_login_required, raise_geo_restricted, report_drm) or with YouTube's playability reasons worded as
extractor/youtube/_video.py words them."""

from __future__ import annotations

import io

import pytest
import yt_dlp
from yt_dlp.extractor.common import InfoExtractor
from yt_dlp.extractor.youtube import YoutubeIE
from yt_dlp.networking import Response
from yt_dlp.networking.exceptions import HTTPError
from yt_dlp.utils import ExtractorError

from contracts.events import ErrorInfo
from services.engine.errors import RATE_LIMITED_DELAY, classify


def youtube_reason(reason: str) -> str:
    """A playability reason as yt-dlp's YouTube extractor passes it on ("sign in" ones get the cookie hint)."""
    ie = YoutubeIE(yt_dlp.YoutubeDL({"quiet": True}))
    if "sign in" in reason.lower():
        reason = reason.removesuffix("This helps protect our community. Learn more").strip().removesuffix(".")
        return f"{reason}. {ie._youtube_login_hint}"
    return reason


def http_429() -> HTTPError:
    return HTTPError(Response(io.BytesIO(b""), "https://example.com/watch", {}, status=429, reason="Too Many Requests"))


FAILURES = {
    "bot_check": lambda ie: ie.raise_no_formats(
        youtube_reason("Sign in to confirm you’re not a bot. This helps protect our community. Learn more"),
        expected=True,
    ),
    "login_required": lambda ie: ie.raise_login_required(),
    "private": lambda ie: ie.raise_no_formats(
        youtube_reason("Private video. Sign in if you've been granted access to this video"), expected=True
    ),
    "members_only": lambda ie: ie.raise_no_formats(
        "Join this channel to get access to members-only content like this video, and other exclusive perks.",
        expected=True,
    ),
    "age_restricted": lambda ie: ie.raise_no_formats(
        youtube_reason("Sign in to confirm your age. This video may be inappropriate for some users."), expected=True
    ),
    "geo_blocked": lambda ie: ie.raise_geo_restricted(
        "The uploader has not made this video available in your country", countries=["DE"]
    ),
    "unavailable": lambda ie: ie.raise_no_formats(
        "Video unavailable. This video is no longer available because the YouTube account associated with this "
        "video has been terminated.",
        expected=True,
    ),
    "site_rate_limited": lambda ie: (_ for _ in ()).throw(
        ExtractorError("Unable to download webpage: HTTP Error 429: Too Many Requests", cause=http_429())
    ),
    "drm": lambda ie: ie.report_drm("abc123"),
}


def failing_with(failure):  # noqa: ANN001, ANN201
    class FailingIE(InfoExtractor):
        _VALID_URL = r"https://example\.com/watch"
        IE_NAME = "failing"

        def _real_extract(self, url):  # noqa: ANN001, ANN202
            failure(self)

    return FailingIE


@pytest.mark.parametrize("code", list(FAILURES))
def test_each_site_refusal_has_its_code_and_a_hint(code):
    ydl = yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True})
    ydl.add_info_extractor(failing_with(FAILURES[code])())
    with pytest.raises(yt_dlp.utils.DownloadError) as raised:
        ydl.extract_info("https://example.com/watch", download=False, ie_key="Failing")
    error = classify(raised.value)
    assert error.code == code, (error.code, error.message)
    assert error.transient == (code == "site_rate_limited")
    assert (error.retry_after == RATE_LIMITED_DELAY) == (code == "site_rate_limited")
    assert ErrorInfo(code=error.code, message=error.message).hint, "no hint for the page"


def test_youtubes_try_again_later_is_a_rate_limit_too():
    message = (
        "This content isn't available, try again later. The current session has been rate-limited by YouTube for up "
        "to an hour."
    )
    error = classify(yt_dlp.utils.DownloadError(f"ERROR: [youtube] abc: {message}"))
    assert error.code == "site_rate_limited" and error.transient


def test_other_http_errors_keep_their_status_codes():
    response = Response(io.BytesIO(b""), "https://example.com/x", {}, status=503)
    ydl = yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True})
    ydl.add_info_extractor(
        failing_with(
            lambda ie: (_ for _ in ()).throw(ExtractorError("Unable to download", cause=HTTPError(response)))
        )()
    )
    with pytest.raises(yt_dlp.utils.DownloadError) as raised:
        ydl.extract_info("https://example.com/watch", download=False, ie_key="Failing")
    error = classify(raised.value)
    assert error.code == "http_503" and error.transient and error.retry_after is None
