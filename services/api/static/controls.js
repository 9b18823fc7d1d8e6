// The page's controls for many jobs at once (checkboxes and the bulk bar) and for the queue (pause, resume, counts,
// the download schedule).

function bytes(n) {
  for (const [unit, size] of [["TB", 2 ** 40], ["GB", 2 ** 30], ["MB", 2 ** 20], ["KB", 2 ** 10]]) {
    if (n >= size) return `${(n / size).toFixed(1).replace(/\.0$/, "")} ${unit}`;
  }
  return `${n} B`;
}

const $ = (selector) => document.querySelector(selector);

// Delete asks first, and asks again before it removes files.
export function deleteRequest(what) {
  if (!confirm(`Delete ${what}? Its events are kept; it leaves the list.`)) return null;
  return confirm("Also delete its files from the disk? (Files another job reused stay for that job.)");
}


export function initControls({api, say, upsertJob, forget}) {
  function picked() {
    return [...document.querySelectorAll("#jobs .job:not([hidden]) input.pick:checked")].map((el) => el.closest(".job").dataset.jobId);
  }

  function showBulk() {
    const ids = picked();
    $("#bulk").hidden = ids.length === 0;
    $("#bulk-count").textContent = `${ids.length} selected`;
  }

  $("#bulk").addEventListener("submit", async (event) => {
    event.preventDefault();
    const ids = picked();
    const [action, priority] = event.target.action.value.split(":");
    const body = {action, ids, ...(priority ? {priority} : {})};
    if (action === "delete") {
      const files = deleteRequest(`${ids.length} job(s)`);
      if (files === null) return;
      body.files = files;
    }
    const response = await api("/api/jobs/bulk", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) return say(answer.detail || `HTTP ${response.status}`, true);
    say(`${action}: ${answer.done} done, ${answer.refused} refused, ${answer.not_found} not found`, answer.refused + answer.not_found > 0);
    for (const result of answer.results) if (result.ok) refreshJob(result.id, action);
    for (const el of document.querySelectorAll("#jobs input.pick:checked")) el.checked = false;
    showBulk();
  });
  $("#bulk-all").addEventListener("click", () => {
    for (const el of document.querySelectorAll("#jobs .job:not([hidden]) input.pick")) el.checked = true;
    showBulk();
  });

  async function refreshJob(id, action) {
    if (action === "delete") return forget(id);
    const response = await api(`/api/jobs/${id}`);
    if (response.ok) upsertJob(await response.json());
  }

  function showQueue(state) {
    const box = $("#queue");
    box.dataset.paused = String(state.paused);
    const waiting = state.items.reduce((n, i) => n + i.waiting, 0);
    const running = state.workers.reduce((n, w) => n + w.running.length, 0);
    const slots = state.workers.reduce((n, w) => n + w.slots, 0);
    $("#queue-state").textContent = (state.paused ? "Queue paused" + (state.now ? " (running downloads stopped)" : "") : "Queue running") +
      ` · ${running}/${slots} downloading · ${waiting} waiting` + (state.jobs.held ? ` · ${state.jobs.held} held` : "");
    $("#queue-pause").hidden = state.paused;
    $("#queue-resume").hidden = !state.paused;
    showSchedule(state.schedule);
    // Sites cooling down after they pushed back: until when, why, and "resume now".
    const cooling = (state.cooldowns || []).filter((c) => new Date(c.until) > new Date());
    const list = $("#queue-cooldowns");
    list.hidden = cooling.length === 0;
    list.replaceChildren(...cooling.map((c) => {
      const li = document.createElement("li");
      li.dataset.site = c.site;
      li.textContent = `${c.site} cooling down until ${new Date(c.until).toLocaleTimeString()} (${c.code}: ${c.message.slice(0, 120)}) `;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cooldown-resume";
      button.textContent = "Resume now";
      button.addEventListener("click", async () => {
        const response = await api(`/api/queue/cooldowns/${encodeURIComponent(c.site)}/resume`, {method: "POST"});
        const answer = await response.json().catch(() => ({}));
        if (!response.ok) return say(answer.detail || `HTTP ${response.status}`, true);
        showQueue(answer);
      });
      li.append(button);
      return li;
    }));
  }

  async function loadQueue() {
    const response = await api("/api/queue");
    if (response.ok) showQueue(await response.json());
  }

  // The schedule now, in the queue bar: "outside the download window — next at 01:00", "daily cap reached: …",
  // and today's bytes against the caps.
  function showSchedule(status) {
    const note = $("#queue-schedule");
    const caps = status && (status.cap || status.sites.length);
    note.hidden = !status || !(status.message || caps);
    if (note.hidden) return;
    const today = caps ? `today ${bytes(status.bytes)}` + (status.cap ? ` of ${bytes(status.cap)}` : "") +
      status.sites.map((s) => ` · ${s.site} ${bytes(s.bytes)} of ${bytes(s.cap)}`).join("") : "";
    note.textContent = [status.message, today].filter(Boolean).join(" · ");
    note.dataset.open = String(status.open);
  }

  const DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

  function windowRow(w = {}) {
    const row = document.createElement("div");
    row.className = "schedule-window";
    const days = w.days || DAY_NAMES;
    row.innerHTML = DAY_NAMES.map((d) =>
      `<label><input type="checkbox" name="day" value="${d}"${days.includes(d) ? " checked" : ""}>${d}</label>`).join("") +
      ` <label>from <input name="from" type="time" step="1" required></label>` +
      ` <label>to <input name="to" type="time" step="1" required></label>` +
      ` <button type="button" class="schedule-remove">Remove</button>`;
    row.querySelector("[name=from]").value = w.from || "01:00";
    row.querySelector("[name=to]").value = w.to || "07:00";
    row.querySelector(".schedule-remove").addEventListener("click", () => row.remove());
    return row;
  }

  function fillSchedule(schedule) {
    const form = $("#schedule-form");
    $("#schedule-windows").replaceChildren(...schedule.windows.map(windowRow));
    form.timezone.value = schedule.windows.length || schedule.timezone !== "UTC" ? schedule.timezone :
      Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    for (const name of ["outside", "running_at_window_end"]) form.elements[name].value = schedule[name];
    for (const name of ["slow_rate", "rate", "daily_cap"]) form.elements[name].value = schedule[name] || "";
    form.site_caps.value = Object.entries(schedule.site_caps).map(([site, cap]) => `${site}=${cap}`).join(", ");
  }

  async function loadSchedule() {
    const response = await api("/api/queue/schedule");
    if (response.ok) fillSchedule(await response.json());
  }

  $("#schedule").addEventListener("toggle", () => { if ($("#schedule").open) loadSchedule(); });
  $("#schedule-add").addEventListener("click", () => $("#schedule-windows").append(windowRow()));
  $("#schedule-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const value = (name) => form.elements[name].value.trim() || null;
    const body = {
      timezone: value("timezone") || "UTC",
      windows: [...document.querySelectorAll("#schedule-windows .schedule-window")].map((row) => ({
        days: [...row.querySelectorAll("[name=day]:checked")].map((el) => el.value),
        from: row.querySelector("[name=from]").value,
        to: row.querySelector("[name=to]").value,
      })),
      outside: form.outside.value,
      slow_rate: value("slow_rate"),
      rate: value("rate"),
      daily_cap: value("daily_cap"),
      site_caps: Object.fromEntries(form.site_caps.value.split(",").map((part) => part.trim()).filter(Boolean)
        .map((part) => part.split("=").map((s) => s.trim()))),
      running_at_window_end: form.running_at_window_end.value,
    };
    const response = await api("/api/queue/schedule", {
      method: "PUT", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) return say(answer.detail || `HTTP ${response.status}`, true);
    fillSchedule(answer);
    say("Download schedule saved: every downloader follows it now.");
    loadQueue();
  });
  $("#schedule-clear").addEventListener("click", async () => {
    const response = await api("/api/queue/schedule", {method: "DELETE"});
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) return say(answer.detail || `HTTP ${response.status}`, true);
    fillSchedule(answer);
    say("Download schedule removed: downloads run at any time.");
    loadQueue();
  });

  $("#queue-pause").addEventListener("click", async () => {
    const response = await api("/api/queue/pause", {method: "POST"});
    if (response.ok) showQueue(await response.json());
  });
  $("#queue-resume").addEventListener("click", async () => {
    const response = await api("/api/queue/resume", {method: "POST"});
    if (response.ok) showQueue(await response.json());
  });

  $("#bulk").hidden = true;
  return {showBulk, loadQueue};
}

// The theme picker, and a link shared to tubeflow (`/share`, the bookmarklet) waiting in the URL box.
export function initThemeAndShare(say) {
  $("#theme").value = document.documentElement.dataset.theme;
  $("#theme").addEventListener("change", (event) => {
    document.documentElement.dataset.theme = event.target.value;
    localStorage.setItem("tubeflow-theme", event.target.value);
  });
  const shared = new URLSearchParams(location.search).get("url");
  if (shared) {
    $("#submit").url.value = shared;
    $("#submit").url.focus();
    say("Shared link ready: press Get it (the options below apply).");
    history.replaceState(null, "", "/");
  }
}
