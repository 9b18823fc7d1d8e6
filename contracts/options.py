"""What a job may ask of a download besides its URL and mode: quality, container, codec, subtitles, thumbnail,
metadata, SponsorBlock, a clip, chapters, names and folders, a cookie profile. The names are the API's contract; the
whole set travels in the `requested` event (so a job replays with what it asked) and on to each `item.queued`.

Everything here is checked before a job exists: a downloader only ever turns these typed values into yt-dlp's own
options (``services/downloader/options.py``), never a string a client wrote straight into yt-dlp."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.ids import is_job_id
from contracts.library import DEFAULT_FOLDERS, MAX_NAME, Library
from contracts.validation import refuse

Quality = Literal["best", "2160", "1440", "1080", "720", "480", "360", "worst"]
Container = Literal["any", "mp4", "mkv", "webm"]
VideoCodec = Literal["any", "h264", "vp9", "av1"]
SubtitleFormat = Literal["srt", "vtt", "ass"]
Thumbnail = Literal["none", "file", "embed"]

# SponsorBlock's segment categories (yt-dlp's SponsorBlockPP.CATEGORIES, plus the highlight, which can only be marked).
SPONSORBLOCK_CATEGORIES = frozenset(
    {"sponsor", "intro", "outro", "selfpromo", "preview", "filler", "interaction", "music_offtopic", "chapter"}
)
SponsorCategory = Literal[
    "all", "sponsor", "intro", "outro", "selfpromo", "preview", "filler", "interaction", "music_offtopic", "chapter"
]
MarkCategory = Literal[
    "all",
    "sponsor",
    "intro",
    "outro",
    "selfpromo",
    "preview",
    "filler",
    "interaction",
    "music_offtopic",
    "chapter",
    "poi_highlight",
]

# A language code as sites use them (BCP 47-ish: "en", "pt-BR", "zh-Hans", "sr-Latn-RS"), or "all".
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}")
_TIME = re.compile(r"(?:(\d{1,2}):)?(?:(\d{1,2}):)?(\d{1,5}(?:\.\d{1,3})?)")
MAX_CLIP_SECONDS = 24 * 3600
PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# yt-dlp's impersonation targets: client[-version][:os[-os_version]], e.g. chrome, chrome-131:macos-14, safari.
IMPERSONATE_TARGET = re.compile(r"[a-z]{2,16}(?:-[0-9][0-9.]{0,15})?(?::[a-z]{2,16}(?:-[0-9][0-9.]{0,15})?)?")


def impersonate_client(target: str) -> str:
    """The browser a target names (``chrome-131:macos-14`` -> ``chrome``)."""
    return target.split(":", 1)[0].split("-", 1)[0]


MAX_FOLDER = 400
MAX_COMPONENT_BYTES = 200
MAX_TEMPLATE = 300
# The fields a name template may use: yt-dlp's info fields that describe the media, the playlist and the section.
TEMPLATE_FIELDS = frozenset(
    """title fulltitle id ext uploader uploader_id channel channel_id creator artist album track track_number
    release_year release_date upload_date timestamp duration duration_string resolution height width fps vcodec acodec
    format_id extractor extractor_key webpage_url_domain playlist playlist_id playlist_title playlist_index
    playlist_count playlist_autonumber autonumber series season season_number episode episode_number
    section_title section_number location genre""".split()
)
# %(field)s, %(field).60B, %(field)03d, %(upload_date>%Y-%m-%d)s — one field, an optional date format, a conversion.
_TEMPLATE_FIELD = re.compile(
    r"%\((?P<key>[a-z_]+)(?:>(?P<date>[%A-Za-z0-9 ._:-]{1,40}))?\)(?P<fmt>[-0 #+]*\d{0,3}(?:\.\d{1,3})?[sdiBfF])"
)
PLAYLIST_TEMPLATE = "%(playlist_title)s/%(playlist_index)03d - %(title)s.%(ext)s"
DEFAULT_TEMPLATE = "%(title)s [%(id)s].%(ext)s"


def seconds(value: str) -> float:
    """'90', '1:30', '1:02:03', '90.5' -> seconds."""
    match = _TIME.fullmatch(value.strip())
    if not match:
        raise ValueError(value)
    parts = [p for p in match.groups() if p is not None]
    total = 0.0
    for part in parts:
        total = total * 60 + float(part)
    return total


def check_path_component(part: str, field: str) -> None:
    """One folder name: not empty, not `.`/`..`, no NUL or control characters, no backslash or drive letter, not
    hidden, at most MAX_COMPONENT_BYTES bytes."""
    if part in ("", ".", ".."):
        raise refuse(f"invalid_{field}", "must not contain empty, '.' or '..' parts")
    if any(ord(c) < 32 or c in '\\:*?"<>|' for c in part):
        raise refuse(f"invalid_{field}", 'must not contain control characters or any of \\ : * ? " < > |')
    if part.startswith("."):
        raise refuse(f"invalid_{field}", "must not contain parts starting with '.'")
    if len(part.encode()) > MAX_COMPONENT_BYTES:
        raise refuse(f"invalid_{field}", f"has a part longer than {MAX_COMPONENT_BYTES} bytes")


def check_folder(value: str | None) -> str | None:
    """A folder relative to the media root (``a/b``), never outside it nor one of tubeflow's job folders."""
    if value is None:
        return None
    value = value.strip().strip("/") if not value.startswith("/") else value
    if value.startswith("/") or re.match(r"[A-Za-z]:", value):
        raise refuse("invalid_folder", "must be a relative path inside the media folder")
    if "\x00" in value:
        raise refuse("invalid_folder", "must not contain NUL")
    parts = [p for p in value.split("/")]
    for part in parts:
        check_path_component(part, "folder")
    if is_job_id(parts[0].lower()):
        raise refuse("invalid_folder", "must not start with a job id: those folders are tubeflow's own")
    return "/".join(parts)


class Subtitles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    languages: list[str] = Field(min_length=1, max_length=20, description='language codes, or ["all"]')
    auto: bool = Field(default=False, description="also take automatic (machine-made) subtitles")
    embed: bool = Field(default=True, description="embed into the video file; false keeps them as files beside it")
    format: SubtitleFormat = "srt"

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        if value == ["all"]:
            return value
        for code in value:
            if not _LANGUAGE.fullmatch(code):
                raise refuse(
                    "invalid_language", f'{code[:20]!r} is not a language code (like "en" or "pt-BR"), or "all" alone'
                )
        return list(dict.fromkeys(value))


class SponsorBlock(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    remove: list[SponsorCategory] = Field(default=[], max_length=12, description="segments cut out of the file")
    mark: list[MarkCategory] = Field(default=[], max_length=12, description="segments marked as chapters")


class Clip(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str | None = Field(default=None, max_length=16, description='"1:30", "90" or "1:02:03.5"; default 0')
    end: str | None = Field(default=None, max_length=16, description="default: the end of the media")
    exact: bool = Field(
        default=False,
        description="cut at exactly these times (re-encodes around the cuts, slower); "
        "otherwise at the nearest keyframes (fast, can start up to a few seconds early)",
    )

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            if seconds(value) > MAX_CLIP_SECONDS:
                raise refuse("invalid_clip", f"times are at most {MAX_CLIP_SECONDS} s")
        except ValueError:
            raise refuse("invalid_clip", 'times look like "90", "1:30" or "1:02:03.5"') from None
        return value.strip()

    @model_validator(mode="after")
    def _order(self) -> "Clip":
        if self.start is None and self.end is None:
            raise refuse("invalid_clip", "needs a start, an end or both")
        if self.start is not None and self.end is not None and seconds(self.end) <= seconds(self.start):
            raise refuse("invalid_clip", "ends before (or where) it starts")
        return self

    def range(self) -> tuple[float, float | None]:
        return seconds(self.start or "0"), seconds(self.end) if self.end is not None else None


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: str | None = Field(default=None, max_length=MAX_FOLDER, description="relative to the media root")
    template: str | None = Field(
        default=None, max_length=MAX_TEMPLATE, description=f"yt-dlp output template, e.g. {DEFAULT_TEMPLATE!r}"
    )

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        return check_folder(value)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.endswith(".%(ext)s"):
            raise refuse("invalid_template", "must end with .%(ext)s")
        if value.startswith("/") or re.match(r"[A-Za-z]:", value):
            raise refuse("invalid_template", "must be relative to the folder")
        for match in re.finditer(r"%(%|\()", value):
            if match.group(1) == "%":
                continue
            field = _TEMPLATE_FIELD.match(value, match.start())
            if field is None:
                raise refuse("invalid_template", f"has a field yt-dlp templates can't take at position {match.start()}")
            if field.group("key") not in TEMPLATE_FIELDS:
                raise refuse("invalid_template", f"field {field.group('key')!r} is not one of the allowed fields")
        # The literal parts, as folders: no '..', no hidden or empty parts (a field's value is sanitized by yt-dlp
        # and checked again after expansion).
        literal = _TEMPLATE_FIELD.sub("x", value)
        for part in literal.split("/"):
            check_path_component(part, "template")
        return value

    @model_validator(mode="after")
    def _not_another_jobs_folder(self) -> "Output":
        # Without a folder the template starts at the media root, beside the jobs' own folders: it must not name one
        # (a file written there would be deleted with that job, issue 23). Expanded names are checked again at
        # placing (a title can spell a job id).
        if self.folder is None and self.template is not None and "/" in self.template:
            if is_job_id(self.template.split("/", 1)[0].lower()):
                raise refuse("invalid_template", "must not start with a job id: those folders are tubeflow's own")
        return self


class DownloadOptions(BaseModel):
    """The per-download options of a job; every default asks for what tubeflow did before they existed (except
    ``metadata``, on by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quality: Quality = Field(
        default="best", description="the highest video at or below this height (a fallback when missing)"
    )
    container: Container = Field(
        default="any", description="the video file's container (streams remuxed, never re-encoded)"
    )
    video_codec: VideoCodec = Field(default="any", description="a preference among the formats, never a hard failure")
    subtitles: Subtitles | None = None
    thumbnail: Thumbnail = "none"
    metadata: bool = Field(default=True, description="embed title, artist, date, description and chapters")
    sponsorblock: SponsorBlock | None = Field(default=None, description="YouTube only (SponsorBlock knows YouTube ids)")
    clip: Clip | None = Field(default=None, description="download only this time range")
    split_chapters: bool = Field(default=False, description="one file per chapter, besides the whole")
    output: Output | None = None
    cookies: str | None = Field(default=None, max_length=64, description="the name of a stored cookie profile")
    cookies_owner: str | None = Field(
        default=None,
        max_length=128,
        description="whose own cookie profile `cookies` names (set by the API from who asked; a request can't set it); "
        "null: one of everyone's",
    )
    impersonate: str | None = Field(
        default=None,
        max_length=64,
        description="send a browser's TLS and HTTP fingerprint (yt-dlp's --impersonate, through curl_cffi) for sites "
        "behind bot protection: a target such as chrome, safari or chrome-131:macos-14; GET /api/info lists the "
        "targets available (`engine.impersonate_targets`)",
    )
    skip_downloaded: bool = Field(
        default=False,
        description="skip items an earlier job already downloaded (same media, same options): the item is `skipped` "
        "with the earlier file, nothing is transferred or linked",
    )
    library: Library | None = Field(
        default=None,
        description="lay the files out for a media server (Jellyfin, Plex, Kodi, Emby): a show's seasons and "
        "episodes, a movie's folder, music by artist and album; with NFO files and artwork",
    )
    schedule: Literal["follow", "ignore"] = Field(
        default="follow",
        description="ignore: the download schedule does not hold this job (its downloads start at once whatever "
        "the window, outside the bandwidth budget and the daily caps; their bytes still count toward today's)",
    )

    @field_validator("cookies")
    @classmethod
    def _cookies(cls, value: str | None) -> str | None:
        if value is not None and not PROFILE_NAME.fullmatch(value):
            raise refuse("invalid_cookies", "must be a profile name: a-z, 0-9, '-' and '_', at most 64")
        return value

    @field_validator("impersonate")
    @classmethod
    def _impersonate(cls, value: str | None) -> str | None:
        if value is not None and not IMPERSONATE_TARGET.fullmatch(value):
            raise refuse(
                "invalid_impersonate", "must be an impersonation target: client[-version][:os[-version]], e.g. chrome"
            )
        return value

    def is_default(self) -> bool:
        return not self.model_dump(exclude_defaults=True)

    def folder(self) -> str | None:
        """The folder under the media root the job's files land in (None: the job's own folder)."""
        if self.output is not None and self.output.folder is not None:
            return self.output.folder
        return DEFAULT_FOLDERS[self.library.kind] if self.library is not None else None

    def for_show(self, name: str | None, images: tuple[str | None, str | None]) -> "DownloadOptions":
        """These options with the show's name and images (poster, fanart; checked links, e.g. from ``show_images``)
        filled in where files are laid out as a show and the job did not name them itself."""
        library = self.library
        if library is None or library.kind != "show":
            return self
        poster, fanart = images
        update = {
            key: value
            for key, value in (("show", (name or "")[:MAX_NAME]), ("poster", poster), ("fanart", fanart))
            if value and getattr(library, key) is None
        }
        return self.model_copy(update={"library": library.model_copy(update=update)}) if update else self


OPTION_FIELDS = tuple(DownloadOptions.model_fields)
