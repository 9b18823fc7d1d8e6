"""The failure users see on an item or job: a stable code plus the tool's message."""

from __future__ import annotations


class MediaError(Exception):
    """A failure a user should see: a stable code and yt-dlp's (or ffmpeg's) message."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        transient: bool = False,
        step: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient
        # At least this many seconds before a transient failure is tried again (a site's rate limit).
        self.retry_after = retry_after
        # The post-processing step (yt-dlp's post-processor, e.g. Merger) that failed, if it was one.
        self.step = step
