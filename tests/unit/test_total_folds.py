"""The folds are total: any event the schema admits, folded into any view the fold can make, never raises — and
neither does what every reader then does with the view (serialize it, page it, ask when a subscription is due).
One stored event must never stop a service or keep a data dir from starting (issue 23, item 1)."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from contracts import events as ev
from contracts.fold import apply, apply_or_set_aside
from contracts.presets import PresetEvent, apply_preset
from contracts.subscriptions import _ADAPTER as SUBSCRIPTION_ADAPTER
from contracts.subscriptions import apply_subscription, due, parse_subscription_event
from services.runtime.nats.views import stored_values
from tests.support.schema_values import values

JOB = "01jobtotalfold00000000000000"
SUBSCRIPTION = "sb01subtotalfold0000000000000"
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _events(schema: dict) -> st.SearchStrategy[list[tuple[dict, str | None]]]:
    """Lists of raw events, each with one of a few item ids (the test sets one job or subscription id on all of them,
    so that the events meet in one view)."""
    return st.lists(st.tuples(values(schema), st.sampled_from([None, "0", "1", "2"])), min_size=1, max_size=12)


@given(
    _events(ev._EVENT_ADAPTER.json_schema()),
    st.sampled_from(["in order", "no seq"]),
)
@_SETTINGS
def test_any_admitted_job_event_folds_without_raising(raws: list, numbering: str) -> None:
    view = None
    folded = 0
    for seq, (raw, item) in enumerate(raws, start=1):
        raw = {**raw, "job_id": JOB, "item_id": item}
        try:
            event = ev.parse_event(raw, seq if numbering == "in order" else 0)
        except ev.InvalidEvent:
            continue  # unreadable: the projector sets it aside (and a test below says it goes on)
        view = apply(view, event)
        folded += 1
        # What readers do with every view: store it (summary and pages), answer it as JSON.
        stored_values(view)
        view.model_dump_json()
    assume(folded)


@given(_events(SUBSCRIPTION_ADAPTER.json_schema()))
@_SETTINGS
def test_any_admitted_subscription_event_folds_without_raising(raws: list) -> None:
    view = None
    folded = 0
    for seq, (raw, _) in enumerate(raws, start=1):
        raw = {**raw, "subscription_id": SUBSCRIPTION}
        raw.pop("job_id", None)
        try:
            event = parse_subscription_event(ev.json.dumps(raw, default=str), seq)
        except ValueError:
            continue
        view = apply_subscription(view, event)
        folded += 1
        if view is not None:
            # The scheduler asks what is due, the API answers the view.
            assert view.next_check_at is None or view.next_check_at.tzinfo is not None
            view.public().model_dump_json()
            due([view], datetime(2026, 1, 1, tzinfo=timezone.utc))
            due([view], datetime.max.replace(tzinfo=timezone.utc))
    assume(folded)


@given(st.lists(values(PresetEvent.model_json_schema()), min_size=1, max_size=8))
@_SETTINGS
def test_any_admitted_preset_event_folds_without_raising(raws: list) -> None:
    presets: dict = {}
    for raw in raws:
        try:
            event = PresetEvent.model_validate_json(ev.json.dumps(raw, default=str))
        except ValueError:
            continue
        apply_preset(presets, event)
    for preset in presets.values():
        preset.model_dump_json()


def test_an_event_the_fold_cannot_apply_is_set_aside_with_its_reason():
    """The guard every stream reader folds through (projector, rebuild, replay): should a rule ever raise, the view
    stays as it was and the reason is given, instead of the reader stopping on that event forever."""
    good = ev.parse_event(
        {"event_id": "r", "type": "requested", "job_id": JOB, "occurred_at": "2026-01-01T00:00:00Z",
         "data": {"url": "http://example.com/v"}}, 1)  # fmt: skip
    view, reason = apply_or_set_aside(None, good)
    assert reason is None and view is not None and view.url == "http://example.com/v"
    broken = view.model_copy(update={"items": None})  # no rule expects this: one raises
    queued = ev.parse_event(
        {"event_id": "q", "type": "item.queued", "item_id": "0", "job_id": JOB, "occurred_at": "2026-01-01T00:00:01Z",
         "data": {"index": 0, "url": "http://example.com/v", "mode": "video", "audio_format": "mp3"}}, 2)  # fmt: skip
    kept, reason = apply_or_set_aside(broken, queued)
    assert kept is broken and reason is not None and reason.startswith("TypeError")
