"""What every service shares. Importing it (every service does, first) keeps one unused module out of the process:
httpx's package imports its command-line tool, and with it rich, pygments and click when they are installed (~3 MiB in
every process that makes HTTP requests); a module set to None in ``sys.modules`` is one Python will not import, and
httpx falls back to a stub for its CLI entry point. No service runs httpx's CLI."""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
