"""The SSE contract as a property: whatever views a client woke up to while following a job, and wherever it
reconnected with Last-Event-ID, what it ends up knowing equals a fresh snapshot of the newest view."""

from __future__ import annotations

import json

import httpx
from httpx_sse import EventSource
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import events as ev
from services.api import sse
from services.api.sse import changes_since
from tests.unit.test_fold import WORKER, _event, _sequence, _views, job_history


def messages(frames: bytes) -> list:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=frames)
    return [m for m in EventSource(response).iter_sse() if m.data]


class Client:
    """What a frontend keeps: the items by id and the job, updated by each message; the last id it saw."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}
        self.job: str | None = None
        self.last_id = -1

    def receive(self, frames: bytes, upto: int | None = None) -> None:
        """Take the messages of a write, or only the first ``upto`` of them (the connection dropped there)."""
        for message in messages(frames)[:upto]:
            # Ids never go back; items changed by one event share theirs (2 x seq), so equal ones may follow.
            assert int(message.id) >= self.last_id
            self.last_id = int(message.id)
            if message.event == "item":
                self.items[message.json()["id"]] = message.data
            else:
                self.job = message.data


@settings(max_examples=200, deadline=None)
@given(job_history(), st.data())
def test_a_client_that_follows_or_reconnects_ends_with_the_snapshot(events, data):
    # Encoded messages are cached by (job id, view seq), which names one view in a real stream; every history here
    # reuses one job id, so each starts without the others' messages.
    sse._ENCODED.clear()
    views = _views(events)
    final = views[-1]
    fresh = Client()
    fresh.receive(changes_since(final, -1)[0])

    live = Client()
    woke_at = sorted(data.draw(st.sets(st.integers(0, len(views) - 1), max_size=8)))
    for index in [*woke_at, len(views) - 1]:
        frames, last = changes_since(views[index], live.last_id)
        dropped = data.draw(st.integers(0, 3)) == 0
        upto = data.draw(st.integers(0, len(messages(frames)))) if dropped else None
        live.receive(frames, upto)
        if not dropped:
            assert last == live.last_id
        else:
            # The connection drops: a new client object that only keeps what it had and its Last-Event-ID.
            resumed = Client()
            resumed.items, resumed.job, resumed.last_id = dict(live.items), live.job, live.last_id
            live = resumed
    # Reconnected (or still connected) at the end: whatever it missed comes now.
    live.receive(changes_since(final, live.last_id)[0])
    assert live.items == fresh.items and live.job == fresh.job


def test_a_drop_among_the_items_one_cancel_changed_misses_none_of_them():
    sse._ENCODED.clear()
    events = [
        _event("requested", ev.Requested(url="http://example.com/list")),
        _event("resolved", ev.Resolved(kind="playlist", item_count=3, worker=WORKER)),
    ]
    for index in (1, 2, 3):
        item = ev.ItemQueued(index=index, url=f"http://example.com/{index}", mode="video", audio_format="mp3")
        events.append(_event("item.queued", item, f"{index:04d}"))
    events.append(_event("cancel.requested", ev.CancelRequested()))
    views = _views(_sequence(events))
    client = Client()
    client.receive(changes_since(views[-2], -1)[0])  # everything up to the cancel
    frames, _ = changes_since(views[-1], client.last_id)
    assert [m.id for m in messages(frames)][:3] == ["12", "12", "12"]  # three items skipped by one event
    client.receive(frames, upto=1)  # the connection drops after the first of them
    client.receive(changes_since(views[-1], client.last_id)[0])  # resumed with Last-Event-ID: 12
    assert {item["status"] for item in map(json.loads, client.items.values())} == {"skipped"}


def test_the_encoded_message_cache_stays_within_its_byte_budget(monkeypatch):
    monkeypatch.setattr(sse, "_ENCODED_MAX_BYTES", 20_000)
    sse._ENCODED.clear()
    monkeypatch.setattr(sse, "_encoded_bytes", 0)
    events = [
        _event("requested", ev.Requested(url="http://example.com/list")),
        _event("resolved", ev.Resolved(kind="playlist", item_count=40, worker=WORKER)),
    ]
    for index in range(1, 41):
        item = ev.ItemQueued(index=index, url=f"http://example.com/{index}", mode="video", audio_format="mp3")
        events.append(_event("item.queued", item, f"{index:04d}"))
    views = _views(_sequence(events))
    for view in views:
        frames, _ = changes_since(view, -1)
        assert len(messages(frames)) == len(view.items) + 1  # what a client gets does not depend on the cache
        assert sse._encoded_bytes == sum(cached.size for cached in sse._ENCODED.values())
        # Within budget, except the newest view's own messages, which are in use.
        assert sse._encoded_bytes <= 20_000 or len(sse._ENCODED) == 1
