"""The API's job commands with fakes: what submit, cancel and retry publish, the view they answer with, and what
they refuse (the decisions are pure functions of the view, in contracts.decisions)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from contracts import events as ev
from contracts.decisions import Refusal, plan_cancel, plan_retry
from contracts.fold import fold
from contracts.ids import new_job_id
from contracts.views import JobView
from services.api.commands import JobCommands
from services.api.requests import JobRequest
from tests.support.events import events_of
from tests.support.fakes import FakeKeys, FakePublisher

NOW = datetime(2026, 11, 22, tzinfo=timezone.utc)


def commands(views: dict[str, JobView] | None = None) -> tuple[JobCommands, FakePublisher, list[JobView]]:
    publisher, accepted = FakePublisher(after=1000), []  # the views below hold a few events already
    known = views if views is not None else {}

    async def find(job_id: str) -> JobView | None:
        return known.get(job_id)

    return JobCommands(publisher, FakeKeys(), find, on_accepted=accepted.append, now=lambda: NOW), publisher, accepted


def history(outcomes: list[str], *, resolved: bool = True) -> JobView:
    """A finished two-or-more-item job whose items ended as ``outcomes`` ("ok" or "fail"), folded from its events."""
    job = new_job_id()
    steps: list = [("requested", ev.Requested(url="http://m/list", mode="video"), None)]
    if not resolved:
        steps.append(("resolve.failed", ev.ResolveFailed(code="network", message="refused", worker="w"), None))
    else:
        steps.append(("resolved", ev.Resolved(kind="playlist", item_count=len(outcomes), worker="w"), None))
        for n, outcome in enumerate(outcomes, start=1):
            item = f"{n:04d}"
            steps.append(
                ("item.queued", ev.ItemQueued(index=n, url=f"http://m/{n}", mode="video", audio_format="mp3"), item)
            )
            if outcome == "ok":
                steps.append(("download.completed", ev.DownloadCompleted(worker="w", file=f"{n}.mp4", size=1), item))
            else:
                steps.append(("download.failed", ev.DownloadFailed(worker="w", code="http_404", message="gone"), item))
    events = events_of(job, steps, start=NOW - timedelta(minutes=5), spacing=timedelta(seconds=1))
    return fold(e.model_copy(update={"seq": n}) for n, e in enumerate(events, 1))


async def test_submit_publishes_requested_and_answers_with_its_fold():
    cmds, publisher, accepted = commands()
    view = await cmds.submit(JobRequest(url="http://video.example.com/v", mode="both", audio_format="opus"))
    assert publisher.types() == ["requested"]
    assert view.status == "queued" and view.mode == "both" and view.audio_format == "opus" and view.seq == 1001
    assert accepted == [view]


async def test_the_same_idempotency_key_returns_the_first_job():
    views: dict[str, JobView] = {}
    cmds, publisher, accepted = commands(views)
    first = await cmds.submit(JobRequest(url="http://video.example.com/v"), idempotency_key="k-1")
    views[first.id] = first
    second = await cmds.submit(JobRequest(url="http://video.example.com/other"), idempotency_key="k-1")
    assert second.id == first.id and publisher.types() == ["requested"] and accepted == [first]


async def test_cancel_publishes_cancel_requested_once_and_refuses_a_finished_job():
    running = fold(
        e.model_copy(update={"seq": 1})
        for e in events_of(new_job_id(), [("requested", ev.Requested(url="http://m/v"), None)], start=NOW)
    )
    cmds, publisher, _ = commands()
    view = await cmds.cancel(running)
    assert isinstance(view, JobView) and view.status == "cancelled" and view.error.code == "cancelled"
    assert publisher.types() == ["cancel.requested"]
    refused = await cmds.cancel(view)
    assert refused == Refusal("already_finished", "the job is cancelled") and publisher.types() == ["cancel.requested"]


async def test_retry_queues_only_the_failed_items_of_a_new_round():
    partial = history(["ok", "fail", "fail"])
    assert partial.status == "partial"
    cmds, publisher, _ = commands()
    view = await cmds.retry(partial)
    assert publisher.types() == ["retry.requested", "item.queued", "item.queued"]
    assert [e.item_id for e in publisher.events[1:]] == ["0002", "0003"]
    assert all(e.data.round == 1 for e in publisher.events[1:])
    assert isinstance(view, JobView) and view.status == "running" and view.retries == 1


async def test_retry_of_a_job_that_never_resolved_starts_it_over():
    failed = history([], resolved=False)
    cmds, publisher, _ = commands()
    await cmds.retry(failed)
    assert publisher.types() == ["retry.requested", "requested"] and publisher.events[1].data.round == 1


def test_the_decisions_refuse_what_does_not_apply():
    done = history(["ok", "ok"])
    assert done.status == "completed"
    assert plan_retry(done, NOW) == Refusal("nothing_to_retry", "every item of the job succeeded")
    assert plan_cancel(done, NOW) == Refusal("already_finished", "the job is completed")
    running = history(["ok", "fail"]).model_copy(update={"status": "running"})
    assert isinstance(plan_retry(running, NOW), Refusal) and plan_retry(running, NOW).code == "not_finished"
    cancelled = history(["fail"]).model_copy(update={"status": "cancelled"})
    assert plan_retry(cancelled, NOW).code == "cancelled"


async def test_an_idempotency_key_is_released_when_its_publish_fails():
    class Unreachable(FakePublisher):
        fail = True

        async def publish(self, event):  # noqa: ANN001, ANN201
            if self.fail:
                self.fail = False
                raise ConnectionError("NATS is away")
            return await super().publish(event)

    publisher, keys = Unreachable(after=1000), FakeKeys()

    async def find(job_id: str) -> JobView | None:
        return None

    cmds = JobCommands(publisher, keys, find, now=lambda: NOW)
    request = JobRequest(url="http://video.example.com/v")
    try:
        await cmds.submit(request, idempotency_key="k-2")
    except ConnectionError:
        pass
    else:
        raise AssertionError("the failed publish was not reported")
    assert keys.values == {}  # not left pointing at a job that was never accepted
    view = await cmds.submit(request, idempotency_key="k-2")  # the client's retry with the same key works
    assert view.status == "queued" and publisher.types() == ["requested"]
