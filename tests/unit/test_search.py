"""The job list's index (services/api/search.py): search by title or URL in any case, status, since, sorted by
creation or by finish, paged by cursor without repeats or gaps, kept right as jobs change and go."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from contracts.ids import new_job_id
from contracts.views import JobSummary
from services.api.search import JobIndex

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def summary(n: int, *, title: str, finished: int | None = None, status: str = "completed", **extra) -> JobSummary:
    return JobSummary(
        id=extra.pop("id", None) or new_job_id(now_ms=int((T0 + timedelta(minutes=n)).timestamp() * 1000)),
        url=f"https://video.example.com/watch?v={n}",
        mode="video",
        audio_format="mp3",
        title=title,
        status=status,
        created_at=T0 + timedelta(minutes=n),
        updated_at=T0 + timedelta(minutes=n),
        finished_at=T0 + timedelta(hours=finished) if finished is not None else None,
        **extra,
    )


def all_pages(index: JobIndex, **query) -> list[str]:
    seen, cursor = [], None
    while True:
        page, cursor = index.page(limit=3, before=cursor, **query)
        seen += [s.id for s in page]
        if cursor is None:
            return seen


def test_search_sort_and_page():
    index = JobIndex()
    jobs = [
        summary(n, title=f"Talk {n} about {'Cats' if n % 3 == 0 else 'dogs'}", finished=(10 - n)) for n in range(10)
    ]
    for job in jobs:
        index.put(job)
    newest_first = [j.id for j in reversed(jobs)]
    assert all_pages(index) == newest_first
    assert all_pages(index, q="CATS") == [j.id for j in reversed(jobs) if "Cats" in j.title]
    assert all_pages(index, q="watch?v=7") == [jobs[7].id]
    assert all_pages(index, q="nothing like it") == []
    assert all_pages(index, since=T0 + timedelta(minutes=8)) == [jobs[9].id, jobs[8].id]
    # By finish: job 0 finished last.
    assert all_pages(index, sort="finished") == [j.id for j in jobs]
    assert all_pages(index, sort="finished", since=T0 + timedelta(hours=9)) == [jobs[0].id, jobs[1].id]


def test_changes_and_removals_keep_the_index_right():
    index = JobIndex()
    running = summary(1, title="first", status="running")
    done = summary(2, title="second", finished=1)
    index.put(running)
    index.put(done)
    assert all_pages(index, sort="finished") == [done.id]
    # The running job finishes; the finished one is retried (no finish time again), then finishes later.
    index.put(running.model_copy(update={"status": "completed", "finished_at": T0 + timedelta(hours=2)}))
    index.put(done.model_copy(update={"status": "running", "finished_at": None}))
    assert all_pages(index, sort="finished") == [running.id]
    index.put(
        done.model_copy(update={"status": "completed", "finished_at": T0 + timedelta(hours=3), "title": "Renamed"})
    )
    assert all_pages(index, sort="finished") == [done.id, running.id]
    assert all_pages(index, q="renamed") == [done.id] and all_pages(index, q="second") == []
    assert all_pages(index, status="completed") == [done.id, running.id]
    index.remove(done.id)
    assert all_pages(index) == [running.id] and all_pages(index, sort="finished") == [running.id]
    assert len(index) == 1


def test_chunks_of_joined_text_stay_right_across_their_edges(monkeypatch):
    import services.api.search as search

    monkeypatch.setattr(search, "CHUNK", 3)
    index = JobIndex()
    jobs = [summary(n, title=f"talk {n} {'jazz' if n % 4 == 0 else 'rock'}") for n in range(20)]
    for job in jobs[:10]:
        index.put(job)
    assert all_pages(index, q="jazz") == [j.id for j in reversed(jobs[:10]) if "jazz" in j.title]
    for job in jobs[10:]:  # newest ones join the last chunk (or a new one), searched without regrouping
        index.put(job)
    index.put(jobs[5].model_copy(update={"title": "talk 5 jazz now"}))
    index.remove(jobs[8].id)
    expected = [j.id for j in reversed(jobs) if ("jazz" in j.title or j is jobs[5]) and j is not jobs[8]]
    assert all_pages(index, q="jazz") == expected
    older = summary(-1, title="an old jazz talk")  # an id older than all: the chunks are made again
    index.put(older)
    assert all_pages(index, q="jazz") == [*expected, older.id]
