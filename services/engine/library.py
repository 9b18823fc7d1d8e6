"""A finished download laid out for a media server (issue 30, ``library`` option; contracts/library.py has the names
and the NFO format):

- show: ``<folder>/<Show>/Season <year>/<Show> - S<year>E<MMDD><nn> - <title> [<id>].<ext>``, ``<base>.nfo`` and
  ``<base>-thumb.jpg`` beside it, ``tvshow.nfo``, ``poster.jpg`` and ``fanart.jpg`` in the show's folder (made once,
  from the first episode's thumbnail unless the site gives the show's own). ``nn`` counts the day's episodes in the
  order they land; a video already in the season keeps its number, and two landing at once never share one (a
  name is taken by a hard link, which fails when it exists).
- movie: ``<folder>/<Title> (<year>)/<Title> (<year>) [<id>].<ext>`` with ``movie.nfo`` and ``poster.jpg``.
- music: ``<folder>/<Artist>/<Album>/<track> - <title>.<ext>`` (the tags are the metadata option's).

The show's ``<folder>`` is the job's ``output.folder``, else "Shows" ("Movies", "Music"). Nothing lands outside it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import imageio_ffmpeg

from contracts.library import (
    DEFAULT_FOLDERS,
    EPISODE_CODE,
    Episode,
    Library,
    episode_code,
    episode_nfo,
    episode_number,
    movie_nfo,
    show_nfo,
)
from services.engine.outputs import _fit, _link_free, _visible
from services.runtime.failures import MediaError

log = logging.getLogger("tubeflow.library")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_ARTWORK_BYTES = 10 * 1024 * 1024
ARTWORK_TIMEOUT = 20.0
# A claim on making the show's artwork older than this was left by a process that died (reading and converting an
# image takes at most the read's timeout and ffmpeg's).
STALE_CLAIM = 300.0
_UNSAFE = re.compile(r'[/\\:*?"<>|\x00-\x1f]')


def name_part(value: object, fallback: str) -> str:
    """A folder or file name part from a site's text: no separators or characters Windows shares refuse, no leading
    dots, fitted to a name's length."""
    text = _UNSAFE.sub("_", str(value or "")).strip(" .") or fallback
    return _fit(_visible(text, file=False))


def aired(info: dict[str, Any]) -> date | None:
    for key in ("upload_date", "release_date"):
        value = str(info.get(key) or "")
        if re.fullmatch(r"\d{8}", value):
            try:
                return date(int(value[:4]), int(value[4:6]), int(value[6:]))
            except ValueError:
                continue
    stamp = info.get("release_timestamp") or info.get("timestamp")
    if isinstance(stamp, (int, float)):
        try:
            return datetime.fromtimestamp(stamp, timezone.utc).date()
        except (OverflowError, OSError, ValueError):
            return None
    return None


def show_of(library: Library, info: dict[str, Any], playlist_title: str | None) -> str:
    return str(
        library.show
        or info.get("channel")
        or info.get("uploader")
        or playlist_title
        or info.get("playlist_title")
        or info.get("webpage_url_domain")
        or info.get("extractor_key")
        or "Videos"
    )


def site_of(info: dict[str, Any]) -> str:
    return str(info.get("extractor_key") or info.get("extractor") or "site").lower()[:50]


def place_in_library(
    info: dict[str, Any],
    main: Path,
    others: list[Path],
    library: Library,
    root: Path,
    folder: str | None,
    playlist_title: str | None,
    fetch: Any = None,
) -> tuple[Path, list[Path]]:
    """Move the download (and the files made beside it, by suffix) into the library; write its NFO files and
    artwork. ``fetch(url) -> bytes``: reads a thumbnail the site gives (through yt-dlp's own requests)."""
    base_folder = (root / (folder or DEFAULT_FOLDERS[library.kind])).resolve()
    if not base_folder.is_relative_to(root.resolve()):
        raise MediaError("invalid_folder", "the library folder leads outside the media folder")
    title = str(info.get("title") or info.get("id") or main.stem)
    media_id = str(info.get("id") or main.stem)
    day = aired(info)
    if library.kind == "show":
        show = name_part(show_of(library, info, playlist_title), "Videos")
        when = day or datetime.now(timezone.utc).date()
        season = base_folder / show / f"Season {when.year}"
        season.mkdir(parents=True, exist_ok=True)
        wanted, nth = _episode_slot(season, show, when, title, media_id, main.suffix, main)
        placed = _beside(wanted, main, others)
        base = wanted.name[: -len(main.suffix)] if main.suffix else wanted.name
        made: list[Path] = []
        thumb = _artwork(library, info, wanted, season / f"{base}-thumb.jpg", others, fetch)
        if thumb is not None:
            made.append(thumb)
        if library.artwork:
            _show_art(library, season.parent, thumb, fetch)
        if library.nfo:
            episode = Episode(
                show=show_of(library, info, playlist_title),
                title=title,
                season=when.year,
                episode=episode_number(when, nth),
                aired=day,
                media_id=media_id,
                site=site_of(info),
                plot=str(info.get("description") or ""),
                runtime_s=info.get("duration"),
                studio=str(info.get("channel") or info.get("uploader") or "") or None,
                url=info.get("webpage_url"),
                thumb=thumb.name if thumb is not None else None,
            )
            made.append(_write_new(season / f"{base}.nfo", episode_nfo(episode), replace=True))
            show_id = info.get("channel_id") or info.get("uploader_id") or info.get("playlist_id")
            _write_new(
                season.parent / "tvshow.nfo",
                show_nfo(episode.show, episode.site, str(show_id) if show_id else None, premiered=day),
            )
        return wanted, placed + made
    if library.kind == "movie":
        year = f" ({day.year})" if day else ""
        name = name_part(title, media_id)
        home = base_folder / _fit(f"{name}{year}")
        home.mkdir(parents=True, exist_ok=True)
        wanted = _free(home, _fit(f"{name}{year} [{name_part(media_id, 'id')}]"), main.suffix, main)
        placed = _beside(wanted, main, others)
        made = []
        thumb = _artwork(library, info, wanted, home / "poster.jpg", others, fetch)
        if thumb is not None:
            made.append(thumb)
        if library.nfo:
            nfo = movie_nfo(
                title, site_of(info), media_id, str(info.get("description") or ""), day, info.get("duration"),
                str(info.get("channel") or info.get("uploader") or "") or None,
            )  # fmt: skip
            made.append(_write_new(home / "movie.nfo", nfo, replace=True))
        return wanted, placed + made
    artist = name_part(
        info.get("artist") or info.get("creator") or info.get("uploader") or info.get("channel"), "Artist"
    )
    album = name_part(info.get("album") or playlist_title or info.get("playlist_title"), "Singles")
    home = base_folder / artist / album
    home.mkdir(parents=True, exist_ok=True)
    track = info.get("track_number") or info.get("playlist_index")
    prefix = f"{int(track):02d} - " if isinstance(track, (int, float)) or str(track or "").isdigit() else ""
    wanted = _free(home, _fit(prefix + name_part(info.get("track") or title, media_id)), main.suffix, main)
    placed = _beside(wanted, main, others)
    thumb = _artwork(library, info, wanted, home / "cover.jpg", others, fetch) if library.artwork else None
    return wanted, placed + ([thumb] if thumb is not None else [])


def _episode_slot(
    season: Path, show: str, day: date, title: str, media_id: str, suffix: str, main: Path
) -> tuple[Path, int]:
    """The episode's file, moved there: the number this video already has in the season, else the day's next free
    one (a number is taken by the link that puts the file there: two episodes landing at once can't share one)."""
    tag = f"[{name_part(media_id, 'id')}]"
    day_code = f"S{day.year}E{day.month:02d}{day.day:02d}"
    taken: set[int] = set()
    mine: int | None = None
    for path in season.iterdir():
        m = EPISODE_CODE.search(path.name)
        if m is None or not m.group(0).startswith(day_code):
            continue
        taken.add(int(m.group(4)))
        if tag in path.name and mine is None:
            mine = int(m.group(4))
    candidates = ([mine] if mine is not None else []) + [n for n in range(1, 100) if n not in taken]
    for nth in candidates:
        name = _fit(f"{show} - {episode_code(day, nth)} - {name_part(title, media_id)} {tag}{suffix}")
        target = season / name
        if target.exists() and nth == mine:
            target.unlink()  # the same video again: the new file takes its place
        if _link_free(main, target):
            return target, nth
    raise MediaError("name_taken", f"{show}: every episode number of {day.isoformat()} is taken")


def _free(folder: Path, base: str, suffix: str, main: Path) -> Path:
    for n in range(1, 1000):
        target = folder / _fit((base if n == 1 else f"{base} ({n})") + suffix)
        if _link_free(main, target):
            return target
    raise MediaError("name_taken", f"{base}{suffix} and its next 998 variants are all taken")


def _beside(wanted: Path, main: Path, others: list[Path]) -> list[Path]:
    """The files made beside the download, moved beside its new name (keeping what follows the old name)."""
    base_main = main.name[: -len(main.suffix)] if main.suffix else main.name
    base = wanted.name[: -len(wanted.suffix)] if wanted.suffix else wanted.name
    placed = []
    for other in others:
        rest = other.name[len(base_main) :] if other.name.startswith(base_main) else "-" + other.name
        destination = wanted.with_name(_fit(base + rest))
        placed.append(destination if _link_free(other, destination) else other)
    return placed


def _temporary(path: Path, kind: str = "tmp") -> Path:
    """A name beside ``path`` no other writer uses: calls share slot processes (lanes), so a process id is not
    enough (two episodes landing at once both write the show's poster)."""
    return path.with_name(f".{path.name}.{kind}{os.getpid()}-{secrets.token_hex(4)}")


def _write_new(path: Path, data: bytes, replace: bool = False) -> Path:
    """Write ``path`` whole (a temporary file renamed); without ``replace``, only when it does not exist yet."""
    if path.exists() and not replace:
        return path
    temporary = _temporary(path)
    temporary.write_bytes(data)
    if replace:
        os.replace(temporary, path)
    elif not _link_free(temporary, path):
        temporary.unlink(missing_ok=True)
    return path


def _copy_new(source: Path, target: Path) -> None:
    """The show's artwork from an episode's, once; artwork is a nicety: the episode lands without it."""
    if not target.exists():
        try:
            _write_new(target, source.read_bytes())
        except OSError as exc:
            log.info("artwork %s not written: %s", target, exc)


def _artwork(
    library: Library, info: dict[str, Any], media: Path, target: Path, others: list[Path], fetch: Any
) -> Path | None:
    """``target`` as a JPEG: the thumbnail yt-dlp wrote, else the site's (read with ``fetch``), else a frame of the
    video; None when there is none (audio without a cover) or artwork was not asked for."""
    if not library.artwork:
        return None
    source: Path | None = next((p for p in others if p.suffix.lower() in IMAGE_SUFFIXES), None)
    if source is not None:
        made = _to_jpeg(source, target)
    elif fetch is not None and info.get("thumbnail") and _fetched_jpeg(str(info["thumbnail"]), target, fetch):
        made = True
    else:  # a frame a tenth in (past a black opening), else the first
        made = _to_jpeg(media, target, seconds=info.get("duration")) or _to_jpeg(media, target, seconds=0)
    return target if made else None


def _show_art(library: Library, show: Path, thumb: Path | None, fetch: Any) -> None:
    """The show's ``poster.jpg`` and ``fanart.jpg``, made once: from the images the job names (the channel's or
    playlist's own, filled in by the resolve or the subscription), else from the episode's artwork."""
    for name, url in (("poster.jpg", library.poster), ("fanart.jpg", library.fanart or library.poster)):
        target = show / name
        claim = show / f".{name}.making"
        if target.exists():
            continue
        if not _claim(claim):  # one episode makes it (episodes land at once: the image is read from the site once)
            continue
        try:
            if url and fetch is not None and _fetched_jpeg(url, target, fetch):
                continue
            if thumb is not None:
                _copy_new(thumb, target)
        finally:
            claim.unlink(missing_ok=True)


def _claim(path: Path) -> bool:
    """``path`` made now, by this caller alone; one left by a process that died while making art is taken over."""
    for _ in range(2):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return True
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime < STALE_CLAIM:
                    return False
                path.unlink()
            except FileNotFoundError:
                pass
        except OSError as exc:
            log.info("%s not made: %s", path, exc)
            return False
    return False


def _fetched_jpeg(url: str, target: Path, fetch: Any) -> bool:
    """``target`` as a JPEG of the image at ``url`` (read with ``fetch``, bounded); False when it can't be had."""
    try:
        data = fetch(url)
    except Exception as exc:  # artwork is a nicety: what it belongs to lands without it
        log.info("image %s not read: %s", url[:200], exc)
        return False
    if not data:
        return False
    source = _temporary(target, "src")
    try:
        source.write_bytes(data[:MAX_ARTWORK_BYTES])
        return _to_jpeg(source, target)
    except OSError as exc:
        log.info("image %s not written: %s", url[:200], exc)
        return False
    finally:
        source.unlink(missing_ok=True)


def _to_jpeg(source: Path, target: Path, seconds: float | None = None) -> bool:
    """``source`` (an image, or a video's frame ``seconds`` x 0.1 in, at most a minute) as ``target``, a JPEG."""
    at = ["-ss", f"{min(max(seconds * 0.1, 0.0), 60.0):.2f}"] if seconds else []
    temporary = _temporary(target, "jpg")
    temporary = temporary.with_name(temporary.name + ".jpg")  # ffmpeg picks the image's format by the name
    try:
        done = subprocess.run(
            [
                imageio_ffmpeg.get_ffmpeg_exe(),
                "-v",
                "error",
                "-y",
                *at,
                "-i",
                str(source),
                "-frames:v",
                "1",
                "-q:v",
                "3",
                str(temporary),
            ],
            capture_output=True,
            timeout=ARTWORK_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("artwork %s not made: %s", target.name, exc)
        return False
    if done.returncode != 0 or not temporary.is_file():
        log.info("artwork %s not made: %s", target.name, done.stderr[-300:])
        temporary.unlink(missing_ok=True)
        return False
    os.replace(temporary, target)
    return True
