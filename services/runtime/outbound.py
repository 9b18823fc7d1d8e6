"""Libraries that fetch by themselves (Apprise, through `requests`) held to tubeflow's rules on the thread that runs
them (and on the threads they hand the work to with a copy of its context): every address of every hop (redirects included) passes the address policy, and no answer is read past a byte
bound. Other threads of the process are untouched (the API's and NATS' connections go to loopback)."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

from services.runtime.addresses import AddressPolicy, guarded

# Notification services answer a few hundred bytes; 1 MiB is plenty and bounds a hostile one.
MAX_ANSWER = 1024 * 1024

# Context variables (see runtime.addresses): Apprise's worker threads run with a copy of the caller's context.
_limit: ContextVar[int | None] = ContextVar("tubeflow_answer_limit", default=None)
_installed = False


def _install() -> None:
    global _installed
    if _installed:
        return
    from requests.adapters import HTTPAdapter

    original = HTTPAdapter.send

    def send(self: Any, request: Any, stream: bool = False, *args: Any, **kwargs: Any) -> Any:
        limit = _limit.get()
        if limit is None:
            return original(self, request, stream, *args, **kwargs)
        response = original(self, request, True, *args, **kwargs)
        try:
            body = response.raw.read(limit + 1, decode_content=True)
        finally:
            response.close()
        # What requests would have read, cut at the bound: the caller sees a body, never more than ``limit``.
        response._content = body[:limit]
        response._content_consumed = True
        return response

    HTTPAdapter.send = send  # type: ignore[method-assign]
    _installed = True


@contextmanager
def held_to(policy: AddressPolicy, limit: int = MAX_ANSWER) -> Iterator[None]:
    """Within this block, on this thread: `requests` reads at most ``limit`` bytes of an answer, and every name it
    resolves (each redirect's too) is checked against ``policy`` (ForbiddenAddress instead of connecting)."""
    _install()
    token = _limit.set(limit)
    try:
        with guarded(policy):
            yield
    finally:
        _limit.reset(token)
