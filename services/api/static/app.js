// tubeflow's page: live through EventSource only (the all-jobs stream plus one stream per running job on screen).
// EventSource reconnects by itself with Last-Event-ID; when a stream is closed for good (an error status, a
// restarting server) it is opened again after a pause, and the server sends what changed meanwhile.

const TERMINAL = new Set(["completed", "partial", "failed", "cancelled"]);
const MAX_JOBS = 50;
const jobs = new Map();          // id -> {job, items: Map(itemId -> item)}
const jobStreams = new Map();    // id -> EventSource
let listStream = null;
let token = sessionStorage.getItem("tubeflow-token") || "";

const $ = (selector) => document.querySelector(selector);

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

// With a token, the page trades it for a session cookie (HttpOnly, read-only, 12 h): its media links and event
// streams then carry no token in their URLs. A stream closed for good asks for a fresh cookie before it reopens.
let sessionAt = 0;
async function ensureSession(force = false) {
  if (!token || (!force && Date.now() - sessionAt < 3600_000)) return;
  const response = await api("/api/session", {method: "POST"});
  if (response.ok) sessionAt = Date.now();
}

async function api(path, options = {}) {
  const headers = {...(options.headers || {})};
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, {...options, headers});
  if (response.status === 401) askForToken();
  return response;
}

function askForToken() {
  $("#token").hidden = false;
  setConnection("lost", "an API token is needed");
}

function setConnection(state, text) {
  const el = $("#connection");
  el.dataset.state = state;
  el.textContent = text;
}

function say(text, isError = false) {
  const el = $("#message");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// --- formatting ---------------------------------------------------------------------------------------------

function bytes(n) {
  if (n == null) return "?";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function duration(seconds) {
  if (seconds == null) return "";
  seconds = Math.round(seconds);
  const m = Math.floor(seconds / 60), s = seconds % 60;
  return m ? `${m}m${String(s).padStart(2, "0")}s` : `${s}s`;
}

// What an item is doing now, in words: "video 1/2", "merging video and audio", "extracting audio", …
function phase(item) {
  const dl = item.download, pp = item.postprocess || {};
  if (item.status === "processing") return pp.name === "Merger" ? "merging video and audio" : `post-processing: ${pp.name}`;
  if (item.status === "recording") return "recording live";
  if (item.status === "stopping") return "stopping the recording";
  if (dl.status === "running" && dl.stream_count) return `${dl.stream_kind || "stream"} ${dl.stream_index}/${dl.stream_count}`;
  if (item.status === "extracting") return "extracting audio";
  return "";
}

function bar(label, percent, value, name) {
  const p = Math.max(0, Math.min(100, percent || 0));
  return `<div class="bar" data-bar="${name}"><span class="label">${esc(label)}</span>` +
    `<progress max="100" value="${p}" aria-label="${esc(label)}"></progress>` +
    `<span class="value">${esc(value)}</span></div>`;
}

function mediaLink(file) {
  return file ? `<a href="${esc("/media/" + file.split("/").map(encodeURIComponent).join("/"))}">${esc(file.split("/").pop())}</a>` : "";
}

// --- rendering ----------------------------------------------------------------------------------------------

function render(id) {
  const entry = jobs.get(id);
  if (!entry) return;
  const {job} = entry;
  let card = document.getElementById("job-" + id);
  if (!card) {
    card = document.createElement("article");
    card.className = "job";
    card.id = "job-" + id;
    card.dataset.jobId = id;
    const list = $("#jobs");
    // Newest first: ids sort by creation time.
    const after = [...list.children].find((el) => el.dataset.jobId < id);
    list.insertBefore(card, after || null);
  }
  card.dataset.status = job.status;
  const d = job.download, x = job.extract;
  const playlist = job.kind === "playlist";
  const total = d.total || 0;
  let downloadText = `${d.completed} / ${total} done`;
  if (playlist) downloadText += ` (${d.remaining} remaining)`;
  if (d.speed) downloadText += ` · ${bytes(d.speed)}/s`;
  if (d.eta != null && !TERMINAL.has(job.status)) downloadText += ` · ${duration(d.eta)} left`;
  const items = [...entry.items.values()].sort((a, b) => a.index - b.index);
  // From the items' bars, which never go back (bytes over totals that are estimates could).
  const itemDone = (i) => ["completed", "failed", "skipped"].includes(i.download.status) ? 100 : (i.download.percent || 0);
  const downloadPercent = total ? items.reduce((sum, i) => sum + itemDone(i), 0) / total : 0;
  const rows = items.map((item) => {
    const dl = item.download, ex = item.extract;
    const dlText = dl.percent == null
      ? `${bytes(dl.downloaded_bytes)} · ${duration(dl.recorded_seconds || 0)} recorded` + (dl.speed ? ` · ${bytes(dl.speed)}/s` : "")
      : item.status === "processing"
      ? `${dl.percent.toFixed(1)}% · ${bytes(dl.downloaded_bytes)}`
      : dl.status === "running"
      ? `${dl.percent.toFixed(1)}% · ${bytes(dl.downloaded_bytes)} of ${bytes(dl.total_bytes)}` +
        (dl.speed ? ` · ${bytes(dl.speed)}/s` : "") + (dl.eta != null ? ` · ${duration(dl.eta)}` : "")
      : dl.status + (dl.reused ? " (reused)" : "") + (dl.stopped_early ? ` (recording stopped at ${duration(dl.recorded_seconds || 0)})` : "");
    const now = phase(item);
    const exText = ex.status === "none" ? "" : (ex.status === "running" ? `${ex.percent.toFixed(1)}%` : ex.status);
    const error = item.error ? `<span class="error" data-code="${esc(item.error.code)}">${esc(item.error.code)}: ${esc(item.error.message)}</span>` : "";
    const waiting = item.waiting ? `<span class="waiting" data-code="${esc(item.waiting.code)}">waiting: ${esc(item.waiting.message)}</span>` : "";
    return `<tr data-item="${esc(item.id)}" data-status="${esc(item.status)}"><td class="num">${item.index}</td>` +
      `<td>${esc(item.title || item.url)}<br>${error}${waiting}</td>` +
      `<td class="num" data-col="download">${now ? `<span class="phase" data-col="phase">${esc(now)}</span> · ` : ""}${esc(dlText)}</td>` +
      `<td class="num" data-col="extract">${esc(exText)}</td>` +
      `<td>${mediaLink(dl.file)} ${mediaLink(ex.file)}</td></tr>`;
  }).join("");
  const buttons = [];
  if (!TERMINAL.has(job.status)) buttons.push(`<button data-action="cancel">Cancel</button>`);
  if (job.status === "partial" || job.status === "failed") buttons.push(`<button data-action="retry">Retry</button>`);
  card.innerHTML =
    `<h2>${esc(job.title || job.url)}</h2>` +
    `<div class="meta"><span class="status ${esc(job.status)}">${esc(job.status)}</span> ${esc(job.mode)}` +
    `${job.mode !== "video" ? " · " + esc(job.audio_format) : ""} · <span>${esc(job.url)}</span></div>` +
    bar("overall", job.progress.percent, job.progress.percent.toFixed(1) + "%", "overall") +
    bar("download", downloadPercent, downloadText, "download") +
    (job.mode !== "video" ? bar("audio", x.total ? 100 * (x.completed + (job.status === "cancelled" ? 0 : x.failed + x.skipped)) / x.total : 0,
      `${x.completed} / ${x.total} done` + (playlist ? ` (${x.remaining} remaining)` : ""), "extract") : "") +
    (job.error ? `<p class="error" data-code="${esc(job.error.code)}">${esc(job.error.code)}: ${esc(job.error.message)}</p>` : "") +
    (buttons.length ? `<div class="actions">${buttons.join("")}</div>` : "") +
    (rows ? `<table class="items"><thead><tr><th>#</th><th>item</th><th>download</th><th>audio</th><th>files</th></tr></thead><tbody>${rows}</tbody></table>` : "");
}

// --- state from the streams ---------------------------------------------------------------------------------

function upsertJob(job) {
  let entry = jobs.get(job.id);
  if (!entry) {
    entry = {job, items: new Map(), loaded: false};
    jobs.set(job.id, entry);
  } else if (job.seq < entry.job.seq) {
    return;  // an older state than the one on screen
  }
  entry.job = job;
  render(job.id);
  followJob(job.id);
}

function upsertItem(jobId, item) {
  const entry = jobs.get(jobId);
  if (!entry) return;
  const known = entry.items.get(item.id);
  if (known && item.seq < known.seq) return;
  entry.items.set(item.id, item);
  render(jobId);
}

async function loadItems(id) {
  // A finished job gets no per-job stream: its items come once from the API.
  const entry = jobs.get(id);
  if (!entry || entry.loaded) return;
  entry.loaded = true;
  const response = await api(`/api/jobs/${id}`);
  if (!response.ok) return;
  const view = await response.json();
  for (const item of view.items) upsertItem(id, item);
}

function followJob(id) {
  const entry = jobs.get(id);
  if (!entry) return;
  if (TERMINAL.has(entry.job.status)) {
    // A job's own stream ends by itself after its final state (items first, then the job): let it finish, so
    // the last item changes are not lost when the all-jobs stream announces the end first.
    if (!jobStreams.has(id) && !entry.items.size) loadItems(id);
    return;
  }
  if (jobStreams.has(id)) return;
  const stream = new EventSource(`/api/jobs/${id}/stream`);
  jobStreams.set(id, stream);
  stream.addEventListener("item", (e) => upsertItem(id, JSON.parse(e.data)));
  stream.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    upsertJob(job);
    if (TERMINAL.has(job.status)) { stream.close(); jobStreams.delete(id); }
  });
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) {
      // Closed for good (e.g. the server answered 502 while restarting): open again, keeping what we know.
      jobStreams.delete(id);
      setTimeout(() => ensureSession(true).finally(() => followJob(id)), 2000);
    }
  };
}

function connectList() {
  setConnection("connecting", "connecting…");
  listStream = new EventSource(`/api/jobs/stream?limit=${MAX_JOBS}`);
  listStream.onopen = () => setConnection("live", "live");
  listStream.addEventListener("job", (e) => upsertJob(JSON.parse(e.data)));
  listStream.onerror = () => {
    setConnection("lost", "reconnecting…");
    if (listStream.readyState === EventSource.CLOSED) {
      listStream = null;
      setTimeout(() => ensureSession(true).finally(connectList), 2000);
    }
  };
}

// --- actions ------------------------------------------------------------------------------------------------

$("#submit").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = Object.fromEntries(new FormData(event.target));
  if (body.mode === "video") delete body.audio_format;
  const response = await api("/api/jobs", {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.status === 202) {
    say(`Accepted: ${answer.id}`);
    event.target.url.value = "";
    upsertJob(answer);
  } else {
    const errors = (answer.errors || []).map((e) => `${e.field}: ${e.message} (${e.code})`).join("; ");
    say(errors || answer.detail || `HTTP ${response.status}`, true);
  }
});

$("#jobs").addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const id = button.closest(".job").dataset.jobId;
  button.disabled = true;
  const response = await api(`/api/jobs/${id}/${button.dataset.action}`, {method: "POST"});
  const answer = await response.json().catch(() => ({}));
  if (response.status === 202) {
    upsertJob(answer);
  } else {
    say(answer.detail || `HTTP ${response.status}`, true);
    button.disabled = false;
  }
});

$("#token").addEventListener("submit", (event) => {
  event.preventDefault();
  token = event.target.token.value.trim();
  sessionStorage.setItem("tubeflow-token", token);
  event.target.hidden = true;
  if (listStream) listStream.close();
  for (const stream of jobStreams.values()) stream.close();
  jobStreams.clear();
  ensureSession(true).finally(connectList);
});

async function start() {
  // Find out whether a token is needed before opening streams (EventSource can't see a 401).
  const probe = await api("/api/jobs?limit=1");
  if (probe.status === 401) return;
  await ensureSession(true);
  connectList();
}

start();
