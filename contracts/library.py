"""A media-server library (issue 30): how a download lands for Jellyfin, Plex, Kodi and Emby, and the NFO files
they read (Kodi's format: ``tvshow.nfo``, ``episodedetails``, ``movie``). Pure: the option, the names and the XML.

Everything a stranger controls (titles, descriptions, channel names) is cut to a bound, stripped of characters XML
1.0 cannot hold, and escaped by the XML writer; a name is made a file name by the engine (``services/engine``)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.text import Title

LibraryKind = Literal["show", "movie", "music"]
# What an NFO keeps of a description (a site's can be long) and of a title.
MAX_PLOT = 10_000
MAX_NAME = 200
# Characters XML 1.0 can't carry at all (not even escaped): C0 controls but tab, LF, CR; surrogates; U+FFFE/FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# An episode's code in a file name: S2026E120301 (season = year, episode = month, day, number that day).
EPISODE_CODE = re.compile(r"S(\d{4})E(\d{2})(\d{2})(\d{2})")
DEFAULT_FOLDERS = {"show": "Shows", "movie": "Movies", "music": "Music"}
MAX_IMAGE_URL = 2048


class Library(BaseModel):
    """A job's (or preset's) ``library`` option: lay its files out for a media server, with NFO files and artwork."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: LibraryKind = Field(description="show: a channel or playlist as a TV show; movie; music (tags, artist/album)")
    nfo: bool = Field(default=True, description="write Kodi-style NFO files (Jellyfin, Emby and Kodi read them)")
    artwork: bool = Field(
        default=True, description="write the episode's thumbnail, and the show's poster.jpg and fanart.jpg"
    )
    show: Title | None = Field(
        default=None, max_length=MAX_NAME, description="the show's name (default: the channel, else the playlist)"
    )
    poster: str | None = Field(
        default=None,
        max_length=MAX_IMAGE_URL,
        description="http(s) URL of the show's poster (default: the channel's or playlist's own image when the site "
        "gives one, else the first episode's thumbnail); read once, when the show's poster.jpg is made",
    )
    fanart: str | None = Field(
        default=None,
        max_length=MAX_IMAGE_URL,
        description="http(s) URL of the show's background (default: the channel's banner, else the poster)",
    )

    @field_validator("poster", "fanart")
    @classmethod
    def _image_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
            raise ValueError("must be an http or https URL without spaces")
        return value


def show_images(info: dict[str, Any], base: str | None = None) -> tuple[str | None, str | None]:
    """The show's own poster and background from a channel's or playlist's extraction (``base``: the page, for
    relative links): a channel's avatar and banner (YouTube: ``avatar_uncropped``, ``banner_uncropped``), else its
    largest image, else its ``thumbnail``; (None, None) when the site gives none. Only http(s) links."""

    def usable(url: object) -> str | None:
        if not isinstance(url, str) or not url or len(url) > MAX_IMAGE_URL:
            return None
        full = urljoin(base, url) if base else url
        return full if urlsplit(full).scheme in ("http", "https") else None

    def size(thumbnail: dict[str, Any]) -> tuple[int, int]:
        width, height = thumbnail.get("width"), thumbnail.get("height")
        area = width * height if isinstance(width, int) and isinstance(height, int) else 0
        preference = thumbnail.get("preference")
        return (area, preference if isinstance(preference, int) else 0)

    thumbnails = [t for t in (info.get("thumbnails") or [])[:200] if isinstance(t, dict) and usable(t.get("url"))]

    def named(word: str) -> str | None:
        found = [t for t in thumbnails if word in str(t.get("id") or "")]
        uncropped = [t for t in found if "uncropped" in str(t.get("id"))]
        return usable(max(uncropped or found, key=size)["url"]) if found else None

    avatar, banner = named("avatar"), named("banner")
    others = [t for t in thumbnails if not any(w in str(t.get("id") or "") for w in ("avatar", "banner"))]
    poster = avatar or (usable(max(others, key=size)["url"]) if others else None) or usable(info.get("thumbnail"))
    return poster, banner or poster


def xml_text(value: object, limit: int) -> str:
    """Text fit for an XML element: characters XML cannot hold removed, cut to ``limit`` characters."""
    text = _NOT_XML.sub("", str(value or ""))
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Episode:
    """What an episode's NFO says (from the site's metadata)."""

    show: str
    title: str
    season: int
    episode: int
    aired: date | None
    media_id: str
    site: str
    plot: str = ""
    runtime_s: float | None = None
    studio: str | None = None
    url: str | None = None
    thumb: str | None = None  # the artwork file's name beside the episode
    extra: dict[str, str] = field(default_factory=dict)


def episode_number(day: date, nth: int) -> int:
    """The episode within its season (a year): month, day and the day's number, e.g. 12 March, second: 31202."""
    return day.month * 10000 + day.day * 100 + nth


def episode_code(day: date, nth: int) -> str:
    return f"S{day.year}E{day.month:02d}{day.day:02d}{nth:02d}"


def _tree(root: str, fields: list[tuple[str, object, int] | tuple[str, object, int, dict[str, str]]]) -> bytes:
    element = ET.Element(root)
    for entry in fields:
        name, value, limit = entry[0], entry[1], entry[2]
        if value is None or value == "":
            continue
        child = ET.SubElement(element, name, entry[3] if len(entry) > 3 else {})  # type: ignore[misc]
        child.text = xml_text(value, limit)
    ET.indent(element)
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(element, encoding="utf-8") + b"\n"


def episode_nfo(episode: Episode) -> bytes:
    """Kodi's ``<episodedetails>``: title, show, season and episode, aired, plot, runtime (minutes), the site's id."""
    return _tree(
        "episodedetails",
        [
            ("title", episode.title, MAX_NAME),
            ("showtitle", episode.show, MAX_NAME),
            ("season", episode.season, 10),
            ("episode", episode.episode, 10),
            ("aired", episode.aired.isoformat() if episode.aired else None, 10),
            ("premiered", episode.aired.isoformat() if episode.aired else None, 10),
            ("plot", episode.plot, MAX_PLOT),
            ("runtime", max(1, round(episode.runtime_s / 60)) if episode.runtime_s else None, 10),
            ("studio", episode.studio, MAX_NAME),
            ("uniqueid", episode.media_id, MAX_NAME, {"type": xml_text(episode.site, 50) or "site", "default": "true"}),
            ("thumb", episode.thumb, MAX_NAME),
            ("trailer", None, 0),
        ],
    )


def show_nfo(
    title: str, site: str, show_id: str | None, plot: str = "", premiered: date | None = None, studio: str | None = None
) -> bytes:
    """Kodi's ``<tvshow>``: title, plot, studio, the site's id of the channel or playlist, premiered."""
    return _tree(
        "tvshow",
        [
            ("title", title, MAX_NAME),
            ("plot", plot, MAX_PLOT),
            ("studio", studio or site, MAX_NAME),
            ("premiered", premiered.isoformat() if premiered else None, 10),
            ("uniqueid", show_id, MAX_NAME, {"type": xml_text(site, 50) or "site", "default": "true"}),
            ("thumb", "poster.jpg", 20, {"aspect": "poster"}),
        ],
    )


def movie_nfo(
    title: str, site: str, media_id: str, plot: str = "", premiered: date | None = None, runtime_s: float | None = None,
    studio: str | None = None,
) -> bytes:  # fmt: skip
    """Kodi's ``<movie>``."""
    return _tree(
        "movie",
        [
            ("title", title, MAX_NAME),
            ("plot", plot, MAX_PLOT),
            ("premiered", premiered.isoformat() if premiered else None, 10),
            ("year", premiered.year if premiered else None, 4),
            ("runtime", max(1, round(runtime_s / 60)) if runtime_s else None, 10),
            ("studio", studio, MAX_NAME),
            ("uniqueid", media_id, MAX_NAME, {"type": xml_text(site, 50) or "site", "default": "true"}),
        ],
    )
