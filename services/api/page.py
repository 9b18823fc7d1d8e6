"""The minimal page at `/`: the newest jobs, rendered on the server, and a form to submit one."""

from __future__ import annotations

from html import escape

from contracts.views import JobSummary

_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>tubeflow</title>
<style>body{font:15px system-ui,sans-serif;margin:1.5rem;max-width:60rem}table{border-collapse:collapse;width:100%}
td,th{padding:.3rem .5rem;border-bottom:1px solid #ddd;text-align:left}progress{width:8rem}
form{display:flex;gap:.5rem;flex-wrap:wrap;margin:1rem 0}input[name=url]{flex:1;min-width:16rem}</style>
</head><body><h1>tubeflow</h1>
<form id="submit"><input name="url" placeholder="https://… video or playlist URL" required>
<select name="mode"><option>video</option><option>audio</option><option>both</option></select>
<select name="audio_format"><option>mp3</option><option>m4a</option><option>opus</option><option>flac</option>
<option>wav</option></select><button>Submit</button></form><p id="msg"></p>
"""

_TAIL = """<p>API: <a href="/schema/swagger">OpenAPI</a> · jobs as JSON: <a href="/api/jobs">/api/jobs</a></p>
<script type="module">
const form = document.getElementById("submit");
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = Object.fromEntries(new FormData(form));
  const r = await fetch("/api/jobs", {method: "POST", headers: {"content-type": "application/json"},
                                     body: JSON.stringify(body)});
  const j = await r.json();
  document.getElementById("msg").textContent = r.ok ? `accepted ${j.id}` : j.detail;
  if (r.ok) setTimeout(() => location.reload(), 500);
});
</script></body></html>
"""


def render_index(jobs: list[JobSummary]) -> str:
    rows = []
    for job in jobs:
        d = job.download
        rows.append(
            "<tr>"
            f'<td><a href="/api/jobs/{escape(job.id)}">{escape(job.title or job.url)}</a></td>'
            f"<td>{escape(job.status)}</td>"
            f'<td><progress max="100" value="{job.progress.percent}"></progress> {job.progress.percent:.1f} %</td>'
            f"<td>{d.completed} / {d.total} done ({d.remaining} remaining)</td>"
            f'<td><a href="/api/jobs/{escape(job.id)}/stream">stream</a></td>'
            "</tr>"
        )
    table = (
        "<table><thead><tr><th>job</th><th>status</th><th>progress</th><th>items</th><th></th></tr></thead><tbody>"
        + ("".join(rows) or "<tr><td colspan=5>No jobs yet.</td></tr>")
        + "</tbody></table>"
    )
    return _HEAD + table + _TAIL
