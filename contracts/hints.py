"""What to do about a failure, by its code: the page shows it under the error, API clients get it as ``hint``."""

from __future__ import annotations

HINTS: dict[str, str] = {
    "bot_check": (
        "The site wants proof this is not a bot. Add a cookie profile from a browser that is signed in "
        "(PUT /api/cookies/{profile}) and name it in the job's `cookies`; for YouTube run a PO-token provider "
        "(TUBEFLOW_POT_PROVIDER_URL, docs/deploy.md); `tubeflow doctor` says what else is missing."
    ),
    "http_403": (
        "The site refused the request. Behind bot protection, ask for a browser's fingerprint (the job's "
        "`impersonate: chrome`, or TUBEFLOW_IMPERSONATE for the site); for YouTube, a PO-token provider "
        "(TUBEFLOW_POT_PROVIDER_URL) and a cookie profile help; `tubeflow doctor` says what is missing."
    ),
    "http_401": (
        "The site wants credentials: add a cookie profile from a browser that is signed in (PUT "
        "/api/cookies/{profile}) and name it in the job's `cookies`."
    ),
    "impersonate_unavailable": (
        "This downloader can't send that browser's fingerprint: GET /api/info lists the targets it has "
        "(`engine.impersonate_targets`); `tubeflow doctor` checks curl_cffi."
    ),
    "login_required": "The site wants a signed-in user: add a cookie profile and name it in the job's `cookies`.",
    "private": "The video is private: only an account it was shared with can fetch it (its cookie profile).",
    "members_only": "Only the channel's members may watch this: use a cookie profile of a member's account.",
    "age_restricted": "The site wants a signed-in adult: use a cookie profile of an account that may watch it.",
    "geo_blocked": "Not available from this server's country: set TUBEFLOW_PROXY to a proxy in a country it is.",
    "unavailable": "The site says the video is gone or was never there; check the URL.",
    "site_rate_limited": (
        "The site is limiting how often we ask: the whole site cools down (no requests to it from any downloader, "
        "TUBEFLOW_SITE_COOLDOWN) and this is tried again after. TUBEFLOW_SITE_PACING spaces its downloads out."
    ),
    "site_cooldown": (
        "The site pushed back (429, a bot check or a burst of 403s), so nothing is sent to it until the time shown; "
        'the queue bar\'s "Resume now" (POST /api/queue/cooldowns/{site}/resume) ends it early.'
    ),
    "site_pacing": "The site is paced (TUBEFLOW_SITE_PACING): its downloads start apart; this one starts at its turn.",
    "drm": "The video is DRM-protected: no tool may download it, so it is not retried.",
    "forbidden_address": "The address is inside this network, which tubeflow does not fetch (TUBEFLOW_ALLOWED_NETWORKS).",
    "unsupported_url": "yt-dlp has no extractor for this site, and the page holds no video it can find.",
    "format_unavailable": (
        "No format matches the selector: try a lower quality or no `format`. On YouTube, formats go missing when "
        "the downloader has no JavaScript runtime or solver scripts: `tubeflow doctor` says whether it has them."
    ),
    "page_too_large": "The page (or feed, or manifest) is larger than any real one (16 MiB): not a media page.",
    "page_too_slow": "The page took minutes to arrive; try again later.",
    "file_too_large": "Over TUBEFLOW_MAX_FILESIZE or the job's TUBEFLOW_MAX_JOB_BYTES; pick a lower quality or a clip.",
    "cookies_unknown": "The job names a cookie profile that does not exist (any more): GET /api/cookies lists them.",
}


def hint_for(code: str | None) -> str | None:
    return HINTS.get(code or "")
