"""The job list's index: every job's summary by id (ids sort by creation), by status, the finished ones by when they
finished, and every job's title and URL in lower case, joined in chunks that `?q=` searches with str.rfind (C speed:
100,000 jobs are looked through in milliseconds). Kept in memory by the hub from the read models; a page is
read newest first from a cursor, so a search stops as soon as the page is full."""

from __future__ import annotations

import bisect
from datetime import datetime, timezone
from typing import Iterator, Literal

from contracts.views import JobSummary

Sort = Literal["created", "finished"]
MAX_QUERY = 200


def _stamp(moment: datetime) -> str:
    """A time as sortable text: ISO 8601 in UTC with microseconds (a time without a zone is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _remove_sorted(values: list, value: object) -> None:
    position = bisect.bisect_left(values, value)
    if position < len(values) and values[position] == value:
        del values[position]


class JobIndex:
    def __init__(self) -> None:
        self.summaries: dict[str, JobSummary] = {}
        self._ids: list[str] = []  # sorted job ids, oldest first
        self._by_status: dict[str, list[str]] = {}  # status -> sorted job ids
        self._by_owner: dict[str | None, list[str]] = {}  # owner -> sorted job ids (a user's list walks theirs)
        self._finished: list[tuple[str, str]] = []  # sorted (finished_at as text, id), oldest first
        self._text: dict[str, str] = {}
        # Every job's text, in id order, in chunks of CHUNK jobs each joined into one string; a change joins its
        # chunk again (when a search needs it), a new job (the newest) joins the last chunk.
        self._chunks: list[_Chunk] = []
        self._chunk_of: dict[str, _Chunk] = {}
        self._regroup = True

    def __len__(self) -> int:
        return len(self.summaries)

    def put(self, summary: JobSummary) -> None:
        known = self.summaries.get(summary.id)
        if known is None:
            bisect.insort(self._ids, summary.id)
            bisect.insort(self._by_owner.setdefault(summary.owner, []), summary.id)
            self._add_to_chunks(summary.id)
        if known is None or known.status != summary.status:
            if known is not None:
                _remove_sorted(self._by_status.get(known.status, []), summary.id)
            bisect.insort(self._by_status.setdefault(summary.status, []), summary.id)
        if known is not None and known.finished_at is not None and known.finished_at != summary.finished_at:
            _remove_sorted(self._finished, (_stamp(known.finished_at), known.id))
        if summary.finished_at is not None and (known is None or known.finished_at != summary.finished_at):
            bisect.insort(self._finished, (_stamp(summary.finished_at), summary.id))
        if known is None or known.title != summary.title or known.url != summary.url:
            self._text[summary.id] = f"{summary.title or ''}\n{summary.url}".lower().replace("\x00", "")
            self._touch(summary.id)
        self.summaries[summary.id] = summary

    def counts(self) -> dict[str, int]:
        """Jobs per status."""
        return {status: len(ids) for status, ids in self._by_status.items() if ids}

    def unfinished_items(self) -> dict[str, int]:
        """Items not yet downloaded per priority, of the jobs that are queued, resolving or running (not held): what
        waits in the download queue or runs. Walks the unfinished jobs only."""
        out: dict[str, int] = {}
        for status in ("queued", "resolving", "running"):
            for job_id in self._by_status.get(status, []):
                summary = self.summaries[job_id]
                if not summary.held:
                    out[summary.priority] = out.get(summary.priority, 0) + summary.download.remaining
        return out

    def remove(self, job_id: str) -> JobSummary | None:
        known = self.summaries.pop(job_id, None)
        if known is None:
            return None
        _remove_sorted(self._ids, job_id)
        _remove_sorted(self._by_owner.get(known.owner, []), job_id)
        _remove_sorted(self._by_status.get(known.status, []), job_id)
        if known.finished_at is not None:
            _remove_sorted(self._finished, (_stamp(known.finished_at), job_id))
        self._text.pop(job_id, None)
        chunk = self._chunk_of.pop(job_id, None)
        if chunk is not None:
            chunk.ids.remove(job_id)
            chunk.text = None
        return known

    def _add_to_chunks(self, job_id: str) -> None:
        last = self._chunks[-1] if self._chunks else None
        if self._regroup or (last is not None and last.ids and job_id < last.ids[-1]):
            self._regroup = True  # not the newest: the chunks are made again at the next search
            return
        if last is None or len(last.ids) >= CHUNK:
            last = _Chunk()
            self._chunks.append(last)
        last.ids.append(job_id)
        last.text = None
        self._chunk_of[job_id] = last

    def _touch(self, job_id: str) -> None:
        chunk = self._chunk_of.get(job_id)
        if chunk is not None:
            chunk.text = None

    def page(
        self,
        *,
        limit: int,
        status: str | None = None,
        before: str | None = None,
        q: str | None = None,
        since: datetime | None = None,
        sort: Sort = "created",
        owner: str | None = None,
    ) -> tuple[list[JobSummary], str | None]:
        """Newest first by ``sort``; ``before``: the cursor (the `next` of the previous page). ``q``: in the title or
        URL, any case; ``since``: created (or, sorted by finished, finished) at or after it; ``owner``: that
        user's jobs only (issue 28)."""
        needle = "".join(c for c in q.lower() if c != "\x00") if q else ""
        floor = _stamp(since) if since is not None else None
        out: list[JobSummary] = []
        for job_id in self._candidates(sort, before, needle, status, owner):
            summary = self.summaries[job_id]
            moment = summary.finished_at if sort == "finished" else summary.created_at
            if floor is not None and moment is not None and _stamp(moment) < floor:
                break
            if (status and summary.status != status) or (needle and needle not in self._text.get(job_id, "")):
                continue
            if owner is not None and summary.owner != owner:
                continue
            if len(out) == limit:
                last = out[-1]
                if sort == "finished":
                    return out, f"{_stamp(last.finished_at)}|{last.id}"  # type: ignore[arg-type]
                return out, last.id
            out.append(summary)
        return out, None

    def _candidates(
        self, sort: Sort, before: str | None, needle: str, status: str | None, owner: str | None = None
    ) -> Iterator[str]:
        """Job ids newest first from just below the cursor: the ones whose text holds ``needle`` (found in the
        joined text), else those of ``status``, else the owner's, else all (by finish: all finished ones)."""
        if sort == "finished":
            end = len(self._finished)
            if before:
                stamp, _, job_id = before.partition("|")
                end = bisect.bisect_left(self._finished, (stamp, job_id))
            for position in range(end - 1, -1, -1):
                yield self._finished[position][1]
            return
        if needle:
            yield from self._matching(needle, before)
            return
        ids = (
            self._by_status.get(status, [])
            if status
            else self._by_owner.get(owner, [])
            if owner is not None
            else self._ids
        )
        end = bisect.bisect_left(ids, before) if before else len(ids)
        for position in range(end - 1, -1, -1):
            yield ids[position]

    def _matching(self, needle: str, before: str | None) -> Iterator[str]:
        if self._regroup:
            self._make_chunks()
        for chunk in reversed(self._chunks):
            if not chunk.ids or (before and chunk.ids[0] >= before):
                continue
            chunk.join(self._text)
            end = bisect.bisect_left(chunk.ids, before) if before else len(chunk.ids)
            limit = chunk.starts[end] - 1 if end < len(chunk.starts) else len(chunk.text)  # type: ignore[arg-type]
            while limit > 0:
                at = chunk.text.rfind(needle, 0, limit)  # type: ignore[union-attr]
                if at < 0:
                    break
                position = bisect.bisect_right(chunk.starts, at) - 1
                yield chunk.ids[position]
                limit = chunk.starts[position] - 1  # before this job's text (and the separator in front of it)

    def _make_chunks(self) -> None:
        self._chunks = [_Chunk(self._ids[at : at + CHUNK]) for at in range(0, len(self._ids), CHUNK)]
        self._chunk_of = {job_id: chunk for chunk in self._chunks for job_id in chunk.ids}
        self._regroup = False


CHUNK = 1024


class _Chunk:
    """Consecutive jobs (by id) whose texts are joined, a NUL between them, for str.rfind."""

    def __init__(self, ids: list[str] | None = None) -> None:
        self.ids: list[str] = ids or []
        self.text: str | None = None
        self.starts: list[int] = []

    def join(self, texts: dict[str, str]) -> None:
        if self.text is not None:
            return
        parts = [texts.get(job_id, "") for job_id in self.ids]
        starts, at = [], 0
        for part in parts:
            starts.append(at)
            at += len(part) + 1
        self.text, self.starts = "\x00".join(parts), starts
