"""The fold's speed machinery, kept apart from its rules: cheap copies of view models and a cache of the sums over
a job's items.

The job's counters and percent are sums over its items. Walking every item after every event made a fold
O(items) per event (a 1,000-item playlist: ~15,000 events x 1,000 items). Instead each view carries, as a cache,
the ``Totals`` of its item list, and an event that changes one item moves them by that item's difference. The sums
are integers (an item's share of the bar in millionths), so moving them gives exactly what a full walk gives: the
result does not depend on which views had the cache.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from typing import NamedTuple

from contracts.items import item_done, item_fraction, item_succeeded, wants_audio
from contracts.views import ItemView, JobView

UNIT = 1_000_000  # an item's share of the bar, in millionths

_set = object.__setattr__


def replace(model, changes: dict):  # noqa: ANN001, ANN201 - any view model, same type back
    """``model.model_copy(update=changes)`` without pydantic's generic copy machinery (a third of a fold's time).

    Like model_copy, nothing is validated: the fold only puts values of the right types. Private attributes are
    caches derived from the fields (see `_Cached`), so a copy starts without them.
    """
    cls = model.__class__
    new = cls.__new__(cls)
    values = model.__dict__.copy()
    values.update(changes)
    _set(new, "__dict__", values)
    # The same set object: models here are frozen, so nothing ever changes it (and dumps never exclude unset fields).
    _set(new, "__pydantic_fields_set__", model.__pydantic_fields_set__)
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_private__", None if model.__pydantic_private__ is None else {"_derived": None})
    return new


def unless_same(old, values: dict):  # noqa: ANN001, ANN201 - a summary model, same type back
    """``old`` if it already holds exactly ``values`` (all its fields), else a copy of it with them."""
    return old if old.__dict__ == values else replace(old, values)


class Counts(NamedTuple):
    """What one item adds to its job's sums, or (added up) the sums of a whole job. A tuple with names, so that
    moving the sums by one item's difference is one pass over thirteen integers."""

    downloads_completed: int = 0
    downloads_failed: int = 0
    downloads_skipped: int = 0
    extracts_completed: int = 0
    extracts_failed: int = 0
    extracts_skipped: int = 0
    finished: int = 0
    succeeded: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    units: int = 0  # shares of the bar, in millionths of an item
    recording: int = 0  # items recording a live stream (or stopping it)
    # Skipped because an earlier job has the media (`skip_downloaded`): what was asked for is there, so the step's
    # aggregate counts them as done, not as lost (they stay in `skipped`).
    downloads_existing: int = 0
    extracts_existing: int = 0

    @staticmethod
    def of_item(item: ItemView, audio: bool) -> "Counts":
        download = item.download
        done = item_done(item, audio)
        existing = download.status == "skipped" and download.existing is not None
        return _counts(
            (
                *_STEP_COUNTS.get(download.status, _NO_STEP),
                *(_STEP_COUNTS.get(item.extract.status, _NO_STEP) if audio else _NO_STEP),
                1 if done else 0,
                1 if done and item_succeeded(item, audio) else 0,
                download.downloaded_bytes,
                download.total_bytes or 0,
                UNIT if done else round(item_fraction(item, audio) * UNIT),
                1 if item.status in ("recording", "stopping") else 0,
                1 if existing else 0,
                1 if existing and audio and item.extract.status == "skipped" else 0,
            )
        )


_NONE = Counts()
# Counts from thirteen values, without NamedTuple's Python-level constructor (one call per item and event: measured).
_counts = functools.partial(tuple.__new__, Counts)
# A step's status as its (completed, failed, skipped) counts.
_STEP_COUNTS = {"completed": (1, 0, 0), "failed": (0, 1, 0), "skipped": (0, 0, 1)}
_NO_STEP = (0, 0, 0)


@dataclass(frozen=True, slots=True)
class Totals:
    counts: Counts
    # Positions of the items whose download is running (for speed and eta), ascending.
    running: tuple[int, ...]

    @staticmethod
    def of(items: list[ItemView], audio: bool) -> "Totals":
        sums = [0] * len(Counts._fields)
        running = []
        for position, item in enumerate(items):
            for slot, value in enumerate(Counts.of_item(item, audio)):
                sums[slot] += value
            if item.download.status == "running":
                running.append(position)
        return Totals(_counts(sums), tuple(running))

    def moved(self, old: ItemView | None, new: ItemView, position: int, audio: bool) -> "Totals":
        """The totals after the item at ``position`` changed from ``old`` to ``new`` (``old`` None: inserted)."""
        before = _NONE if old is None else Counts.of_item(old, audio)
        after = Counts.of_item(new, audio)
        counts = self.counts
        if before != after:  # one pass over thirteen integers: these sums with the item's `before` swapped for `after`
            counts = _counts([total - b + a for total, b, a in zip(counts, before, after, strict=True)])
        running = list(self.running)
        if old is None:
            running = [p + 1 if p >= position else p for p in running]
        elif old.download.status == "running":
            running.remove(position)
        if new.download.status == "running":
            bisect.insort(running, position)
        return Totals(counts, tuple(running))


class _Cached:
    """A view's cached totals, valid for one item list (checked by identity) and mode. Not part of the view's value:
    it equals any other, so views compare as their fields do."""

    __slots__ = ("items", "audio", "totals")

    def __init__(self, items: list[ItemView], audio: bool, totals: Totals) -> None:
        self.items, self.audio, self.totals = items, audio, totals

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = None  # type: ignore[assignment]


def cached_totals(view: JobView, audio: bool) -> Totals | None:
    private = view.__pydantic_private__
    cached = private.get("_derived") if private else None
    if cached is not None and cached.items is view.items and cached.audio == audio:
        return cached.totals
    return None


def remember_totals(view: JobView, audio: bool, totals: Totals) -> None:
    if view.__pydantic_private__ is not None:
        view.__pydantic_private__["_derived"] = _Cached(view.items, audio, totals)


def totals_of(view: JobView, audio: bool) -> Totals:
    """The totals of the view's items: from its cache, or a walk over them (then cached)."""
    totals = cached_totals(view, audio)
    if totals is None:
        totals = Totals.of(view.items, audio)
        remember_totals(view, audio, totals)
    return totals


def with_items(view: JobView, items: list[ItemView], old: ItemView | None, new: ItemView, position: int) -> JobView:
    """The view with ``items``, where only ``position`` differs from the view's items (``old`` None: inserted); its
    totals moved by that one item when the view had them cached."""
    audio = wants_audio(view.mode)
    totals = cached_totals(view, audio)
    changed = replace(view, {"items": items})
    if totals is not None:
        remember_totals(changed, audio, totals.moved(old, new, position, audio))
    return changed
