"""A local package index for engine updates (issue 27): the installed yt-dlp rebuilt as a wheel of another version
(or one that fails to import), in a PEP 503 "simple" folder served on loopback."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import zipfile
from pathlib import Path
from typing import Iterator

from services.engine.updates import serve_folder


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def ytdlp_wheel(folder: Path, version: str, *, broken: bool = False) -> Path:
    """The installed yt-dlp as ``yt_dlp-<version>-py3-none-any.whl`` in ``folder``, saying ``version``;
    ``broken``: its package raises on import."""
    import yt_dlp

    source = Path(yt_dlp.__file__).parent
    wheel = folder / f"yt_dlp-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:

        def add(name: str, data: bytes) -> None:
            archive.writestr(name, data)
            records.append(_record_line(name, data))

        for path in sorted(source.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(source).as_posix()
            data = path.read_bytes()
            if relative == "version.py":
                data = re.sub(rb"__version__ = '[^']*'", f"__version__ = '{version}'".encode(), data)
            if relative == "__init__.py" and broken:
                data = b"raise ImportError('this yt-dlp is broken on purpose')\n"
            add(f"yt_dlp/{relative}", data)
        info = f"yt_dlp-{version}.dist-info"
        add(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: yt-dlp\nVersion: {version}\n".encode())
        add(
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: tubeflow-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        records.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return wheel


@contextlib.contextmanager
def package_index(root: Path) -> Iterator[str]:
    """Serve ``root`` (its wheels listed under ``simple/<project>/``) on 127.0.0.1; the index URL."""

    for wheel in root.glob("*.whl"):
        project = wheel.name.split("-")[0].replace("_", "-").lower()
        page = root / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        links = "".join(
            f'<a href="../../{w.name}">{w.name}</a>\n' for w in sorted(root.glob(f"{wheel.name.split('-')[0]}-*.whl"))
        )
        (page / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    with serve_folder(root) as base:
        yield f"{base}/simple/"
