"""Where the JavaScript runtime yt-dlp solves challenges with is: the `deno` wheel's binary (``uv sync`` installs it
into the environment's bin). A module of its own, light: the slots' zygote asks it without the settings."""

from __future__ import annotations


def default_js_runtime() -> str | None:
    """The deno binary the environment has, or None."""
    try:
        from deno import find_deno_bin

        return find_deno_bin()
    except Exception:  # noqa: BLE001 - not installed, or its binary missing: no runtime (the doctor says so)
        return None
