"""A subscription that becomes a show (issue 30): its episodes land in a Jellyfin/Plex/Kodi layout with NFO files and
artwork, and its podcast feed lists them for a podcast app (parsed by feedparser), whose ranged GETs get the exact
bytes; a wrong key and a revoked one are 404."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from urllib.parse import unquote

import feedparser
import httpx
import pytest

from bench.harness import nats_server, tubeflow
from tests.support.media import image_size, make_image
from tests.support.processes import finished_job, run_cli, wait_for

pytestmark = pytest.mark.e2e


def test_a_subscription_as_a_show_with_nfo_artwork_and_its_podcast_feed(media):
    names = [media.fresh(f"clip{n}.mp4") for n in (1, 2, 3)]
    with nats_server() as nats, tubeflow(nats.url, ["up"]) as stack:
        base = stack.base
        made = httpx.post(
            f"{base}/api/subscriptions",
            json={
                "url": media.feed_url(",".join(names)),
                "name": 'Test <Show> & "Co"',
                "options": {"library": {"kind": "show"}, "metadata": False},
            },
            timeout=10,
        )
        assert made.status_code == 201, made.text
        sub = made.json()["id"]
        jobs = wait_for(
            lambda: [e["job_id"] for e in httpx.get(f"{base}/api/subscriptions/{sub}", timeout=10).json()["last_new"]],
            30,
            "the subscription's first check",
        )
        assert len(jobs) == 3
        views = [finished_job(base, job) for job in jobs]
        assert [v["status"] for v in views] == ["completed"] * 3, [v["error"] for v in views]

        # The show: folder, season, episode names with the day's numbers 01-03, NFO files, artwork.
        show = stack.data_dir / "media" / "Shows" / "Test _Show_ & _Co_"
        today = datetime.now(timezone.utc)
        season = show / f"Season {today.year}"
        episodes = sorted(p.name for p in season.glob("*.mp4"))
        pattern = re.compile(rf"Test _Show_ & _Co_ - S{today.year}E{today:%m%d}(\d\d) - (.+) \[(.+)\]\.mp4")
        matches = [pattern.fullmatch(name) for name in episodes]
        assert all(matches) and len(matches) == 3, episodes
        assert sorted(int(m.group(1)) for m in matches) == [1, 2, 3]  # type: ignore[union-attr]
        assert {m.group(3) for m in matches} == {n.removesuffix(".mp4") for n in names}  # type: ignore[union-attr]
        tvshow = ET.parse(show / "tvshow.nfo").getroot()
        assert tvshow.tag == "tvshow" and tvshow.findtext("title") == 'Test <Show> & "Co"'
        for name in episodes:
            nfo = ET.parse(season / name.replace(".mp4", ".nfo")).getroot()
            assert nfo.tag == "episodedetails" and nfo.findtext("showtitle") == 'Test <Show> & "Co"'
            assert nfo.findtext("season") == str(today.year) and nfo.findtext("uniqueid")
            assert (season / name.replace(".mp4", "-thumb.jpg")).read_bytes()[:3] == b"\xff\xd8\xff"
        for art in ("poster.jpg", "fanart.jpg"):
            assert (show / art).read_bytes()[:3] == b"\xff\xd8\xff"
        # A job's view names the episode's files (the media route serves them; deleting the job removes them).
        assert all(v["items"][0]["download"]["file"].startswith("Shows/Test _Show_ & _Co_/") for v in views)

        # The podcast feed: made by `tubeflow feed`, parsed by a real feed parser.
        printed = run_cli("feed", sub, "--api", base)
        assert printed.returncode == 0, printed.stderr
        url = printed.stdout.strip()
        assert url.startswith(f"{base}/feeds/subscriptions/{sub}.xml?key=")
        parsed = feedparser.parse(httpx.get(url, timeout=10).content)
        assert not parsed.bozo, parsed.bozo_exception
        assert parsed.feed.title == 'Test <Show> & "Co"' and len(parsed.entries) == 3
        for entry in parsed.entries:
            (enclosure,) = entry.enclosures
            assert enclosure.type == "video/mp4"
            body = httpx.get(enclosure.href, timeout=10).content
            assert int(enclosure.length) == len(body) > 0
            ranged = httpx.get(enclosure.href, headers={"Range": "bytes=100-199"}, timeout=10)
            assert ranged.status_code == 206 and ranged.content == body[100:200]
        # The same URL again from the CLI; a wrong key, another job's file, and a revoked key: 404.
        assert run_cli("feed", sub, "--api", base).stdout.strip() == url
        assert httpx.get(url.replace("key=", "key=x"), timeout=10).status_code == 404
        enclosure_url = parsed.entries[0].enclosures[0].href
        assert (
            httpx.get(re.sub(r"/files/[^/]+/", "/files/01notajobofitxxxxxxxxxxxx/", enclosure_url)).status_code == 404
        )
        assert run_cli("feed", sub, "--revoke", "--api", base).returncode == 0
        assert httpx.get(url, timeout=10).status_code == 404
        assert httpx.get(enclosure_url, timeout=10).status_code == 404
        assert httpx.get(f"{base}/api/subscriptions/{sub}", timeout=10).json()["feed"] is False

        # A playlist laid out as a show, naming its images (as a subscription or a resolve fills in a channel's own):
        # the show's poster and background are those, read through yt-dlp once, not the first episode's frame.
        make_image(media.root / "show-poster.png", "60x90")
        make_image(media.root / "show-banner.png", "320x90", "blue")
        library = {"kind": "show", "show": "Named", "poster": media.url("show-poster.png")}
        library["fanart"] = media.url("show-banner.png")
        made = httpx.post(
            f"{base}/api/jobs",
            json={
                "url": media.feed_url(",".join(media.fresh(f"clip{n}.mp4") for n in (1, 2))),
                "library": library,
                "preset": "jellyfin-show",
            },
            timeout=10,
        )
        assert made.status_code == 202, made.text
        assert finished_job(base, made.json()["id"])["status"] == "completed"
        named = stack.data_dir / "media" / "Shows" / "Named"
        assert len(list((named / f"Season {today.year}").glob("*.mp4"))) == 2
        assert image_size(named / "poster.jpg") == (60, 90) and image_size(named / "fanart.jpg") == (320, 90)
        assert media.requests.count("/media/show-poster.png") == 1, media.requests

        # Feeds of a folder and of a preset: every file under Shows (both shows), and the jobs made with the preset.
        printed = run_cli("feed", "--folder", "Shows", "--api", base)
        assert printed.returncode == 0, printed.stderr
        folder_url = printed.stdout.strip()
        assert folder_url.startswith(f"{base}/feeds/folders/Shows.xml?key=")
        assert run_cli("feed", "--folder", "Shows/", "--api", base).stdout.strip() == folder_url  # the same feed
        folder = feedparser.parse(httpx.get(folder_url, timeout=10).content)
        assert not folder.bozo and len(folder.entries) == 5, folder.entries
        for entry in folder.entries[:2]:
            (enclosure,) = entry.enclosures
            ranged = httpx.get(enclosure.href, headers={"Range": "bytes=0-99"}, timeout=10)
            assert ranged.status_code == 206 and len(ranged.content) == 100 and int(enclosure.length) > 100
        # A show's own folder, below the jobs' folder (Shows): only its files.
        one_show_url = run_cli("feed", "--folder", "Shows/Named", "--api", base).stdout.strip()
        one_show = feedparser.parse(httpx.get(one_show_url, timeout=10).content)
        assert one_show.feed.title == "Named" and len(one_show.entries) == 2, one_show.entries
        assert all("/Shows/Named/" in unquote(e.enclosures[0].href) for e in one_show.entries)
        made = httpx.post(f"{base}/api/feeds", json={"preset": "jellyfin-show"}, timeout=10)
        assert made.status_code == 200, made.text
        preset = feedparser.parse(httpx.get(made.json()["url"], timeout=10).content)
        assert [e.title for e in preset.entries] and len(preset.entries) == 2, preset.entries
        assert {e.title for e in preset.entries} < {e.title for e in folder.entries}
        listed = httpx.get(f"{base}/api/feeds", timeout=10).json()
        assert sorted((f["kind"], f["name"]) for f in listed) == [
            ("folder", "Shows"),
            ("folder", "Shows/Named"),
            ("preset", "jellyfin-show"),
        ]
        # A file the preset's feed does not list, through its key: 404; so is a wrong key.
        preset_key = made.json()["url"].split("key=")[1]
        outside = [e.enclosures[0].href for e in folder.entries if e.title not in {p.title for p in preset.entries}]
        assert httpx.get(outside[0].split("?key=")[0] + f"?key={preset_key}", timeout=10).status_code == 404
        assert httpx.get(folder_url + "x", timeout=10).status_code == 404
        # Bad asks: 422 naming the field.
        for body, field in (
            ({"preset": "no-such-preset"}, "preset"),
            ({"folder": "../etc"}, "folder"),
            ({"folder": "Shows", "preset": "jellyfin-show"}, None),
            ({}, None),
        ):
            refused = httpx.post(f"{base}/api/feeds", json=body, timeout=10)
            assert refused.status_code == 422, (body, refused.text)
            assert field is None or refused.json()["errors"][0]["field"].endswith(field), refused.json()
        # Revoked: the feed and its files stop at once.
        assert run_cli("feed", "--folder", "Shows", "--revoke", "--api", base).returncode == 0
        assert httpx.get(folder_url, timeout=10).status_code == 404
        assert httpx.get(folder.entries[0].enclosures[0].href, timeout=10).status_code == 404
