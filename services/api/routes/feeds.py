"""Podcast feeds of subscriptions (issue 30): RSS 2.0 with the iTunes podcast tags, one item per finished file of the
subscription's jobs, newest first; the feed and its files are read with the per-feed key in the URL (podcast apps
can't send a token), which the subscription's owner makes, shows again, replaces and revokes."""

from __future__ import annotations

import asyncio
import hmac
import mimetypes
import secrets
import xml.etree.ElementTree as ET
from datetime import datetime
from email.utils import format_datetime
from typing import Annotated, Callable
from urllib.parse import quote

from litestar import Controller, Request, Response, get, post
from litestar import delete as delete_route
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, HeaderParameter, Parameter, SkipValidation
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.ids import is_job_id
from contracts.items import view_files
from contracts.library import xml_text
from contracts.options import MAX_FOLDER, check_folder
from contracts.subscriptions import SUBSCRIPTION_ID, SubscriptionFeedData, SubscriptionView
from contracts.validation import refuse
from contracts.views import JobView
from services.api.errors import error_responses, field_error
from services.api.hub import JobHub
from services.api.media import media_response, resolve_media
from services.api.ownership import actor, owner_filter
from services.api.presets import PresetBook
from services.api.reads import JobReads
from services.api.routes.subscriptions import _existing, _simple, _write
from services.runtime.feeds import MAX_FEEDS_PER_PERSON, Feed, FeedKind, FeedStore
from services.runtime.settings import Settings
from services.runtime.subscriptions import SubscriptionBook

MAX_FEED_ITEMS = 300
ITUNES = "http://www.itunes.com/dtds/podcast-1.0.dtd"
MEDIA_TYPES = {
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
}
KEY = Annotated[str, Parameter(max_length=100, description="the feed's key, from its URL")]


class FeedInfo(BaseModel):
    url: str | None = Field(description="the feed's URL, key included (null: no feed); give it to a podcast app")


def _url(request: Request, view: SubscriptionView) -> str | None:
    if view.feed_key is None:
        return None
    return f"{str(request.base_url).rstrip('/')}/feeds/subscriptions/{view.id}.xml?key={view.feed_key}"


class FeedController(Controller):
    path = "/api/subscriptions/{subscription_id:str}/feed"
    tags = ["subscriptions"]

    @get("/", summary="The subscription's podcast feed URL (null: none yet)", responses=error_responses(401, 404))
    async def get_feed(
        self,
        request: Request,
        subscription_id: FromPath[str],
        subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
    ) -> FeedInfo:
        return FeedInfo(url=_url(request, _existing(subscriptions, subscription_id, request)))

    @post(
        "/",
        status_code=200,
        summary="Make the subscription's podcast feed (a new key: a URL given out before stops working)",
        responses=error_responses(401, 403, 404, 409),
    )
    async def new_feed(
        self,
        request: Request,
        subscription_id: FromPath[str],
        subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
    ) -> FeedInfo:
        data = SubscriptionFeedData(key=secrets.token_urlsafe(24))
        view = await _write(subscriptions, subscription_id, _simple("feed_changed", data), request)
        return FeedInfo(url=_url(request, view))

    @delete_route(
        "/",
        status_code=200,
        summary="Revoke the subscription's podcast feed (its URL stops working at once)",
        responses=error_responses(401, 403, 404, 409),
    )
    async def revoke_feed(
        self,
        request: Request,
        subscription_id: FromPath[str],
        subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
    ) -> FeedInfo:
        await _write(subscriptions, subscription_id, _simple("feed_changed", SubscriptionFeedData()), request)
        return FeedInfo(url=None)


def _keyed(book: SubscriptionBook, subscription_id: str, key: str) -> SubscriptionView:
    """The subscription whose feed this key opens; 404 for anything else (an unknown id, no feed, a wrong key)."""
    view = book.get(subscription_id) if SUBSCRIPTION_ID.fullmatch(subscription_id) else None
    if view is None or view.deleted or view.feed_key is None:
        raise NotFoundException("no such feed")
    if not hmac.compare_digest(view.feed_key.encode(), key.encode()):
        raise NotFoundException("no such feed")
    return view


async def _views(reads: JobReads, newest: list[str]) -> list[JobView]:
    """These jobs' views (50 read at once), without the deleted ones."""
    found: list[JobView | None] = []
    for start in range(0, len(newest), 50):
        found += await asyncio.gather(*(reads.get(job) for job in newest[start : start + 50]))
    return [job for job in found if job is not None and job.deleted_at is None]


@get(
    "/feeds/subscriptions/{name:str}",
    summary="A subscription's podcast feed: RSS 2.0 with iTunes tags (`<id>.xml?key=`)",
    tags=["subscriptions"],
    media_type="application/rss+xml",
    responses=error_responses(404, 422),
)
async def podcast_feed(
    request: Request,
    name: FromPath[str],
    key: KEY,
    subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
    reads: NamedDependency[JobReads],
) -> Response:
    view = _keyed(subscriptions, name.removesuffix(".xml"), key)
    base = str(request.base_url).rstrip("/")
    title = view.settings.name or view.source_title or view.settings.url
    return _rss(
        title,
        view.settings.url,
        f"What tubeflow downloaded from {view.settings.url}",
        await _views(reads, list(reversed(view.jobs))[:MAX_FEED_ITEMS]),
        lambda job, relative: f"{base}/feeds/subscriptions/{view.id}/files/{job}/{quote(relative)}?key={key}",
    )


def _rss(
    title: str,
    link: str,
    description: str,
    jobs: list[JobView],
    file_url: Callable[[str, str], str],
    holds: Callable[[str], bool] = lambda relative: True,
) -> Response:
    """RSS 2.0 with the iTunes tags: one item per finished file of ``jobs`` (newest first) that the feed ``holds``,
    at most MAX_FEED_ITEMS."""
    rss = ET.Element("rss", {"version": "2.0", "xmlns:itunes": ITUNES})
    channel = ET.SubElement(rss, "channel")
    for tag, text in (
        ("title", xml_text(title, 200)),
        ("link", xml_text(link, 2000)),
        ("description", xml_text(description, 2200)),
        ("itunes:author", "tubeflow"),
        ("itunes:explicit", "false"),
    ):
        ET.SubElement(channel, tag).text = text
    items = 0
    for job in jobs:
        for item in job.items:
            relative = item.extract.file or item.download.file
            size = item.extract.size if item.extract.file else item.download.size
            if not relative or item.status != "completed" or not holds(relative):
                continue
            suffix = "." + relative.rsplit(".", 1)[-1].lower() if "." in relative else ""
            entry = ET.SubElement(channel, "item")
            ET.SubElement(entry, "title").text = xml_text(item.title or job.title or relative, 300)
            ET.SubElement(entry, "guid", {"isPermaLink": "false"}).text = f"{job.id}/{item.id}"
            when = job.finished_at or job.updated_at
            ET.SubElement(entry, "pubDate").text = format_datetime(when)
            mime = MEDIA_TYPES.get(suffix) or mimetypes.guess_type(relative)[0] or "application/octet-stream"
            url = file_url(job.id, relative)
            ET.SubElement(entry, "enclosure", {"url": url, "length": str(size or 0), "type": mime})
            duration = item.download.chosen.duration if item.download.chosen else None
            if duration:
                ET.SubElement(entry, "itunes:duration").text = str(round(duration))
            items += 1
            if items >= MAX_FEED_ITEMS:
                break
        if items >= MAX_FEED_ITEMS:
            break
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(rss, encoding="utf-8")
    return Response(body, media_type="application/rss+xml; charset=utf-8", headers={"Cache-Control": "no-cache"})


@get(
    "/feeds/subscriptions/{subscription_id:str}/files/{job_id:str}/{path:path}",
    summary="A file of a subscription's podcast feed (Range supported)",
    tags=["subscriptions"],
    media_type="application/octet-stream",
    responses=error_responses(400, 404, 416, 422),
)
async def podcast_file(
    subscription_id: FromPath[str],
    job_id: FromPath[str],
    path: FromPath[str],
    key: KEY,
    subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
    reads: NamedDependency[JobReads],
    settings: NamedDependency[Settings],
    byte_range: Annotated[str | None, HeaderParameter(name="Range", max_length=200)] = None,
) -> Response:
    view = _keyed(subscriptions, subscription_id, key)
    return await _file(reads, settings, job_id if job_id in view.jobs else None, path, byte_range, lambda job: True)


async def _file(
    reads: JobReads,
    settings: Settings,
    job_id: str | None,
    path: str,
    byte_range: str | None,
    listed: Callable[[JobView], bool],
) -> Response:
    """A file of the job (which the feed ``listed``), with Range; 404 for anything else."""
    job = await reads.get(job_id) if job_id is not None and is_job_id(job_id) else None
    relative = path.lstrip("/")
    if job is None or job.deleted_at is not None or not listed(job) or relative not in view_files(job):
        raise NotFoundException("no such file")
    return media_response(resolve_media(settings.media_dir, relative), byte_range)


# --- feeds of a folder or a preset ------------------------------------------------------------------------------

# Finished jobs looked at, newest first, for a folder's or a preset's feed (the index is in memory; reading is bounded
# by MAX_FEED_ITEMS views).
MAX_SCANNED = 20_000
SCAN_PAGE = 500
MAX_PRESET_NAME = 64  # as a job request's `preset`


class FeedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(default=None, max_length=MAX_FOLDER, description="a folder under the media root")
    preset: str | None = Field(default=None, max_length=MAX_PRESET_NAME, description="a preset's name")
    new: bool = Field(default=False, description="a new key even if the feed exists (the old URL stops working)")

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        return check_folder(value)

    @model_validator(mode="after")
    def _one(self) -> "FeedRequest":
        if (self.folder is None) == (self.preset is None):
            raise refuse("invalid_feed", "give either folder or preset")
        return self


class FeedEntry(BaseModel):
    kind: FeedKind
    name: str
    url: str = Field(description="the feed's URL, key included; give it to a podcast app")
    created_at: datetime


def _entry(request: Request, feed: Feed) -> FeedEntry:
    base = str(request.base_url).rstrip("/")
    url = f"{base}/feeds/{feed.kind}s/{quote(feed.name, safe='')}.xml?key={feed.key}"
    return FeedEntry(kind=feed.kind, name=feed.name, url=url, created_at=feed.created_at)


class FeedsController(Controller):
    path = "/api/feeds"
    tags = ["feeds"]

    @get("/", summary="Your podcast feeds of folders and presets", responses=error_responses(401))
    async def list_feeds(self, request: Request, feeds: NamedDependency[SkipValidation[FeedStore]]) -> list[FeedEntry]:
        return [_entry(request, feed) for feed in await feeds.of(actor(request))]

    @post(
        "/",
        status_code=200,
        summary="Your podcast feed of a folder (the files that land under it) or of a preset (the jobs made with it): "
        "its URL, made if there is none (`new`: a new key)",
        responses=error_responses(401, 403, 409, 422),
    )
    async def make_feed(
        self,
        request: Request,
        data: FeedRequest,
        feeds: NamedDependency[SkipValidation[FeedStore]],
        presets: NamedDependency[SkipValidation[PresetBook]],
    ) -> FeedEntry:
        kind: FeedKind = "folder" if data.folder is not None else "preset"
        name = data.folder or data.preset or ""
        maker = actor(request)
        if kind == "preset" and presets.get(name, maker) is None:
            raise field_error(422, "preset", "unknown_preset", f"there is no preset named {name!r}")
        found = await feeds.named(kind, name, maker)
        if found is None or data.new:
            if found is None and len(await feeds.of(maker)) >= MAX_FEEDS_PER_PERSON:
                raise field_error(409, kind, "too_many_feeds", f"at most {MAX_FEEDS_PER_PERSON} feeds a person")
            found = await feeds.make(kind, name, maker, owner_filter(request))
        return _entry(request, found)

    @delete_route(
        "/",
        status_code=200,
        summary="Revoke your feed of a folder or a preset (its URL stops working at once)",
        responses=error_responses(401, 403, 404, 422),
    )
    async def revoke_named_feed(
        self,
        request: Request,
        feeds: NamedDependency[SkipValidation[FeedStore]],
        folder: Annotated[str | None, Parameter(max_length=MAX_FOLDER)] = None,
        preset: Annotated[str | None, Parameter(max_length=MAX_PRESET_NAME)] = None,
    ) -> FeedInfo:
        if (folder is None) == (preset is None):
            raise field_error(422, "folder", "invalid_feed", "give either folder or preset")
        kind: FeedKind = "folder" if folder is not None else "preset"
        if not await feeds.revoke(kind, (folder or preset or "").strip("/"), actor(request)):
            raise NotFoundException(f"you have no feed of that {kind}")
        return FeedInfo(url=None)


async def _opened(feeds: FeedStore, kind: FeedKind, name: str, key: str) -> Feed:
    feed = await feeds.opened_by(key)
    if feed is None or feed.kind != kind or feed.name != name:
        raise NotFoundException("no such feed")
    return feed


async def _listed(feed: Feed, hub: JobHub, reads: JobReads) -> list[JobView]:
    """The newest finished jobs the feed lists (at most MAX_FEED_ITEMS), from the index's summaries."""
    summaries = []
    for status in ("completed", "partial"):
        # A page at a time, so that the event loop is held briefly and a feed that fills early stops reading.
        cursor: str | None = None
        matched = 0
        for _ in range(MAX_SCANNED // SCAN_PAGE):
            found, cursor = hub.index.page(
                limit=SCAN_PAGE, status=status, sort="finished", owner=feed.owner, before=cursor
            )
            listed = [s for s in found if feed.lists(s.owner, s.preset, s.options)]
            summaries += listed
            matched += len(listed)
            if cursor is None or matched >= MAX_FEED_ITEMS:
                break
            await asyncio.sleep(0)
    summaries.sort(key=lambda s: s.finished_at or s.created_at, reverse=True)
    return await _views(reads, [s.id for s in summaries[:MAX_FEED_ITEMS]])


async def _named_feed(
    request: Request, kind: FeedKind, name: str, key: str, feeds: FeedStore, hub: JobHub, reads: JobReads
) -> Response:
    feed = await _opened(feeds, kind, name.removesuffix(".xml"), key)
    base = str(request.base_url).rstrip("/")
    title = feed.name.rsplit("/", 1)[-1] if kind == "folder" else f"Preset {feed.name}"
    return _rss(
        title,
        base,
        f"What tubeflow downloaded into {feed.name}" if kind == "folder" else f"Jobs made with preset {feed.name}",
        await _listed(feed, hub, reads),
        lambda job, relative: f"{base}/feeds/files/{job}/{quote(relative)}?key={key}",
        feed.holds,
    )


@get(
    "/feeds/folders/{name:path}",
    summary="A folder's podcast feed: RSS 2.0 with iTunes tags (`<folder>.xml?key=`)",
    tags=["feeds"],
    media_type="application/rss+xml",
    responses=error_responses(404, 422),
)
async def folder_feed(
    request: Request,
    name: FromPath[str],
    key: KEY,
    feeds: NamedDependency[SkipValidation[FeedStore]],
    hub: NamedDependency[SkipValidation[JobHub]],
    reads: NamedDependency[JobReads],
) -> Response:
    return await _named_feed(request, "folder", name.strip("/"), key, feeds, hub, reads)


@get(
    "/feeds/presets/{name:str}",
    summary="A preset's podcast feed: RSS 2.0 with iTunes tags (`<preset>.xml?key=`)",
    tags=["feeds"],
    media_type="application/rss+xml",
    responses=error_responses(404, 422),
)
async def preset_feed(
    request: Request,
    name: FromPath[str],
    key: KEY,
    feeds: NamedDependency[SkipValidation[FeedStore]],
    hub: NamedDependency[SkipValidation[JobHub]],
    reads: NamedDependency[JobReads],
) -> Response:
    return await _named_feed(request, "preset", name, key, feeds, hub, reads)


@get(
    "/feeds/files/{job_id:str}/{path:path}",
    summary="A file of a folder's or a preset's podcast feed (Range supported)",
    tags=["feeds"],
    media_type="application/octet-stream",
    responses=error_responses(400, 404, 416, 422),
)
async def feed_file(
    job_id: FromPath[str],
    path: FromPath[str],
    key: KEY,
    feeds: NamedDependency[SkipValidation[FeedStore]],
    reads: NamedDependency[JobReads],
    settings: NamedDependency[Settings],
    byte_range: Annotated[str | None, HeaderParameter(name="Range", max_length=200)] = None,
) -> Response:
    feed = await feeds.opened_by(key)
    return await _file(
        reads,
        settings,
        job_id if feed is not None else None,
        path,
        byte_range,
        lambda job: (
            feed is not None and feed.lists(job.owner, job.preset, job.options) and feed.holds(path.lstrip("/"))
        ),
    )


ROUTES = [
    FeedController,
    podcast_feed,
    podcast_file,
    FeedsController,
    folder_feed,
    preset_feed,
    feed_file,
]
