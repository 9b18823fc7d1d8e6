"""Podcast feeds of subscriptions (issue 30): RSS 2.0 with the iTunes podcast tags, one item per finished file of the
subscription's jobs, newest first; the feed and its files are read with the per-feed key in the URL (podcast apps
can't send a token), which the subscription's owner makes, shows again, replaces and revokes."""

from __future__ import annotations

import asyncio
import hmac
import mimetypes
import secrets
import xml.etree.ElementTree as ET
from email.utils import format_datetime
from typing import Annotated
from urllib.parse import quote

from litestar import Controller, Request, Response, get, post
from litestar import delete as delete_route
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, HeaderParameter, Parameter, SkipValidation
from pydantic import BaseModel, Field

from contracts.items import view_files
from contracts.library import xml_text
from contracts.subscriptions import SUBSCRIPTION_ID, SubscriptionFeedData, SubscriptionView
from contracts.views import JobView
from services.api.errors import error_responses
from services.api.media import media_response, resolve_media
from services.api.reads import JobReads
from services.api.routes.subscriptions import _existing, _simple, _write
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


async def _jobs(reads: JobReads, view: SubscriptionView) -> list[JobView]:
    newest = list(reversed(view.jobs))[:MAX_FEED_ITEMS]
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
    rss = ET.Element("rss", {"version": "2.0", "xmlns:itunes": ITUNES})
    channel = ET.SubElement(rss, "channel")
    title = view.settings.name or view.source_title or view.settings.url
    for tag, text in (
        ("title", xml_text(title, 200)),
        ("link", xml_text(view.settings.url, 2000)),
        ("description", xml_text(f"What tubeflow downloaded from {view.settings.url}", 2200)),
        ("itunes:author", "tubeflow"),
        ("itunes:explicit", "false"),
    ):
        ET.SubElement(channel, tag).text = text
    items = 0
    for job in await _jobs(reads, view):
        for item in job.items:
            relative = item.extract.file or item.download.file
            size = item.extract.size if item.extract.file else item.download.size
            if not relative or item.status != "completed":
                continue
            suffix = "." + relative.rsplit(".", 1)[-1].lower() if "." in relative else ""
            url = f"{base}/feeds/subscriptions/{view.id}/files/{job.id}/{quote(relative)}?key={view.feed_key}"
            entry = ET.SubElement(channel, "item")
            ET.SubElement(entry, "title").text = xml_text(item.title or job.title or relative, 300)
            ET.SubElement(entry, "guid", {"isPermaLink": "false"}).text = f"{job.id}/{item.id}"
            when = job.finished_at or job.updated_at
            ET.SubElement(entry, "pubDate").text = format_datetime(when)
            mime = MEDIA_TYPES.get(suffix) or mimetypes.guess_type(relative)[0] or "application/octet-stream"
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
    if job_id not in view.jobs:
        raise NotFoundException("no such file")
    job = await reads.get(job_id)
    relative = path.lstrip("/")
    if job is None or relative not in view_files(job):
        raise NotFoundException("no such file")
    return media_response(resolve_media(settings.media_dir, relative), byte_range)


ROUTES = [FeedController, podcast_feed, podcast_file]
