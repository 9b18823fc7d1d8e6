"""Cookie profiles: Netscape ``cookies.txt`` files a user uploads so downloads of a site that wants a login work.

Stored under ``<data dir>/cookies/<profile>.txt`` (folder 0700, file 0600), which the API and the downloaders share
(one data dir with `tubeflow up`, the media volume on Kubernetes). Never in an event (a job names its profile only),
never logged, never returned: what the API tells about a profile is its domains, how many cookies, and dates. A
validation error says which line is wrong and why, never what it holds."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from contracts.options import PROFILE_NAME

MAX_COOKIE_FILE = 1024 * 1024
MAX_PROFILES = 200
HEADER = "# Netscape HTTP Cookie File"
_BOOL = ("TRUE", "FALSE")
_DOMAIN = re.compile(r"\.?[A-Za-z0-9.-]{1,253}|\[?[0-9A-Fa-f:.]{2,45}\]?")


class CookieFileError(ValueError):
    """The upload is not a Netscape cookies.txt; the message names the line and the problem, not its content."""


@dataclass(frozen=True)
class CookieProfile:
    name: str
    domains: list[str]
    cookies: int
    # The latest expiry among the cookies (None: session cookies only), and when the profile was stored.
    expires: datetime | None
    updated_at: datetime
    owner: str | None = None  # whose own it is (None: everyone's)


def parse(text: str) -> tuple[list[str], int, datetime | None]:
    """Check a Netscape cookies.txt: every line that is not blank or a comment has 7 tab-separated fields (domain,
    subdomains TRUE/FALSE, path, secure TRUE/FALSE, expiry as a number, name, value). Returns the domains, how many
    cookies, and the latest expiry."""
    domains: dict[str, None] = {}
    count, latest = 0, 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip("\r")
        if line.startswith("#HttpOnly_"):
            line = line[len("#HttpOnly_") :]
        elif not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 7:
            raise CookieFileError(f"line {number}: expected 7 tab-separated fields, found {len(fields)}")
        domain, subdomains, path, secure, expires, name, _value = fields
        if not _DOMAIN.fullmatch(domain):
            raise CookieFileError(f"line {number}: the first field is not a domain")
        if subdomains.upper() not in _BOOL or secure.upper() not in _BOOL:
            raise CookieFileError(f"line {number}: fields 2 and 4 must be TRUE or FALSE")
        if not path.startswith("/"):
            raise CookieFileError(f"line {number}: the path (field 3) must start with /")
        if not re.fullmatch(r"-?\d{1,20}", expires or "0"):
            raise CookieFileError(f"line {number}: the expiry (field 5) must be a number of seconds")
        if not name:
            raise CookieFileError(f"line {number}: the cookie has no name")
        domains[domain.lstrip(".").lower()] = None
        count += 1
        latest = max(latest, int(expires or 0))
    if count == 0:
        raise CookieFileError("no cookies: not a Netscape cookies.txt (export one with a browser extension)")
    expiry = datetime.fromtimestamp(min(latest, 253402300799), timezone.utc) if latest > 0 else None
    return sorted(domains), count, expiry


def owner_folder(owner: str) -> str:
    """A person's own profiles' folder name: from a digest of the user name, which may hold any of . @ + -"""
    return "u" + hashlib.sha256(owner.encode()).hexdigest()[:24]


class CookieStore:
    """Everyone's profiles (an admin's) in ``cookies/``, each person's own in ``cookies/people/<digest>/``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "cookies"

    def folder(self, owner: str | None = None) -> Path:
        return self.root / "people" / owner_folder(owner) if owner else self.root

    def path(self, name: str, owner: str | None = None) -> Path:
        if not PROFILE_NAME.fullmatch(name):
            raise CookieFileError("a profile name is a-z, 0-9, '-' and '_', at most 64")
        return self.folder(owner) / f"{name}.txt"

    def exists(self, name: str, owner: str | None = None) -> bool:
        return PROFILE_NAME.fullmatch(name) is not None and self.path(name, owner).is_file()

    def put(self, name: str, data: bytes, owner: str | None = None) -> CookieProfile:
        """Validate and store (atomically, 0600); replaces the profile of that name."""
        path = self.path(name, owner)
        folder = self.folder(owner)
        if len(data) > MAX_COOKIE_FILE:
            raise CookieFileError(f"over {MAX_COOKIE_FILE} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CookieFileError("not UTF-8 text") from None
        if "\x00" in text:
            raise CookieFileError("not text (holds NUL bytes)")
        domains, count, expires = parse(text)
        if not path.exists() and len(self.names(owner)) >= MAX_PROFILES:
            raise CookieFileError(f"at most {MAX_PROFILES} profiles")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = text if text.startswith(("# Netscape HTTP Cookie File", "# HTTP Cookie File")) else f"{HEADER}\n{text}"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(body)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return CookieProfile(name, domains, count, expires, _mtime(path), owner)

    def get(self, name: str, owner: str | None = None) -> CookieProfile | None:
        path = self.path(name, owner)
        try:
            domains, count, expires = parse(path.read_text(encoding="utf-8"))
        except (OSError, CookieFileError, UnicodeDecodeError):
            return None
        return CookieProfile(name, domains, count, expires, _mtime(path), owner)

    def names(self, owner: str | None = None) -> list[str]:
        folder = self.folder(owner)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.txt") if PROFILE_NAME.fullmatch(p.stem))

    def list(self, owner: str | None = None) -> list[CookieProfile]:
        """Everyone's, and ``owner``'s own."""
        shared = [profile for name in self.names() if (profile := self.get(name)) is not None]
        own = [profile for name in self.names(owner) if (profile := self.get(name, owner)) is not None] if owner else []
        return shared + own

    def find(self, name: str, owner: str | None) -> str | None | bool:
        """Whose profile ``name`` is as ``owner`` sees it: their own (``owner``), else everyone's (None); False:
        there is none."""
        if owner and self.exists(name, owner):
            return owner
        return None if self.exists(name) else False

    def delete(self, name: str, owner: str | None = None) -> bool:
        try:
            self.path(name, owner).unlink()
        except FileNotFoundError:
            return False
        return True


def _mtime(path: Path) -> datetime:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError:
        return datetime.fromtimestamp(time.time(), timezone.utc)
