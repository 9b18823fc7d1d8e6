// The Library view (issue 30): finished files by show or folder, with thumbnails, a search, and a player (video or
// audio over the media route, WebVTT subtitles when there are, the position kept in this browser to resume from).

const $ = (selector) => document.querySelector(selector);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

// A file's URL; one outside its job's folder (an output folder, a library) names its job, whose owner may read it
// (issue 28; an admin reads every file as it is).
export function mediaHref(file, jobId, role) {
  const named = file.split("/")[0] !== jobId && role !== "admin";
  return "/media/" + file.split("/").map(encodeURIComponent).join("/") + (named ? `?job=${encodeURIComponent(jobId)}` : "");
}

export function initLibrary({api, say, whoAmI}) {
  const mediaUrl = (file, jobId) => mediaHref(file, jobId, whoAmI()?.role);

  async function load() {
    const q = $("#library-search").value.trim();
    const response = await api(`/api/library${q ? `?q=${encodeURIComponent(q)}` : ""}`);
    if (!response.ok) return say(`Library: HTTP ${response.status}`, true);
    const {groups} = await response.json();
    $("#library-groups").innerHTML = groups.length ? groups.map((group) =>
      `<section class="library-group" data-group="${esc(group.name)}"><h2>${esc(group.name)}` +
      (group.folder ? ` <button type="button" class="library-feed" title="An RSS feed of ${esc(group.folder)} for a podcast app">Podcast feed</button>` : "") +
      `</h2><ul>` + group.items.map((item, n) =>
        `<li class="library-item" data-file="${esc(item.file)}" data-job="${esc(item.job_id)}" data-group="${esc(group.name)}" data-n="${n}">` +
        (item.thumb ? `<img class="library-thumb" loading="lazy" alt="" src="${esc(mediaUrl(item.thumb, item.job_id))}">` :
          `<span class="library-thumb none">${item.kind === "audio" ? "♪" : "▶"}</span>`) +
        `<button type="button" class="library-play">${esc(item.title)}</button></li>`).join("") + `</ul></section>`).join("") :
      `<p class="empty">Nothing finished yet${q ? " matches" : ""}.</p>`;
    for (const button of document.querySelectorAll("#library-groups .library-feed")) {
      const section = button.closest("section");
      const group = groups.find((g) => g.name === section.dataset.group);
      button.addEventListener("click", () => feed(section, group.folder));
    }
    for (const button of document.querySelectorAll("#library-groups .library-play")) {
      const li = button.closest("li");
      const group = groups.find((g) => g.name === li.dataset.group);
      button.addEventListener("click", () => play(group.items[Number(li.dataset.n)]));
    }
  }

  // The person's podcast feed of the group's folder (made if none): its URL, selected, to copy into a podcast app.
  async function feed(section, folder) {
    const response = await api("/api/feeds", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({folder})});
    if (!response.ok) return say(`Podcast feed: HTTP ${response.status}`, true);
    const {url} = await response.json();
    let box = section.querySelector(".library-feed-url");
    if (!box) {
      box = document.createElement("input");
      box.className = "library-feed-url";
      box.readOnly = true;
      box.setAttribute("aria-label", `Podcast feed of ${folder}`);
      section.querySelector("h2").after(box);
    }
    box.value = url;
    box.select();
  }

  function play(item) {
    const box = $("#player");
    const tag = item.kind === "audio" ? "audio" : "video";
    const tracks = item.subtitles.map((file, n) =>
      `<track kind="subtitles" src="${esc(mediaUrl(file, item.job_id))}" label="${esc(file.split(".").slice(-2, -1)[0] || "subtitles")}"${n === 0 ? " default" : ""}>`).join("");
    box.innerHTML = `<h3>${esc(item.title)}</h3><${tag} id="player-media" controls autoplay preload="metadata"` +
      (item.thumb && tag === "video" ? ` poster="${esc(mediaUrl(item.thumb, item.job_id))}"` : "") +
      ` src="${esc(mediaUrl(item.file, item.job_id))}">${tracks}</${tag}>`;
    box.hidden = false;
    const media = $("#player-media");
    const key = `tubeflow-position:${item.file}`;
    media.addEventListener("loadedmetadata", () => {
      const saved = Number(localStorage.getItem(key) || 0);
      if (saved > 5 && saved < media.duration - 5) media.currentTime = saved;  // resume where this browser stopped
    });
    let last = 0;
    media.addEventListener("timeupdate", () => {
      if (Math.abs(media.currentTime - last) < 5) return;
      last = media.currentTime;
      localStorage.setItem(key, String(Math.floor(media.currentTime)));
    });
    media.addEventListener("ended", () => localStorage.removeItem(key));
    box.scrollIntoView({block: "nearest"});
  }

  function show(view) {
    for (const button of document.querySelectorAll("#views button")) button.setAttribute("aria-pressed", String(button.dataset.view === view));
    $("#library").hidden = view !== "library";
    document.body.classList.toggle("library-mode", view === "library");  // the jobs, their filter and bulk bar hide
    if (view === "library") load();
    else { const media = $("#player-media"); if (media) media.pause(); }
  }

  for (const button of document.querySelectorAll("#views button")) button.addEventListener("click", () => show(button.dataset.view));
  let typing = null;
  $("#library-search").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(load, 250); });
}
