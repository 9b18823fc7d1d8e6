// Who is signed in (issue 28): their name and role in the header with a way out, their personal API tokens (made,
// shown once, listed, revoked), and for an admin a filter by owner. Every text from the server goes in with
// textContent, never as HTML.

const $ = (selector) => document.querySelector(selector);

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

// Shown where nobody is known yet: in oidc mode a 401 links to the sign-in (`Link: </auth/login>; rel="login"`).
export function showSignIn(response) {
  const link = response.headers.get("Link") || "";
  const found = link.match(/<([^>]+)>;\s*rel="login"/);
  if (!found) return false;
  const here = location.pathname + location.search;
  const anchor = $("#sign-in");
  anchor.href = `${found[1]}?next=${encodeURIComponent(here)}`;
  anchor.hidden = false;
  return true;
}

export async function initAccount({api, say, onSignOut}) {
  const response = await api("/api/me");
  if (!response.ok) return null;
  const me = await response.json();
  const who = $("#who");
  who.replaceChildren(element("span", "who-name", me.user === "local" ? "" : me.user));
  if (me.role !== "user" && me.user !== "local") who.append(element("span", "who-role", ` (${me.role})`));
  if (me.via !== "none" && me.via !== "forward") {  // a proxy's user signs out at the proxy
    const out = element("button", "sign-out", me.via === "oidc" ? "Sign out" : "Forget token");
    out.type = "button";
    out.addEventListener("click", async () => {
      if (me.via === "oidc") {
        const answer = await api("/auth/logout", {method: "POST"});
        const body = answer.ok ? await answer.json() : {};
        location.href = body.provider_logout || "/";
      } else {
        await api("/api/session", {method: "DELETE"});
        onSignOut();
      }
    });
    who.append(" ", out);
  }
  who.hidden = false;
  if (me.role === "admin" && me.via !== "none") $("#owner-filter").hidden = false;
  if (me.via !== "none" && me.scope === "write" && me.role !== "viewer") initTokens({api, say});
  return me;
}

function initTokens({api, say}) {
  const panel = $("#tokens");
  const list = $("#token-list");
  panel.hidden = false;

  async function load() {
    const response = await api("/api/tokens");
    if (!response.ok) return;
    const {tokens} = await response.json();
    list.replaceChildren(...tokens.map((t) => {
      const row = element("li", "token-row");
      row.dataset.tokenId = t.id;
      const expires = t.expires_at ? `until ${new Date(t.expires_at).toLocaleDateString()}` : "no expiry";
      row.append(element("span", "", `${t.name} · ${t.scope} · ${expires}`));
      const revoke = element("button", "", "Revoke");
      revoke.type = "button";
      revoke.addEventListener("click", async () => {
        const answer = await api(`/api/tokens/${encodeURIComponent(t.id)}`, {method: "DELETE"});
        say(answer.ok ? `Token ${t.name} revoked` : `Could not revoke ${t.name}`, !answer.ok);
        load();
      });
      row.append(" ", revoke);
      return row;
    }));
  }

  $("#new-token").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const days = form.days.value.trim();
    const body = {name: form.name.value.trim(), scope: form.scope.value,
      expires_in_days: days === "" ? null : Number(days)};
    const answer = await api("/api/tokens", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const made = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      say(made.detail || `Could not make the token (${answer.status})`, true);
      return;
    }
    const shown = $("#token-shown");
    shown.replaceChildren(element("span", "", "Copy it now, it is shown only once: "), element("code", "", made.token));
    shown.hidden = false;
    form.reset();
    load();
  });
  panel.addEventListener("toggle", () => { if (panel.open) load(); });
  load();
}
