"""One check of one subscription: resolve its source flat, find the entries not seen before that pass its filters, make
one job per entry (at most ``max_items_per_check``), and record it all as `subscription.checked`.

Neither lost nor doubled when a scheduler dies mid-check: the job of an entry is found again by its key (the same
entry of the same subscription always gets the same job), and `checked` is published expecting the subscription's
last sequence, so of two schedulers that did the same check only one records it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Callable
from urllib.parse import urlsplit

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from contracts import events as ev
from contracts.ids import new_job_id, step_event_id
from contracts.payloads import ErrorInfo
from contracts.subjects import subject
from contracts.subscriptions import (
    CHECKED_BUDGET,
    MAX_SEEN,
    NewEntry,
    SubscriptionCheckedData,
    SubscriptionPausedData,
    SubscriptionView,
    make_subscription_event,
    since_passes,
)
from services.engine.media import Entry, Resolution
from services.runtime.addresses import AddressPolicy
from services.runtime.cancellation import CancelToken
from services.runtime.cookies import CookieStore
from services.runtime.cooldown import Cooldowns
from services.runtime.failures import MediaError
from services.runtime.nats import STREAM, Publisher
from services.runtime.sitelimits import Pacing, pacing_for, site_of
from services.runtime.subscriptions import SubscriptionBook

log = logging.getLogger("tubeflow.scheduler")

NOT_A_PLAYLIST = "not_a_playlist"
TOO_MANY_ENTRIES = "too_many_entries"
# A paced site's backlog becomes this many jobs per check, the next batch once they have started at its pace.
PACED_BATCH = 10


def entry_identity(entry: Entry) -> str:
    """What a subscription remembers of an entry: its id in the source; for a feed, its guid (which yt-dlp smuggles
    in the URL), so an entry whose enclosure moves (`?via=cdn2`, as podcast hosts do) is the same entry (it was
    downloaded again, issue 23); else its URL."""
    if entry.id:
        return entry.id[:600]
    from yt_dlp.utils import unsmuggle_url

    try:
        _, smuggled = unsmuggle_url(entry.url, {})
    except (ValueError, KeyError, IndexError):  # a fragment that only looks smuggled (a stranger's feed)
        smuggled = {}
    guid = smuggled.get("force_videoid") if isinstance(smuggled, dict) else None
    return str(guid)[:600] if guid else entry.url[:600]


def _seen(view: SubscriptionView, entry: Entry) -> bool:
    # Also the identity subscriptions remembered before guids were (the smuggled URL): no entry is taken again when
    # a subscription made by an older version is checked by this one.
    return entry_identity(entry) in view.seen or (entry.id or entry.url)[:600] in view.seen


def plain_url(url: str) -> str:
    """The entry's URL without what yt-dlp smuggles in its fragment (a feed's guid): the job downloads the same media,
    and shows and reuses by the URL a person would recognise."""
    return url.split("#__youtubedl_smuggle=", 1)[0]


def entry_key(subscription_id: str, identity: str) -> str:
    return hashlib.sha256(f"subscription:{subscription_id}:{identity}".encode()).hexdigest()


def _next_batch(now: datetime, taken: int, pacing: Pacing) -> datetime:
    """When a paced site's next batch is due: once this one's downloads have started at the site's pace (the mean
    of its gap, per job made)."""
    assert pacing.downloads is not None
    low, high = pacing.downloads
    return now + timedelta(seconds=max(taken, 1) * (low + high) / 2)


def pick(view: SubscriptionView, entries: list[Entry], most: int | None = None) -> tuple[list[Entry], int, int]:
    """(the entries to make jobs of now, how many the filters left out, how many new ones wait for the next check):
    at most max_items_per_check (and ``most``), and no more than one `checked` event holds (CHECKED_BUDGET)."""
    settings = view.settings
    fresh, filtered = [], 0
    for entry in entries:
        if _seen(view, entry):
            continue
        if (settings.title_filter and not settings.title_filter.matches(entry.title)) or not since_passes(
            settings.since, entry.timestamp
        ):
            filtered += 1
            continue
        fresh.append(entry)
    take: list[Entry] = []
    size = 0
    for entry in fresh[: min(settings.max_items_per_check, most or settings.max_items_per_check)]:
        size += len(entry.url) + len(entry_identity(entry)) + len(entry.title or "") + 200
        if take and size > CHECKED_BUDGET:
            break
        take.append(entry)
    return take, filtered, len(fresh) - len(take)


class Checker:
    def __init__(
        self,
        *,
        book: SubscriptionBook,
        js: JetStreamContext,
        publisher: Publisher,
        keys: KeyValue,
        resolve: Callable[..., Resolution],
        executor: Executor,
        cookies: CookieStore,
        max_items: int,
        worker: str,
        now: Callable[[], datetime],
        policy: AddressPolicy | None = None,
        cooldowns: Cooldowns | None = None,
        pacing: dict[str, Pacing] | None = None,
    ) -> None:
        self._policy = policy or AddressPolicy()
        # A source that pushes back (429, a bot check) cools its site down for the downloaders too.
        self.cooldowns = cooldowns
        # TUBEFLOW_SITE_PACING: a paced site's backlog becomes jobs a batch at a time, at the site's pace.
        self._pacing = {site: p for site, p in (pacing or {}).items() if p.downloads}
        self._book, self._js, self._publisher, self._keys = book, js, publisher, keys
        self._resolve, self._executor, self._cookies = resolve, executor, cookies
        self._max_items, self._worker, self._now = max_items, worker, now

    async def check(self, view: SubscriptionView, token: CancelToken) -> SubscriptionView:
        """Check ``view`` now; answers with the view after `checked` (Conflict when it changed meanwhile)."""
        started = self._now()
        try:
            resolution = await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: self._resolve_source(view, token)
            )
        except MediaError as exc:
            if token.reason is not None:
                raise
            log.info("subscription %s: check failed: %s: %s", view.id, exc.code, exc.message)
            if self.cooldowns is not None:
                await self.cooldowns.strike(view.settings.url, exc.code, exc.message)
            return await self._checked(
                view, started, SubscriptionCheckedData(error=ErrorInfo(code=exc.code, message=exc.message))
            )
        if resolution.kind != "playlist":
            message = "the source is one video, not a channel, playlist or feed: the subscription paused itself"
            return await self._pause(view, started, NOT_A_PLAYLIST, message, found=1)
        # A feed names what it likes: an entry that is not an http(s) URL, or whose host the address policy refuses,
        # never becomes a job (the downloader would refuse it too, after a job had been made of it).
        entries = [e for e in resolution.entries if self._acceptable(e.url)]
        paced = pacing_for(site_of(view.settings.url), self._pacing)
        take, filtered, remaining = pick(view, entries, PACED_BATCH if paced is not None else None)
        filtered += len(resolution.entries) - len(entries)
        if take and len(view.seen) + len(take) > MAX_SEEN:
            message = f"the source listed more than {MAX_SEEN} entries over time: the subscription paused itself"
            return await self._pause(view, started, TOO_MANY_ENTRIES, message, found=len(resolution.entries))
        new = [
            NewEntry(
                entry_id=entry_identity(entry),
                url=plain_url(entry.url),
                title=entry.title,
                job_id=await self._ensure_job(view, entry, resolution.title, resolution.images),
            )
            for entry in take
            if token.reason is None
        ]
        if token.reason is not None:
            raise MediaError("lease_lost", f"the check stopped: {token.reason}")
        data = SubscriptionCheckedData(
            new=new,
            found=len(resolution.entries),
            filtered=filtered,
            remaining=remaining,
            next_batch_at=_next_batch(self._now(), len(new), paced[1]) if paced is not None and remaining else None,
            source_title=resolution.title,
        )
        if new:
            log.info("subscription %s: %d new entries became jobs", view.id, len(new))
        return await self._checked(view, started, data)

    def _acceptable(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and bool(parts.hostname) and self._policy.url_reason(url) is None

    async def _pause(
        self, view: SubscriptionView, started: datetime, code: str, message: str, found: int
    ) -> SubscriptionView:
        """A check that stops its subscription: `checked` with the error, then `paused` with the reason."""
        error = ErrorInfo(code=code, message=message)
        view = await self._checked(view, started, SubscriptionCheckedData(error=error, found=found))
        paused = make_subscription_event(
            "paused",
            view.id,
            self._now(),
            f"{view.id}:paused:{view.checks}",
            SubscriptionPausedData(reason=code, message=message),
        )
        return await self._book.publish(paused, view)

    def _resolve_source(self, view: SubscriptionView, token: CancelToken) -> Resolution:
        options = view.settings.job.options
        cookies = None
        if options is not None and options.cookies:
            if not self._cookies.exists(options.cookies, options.cookies_owner):
                raise MediaError("cookies_unknown", f"the cookie profile {options.cookies!r} does not exist (any more)")
            cookies = self._cookies.path(options.cookies, options.cookies_owner)
        return self._resolve(view.settings.url, max_items=self._max_items, token=token, cookies=cookies)

    async def _checked(
        self, view: SubscriptionView, started: datetime, data: SubscriptionCheckedData
    ) -> SubscriptionView:
        data = data.model_copy(update={"started_at": started, "worker": self._worker})
        event = make_subscription_event("checked", view.id, self._now(), f"{view.id}:checked:{view.checks + 1}", data)
        return await self._book.publish(event, view)

    async def _ensure_job(
        self,
        view: SubscriptionView,
        entry: Entry,
        source_title: str | None = None,
        images: tuple[str | None, str | None] = (None, None),
    ) -> str:
        """The job of this entry of this subscription: made now, or found again (a check that a scheduler began
        and did not record: its key names the job, and the job's `requested` is published unless it is there).
        Laid out as a show (``library``), its episodes belong to the subscription's show: its name, else the
        source's title (a feed's, a playlist's), unless the job names one; its poster and fanart are the source's own
        images when the site gives them."""
        key = entry_key(view.id, entry_identity(entry))
        job_id = new_job_id()
        try:
            await self._keys.create(key, job_id.encode())
        except KeyWrongLastSequenceError:
            job_id = (await self._keys.get(key)).value.decode()
            if await self._requested(job_id):
                return job_id
        requested = view.settings.job.requested(plain_url(entry.url), title=entry.title)
        if requested.options is not None:
            show = view.settings.name or source_title or view.source_title
            options = requested.options.for_show(show, images)
            requested = requested.model_copy(update={"options": options})
        event = ev.make_event(
            "requested",
            job_id=job_id,
            data=requested.model_copy(update={"owner": view.owner}),
            occurred_at=self._now(),
            event_id=step_event_id(job_id, "requested"),
        )
        await self._publisher.publish(event)
        return job_id

    async def _requested(self, job_id: str) -> bool:
        try:
            await self._js.get_last_msg(STREAM, subject(job_id, "requested"))
        except NotFoundError:
            return False
        return True
