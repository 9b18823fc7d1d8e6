"""The wire contract: envelopes round-trip, old versions are upcast, garbage is refused, the AsyncAPI doc is fresh."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from contracts import events as ev
from contracts.ids import is_job_id, new_job_id
from contracts.subscriptions import SUBSCRIPTION_EVENT_CLASSES
from contracts.system import SYSTEM_EVENT_CLASSES
from services.cli import asyncapi

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)


def test_every_event_type_round_trips_and_names_its_subject():
    job = new_job_id()
    samples = {
        "requested": ev.Requested(url="https://example.com/v", mode="both", audio_format="opus"),
        "download.progress": ev.DownloadProgress(worker="h:1", downloaded_bytes=10, total_bytes=100, speed=5.0),
        "download.failed": ev.DownloadFailed(worker="h:1", code="http_404", message="gone"),
    }
    for event_type, data in samples.items():
        event = ev.make_event(event_type, job_id=job, data=data, occurred_at=NOW, event_id="id-1", item_id="0001")
        raw = ev.encode_event(event)
        assert "seq" not in json.loads(raw)
        back = ev.parse_event(raw, seq=7)
        assert back.seq == 7 and back.model_copy(update={"seq": 0}) == event
        assert type(back) is ev.EVENT_CLASSES[event_type]
        assert ev.subject(job, event_type) == f"tubeflow.job.{job}.{event_type}"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"type": "no.such.type", "job_id": "j", "event_id": "e", "occurred_at": "2026-01-01T00:00:00Z"}',
        b'{"type": "requested", "job_id": "j", "event_id": "e", "occurred_at": "2026-01-01T00:00:00Z", "data": {}}',
    ],
)
def test_unreadable_events_raise_invalid_event(raw):
    with pytest.raises(ev.InvalidEvent):
        ev.parse_event(raw)


def test_an_old_version_is_upcast_before_validation(monkeypatch):
    # A hypothetical v0 of `requested` called the field `link`; its upcaster renames it.
    def v0_to_v1(raw: dict) -> dict:
        data = dict(raw["data"])
        data["url"] = data.pop("link")
        return {**raw, "data": data, "version": 1}

    monkeypatch.setitem(ev.UPCASTERS, ("requested", 0), v0_to_v1)
    old = {
        "event_id": "e",
        "type": "requested",
        "version": 0,
        "job_id": "j",
        "occurred_at": "2026-01-01T00:00:00Z",
        "data": {"link": "https://example.com/old"},
    }
    event = ev.parse_event(json.dumps(old))
    assert event.version == 1 and event.data.url == "https://example.com/old"


def test_job_ids_sort_by_time_and_are_subject_safe():
    early, late = new_job_id(1_000), new_job_id(2_000)
    assert early < late
    assert is_job_id(early) and not is_job_id("a.b") and not is_job_id("*")


def test_committed_asyncapi_document_is_current():
    committed = asyncapi.DOCUMENT.read_text()
    assert committed == asyncapi.render(), "contracts/asyncapi.json is stale: run `uv run tubeflow asyncapi`"
    channels = json.loads(committed)["channels"]
    subscriptions = {c.model_fields["type"].annotation.__args__[0] for c in SUBSCRIPTION_EVENT_CLASSES}
    assert {"subscription.created", "subscription.checked"} <= subscriptions
    system = {c.model_fields["type"].annotation.__args__[0] for c in SYSTEM_EVENT_CLASSES}
    assert system == {"site.cooling", "site.resumed", "engine.updated", "engine.update_failed", "schedule.changed"}
    assert set(channels) == set(ev.EVENT_CLASSES) | subscriptions | system


def test_job_ids_of_one_process_keep_increasing_within_a_millisecond():
    """Issue 23: jobs created in the same millisecond were listed (newest first, by id) in random order."""
    from contracts.ids import is_job_id, new_job_id

    made = [new_job_id() for _ in range(2000)]
    assert made == sorted(made) and len(set(made)) == len(made) and all(map(is_job_id, made))
