import {deleteRequest, initControls, initThemeAndShare} from "./controls.js";
import {initSubscriptions} from "./subscriptions.js";
import {initAccount, showSignIn} from "./account.js";
import {initLibrary, mediaHref} from "./library.js";

// tubeflow's page: live through EventSource only (the all-jobs stream plus one stream per running job on screen).
// EventSource reconnects by itself with Last-Event-ID; when a stream is closed for good (an error status, a
// restarting server) it is opened again after a pause, and the server sends what changed meanwhile.

const TERMINAL = new Set(["completed", "partial", "failed", "cancelled"]);
const MAX_JOBS = 50;
const jobs = new Map();          // id -> {job, items: Map(itemId -> item)}
const jobStreams = new Map();    // id -> EventSource
let listStream = null;
let token = sessionStorage.getItem("tubeflow-token") || "";
let me = null;  // who the API takes this page for (/api/me)

const $ = (selector) => document.querySelector(selector);

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

// With a token, the page trades it for a session cookie (HttpOnly, read-only, 12 h): its media links and event
// streams then carry no token in their URLs. A stream closed for good asks for a fresh cookie before it reopens.
let sessionAt = 0;
async function ensureSession(force = false) {
  // A token's cookie, or (oidc) the signed-in session, which this renews (the API rotates it once an hour).
  if ((!token && me?.via !== "oidc") || (!force && Date.now() - sessionAt < 3600_000)) return;
  const response = await api("/api/session", {method: "POST"});
  if (response.ok) sessionAt = Date.now();
}

async function api(path, options = {}) {
  const headers = {...(options.headers || {})};
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, {...options, headers});
  if (response.status === 401) askForToken(response);
  return response;
}

function askForToken(response) {
  if (showSignIn(response)) {
    setConnection("lost", "sign in to go on");
    return;
  }
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
  if (item.status === "processing") {
    const label = pp.label || `post-processing: ${pp.name}`;
    return pp.percent != null ? `${label} · ${Math.floor(pp.percent)} %` : label;
  }
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

// A file outside its job's folder (an output folder) names the job, whose owner may read it (issue 28).
function mediaLink(file, jobId) {
  if (!file) return "";
  return `<a href="${esc(mediaHref(file, jobId, me?.role))}">${esc(file.split("/").pop())}</a>`;
}

// The job's thumbnail, when one of its items has one (a library's, or `thumbnail: file`).
function jobThumb(job, items) {
  for (const item of items) {
    const thumb = (item.download?.files || []).find((f) => /\.(jpe?g|png|webp)$/i.test(f));
    if (thumb) return `<img class="job-thumb" alt="" loading="lazy" src="${esc(mediaHref(thumb, job.id, me?.role))}">`;
  }
  return "";
}

// An error with its code, its message and what to do about it.
function errorText(error, tag) {
  const hint = error.hint ? `<span class="hint">${esc(error.hint)}</span>` : "";
  return `<${tag} class="error" data-code="${esc(error.code)}">${esc(error.code)}: ${esc(error.message)}${hint}</${tag}>`;
}

// What yt-dlp picked: "480p · avc1 + mp4a · mp4".
function formatText(chosen) {
  const parts = [];
  if (chosen.height) parts.push(`${chosen.height}p`);
  const codecs = [chosen.vcodec, chosen.acodec].filter(Boolean).map((c) => c.split(".")[0]);
  if (codecs.length) parts.push(codecs.join(" + "));
  if (chosen.ext) parts.push(chosen.ext);
  return parts.join(" · ");
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
  card.hidden = !matchesFilter(job);
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
    const error = item.error ? errorText(item.error, "span") : "";
    const chosen = dl.chosen ? `<span class="chosen" data-col="chosen">${esc(formatText(dl.chosen))}</span>` : "";
    const until = item.waiting && item.waiting.until ? ` (starts at ${new Date(item.waiting.until).toLocaleTimeString()})` : "";
    const waiting = item.waiting ? `<span class="waiting" data-code="${esc(item.waiting.code)}">waiting: ${esc(item.waiting.message)}${esc(until)}</span>` : "";
    return `<tr data-item="${esc(item.id)}" data-status="${esc(item.status)}"><td class="num">${item.index}</td>` +
      `<td>${esc(item.title || item.url)}<br>${chosen}${error}${waiting}</td>` +
      `<td class="num" data-col="download">${now ? `<span class="phase" data-col="phase">${esc(now)}</span> · ` : ""}${esc(dlText)}</td>` +
      `<td class="num" data-col="extract">${esc(exText)}</td>` +
      `<td class="files">${[dl.file, ...(dl.files || []), ex.file].map((f) => mediaLink(f, job.id)).join(" ")}</td></tr>`;
  }).join("");
  const buttons = [];
  if (job.held && !TERMINAL.has(job.status)) buttons.push(`<button data-action="start">Start</button>`);
  if (!TERMINAL.has(job.status)) {
    buttons.push(`<select data-action="priority" aria-label="priority">` + ["high", "normal", "low"].map((p) =>
      `<option${p === (job.priority || "normal") ? " selected" : ""}>${p}</option>`).join("") + `</select>`);
  }
  if (!TERMINAL.has(job.status)) buttons.push(`<button data-action="cancel">Cancel</button>`);
  if (job.status === "partial" || job.status === "failed") buttons.push(`<button data-action="retry">Retry</button>`);
  if (items.some((i) => i.download.file || i.extract.file)) {
    buttons.push(`<a class="button" data-action="zip" href="/api/jobs/${esc(id)}/archive.zip" download>Download all</a>`);
  }
  buttons.push(`<button data-action="delete">Delete</button>`);
  const picked = card.querySelector("input.pick")?.checked ? " checked" : "";
  card.innerHTML = jobThumb(job, items) +
    `<h2><input type="checkbox" class="pick" aria-label="select"${picked}> ${esc(job.title || job.url)}</h2>` +
    `<div class="meta"><span class="status ${esc(job.status)}">${esc(job.status)}</span> ${esc(job.mode)}` +
    `${job.priority && job.priority !== "normal" ? " · " + esc(job.priority) + " priority" : ""}` +
    `${job.options?.schedule === "ignore" ? ` · <span class="ignores-schedule">ignores the schedule</span>` : ""}` +
    `${job.mode !== "video" ? " · " + esc(job.audio_format) : ""} · <span>${esc(job.url)}</span>` +
    `${me?.role === "admin" && me.via !== "none" && job.owner ? ` · <span class="owner">${esc(job.owner)}</span>` : ""}</div>` +
    bar("overall", job.progress.percent, job.progress.percent.toFixed(1) + "%", "overall") +
    bar("download", downloadPercent, downloadText, "download") +
    (job.mode !== "video" ? bar("audio", x.total ? 100 * (x.completed + (job.status === "cancelled" ? 0 : x.failed + x.skipped)) / x.total : 0,
      `${x.completed} / ${x.total} done` + (playlist ? ` (${x.remaining} remaining)` : ""), "extract") : "") +
    (job.error ? errorText(job.error, "p") : "") +
    (buttons.length ? `<div class="actions">${buttons.join("")}</div>` : "") +
    (rows ? `<table class="items"><thead><tr><th>#</th><th>item</th><th>download</th><th>audio</th><th>files</th></tr></thead><tbody>${rows}</tbody></table>` : "");
}

// --- search: the cards shown are those matching the search box and status; older matches come from the API -----

function filterNow() {
  return {q: $("#search").value.trim().toLowerCase(), status: $("#status-filter").value,
    owner: $("#owner-filter").value.trim()};
}

function matchesFilter(job) {
  const {q, status, owner} = filterNow();
  if (status && job.status !== status) return false;
  if (owner && job.owner !== owner) return false;
  return !q || `${job.title || ""}\n${job.url}`.toLowerCase().includes(q);
}

let searchTimer = null;
async function search() {
  const {q, status, owner} = filterNow();
  for (const id of jobs.keys()) render(id);
  if (!q && !status && !owner) return;
  const params = new URLSearchParams({limit: String(MAX_JOBS)});
  if (q) params.set("q", q);
  if (status) params.set("status", status);
  if (owner) params.set("owner", owner);
  const response = await api(`/api/jobs?${params}`);
  if (!response.ok) return;
  for (const job of (await response.json()).jobs) upsertJob(job);
}

function searchSoon() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(search, 250);
}

$("#search").addEventListener("input", searchSoon);
$("#owner-filter").addEventListener("input", searchSoon);
$("#status-filter").addEventListener("change", search);

// --- state from the streams ---------------------------------------------------------------------------------

function forget(id) {
  jobs.delete(id);
  document.getElementById("job-" + id)?.remove();
  jobStreams.get(id)?.close();
  jobStreams.delete(id);
}

function upsertJob(job) {
  if (job.deleted_at) return forget(job.id);
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

// The form's choices become a job with only what differs from the defaults (so a preset's fields are not
// overridden by a default nobody chose), and are remembered for the next visit.
const REMEMBERED = ["mode", "quality", "audio_format", "preset", "container", "video_codec", "sub_langs", "sub_auto",
  "sub_embed", "thumbnail", "metadata", "clip_start", "clip_end", "split_chapters", "folder", "template", "cookies",
  "priority"];

function jobBody(form) {
  const f = (name) => form.elements[name];
  const body = {};
  const set = (name, value, fallback) => { if (value !== fallback && value !== "") body[name] = value; };
  set("mode", f("mode").value, "video");
  if (f("mode").value !== "video") set("audio_format", f("audio_format").value, "mp3");
  set("quality", f("quality").value, "best");
  set("preset", f("preset").value, "");
  set("container", f("container").value, "any");
  set("video_codec", f("video_codec").value, "any");
  set("thumbnail", f("thumbnail").value, "none");
  set("cookies", f("cookies").value, "");
  set("impersonate", f("impersonate").value, "");
  set("priority", f("priority").value, "normal");
  if (f("hold").checked) body.start = false;
  if (f("ignore_schedule").checked) body.schedule = "ignore";
  const langs = f("sub_langs").value.split(/[\s,]+/).filter(Boolean);
  if (langs.length) body.subtitles = {languages: langs, auto: f("sub_auto").checked, embed: f("sub_embed").checked};
  if (!f("metadata").checked) body.metadata = false;
  if (f("split_chapters").checked) body.split_chapters = true;
  const start = f("clip_start").value.trim(), end = f("clip_end").value.trim();
  if (start || end) body.clip = {...(start ? {start} : {}), ...(end ? {end} : {})};
  const folder = f("folder").value.trim(), template = f("template").value.trim();
  if (folder || template) body.output = {...(folder ? {folder} : {}), ...(template ? {template} : {})};
  return body;
}

function remember(form) {
  const kept = {};
  for (const name of REMEMBERED) {
    const el = form.elements[name];
    kept[name] = el.type === "checkbox" ? el.checked : el.value;
  }
  localStorage.setItem("tubeflow-options", JSON.stringify(kept));
}

function recall(form) {
  let kept = {};
  try { kept = JSON.parse(localStorage.getItem("tubeflow-options") || "{}"); } catch { kept = {}; }
  for (const [name, value] of Object.entries(kept)) {
    const el = form.elements[name];
    if (!el) continue;
    if (el.type === "checkbox") el.checked = Boolean(value);
    else if (el.tagName !== "SELECT" || [...el.options].some((o) => o.value === value)) el.value = value;
  }
  const changed = ["preset", "container", "video_codec", "sub_langs", "thumbnail", "clip_start", "clip_end", "folder",
    "template", "cookies"].some((name) => form.elements[name].value && !["any", "none"].includes(form.elements[name].value));
  if (changed || !form.elements.metadata.checked || form.elements.split_chapters.checked) $("#options").open = true;
}

// Presets and cookie profiles fill their selects; what was remembered is chosen again once they are there.
async function loadChoices() {
  const [presets, cookies] = await Promise.all([api("/api/presets"), api("/api/cookies")]);
  const fill = (select, names) => {
    for (const name of names) select.append(new Option(name, name));
  };
  if (presets.ok) fill($("#submit").elements.preset, (await presets.json()).presets.map((p) => p.name));
  if (cookies.ok) fill($("#submit").elements.cookies, (await cookies.json()).profiles.map((p) => p.name));
  recall($("#submit"));
}

// The yt-dlp in force, what the downloaders run (they switch when idle), and whether a rollback has somewhere to go.
function showEngineVersion(info) {
  const running = [...new Set(Object.values(info.yt_dlp_running || {}))];
  $("#engine-version").textContent = `yt-dlp ${info.yt_dlp}` +
    (running.length && (running.length > 1 || running[0] !== info.yt_dlp) ? ` (downloaders run ${running.join(", ")})` : "") +
    (info.yt_dlp !== info.yt_dlp_bundled ? ` · installed with ${info.yt_dlp_bundled}` : "");
  $("#engine-rollback").hidden = info.yt_dlp === info.yt_dlp_bundled;
}

async function checkVersions() {
  const response = await api("/api/info");
  if (!response.ok) return;
  const info = await response.json();
  const notice = $("#notice");
  if (info.yt_dlp_stale) {
    notice.textContent = `yt-dlp ${info.yt_dlp} is ${info.yt_dlp_age_days} days old: sites change, and downloads ` +
      "may fail until it is updated (see the README: Updating yt-dlp).";
    notice.hidden = false;
  }
  const problems = (info.problems || []).filter((p) => !p.startsWith("yt-dlp "));
  if (problems.length) {
    notice.textContent = [notice.hidden ? "" : notice.textContent, ...problems.map((p) => `Real sites: ${p}.`)]
      .filter(Boolean).join(" ");
    notice.hidden = false;
  }
  showEngineVersion(info);
  $("#engine").hidden = false;
  const engine = info.engine;
  if (!engine) return;
  const facts = [
    `JavaScript runtime: ${engine.js_runtime ? `${engine.js_runtime.name} ${engine.js_runtime.version}` : "none"}`,
    `challenge solver: ${engine.solver && engine.solver.version ? `yt-dlp-ejs ${engine.solver.version}` : "none"}`,
    `impersonation: ${engine.impersonate_targets.length ? `${engine.impersonate_targets.length} targets` : "none"}`,
    `PO-token provider: ${engine.pot_provider.url ?
      `${engine.pot_provider.url} (${engine.pot_provider.answering ? "answering" : "not answering"})` : "not set"}`,
  ];
  const list = $("#engine ul");
  list.replaceChildren(...facts.map((text) => Object.assign(document.createElement("li"), {textContent: text})));
  $("#engine").hidden = false;
  const select = $("#submit").elements.impersonate;
  const clients = [...new Set(engine.impersonate_targets.map((t) => t.split(/[-:]/)[0]))].sort();
  for (const client of clients) select.append(new Option(client, client));
}

// Update yt-dlp (or roll it back) at run time: the API installs and checks it; every downloader switches when idle.
for (const [id, action, doing] of [["#engine-update", "update", "installing and checking the newest yt-dlp…"],
  ["#engine-rollback", "rollback", "rolling yt-dlp back…"]]) {
  $(id).addEventListener("click", async () => {
    say(doing);
    const response = await api(`/api/engine/${action}`, {method: "POST"});
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) return say(answer.detail || `HTTP ${response.status}`, true);
    say(`yt-dlp ${answer.version} in force` + (answer.previous ? ` (was ${answer.previous})` : "") +
      ": new downloads run on it");
    const info = await api("/api/info");
    if (info.ok) showEngineVersion(await info.json());
  });
}

// One URL is a job; several (pasted one per line, or separated by spaces) are one batch with the same options.
$("#submit").addEventListener("submit", async (event) => {
  event.preventDefault();
  const urls = event.target.url.value.split(/\s+/).filter(Boolean);
  const fields = jobBody(event.target);
  remember(event.target);
  const several = urls.length > 1;
  const response = await api(several ? "/api/jobs/batch" : "/api/jobs", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(several ? {urls, ...fields} : {url: urls[0] || "", ...fields}),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.status === 202) {
    const accepted = several ? answer.jobs : [answer];
    say(several ? `Accepted ${accepted.length} jobs: ${accepted.map((j) => j.id).join(" ")}` : `Accepted: ${answer.id}`);
    event.target.url.value = "";
    event.target.url.rows = 1;
    for (const job of accepted) upsertJob(job);
  } else {
    const errors = (answer.errors || []).map((e) => `${e.field}: ${e.message} (${e.code})`).join("; ");
    say(errors || answer.detail || `HTTP ${response.status}`, true);
  }
});

// The URL box grows with what is pasted; Enter submits, Shift+Enter adds a line.
$("#submit").url.addEventListener("input", (event) => {
  event.target.rows = Math.min(8, Math.max(1, event.target.value.split("\n").length));
});
$("#submit").url.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    event.target.form.requestSubmit();
  }
});

async function act(id, action, button) {
  let response;
  if (action === "delete") {
    const files = deleteRequest("this job");
    if (files === null) { button.disabled = false; return; }
    response = await api(`/api/jobs/${id}?files=${files}`, {method: "DELETE"});
  } else if (action === "priority") {
    response = await api(`/api/jobs/${id}/priority`, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({priority: button.value}),
    });
  } else {
    response = await api(`/api/jobs/${id}/${action}`, {method: "POST"});
  }
  const answer = await response.json().catch(() => ({}));
  if (response.status === 202) {
    upsertJob(answer);
  } else {
    say(answer.detail || `HTTP ${response.status}`, true);
    button.disabled = false;
  }
}

$("#jobs").addEventListener("change", (event) => {
  const select = event.target.closest("select[data-action]");
  if (select) act(select.closest(".job").dataset.jobId, "priority", select);
  if (event.target.matches("input.pick")) showBulk();
});

$("#jobs").addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const id = button.closest(".job").dataset.jobId;
  button.disabled = true;
  await act(id, button.dataset.action, button);
});

$("#token").addEventListener("submit", (event) => {
  event.preventDefault();
  // Kept for this tab; the page starts again with it (who it is, the queue, subscriptions, streams).
  sessionStorage.setItem("tubeflow-token", event.target.token.value.trim());
  location.reload();
});

// Older jobs, a page at a time (the stream brings the newest MAX_JOBS and every change).
let olderCursor = undefined;
$("#older").addEventListener("click", async () => {
  const {q, status} = filterNow();
  const params = new URLSearchParams({limit: String(MAX_JOBS)});
  if (q) params.set("q", q);
  if (status) params.set("status", status);
  const oldest = [...jobs.keys()].sort()[0];
  if (olderCursor) params.set("cursor", olderCursor);
  else if (oldest) params.set("cursor", oldest);
  const response = await api(`/api/jobs?${params}`);
  if (!response.ok) return;
  const page = await response.json();
  for (const job of page.jobs) upsertJob(job);
  olderCursor = page.next;
  $("#older").hidden = !page.next;
});

const {showBulk, loadQueue} = initControls({api, say, upsertJob, forget});
initThemeAndShare(say);

async function start() {
  // Find out whether a token is needed before opening streams (EventSource can't see a 401).
  const probe = await api("/api/jobs?limit=1");
  if (probe.status === 401) return;
  await ensureSession(true);
  me = await initAccount({api, say, onSignOut: () => {
    sessionStorage.removeItem("tubeflow-token");
    location.reload();
  }});
  connectList();
  loadQueue();
  setInterval(loadQueue, 5000);
  setInterval(() => ensureSession(), 600_000);
  initSubscriptions({api, say});
  initLibrary({api, say, whoAmI: () => me});
  loadChoices();
  checkVersions();
}

start();
