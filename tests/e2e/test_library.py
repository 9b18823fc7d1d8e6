"""Queue and library (issue 15), the parts landed so far: search and history on `GET /api/jobs`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.e2e.test_e2e import submit, wait_finished

pytestmark = pytest.mark.e2e


def test_search_by_title_or_url_status_since_and_sort_by_finish(stack, media):
    marker = uuid.uuid4().hex[:8]
    first = wait_finished(stack, submit(stack, url=media.url("clip1.mp4") + f"?tag={marker}a")["id"])
    second = wait_finished(stack, submit(stack, url=media.url("clip2.mp4") + f"?tag={marker}b")["id"])

    def ids(**params) -> list[str]:
        answer = httpx.get(f"{stack.base}/api/jobs", params={"limit": 500, **params}, timeout=10)
        assert answer.status_code == 200, answer.text
        return [job["id"] for job in answer.json()["jobs"]]

    assert ids(q=marker.upper()) == [second["id"], first["id"]]  # any case, newest first
    assert ids(q=f"{marker}a") == [first["id"]]
    assert ids(q="CLIP2", status="completed")[0] == second["id"]  # titles too ("clip2")
    assert ids(q=marker, status="failed") == []
    assert ids(q=marker, sort="finished") == [second["id"], first["id"]]
    later = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()
    assert ids(q=marker, since=later) == []
    # Paging a search by its cursor visits each match once.
    page = httpx.get(f"{stack.base}/api/jobs", params={"q": marker, "limit": 1}, timeout=10).json()
    rest = httpx.get(f"{stack.base}/api/jobs", params={"q": marker, "limit": 1, "cursor": page["next"]}, timeout=10)
    assert [page["jobs"][0]["id"], rest.json()["jobs"][0]["id"]] == [second["id"], first["id"]]
    assert rest.json()["next"] is None


@pytest.mark.parametrize(
    "params", [{"sort": "oldest"}, {"since": "yesterday"}, {"q": "x" * 201}, {"status": "sleeping"}]
)
def test_bad_search_parameters_are_4xx(stack, params):
    answer = httpx.get(f"{stack.base}/api/jobs", params=params, timeout=10)
    assert answer.status_code in (400, 422), answer.text
