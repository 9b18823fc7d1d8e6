"""The web page in headless Chromium (Debian's, driven by Playwright) against `tubeflow up` on local media."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED_TOKEN, TEST_AUTH, needs_token

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it", allow_module_level=True)


def _with_shared_token(route) -> None:  # noqa: ANN001
    headers = route.request.headers
    if needs_token(route.request.url, headers):
        route.continue_(headers={**headers, "authorization": f"Bearer {SHARED_TOKEN}"})
    else:
        route.continue_()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=ARGS, viewport={"width": 1000, "height": 900}
        )
        if TEST_AUTH == "token":  # the shared stack wants its token (tests/conftest.py); no other stack gets it
            context.route("**/*", _with_shared_token)
        yield context
        context.close()


@pytest.fixture
def page(browser, stack):
    page = browser.new_page()
    page.goto(stack.base)
    page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
    yield page
    page.close()


def submit(page, url: str, mode: str = "video") -> str:
    page.fill("[name=url]", url)
    page.select_option("select[name=mode]", mode)
    page.click("form#submit button[type=submit]")
    page.wait_for_selector("#message:has-text('Accepted')", timeout=10_000)
    return page.inner_text("#message").split()[-1]


def card(page, job_id: str) -> str:
    return f"#job-{job_id}"


def bar_value(page, job_id: str, name: str) -> float:
    return float(page.get_attribute(f"{card(page, job_id)} [data-bar={name}] progress", "value"))


def test_submit_from_the_form_and_watch_both_bars_reach_100(page, media):
    job_id = submit(page, media.url(media.fresh("podcast.mp4"), rate=600_000), mode="both")
    selector = card(page, job_id)
    page.wait_for_selector(f"{selector}[data-status=running]", timeout=15_000)
    seen = set()
    for _ in range(400):
        status = page.get_attribute(selector, "data-status")
        seen.add(round(bar_value(page, job_id, "overall")))
        if status == "completed":
            break
        page.wait_for_timeout(25)
    page.screenshot(path=str(ARTIFACTS / "browser-completed.png"), full_page=True)
    assert page.get_attribute(selector, "data-status") == "completed"
    assert any(0 < value < 100 for value in seen), f"the bar never showed progress between 0 and 100: {seen}"
    assert bar_value(page, job_id, "overall") == 100
    assert bar_value(page, job_id, "extract") == 100
    assert "1 / 1 done" in page.inner_text(f"{selector} [data-bar=download]")
    links = page.locator(f"{selector} .items a")
    assert links.count() == 2  # the video and the mp3


def test_split_streams_show_their_phases_and_no_second_climb(page, media):
    """HLS with video and audio apart: the item row names the stream running and the merge, and its bar never goes
    back (recorded by a MutationObserver while the job runs)."""
    page.evaluate(
        """() => {
        window.seen = [];
        new MutationObserver(() => {
          for (const row of document.querySelectorAll(".items tr[data-item]")) {
            const phase = row.querySelector("[data-col=phase]");
            window.seen.push([phase ? phase.textContent : "", row.querySelector("[data-col=download]").textContent]);
          }
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
      }"""
    )
    job_id = submit(page, media.stream_url("hls", "master.m3u8", segment_delay_ms=200), mode="both")
    selector = card(page, job_id)
    page.wait_for_selector(f"{selector} [data-col=phase]", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "browser-split-streams-running.png"), full_page=True)
    page.wait_for_selector(f"{selector}[data-status=completed]", timeout=60_000)
    seen = page.evaluate("window.seen")
    phases = {phase for phase, _ in seen if phase}
    assert {"video 1/2", "audio 2/2"} <= phases, phases
    assert "merging video and audio" in phases or "extracting audio" in phases, phases
    percents = [float(m.group(1)) for _, text in seen if (m := re.search(r"(\d+\.\d)%", text))]
    assert percents == sorted(percents), percents
    page.screenshot(path=str(ARTIFACTS / "browser-split-streams.png"), full_page=True)


def test_a_failed_job_shows_its_code_and_message(page, media):
    job_id = submit(page, media.base + "/missing.mp4")
    selector = card(page, job_id)
    page.wait_for_selector(f"{selector}[data-status=failed]", timeout=30_000)
    error = page.locator(f"{selector} p.error")
    assert error.get_attribute("data-code") == "http_404" and "404" in error.inner_text()
    assert page.locator(f"{selector} button[data-action=retry]").count() == 1
    page.screenshot(path=str(ARTIFACTS / "browser-failed.png"), full_page=True)


def test_cancel_a_running_job_from_its_button(page, media):
    job_id = submit(
        page, media.feed_url(f"{media.fresh('long.mp4')}@30000,{media.fresh('clip1.mp4')}@30000"), mode="audio"
    )
    selector = card(page, job_id)
    page.wait_for_selector(f"{selector}[data-status=running] button[data-action=cancel]", timeout=15_000)
    page.click(f"{selector} button[data-action=cancel]")
    page.wait_for_selector(f"{selector}[data-status=cancelled]", timeout=10_000)
    assert page.locator(f"{selector} button[data-action=cancel]").count() == 0
    page.screenshot(path=str(ARTIFACTS / "browser-cancelled.png"), full_page=True)


def test_a_reload_mid_job_picks_the_state_up_and_follows_it_to_the_end(page, media):
    job_id = submit(
        page, media.feed_url(f"{media.fresh('long.mp4')}@100000,{media.fresh('clip2.mp4')}@60000"), mode="both"
    )
    selector = card(page, job_id)
    page.wait_for_selector(f"{selector} tr[data-status=downloading]", timeout=15_000)
    page.reload()
    page.wait_for_selector(f"{selector}", timeout=10_000)
    page.wait_for_selector(f"{selector}[data-status=completed]", timeout=60_000)
    assert "2 / 2 done (0 remaining)" in page.inner_text(f"{selector} [data-bar=download]")
    assert page.locator(f"{selector} tr[data-status=completed]").count() == 2


def test_readable_on_a_phone_width_screen(browser, stack):
    phone = browser.new_page()
    phone.set_viewport_size({"width": 375, "height": 740})
    try:
        phone.goto(stack.base)
        phone.wait_for_selector("#connection[data-state=live]", timeout=10_000)
        phone.wait_for_selector(".job", timeout=10_000)
        width = phone.evaluate("document.documentElement.scrollWidth")
        phone.screenshot(path=str(ARTIFACTS / "browser-phone.png"), full_page=True)
        assert width <= 375, f"the page scrolls sideways on a phone: {width}px wide"
    finally:
        phone.close()


def test_with_a_token_and_across_a_server_restart_the_page_keeps_up(browser, media, tmp_path, monkeypatch):
    from tests.conftest import free_port, start_stack, stop_stack

    monkeypatch.delenv("TUBEFLOW_NATS_URL", raising=False)
    env = {
        "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TUBEFLOW_API_TOKEN": "page-token",
        "TUBEFLOW_SHUTDOWN_GRACE": "3",
    }
    port = free_port()
    own = start_stack(tmp_path / "data", env, port=port)
    page = browser.new_page()
    try:
        page.goto(own.base)
        page.wait_for_selector("form#token:not([hidden])", timeout=10_000)
        page.fill("form#token input[name=token]", "page-token")
        page.click("form#token button")
        page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
        job_id = submit(page, media.url(media.fresh("long.mp4"), rate=40_000), mode="both")
        selector = card(page, job_id)
        page.wait_for_selector(f"{selector} tr[data-status=downloading]", timeout=15_000)
        assert stop_stack(own) == 0  # the server goes away mid-job...
        page.wait_for_selector("#connection[data-state=lost]", timeout=10_000)
        own = start_stack(tmp_path / "data", env, port=port)  # ...and comes back on the same data dir
        page.wait_for_selector(f"{selector}[data-status=completed]", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "browser-after-restart.png"), full_page=True)
        assert bar_value(page, job_id, "overall") == 100
        assert page.locator(f"{selector} .items a").count() == 2
    finally:
        page.close()
        stop_stack(own)


def test_the_options_panel_shapes_the_job_shows_what_was_chosen_and_is_remembered(page, stack, media):
    import httpx

    page.evaluate("localStorage.clear()")
    try:
        page.wait_for_selector("select[name=preset] option[value='1080p-mp4']", state="attached", timeout=10_000)
        page.fill("[name=url]", f"{media.base}/streams/ladder/manifest.mpd")
        page.select_option("select[name=quality]", "360")
        page.click("#options summary")
        page.select_option("select[name=container]", "mkv")
        page.fill("input[name=folder]", "from-the-page")
        page.click("form#submit button[type=submit]")
        page.wait_for_selector("#message:has-text('Accepted')", timeout=10_000)
        job_id = page.inner_text("#message").split()[-1]
        page.wait_for_selector(f"{card(page, job_id)}[data-status=completed]", timeout=60_000)
        row = f"{card(page, job_id)} tr[data-item]"
        assert page.inner_text(f"{row} [data-col=chosen]").startswith("360p")
        zip_link = page.get_attribute(f"{card(page, job_id)} a[data-action=zip]", "href")
        assert zip_link == f"/api/jobs/{job_id}/archive.zip"
        link = page.get_attribute(f"{row} td.files a", "href")
        assert link.startswith("/media/from-the-page/") and link.endswith(".mkv"), link
        view = httpx.get(f"{stack.base}/api/jobs/{job_id}", timeout=10).json()
        assert view["options"]["quality"] == "360" and view["options"]["container"] == "mkv"
        assert view["options"]["output"] == {"folder": "from-the-page", "template": None}
        assert "subtitles" not in {k for k, v in view["options"].items() if v}  # defaults were not sent

        # Remembered across a reload, with the panel open.
        page.reload()
        page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
        page.wait_for_function("document.querySelector('select[name=quality]').value === '360'", timeout=10_000)
        assert page.input_value("select[name=container]") == "mkv"
        assert page.input_value("input[name=folder]") == "from-the-page"
        assert page.get_attribute("#options", "open") is not None

        # A failure shows its code and what to do about it.
        page.evaluate("localStorage.clear()")
        page.reload()
        page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
        failed = submit(page, f"{media.base}/page.html")
        page.wait_for_selector(f"{card(page, failed)} .error[data-code=unsupported_url] .hint", timeout=30_000)
    finally:
        page.evaluate("localStorage.clear()")


def test_several_urls_pasted_in_the_box_become_one_batch(page, stack, media):
    urls = [
        media.url(media.fresh("clip1.mp4")),
        media.url(media.fresh("clip2.mp4")),
        media.url(media.fresh("clip3.mp4")),
    ]
    page.fill("[name=url]", "\n".join(urls))
    page.click("form#submit button[type=submit]")
    page.wait_for_selector("#message:has-text('Accepted 3 jobs')", timeout=10_000)
    ids = page.inner_text("#message").split(": ", 1)[1].split()
    assert len(ids) == 3
    for job_id in ids:
        page.wait_for_selector(f"{card(page, job_id)}[data-status=completed]", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "browser-batch.png"), full_page=True)


def test_the_search_box_and_status_filter_show_only_matching_jobs(page, stack, media):
    import uuid

    import httpx

    marker = uuid.uuid4().hex[:8]
    found = httpx.post(f"{stack.base}/api/jobs", json={"url": media.url("clip1.mp4") + f"?find={marker}"}).json()
    other = httpx.post(f"{stack.base}/api/jobs", json={"url": media.url("clip2.mp4") + "?other=1"}).json()
    page.wait_for_selector(f"{card(page, other['id'])}", timeout=10_000)
    page.fill("#search", marker.upper())
    page.wait_for_selector(f"{card(page, other['id'])}[hidden]", state="attached", timeout=10_000)
    assert page.is_visible(card(page, found["id"]))
    page.select_option("#status-filter", "failed")
    page.wait_for_selector(f"{card(page, found['id'])}[hidden]", state="attached", timeout=10_000)
    page.fill("#search", "")
    page.select_option("#status-filter", "")
    page.wait_for_selector(f"{card(page, other['id'])}:not([hidden])", timeout=10_000)


def test_hold_start_priority_pause_and_bulk_delete_from_the_page(page, stack, media):
    import httpx

    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#options summary")
    page.check("[name=hold]")
    page.select_option("select[name=priority]", "low")
    job_id = submit(page, media.url(media.fresh("clip1.mp4")))
    held = f"{card(page, job_id)}[data-status=held]"
    page.wait_for_selector(held, timeout=30_000)
    assert page.input_value(f"{card(page, job_id)} select[data-action=priority]") == "low"
    page.wait_for_selector("#queue-state:has-text('1 held')", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "browser-held.png"), full_page=True)
    try:
        page.click("#queue-pause")
        page.wait_for_selector("#queue[data-paused=true]", timeout=10_000)
        assert httpx.get(f"{stack.base}/api/queue").json()["paused"] is True
        page.screenshot(path=str(ARTIFACTS / "browser-queue-paused.png"), full_page=True)
    finally:
        httpx.post(f"{stack.base}/api/queue/resume")
    page.wait_for_selector("#queue[data-paused=false]", timeout=10_000)
    page.select_option(f"{card(page, job_id)} select[data-action=priority]", "high")
    page.wait_for_selector(f"{card(page, job_id)} .meta:has-text('high priority')", timeout=10_000)
    page.click(f"{card(page, job_id)} button[data-action=start]")
    page.wait_for_selector(f"{card(page, job_id)}[data-status=completed]", timeout=60_000)
    # Several selected, one action for all: delete them with their files (both dialogs accepted).
    page.check(f"{card(page, job_id)} input.pick")
    page.wait_for_selector("#bulk:not([hidden])", timeout=5_000)
    page.screenshot(path=str(ARTIFACTS / "browser-bulk.png"), full_page=True)
    page.select_option("#bulk select[name=action]", "delete")
    page.click("#bulk button[type=submit]")
    page.wait_for_selector(card(page, job_id), state="detached", timeout=10_000)
    assert httpx.get(f"{stack.base}/api/jobs/{job_id}").status_code == 404
    page.evaluate("localStorage.removeItem('tubeflow-options')")  # the form remembered priority low


def test_a_shared_link_lands_in_the_box_the_theme_switches_and_the_help_page_has_the_bookmarklet(browser, stack):
    import httpx

    manifest = httpx.get(f"{stack.base}/manifest.webmanifest")
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    assert manifest.json()["share_target"]["action"] == "/share"
    page = browser.new_page()
    try:
        # A phone's share sheet often sends the link inside `text`.
        page.goto(f"{stack.base}/share?title=A+video&text=look+at+this+https%3A%2F%2Fexample.com%2Fwatch%3Fv%3D1")
        page.wait_for_selector("#message:has-text('Shared link ready')", timeout=10_000)
        assert page.input_value("[name=url]") == "https://example.com/watch?v=1"
        assert page.url == f"{stack.base}/"
        page.select_option("#theme", "dark")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(22, 24, 28)"
        page.screenshot(path=str(ARTIFACTS / "browser-dark.png"), full_page=True)
        page.reload()
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"  # remembered
        page.select_option("#theme", "auto")
        page.goto(f"{stack.base}/help")
        bookmarklet = page.get_attribute("#bookmarklet", "href")
        assert bookmarklet.startswith("javascript:") and f"{stack.base}/share?url=" in bookmarklet
        page.screenshot(path=str(ARTIFACTS / "browser-help.png"), full_page=True)
    finally:
        page.close()


def test_older_jobs_come_a_page_at_a_time(browser, stack, media):
    import time

    import httpx

    urls = [media.url(f"missing-older-{n}.mp4") for n in range(60)]
    made = httpx.post(f"{stack.base}/api/jobs/batch", json={"urls": urls})
    assert made.status_code == 202
    ids = [j["id"] for j in made.json()["jobs"]]
    # All finished before the page opens: the list stream then brings the newest 50 and nothing changes after.
    deadline = time.monotonic() + 60
    query = {"status": "failed", "q": "missing-older", "limit": 100}
    while {j["id"] for j in httpx.get(f"{stack.base}/api/jobs", params=query).json()["jobs"]} != set(ids):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    page = browser.new_page()
    try:
        page.goto(stack.base)
        page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
        page.wait_for_function("document.querySelectorAll('#jobs .job').length >= 50", timeout=10_000)
        time.sleep(0.5)
        shown = page.evaluate("document.querySelectorAll('#jobs .job').length")
        assert shown == 50
        page.click("#older")
        page.wait_for_function(f"document.querySelectorAll('#jobs .job').length > {shown}", timeout=10_000)
    finally:
        page.close()


def test_subscribe_from_the_page_see_its_check_and_pause_resume_and_delete_it(page, stack, media):
    feed = media.feed_url(f"{media.fresh('clip2.mp4')},{media.fresh('clip3.mp4')}")
    page.click("#subscriptions summary")
    page.fill("#subscribe [name=interval]", "1m")  # under the 5 min minimum: refused, naming the field
    page.fill("#subscribe [name=source]", feed)
    page.click("#subscribe button[type=submit]")
    page.wait_for_selector("#message.error:has-text('interval')", timeout=10_000)
    page.fill("#subscribe [name=interval]", "2h")
    page.fill("#subscribe [name=exclude]", "*clip3*")
    page.click("#subscribe button[type=submit]")
    page.wait_for_selector("#message:has-text('subscribed')", timeout=10_000)
    card_ = page.locator(".subscription", has_text=feed)
    # The first check runs at once: one entry becomes a job, the other is filtered out.
    card_.locator(".sub-state", has_text="1 new item(s)").wait_for(timeout=60_000)
    assert "every 120 min" in card_.inner_text() and "last new: clip2" in card_.inner_text()
    page.screenshot(path=str(ARTIFACTS / "browser-subscriptions.png"), full_page=True)
    card_.locator("button[data-action=pause]").click()
    page.wait_for_selector(".subscription[data-paused=true]", timeout=10_000)
    card_.locator("button[data-action=resume]").click()
    page.wait_for_selector(".subscription[data-paused=false]", timeout=10_000)
    page.once("dialog", lambda dialog: dialog.accept())
    card_.locator("button[data-action=delete]").click()
    card_.wait_for(state="detached", timeout=10_000)


def test_the_page_shows_what_real_sites_get_and_sends_an_impersonated_job(browser, stack, media):
    import httpx

    from tests.e2e.test_real_sites import engine_info

    assert engine_info(stack.base)["engine"] is not None
    page = browser.new_page()
    try:
        page.goto(stack.base)
        page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
        page.wait_for_selector("#engine:not([hidden])", timeout=10_000)
        page.click("#engine summary")
        facts = page.inner_text("#engine")
        assert "JavaScript runtime: deno" in facts and "challenge solver: yt-dlp-ejs" in facts, facts
        page.wait_for_selector("select[name=impersonate] option[value=chrome]", state="attached", timeout=10_000)
        page.fill("[name=url]", media.url(media.fresh("clip1.mp4")))
        page.click("#options summary")
        page.select_option("select[name=impersonate]", "chrome")
        page.click("form#submit button[type=submit]")
        page.wait_for_selector("#message:has-text('Accepted')", timeout=10_000)
        job_id = page.inner_text("#message").split()[-1]
        page.wait_for_selector(f"#job-{job_id}[data-status=completed]", timeout=60_000)
        assert httpx.get(f"{stack.base}/api/jobs/{job_id}", timeout=10).json()["options"]["impersonate"] == "chrome"
    finally:
        page.evaluate("localStorage.clear()")
        page.close()


def test_a_site_cooling_down_shows_in_the_queue_bar_and_resume_now_ends_it(page, stack, nats_url):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime, timezone

    import httpx

    from services.runtime.cooldown import Cooldowns
    from services.runtime.nats import connect
    from services.runtime.nats.topology import PACING_BUCKET

    async def cool() -> None:  # as a downloader does when the site answers 429
        nc = await connect(nats_url, "test")
        js = nc.jetstream()
        await Cooldowns(js, await js.key_value(PACING_BUCKET), 600.0, "test").strike(
            "https://cooling.example.net/v/1", "site_rate_limited", "HTTP Error 429: Too Many Requests"
        )
        await nc.close()

    with ThreadPoolExecutor(1) as thread:  # Playwright's loop runs in this one
        thread.submit(asyncio.run, cool()).result()
    page.reload()
    row = "#queue-cooldowns li[data-site='cooling.example.net']"
    page.wait_for_selector(row, timeout=10_000)
    assert "cooling down until" in page.inner_text(row) and "site_rate_limited" in page.inner_text(row)
    page.screenshot(path=str(ARTIFACTS / "browser-cooldown.png"), full_page=True)
    page.click(f"{row} button.cooldown-resume")
    page.wait_for_selector("#queue-cooldowns", state="hidden", timeout=10_000)
    (ended,) = [
        c for c in httpx.get(f"{stack.base}/api/queue").json()["cooldowns"] if c["site"] == "cooling.example.net"
    ]
    assert datetime.fromisoformat(ended["until"]) <= datetime.now(timezone.utc)


def test_update_yt_dlp_from_the_page_and_roll_it_back(browser, tmp_path):
    from bench.harness import nats_server, tubeflow
    from services.engine.updates import bundled_version
    from tests.support.wheels import package_index, ytdlp_wheel

    ytdlp_wheel(tmp_path, "2099.01.01")
    with package_index(tmp_path) as index, nats_server() as server:
        with tubeflow(server.url, ["api"], {"UV_INDEX_URL": index}) as stack:
            page = browser.new_page()
            try:
                page.goto(stack.base)
                page.click("#engine summary")
                page.wait_for_selector(f"#engine-version:has-text('yt-dlp {bundled_version()}')", timeout=10_000)
                assert page.is_hidden("#engine-rollback")
                page.click("#engine-update")
                page.wait_for_selector("#message:has-text('yt-dlp 2099.01.01 in force')", timeout=120_000)
                page.wait_for_selector("#engine-version:has-text('yt-dlp 2099.01.01')", timeout=10_000)
                page.screenshot(path=str(ARTIFACTS / "browser-engine-updated.png"), full_page=True)
                page.click("#engine-rollback")
                page.wait_for_selector(f"#message:has-text('yt-dlp {bundled_version()} in force')", timeout=60_000)
                page.wait_for_selector("#engine-rollback", state="hidden", timeout=10_000)
            finally:
                page.close()


def test_sign_in_with_openid_connect_from_the_page_make_a_token_and_sign_out(browser, media):
    """TUBEFLOW_AUTH=oidc (issue 28): the page offers Sign in, the provider's form signs alice in, the page says who
    she is, shows her own job, makes her a token (shown once) and signs her out."""
    import httpx

    from bench.harness import nats_server, tubeflow
    from tests.support.oidc import oidc_provider

    users = {
        "alice@example.com": {"email": "alice@example.com", "groups": ["family"]},
        "root@example.com": {"email": "root@example.com", "groups": ["admins"]},
    }
    with oidc_provider(users) as issuer, nats_server() as server:
        env = {
            "TUBEFLOW_AUTH": "oidc",
            "TUBEFLOW_OIDC_ISSUER": issuer,
            "TUBEFLOW_OIDC_CLIENT_ID": "tubeflow",
            "TUBEFLOW_OIDC_CLIENT_SECRET": "s3cret",
        }
        with tubeflow(server.url, ["api", "progress", "downloader"], env) as stack:
            page = browser.new_page()
            try:
                page.goto(stack.base)
                page.wait_for_selector("#sign-in:not([hidden])", timeout=10_000)
                assert page.is_hidden("form#token")  # no token asked for: a person signs in
                page.click("#sign-in")
                page.click("button[name=sub][value='alice@example.com']")  # the provider's own form
                page.wait_for_selector("#connection[data-state=live]", timeout=15_000)
                assert page.url.startswith(stack.base)
                assert "alice@example.com" in page.inner_text("#who")
                job_id = submit(page, media.url(media.fresh("clip1.mp4")))
                page.wait_for_selector(f"{card(page, job_id)}[data-status=completed]", timeout=60_000)
                page.click("#tokens summary")
                page.fill("#new-token input[name=name]", "phone")
                page.click("#new-token button")
                page.wait_for_selector("#token-shown code", timeout=10_000)
                shown = page.inner_text("#token-shown code")
                assert shown.startswith("tf_")
                page.wait_for_selector("#token-list li:has-text('phone')", timeout=10_000)
                mine = httpx.get(f"{stack.base}/api/me", headers={"Authorization": f"Bearer {shown}"}).json()
                assert mine["user"] == "alice@example.com"
                page.screenshot(path=str(ARTIFACTS / "browser-signed-in.png"), full_page=True)
                page.click("#who button.sign-out")
                page.wait_for_url(f"{issuer}/**", timeout=10_000)  # the provider's own sign-out
                page.goto(stack.base)
                page.wait_for_selector("#sign-in:not([hidden])", timeout=10_000)
                assert page.is_hidden("#owner-filter")
                # An admin sees everyone's jobs, whose each is, and filters by owner.
                page.click("#sign-in")
                page.click("button[name=sub][value='root@example.com']")
                page.wait_for_selector("#connection[data-state=live]", timeout=15_000)
                assert "(admin)" in page.inner_text("#who")
                page.wait_for_selector(f"{card(page, job_id)} .owner:has-text('alice@example.com')", timeout=10_000)
                page.fill("#owner-filter", "bob@example.com")
                page.wait_for_selector(card(page, job_id), state="hidden", timeout=10_000)
                page.fill("#owner-filter", "alice@example.com")
                page.wait_for_selector(card(page, job_id), timeout=10_000)
            finally:
                page.close()


def test_a_persons_own_token_on_the_page_follows_their_jobs_live_and_opens_their_files(browser, media):
    """Token mode (issue 28): carol pastes her personal token; the page says it is her, follows her job live (streams
    with her read-only page session, not the admin's) and her file link opens."""
    import httpx

    from bench.harness import nats_server, tubeflow

    with (
        nats_server() as server,
        tubeflow(server.url, ["api", "progress", "downloader"], {"TUBEFLOW_API_TOKEN": "adm"}) as stack,
    ):
        made = httpx.post(
            f"{stack.base}/api/tokens", json={"name": "page", "user": "carol"}, headers={"Authorization": "Bearer adm"}
        )
        carol = made.json()["token"]
        page = browser.new_page()
        try:
            page.goto(stack.base)
            page.wait_for_selector("form#token:not([hidden])", timeout=10_000)
            page.fill("form#token input[name=token]", carol)
            page.click("form#token button")
            page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
            assert "carol" in page.inner_text("#who")
            job_id = submit(page, media.url(media.fresh("clip1.mp4")))
            page.wait_for_selector(f"{card(page, job_id)}[data-status=completed]", timeout=60_000)
            link = page.get_attribute(f"{card(page, job_id)} .items a", "href")
            answer = page.request.get(stack.base + link)  # with the page's cookie, as a click would
            assert answer.status == 200 and len(answer.body()) > 1000
            # Her output folder puts the file outside the job's folder: the link names the job, and opens.
            page.click("#options summary")
            page.fill("input[name=folder]", "carol-music")
            job_id = submit(page, media.url(media.fresh("clip1.mp4")))
            page.wait_for_selector(f"{card(page, job_id)}[data-status=completed]", timeout=60_000)
            link = page.get_attribute(f"{card(page, job_id)} .items a", "href")
            assert link.startswith("/media/carol-music/") and link.endswith(f"?job={job_id}"), link
            assert page.request.get(stack.base + link).status == 200
        finally:
            page.close()


def test_the_download_schedule_from_the_page_its_note_in_the_queue_bar_and_a_job_that_ignores_it(browser, media):
    from datetime import datetime, timedelta, timezone

    import httpx

    from bench.harness import nats_server, tubeflow

    later = datetime.now(timezone.utc) + timedelta(hours=1)
    with nats_server() as server, tubeflow(server.url, ["api", "progress", "downloader"]) as stack:
        page = browser.new_page()
        try:
            page.goto(stack.base)
            page.click("#schedule summary")
            page.click("#schedule-add")
            row = "#schedule-windows .schedule-window"  # every day (so that "next at" is today, whatever today is)
            page.fill(f"{row} [name=from]", later.strftime("%H:%M:%S"))
            page.fill(f"{row} [name=to]", (later + timedelta(hours=1)).strftime("%H:%M:%S"))
            page.fill("#schedule-form [name=timezone]", "UTC")
            page.fill("#schedule-form [name=rate]", "5M")
            page.fill("#schedule-form [name=site_caps]", "127.0.0.1=lots")
            page.click("#schedule-form button[type=submit]")
            page.wait_for_selector("#message:has-text('site_caps')", timeout=10_000)
            page.fill("#schedule-form [name=site_caps]", "127.0.0.1=3M, example.org=1G")
            page.click("#schedule-form button[type=submit]")
            page.wait_for_selector("#message:has-text('Download schedule saved')", timeout=10_000)
            saved = httpx.get(f"{stack.base}/api/queue/schedule", timeout=10).json()
            assert saved["windows"] == [
                {
                    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "from": later.strftime("%H:%M:%S"),
                    "to": (later + timedelta(hours=1)).strftime("%H:%M:%S"),
                }
            ]
            assert saved["rate"] == "5M" and saved["site_caps"] == {"127.0.0.1": "3M", "example.org": "1G"}
            day = "" if later.date() == datetime.now(timezone.utc).date() else f"{later:%a} "
            note = f"outside the download window — next at {day}{later:%H:%M:%S}"
            page.wait_for_selector(f"#queue-schedule:has-text('{note}')", timeout=10_000)
            assert "127.0.0.1 0 B of 3 MB" in page.inner_text("#queue-schedule")

            # A job from the form that ignores the schedule runs now and says so; one that follows it waits.
            page.click("#submit summary")
            page.check("#submit [name=ignore_schedule]")
            page.fill("#submit [name=url]", media.url(media.fresh("clip3.mp4")))
            page.click("#submit button[type=submit]")
            page.wait_for_selector(".job:has(.ignores-schedule) .status.completed", timeout=60_000)
            page.uncheck("#submit [name=ignore_schedule]")
            page.fill("#submit [name=url]", media.url(media.fresh("clip3.mp4")))
            page.click("#submit button[type=submit]")
            page.wait_for_selector(
                ".job:not(:has(.ignores-schedule)) .waiting[data-code=outside_window]", state="attached", timeout=30_000
            )
            page.screenshot(path=str(ARTIFACTS / "browser-schedule.png"), full_page=True)

            page.click("#schedule-clear")
            page.wait_for_selector("#message:has-text('Download schedule removed')", timeout=10_000)
            page.wait_for_selector(".job:not(:has(.ignores-schedule)) .status.completed", timeout=60_000)
            page.wait_for_selector("#queue-schedule", state="hidden", timeout=10_000)
        finally:
            page.close()


def test_the_library_view_lists_a_show_with_thumbnails_and_plays_an_episode(browser, media):
    import httpx

    from bench.harness import nats_server, tubeflow
    from tests.support.processes import wait_for

    with nats_server() as server, tubeflow(server.url, ["up"]) as stack:
        job = httpx.post(
            f"{stack.base}/api/jobs",
            json={"url": media.url(media.fresh("long.mp4")), "library": {"kind": "show", "show": "Player Test"}},
            timeout=10,
        ).json()["id"]
        wait_for(
            lambda: httpx.get(f"{stack.base}/api/jobs/{job}", timeout=10).json()["status"] == "completed", 60, "the job"
        )
        page = browser.new_page()
        try:
            page.goto(stack.base)
            page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
            page.wait_for_selector(f".job[data-job-id='{job}'] img.job-thumb", timeout=10_000)  # the card's thumbnail
            page.click("#views button[data-view=library]")
            group = ".library-group[data-group='Player Test']"
            thumb = page.wait_for_selector(f"{group} img.library-thumb", timeout=10_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb, timeout=10_000)
            assert page.is_hidden("#jobs")
            assert page.evaluate("document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')")
            page.click(f"{group} .library-play")
            page.wait_for_function(
                "(() => { const v = document.querySelector('#player-media'); return v && v.currentTime > 0.5; })()",
                timeout=20_000,
            )
            page.screenshot(path=str(ARTIFACTS / "browser-library.png"), full_page=True)
            # The position is kept in this browser, to resume from.
            page.wait_for_function(
                "Object.keys(localStorage).some((k) => k.startsWith('tubeflow-position:'))", timeout=15_000
            )
            # The show's podcast feed, from its heading: a URL to copy, which a podcast app can read.
            page.click(f"{group} .library-feed")
            box = page.wait_for_selector(f"{group} input.library-feed-url", timeout=10_000)
            url = box.input_value()
            assert url.startswith(f"{stack.base}/feeds/folders/Shows%2FPlayer%20Test.xml?key="), url
            assert httpx.get(url, timeout=10).text.count("<enclosure ") == 1
            page.click("#views button[data-view=jobs]")
            assert page.is_visible("#jobs")
        finally:
            page.close()
