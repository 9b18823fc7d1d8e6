"""What a finished download made, and where it goes: the files beside the main one (subtitles, thumbnail, chapters),
the format yt-dlp chose, and the move into the folder and name a job asked for (``output``), never over another
file and never outside the media root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from contracts.ids import is_job_id
from contracts.options import DEFAULT_TEMPLATE, PLAYLIST_TEMPLATE, Output
from services.runtime.failures import MediaError

PARTIAL_SUFFIXES = (".part", ".ytdl", ".temp", ".frag")
MAX_NAME_BYTES = 200


def made_files(info: dict[str, Any], main: Path) -> list[Path]:
    """The files of the download other than ``main`` that are still on disk: subtitles and thumbnails written as
    files (embedded ones are gone by now), and one file per chapter."""
    found: list[Path] = []
    for sub in (info.get("requested_subtitles") or {}).values():
        found.append(Path(sub.get("filepath") or ""))
    for group in (info.get("thumbnails") or [], info.get("chapters") or []):
        found.extend(Path(entry["filepath"]) for entry in group if isinstance(entry, dict) and entry.get("filepath"))
    unique = []
    for path in found:
        if str(path) not in ("", ".") and path != main and path.is_file() and path not in unique:
            unique.append(path)
    return unique


def chosen_format(
    info: dict[str, Any], measure: Callable[[], dict[str, Any]] | None = None, size: int | None = None
) -> dict[str, Any]:
    """What yt-dlp picked: the format id(s), container, the video and audio streams' properties, the length and the
    bitrate (``size`` over the length, when yt-dlp gave no bitrate). What yt-dlp did not know is taken from
    ``measure`` (the file made, probed), if given: called only then.
    A "none" codec is yt-dlp knowing there is no such stream, and stays."""
    picked = {key: info.get(key) for key in ("format_id", "ext", "height", "width", "fps", "vcodec", "acodec")}
    picked.update(duration=media_length(info), bitrate=info.get("tbr"))
    for fmt in info.get("requested_formats") or []:
        for key in ("height", "width", "fps", "vcodec"):
            if fmt.get("vcodec") not in (None, "none") and picked.get(key) in (None, "none"):
                picked[key] = fmt.get(key)
        if fmt.get("acodec") not in (None, "none") and picked.get("acodec") in (None, "none"):
            picked["acodec"] = fmt.get("acodec")
    if picked["bitrate"] is None and picked["duration"] and size:
        picked["bitrate"] = round(size * 8 / picked["duration"] / 1000, 1)  # over the whole file
    video = picked["vcodec"] != "none"
    wanted = ("vcodec", "acodec", "duration", "bitrate", *(("height", "width") if video else ()))
    if measure is not None and any(picked.get(key) in (None, "") for key in wanted):
        for key, value in measure().items():
            if picked.get(key) in (None, "") and (video or key not in ("height", "width", "fps")):
                picked[key] = value
    return {key: value for key, value in picked.items() if value not in (None, "none", "")}


def media_length(info: dict[str, Any]) -> float | None:
    """The media's length in seconds: as the site says, else summed over a stream's fragments (a DASH or HLS
    manifest says how long each is; the longest stream counts)."""
    if info.get("duration"):
        return info["duration"]
    lengths = [
        sum(fragment.get("duration") or 0.0 for fragment in fmt.get("fragments") or [] if isinstance(fragment, dict))
        for fmt in info.get("requested_formats") or [info]
    ]
    longest = max(lengths, default=0.0)
    return round(longest, 3) if longest else None


def _fit(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """A file or folder name cut to ``limit`` bytes (keeping the extension of a file name), never empty."""
    if len(name.encode()) <= limit:
        return name or "_"
    stem, dot, ext = name.rpartition(".") if "." in name[1:] else (name, "", "")
    keep = limit - len((dot + ext).encode())
    cut = stem.encode()[: max(keep, 1)].decode(errors="ignore")
    return (cut or "_") + dot + ext


def _relative_name(ydl: Any, template: str, info: dict[str, Any]) -> list[str]:
    """The template expanded for ``info`` with yt-dlp's sanitising of each field (no separators inside a value),
    as path parts, each fitted to a file name's length."""
    restricted = ydl.params.get("restrictfilenames")
    ydl.params["restrictfilenames"] = False  # spaces and the like are fine in names people asked for
    try:
        expanded = ydl.evaluate_outtmpl(template, info, sanitize=True)
    finally:
        ydl.params["restrictfilenames"] = restricted
    parts = [part for part in expanded.replace("\\", "_").split("/") if part not in ("", ".")]
    if not parts or any(part == ".." for part in parts):
        raise MediaError("invalid_template", f"the name template gave {expanded[:200]!r}, not a file name")
    return [_fit(_visible(part.replace("\x00", "_"), file=n == len(parts) - 1)) for n, part in enumerate(parts)]


def _visible(part: str, file: bool) -> str:
    """A value that starts with a dot (a title such as ".hack//SIGN") would make a hidden file or folder, which
    people and media servers do not see: the leading dots go (yt-dlp keeps them). A file name that was nothing but
    dots before its extension keeps the extension."""
    visible = part.lstrip(".")
    if file and visible != part and "." not in visible:
        return f"_.{visible}" if visible else "_"
    return visible or "_"


def _link_free(source: Path, target: Path) -> bool:
    """Move ``source`` to ``target`` unless something is there already (link then unlink: atomic, no overwrite)."""
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    source.unlink()
    return True


def place(
    ydl: Any, info: dict[str, Any], main: Path, others: list[Path], output: Output, root: Path, playlist: bool
) -> tuple[Path, list[Path]]:
    """Move the download into ``root/<folder>/<template>``: the main file and the files made beside it, which keep
    their suffixes (``.en.srt``, ``.jpg``, ``-chapter-001 …``). A name taken by another file gets " (2)", " (3)", …;
    nothing lands outside the folder."""
    folder = (root / (output.folder or "")).resolve()
    template = output.template or (PLAYLIST_TEMPLATE if playlist else DEFAULT_TEMPLATE)
    parts = _relative_name(ydl, template, {**info, "ext": main.suffix.lstrip(".")})
    if output.folder is None and len(parts) > 1 and is_job_id(parts[0].lower()):
        raise MediaError(
            "invalid_template", f"the name template gave {parts[0]!r}/…: a job's folder, not the job's own"
        )
    target = folder.joinpath(*parts)
    if not target.resolve().is_relative_to(folder) or not folder.is_relative_to(root.resolve()):
        raise MediaError("invalid_template", "the name template leads outside the folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    base_main = main.name[: -len(main.suffix)] if main.suffix else main.name
    base_target = target.name[: -len(target.suffix)] if target.suffix else target.name
    for n in range(1, 1000):
        base = base_target if n == 1 else f"{base_target} ({n})"
        wanted = target.with_name(_fit(base + main.suffix))
        if _link_free(main, wanted):
            break
    else:
        raise MediaError("name_taken", f"{target.name} and its next 998 variants are all taken")
    placed = []
    final_base = wanted.name[: -len(main.suffix)] if main.suffix else wanted.name
    for other in others:
        suffix = other.name[len(base_main) :] if other.name.startswith(base_main) else "-" + other.name
        destination = wanted.with_name(_fit(final_base + suffix))
        placed.append(destination if _link_free(other, destination) else other)
    return wanted, placed
