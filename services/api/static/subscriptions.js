// The Subscriptions view: follow a channel, playlist or feed; list them with their last and next check and new
// items; check now, pause or resume, delete. Every text from the server goes in with textContent, never as HTML.

const $ = (selector) => document.querySelector(selector);

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  const seconds = Math.round((date - Date.now()) / 1000);
  const span = Math.abs(seconds) < 90 ? `${Math.abs(seconds)} s` : Math.abs(seconds) < 5400 ? `${Math.round(Math.abs(seconds) / 60)} min` : `${Math.round(Math.abs(seconds) / 3600)} h`;
  return seconds >= 0 ? `in ${span}` : `${span} ago`;
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

export function initSubscriptions({api, say}) {
  const panel = $("#subscriptions");
  const list = $("#subscription-list");

  function render(subscriptions) {
    list.replaceChildren(...subscriptions.map((s) => {
      const card = element("article", "subscription");
      card.dataset.subscriptionId = s.id;
      card.dataset.paused = String(s.paused);
      card.append(element("h3", "", s.name || s.source_title || s.url));
      card.append(element("div", "meta", s.url));
      const state = s.paused ? `paused${s.paused_reason && s.paused_reason !== "requested" ? ` (${s.paused_reason})` : ""}` : "active";
      const line = element("div", "meta sub-state");
      line.textContent = `${state} · every ${Math.round(s.interval / 60)} min · last check ${when(s.last_check_at)} · next ${s.paused ? "—" : when(s.next_check_at)} · ${s.new_items} new item(s)`;
      card.append(line);
      if (s.remaining) {
        // A backlog (a paced site's, or over max_items_per_check): how much is left and when the next batch comes.
        const next = s.next_batch_at ? ` · next batch ${when(s.next_batch_at)}` : " · taken at the next check";
        card.append(element("div", "meta backlog", `${s.remaining} more waiting${next}`));
      }
      if (s.last_error) card.append(element("div", "error", `${s.last_error.code}: ${s.last_error.message}`));
      if (s.last_new && s.last_new.length) {
        card.append(element("div", "meta", "last new: " + s.last_new.map((e) => e.title || e.url).slice(0, 5).join(", ")));
      }
      const buttons = element("div", "actions");
      const button = (label, action) => {
        const b = element("button", "", label);
        b.type = "button";
        b.dataset.action = action;
        buttons.append(b);
      };
      button("Check now", "check");
      button(s.paused ? "Resume" : "Pause", s.paused ? "resume" : "pause");
      button("Delete", "delete");
      card.append(buttons);
      return card;
    }));
    $("#subscription-count").textContent = `(${subscriptions.length})`;
  }

  async function load() {
    const response = await api("/api/subscriptions");
    if (response.ok) render(await response.json());
  }

  list.addEventListener("click", async (event) => {
    const action = event.target.dataset && event.target.dataset.action;
    if (!action) return;
    const id = event.target.closest(".subscription").dataset.subscriptionId;
    if (action === "delete" && !confirm("Stop following this? Jobs it made stay.")) return;
    const response = action === "delete"
      ? await api(`/api/subscriptions/${id}`, {method: "DELETE"})
      : await api(`/api/subscriptions/${id}/${action}`, {method: "POST"});
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      return say(answer.detail || `HTTP ${response.status}`, true);
    }
    say(action === "check" ? "checking now" : `${action}d`);
    load();
  });

  $("#subscribe").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const body = {url: form.source.value.trim(), interval: form.interval.value.trim() || "1h"};
    const include = form.include.value.trim();
    const exclude = form.exclude.value.trim();
    if (include || exclude) body.title_filter = {include: include ? [include] : [], exclude: exclude ? [exclude] : []};
    if (form.sub_mode.value !== "video") body.options = {mode: form.sub_mode.value};
    const response = await api("/api/subscriptions", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) return say(answer.detail || `HTTP ${response.status}`, true);
    say(`subscribed: ${answer.name || answer.url}`);
    form.reset();
    load();
  });

  panel.addEventListener("toggle", () => { if (panel.open) load(); });
  setInterval(() => { if (panel.open) load(); }, 5000);
  load();
}
