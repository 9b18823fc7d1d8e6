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


def test_a_batch_creates_every_job_with_the_same_fields_or_none_at_all(stack, media):
    marker = uuid.uuid4().hex[:8]
    urls = [media.url(f"clip{n}.mp4") + f"?batch={marker}{n}" for n in (1, 2, 3)]
    answer = httpx.post(
        f"{stack.base}/api/jobs/batch",
        json={"urls": urls, "mode": "audio", "metadata": False},
        headers={"Idempotency-Key": marker},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    jobs = answer.json()["jobs"]
    assert [job["url"] for job in jobs] == urls and all(job["mode"] == "audio" for job in jobs)
    for job in jobs:
        view = wait_finished(stack, job["id"])
        assert view["status"] == "completed" and view["options"]["metadata"] is False, view
    again = httpx.post(
        f"{stack.base}/api/jobs/batch", json={"urls": urls, "mode": "audio"}, headers={"Idempotency-Key": marker}
    )
    assert [job["id"] for job in again.json()["jobs"]] == [job["id"] for job in jobs]  # the same jobs, not new ones

    def created() -> int:
        found = httpx.get(f"{stack.base}/api/jobs", params={"q": f"nothing-{marker}", "limit": 500}, timeout=10)
        return len(found.json()["jobs"])

    bad = [media.url("clip1.mp4") + f"?nothing-{marker}", "ftp://example.com/x", "http://10.1.2.3/video"]
    refused = httpx.post(f"{stack.base}/api/jobs/batch", json={"urls": bad}, timeout=10)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "urls.1", refused.text
    policy = httpx.post(f"{stack.base}/api/jobs/batch", json={"urls": [bad[0], bad[2]]}, timeout=10)
    assert policy.status_code == 422, policy.text
    assert policy.json()["errors"][0] == {**policy.json()["errors"][0], "field": "urls.1", "code": "forbidden_address"}
    assert created() == 0, "a refused batch created jobs"
    too_many = httpx.post(f"{stack.base}/api/jobs/batch", json={"urls": [bad[0]] * 501}, timeout=10)
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["field"] == "urls"


def test_a_jobs_files_download_as_one_streamed_zip(stack, media):
    import io
    import zipfile

    page = f"{media.base}/streams/pages/html5.html"
    view = wait_finished(
        stack,
        submit(stack, url=page, mode="both", subtitles={"languages": ["en"], "embed": False}, thumbnail="file")["id"],
    )
    assert view["status"] == "completed", view
    item = view["items"][0]
    expected = [item["download"]["file"], *item["download"]["files"], item["extract"]["file"]]
    with httpx.stream("GET", f"{stack.base}/api/jobs/{view['id']}/archive.zip", timeout=30) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
        assert "content-length" not in answer.headers and "attachment" in answer.headers["content-disposition"]
        body = answer.read()
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    names = archive.namelist()
    assert sorted(names) == sorted(f.removeprefix(f"{view['id']}/") for f in expected), names
    for relative in expected:
        assert archive.read(relative.removeprefix(f"{view['id']}/")) == (stack.media_dir / relative).read_bytes()

    failed = wait_finished(stack, submit(stack, url=f"{media.base}/missing-{view['id']}.mp4")["id"])
    none = httpx.get(f"{stack.base}/api/jobs/{failed['id']}/archive.zip", timeout=10)
    assert none.status_code == 404 and "no files" in none.json()["detail"]
    unknown = httpx.get(f"{stack.base}/api/jobs/01m83k4jf56nq6vkg3q02xgxav/archive.zip", timeout=10)
    assert unknown.status_code == 404
