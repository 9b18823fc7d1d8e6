"""Identities (issue 28, first step): forward auth believed only from the trusted proxy's address (the two loopback
addresses of the security tests), roles from groups (a viewer reads only), and personal tokens (a read token can't
write, a revoked one stops at once, none recoverable from storage), in `forward` and `token` modes."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import time
from urllib.parse import unquote

import httpx
import nats
import pytest

from bench.harness import nats_server, tubeflow
from services.runtime.nats.topology import TOKENS_BUCKET
from tests.support.processes import run_cli, wait_for

pytestmark = pytest.mark.e2e


def client_from(address: str, base: str) -> httpx.Client:
    """Requests that leave from ``address`` (127.0.0.2: the trusted proxy; 127.0.0.3: anyone else)."""
    return httpx.Client(base_url=base, timeout=30, transport=httpx.HTTPTransport(local_address=address))


async def _stored(url: str) -> list[bytes]:
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(TOKENS_BUCKET)
        return [(await kv.get(key)).value for key in await kv.keys()]
    finally:
        await nc.close()


def test_forward_auth_believes_only_the_trusted_proxy_and_roles_come_from_groups(media):
    env = {
        "TUBEFLOW_AUTH": "forward",
        "TUBEFLOW_TRUSTED_PROXIES": "127.0.0.2/32",
        "TUBEFLOW_ADMIN_GROUPS": "admins",
        "TUBEFLOW_VIEWER_GROUPS": "family",
    }
    with nats_server() as server, tubeflow(server.url, ["api"], env) as stack:
        proxy, stranger = client_from("127.0.0.2", stack.base), client_from("127.0.0.3", stack.base)
        alice = {"Remote-User": "alice", "Remote-Email": "alice@example.org", "Remote-Groups": "staff"}
        me = proxy.get("/api/me", headers=alice)
        assert me.status_code == 200 and me.json()["user"] == "alice" and me.json()["role"] == "user", me.text
        assert me.json()["via"] == "forward" and me.json()["email"] == "alice@example.org"
        # The same headers from another address: not believed.
        assert stranger.get("/api/me", headers=alice).status_code == 401
        assert stranger.post("/api/jobs", json={"url": media.url("clip1.mp4")}, headers=alice).status_code == 401
        # No user from the proxy: nobody.
        assert proxy.get("/api/me").status_code == 401
        # Malformed or oversized: refused, never a 500.
        for bad in ({"Remote-User": "a b;c"}, {"Remote-User": "x" * 500}, {**alice, "Remote-Groups": "g," * 3000}):
            assert proxy.get("/api/me", headers=bad).status_code in (400, 401), bad
        # Roles from groups: a viewer reads and changes nothing; an admin is an admin.
        viewer = {"Remote-User": "grandpa", "Remote-Groups": "family"}
        assert proxy.get("/api/jobs", headers=viewer).status_code == 200
        refused = proxy.post("/api/jobs", json={"url": media.url("clip1.mp4")}, headers=viewer)
        assert refused.status_code == 403 and "may only read" in refused.text, refused.text
        admin = proxy.get("/api/me", headers={"Remote-User": "root", "Remote-Groups": "staff, admins"}).json()
        assert admin["role"] == "admin"
        made = proxy.post("/api/jobs", json={"url": media.url("clip1.mp4")}, headers=alice)
        assert made.status_code == 202, made.text

        # Alice's personal tokens work from anywhere, as her; a read token can't write.
        read = proxy.post("/api/tokens", json={"name": "phone", "scope": "read"}, headers=alice).json()
        assert read["token"].startswith("tf_") and read["user"] == "alice" and read["scope"] == "read"
        bearer = {"Authorization": f"Bearer {read['token']}"}
        as_token = stranger.get("/api/me", headers=bearer).json()
        assert as_token["user"] == "alice" and as_token["scope"] == "read" and as_token["via"] == "personal_token"
        assert stranger.post("/api/jobs", json={"url": media.url("clip1.mp4")}, headers=bearer).status_code == 403
        write = proxy.post("/api/tokens", json={"name": "script", "expires_in_days": 1}, headers=alice).json()
        writer = {"Authorization": f"Bearer {write['token']}"}
        assert stranger.post("/api/jobs", json={"url": media.url("clip1.mp4")}, headers=writer).status_code == 202
        # A read token makes no write token; a user makes none for someone else.
        assert stranger.post("/api/tokens", json={"name": "up"}, headers=bearer).status_code == 403
        other = proxy.post("/api/tokens", json={"name": "x", "user": "bob"}, headers=alice)
        assert other.status_code == 403, other.text
        # Listed by their owner only (without the secret); someone else's is not there for them (404, no leak).
        listed = proxy.get("/api/tokens", headers=alice).json()["tokens"]
        assert {t["name"] for t in listed} == {"phone", "script"} and all("token" not in t for t in listed)
        bob = {"Remote-User": "bob"}
        assert proxy.get("/api/tokens", headers=bob).json()["tokens"] == []
        assert proxy.delete(f"/api/tokens/{read['id']}", headers=bob).status_code == 404
        # Revoked: refused on the very next request.
        assert proxy.delete(f"/api/tokens/{read['id']}", headers=alice).status_code == 204
        assert stranger.get("/api/me", headers=bearer).status_code == 401
        # Bad input: named fields, never a 500.
        for body in ({"name": ""}, {"name": "x", "scope": "admin"}, {"name": "x", "expires_in_days": 0}, {"n": 1}):
            answer = proxy.post("/api/tokens", json=body, headers=alice)
            assert answer.status_code == 422, (body, answer.text)
        # What is stored holds no secret: only its hash.
        stored = asyncio.run(_stored(server.url))
        assert stored and not any(write["token"].split(".")[1].encode() in value for value in stored)
        proxy.close()
        stranger.close()


def test_token_mode_the_admin_token_makes_tokens_for_people_and_garbage_tokens_are_401(media):
    env = {"TUBEFLOW_API_TOKEN": "admin-s3cret"}
    with nats_server() as server, tubeflow(server.url, ["api", "progress", "downloader"], env) as stack:
        with httpx.Client(base_url=stack.base, timeout=30) as client:
            admin = {"Authorization": "Bearer admin-s3cret"}
            assert client.get("/api/me", headers=admin).json()["role"] == "admin"
            made = client.post("/api/tokens", json={"name": "carol's", "user": "carol", "scope": "read"}, headers=admin)
            assert made.status_code == 201 and made.json()["user"] == "carol", made.text
            carol = {"Authorization": f"Bearer {made.json()['token']}"}
            assert client.get("/api/me", headers=carol).json()["user"] == "carol"
            assert client.post("/api/jobs", json={"url": media.url("clip1.mp4")}, headers=carol).status_code == 403
            # A personal token's page session: carol's (not the admin's), read-only, ended with her token.
            opened = client.post("/api/session", headers=carol)
            assert opened.status_code == 200 and opened.json()["expires_at"], opened.text
            session = {"tubeflow_session": client.cookies.get("tubeflow_session")}
            client.cookies.clear()
            with httpx.Client(base_url=stack.base, timeout=30, cookies=session) as page:
                assert page.get("/api/me").json()["user"] == "carol"
                assert page.post("/api/tokens", json={"name": "x"}, headers={"Origin": stack.base}).status_code == 401
                carol_id = client.get("/api/tokens", headers=admin).json()["tokens"][0]["id"]
                assert client.delete(f"/api/tokens/{carol_id}", headers=admin).status_code == 204
                assert page.get("/api/me").status_code == 401
            for garbage in ("tf_" + "0" * 16 + "." + "A" * 43, "x" * 5000, "tf_zz.yy", "Bearer"):
                answer = client.get("/api/me", headers={"Authorization": f"Bearer {garbage}"})
                assert answer.status_code in (400, 401), (garbage[:20], answer.status_code)
            dave = client.post("/api/tokens", json={"name": "cli", "user": "dave"}, headers=admin).json()["token"]
        # `tubeflow get --token` with a personal token (and the same from TUBEFLOW_TOKEN).
        env_clean = {k: v for k, v in os.environ.items() if not k.startswith("TUBEFLOW_")}
        url = media.url(media.fresh("clip1.mp4"))
        done = run_cli("get", "--api", stack.base, "--token", dave, "--json", url, timeout=120, env=env_clean)
        assert done.returncode == 0 and '"completed"' in done.stdout.splitlines()[-1], done.stderr[-500:]
        # `tubeflow replay --api` with the same token (it sent none before: 401).
        job_id = json.loads(done.stdout.splitlines()[-1])["id"]
        replayed = run_cli("replay", job_id, "--api", stack.base, "--json", "--token", dave, timeout=60, env=env_clean)
        assert replayed.returncode == 0 and json.loads(replayed.stdout)["status"] == "completed", replayed.stderr
        refused = run_cli(
            "get", "--api", stack.base, "--json", url, timeout=60, env={**env_clean, "TUBEFLOW_TOKEN": "tf_nope"}
        )
        assert refused.returncode != 0


def test_two_users_each_see_only_their_own_jobs_and_an_admin_sees_all(media):
    """Lists, search, SSE, events, media, ZIP and commands: someone else's job is 404 (no existence leak); each
    event of a command names who asked (`actor`)."""
    env = {"TUBEFLOW_AUTH": "forward", "TUBEFLOW_TRUSTED_PROXIES": "127.0.0.2/32"}
    services = ["api", "progress", "downloader", "extractor", "scheduler"]
    with nats_server() as server, tubeflow(server.url, services, env) as stack:
        proxy = client_from("127.0.0.2", stack.base)
        alice, bob = {"Remote-User": "alice"}, {"Remote-User": "bob"}
        root = {"Remote-User": "root", "Remote-Groups": "admins"}
        mine = proxy.post("/api/jobs", json={"url": media.url(media.fresh("clip1.mp4"))}, headers=alice).json()
        theirs = proxy.post("/api/jobs", json={"url": media.url(media.fresh("clip2.mp4"))}, headers=bob).json()
        assert mine["owner"] == "alice" and theirs["owner"] == "bob"

        def done(job: str, who: dict) -> bool:
            return proxy.get(f"/api/jobs/{job}", headers=who).json().get("status") == "completed"

        wait_for(lambda: done(mine["id"], alice) and done(theirs["id"], bob), 90, "both jobs")
        listed = {j["id"] for j in proxy.get("/api/jobs", headers=alice).json()["jobs"]}
        assert listed == {mine["id"]}
        assert {j["id"] for j in proxy.get("/api/jobs?q=clip", headers=alice).json()["jobs"]} == {mine["id"]}
        assert {j["id"] for j in proxy.get("/api/jobs", headers=root).json()["jobs"]} == {mine["id"], theirs["id"]}
        assert [j["id"] for j in proxy.get("/api/jobs?owner=bob", headers=root).json()["jobs"]] == [theirs["id"]]
        assert [j["id"] for j in proxy.get("/api/jobs?owner=bob", headers=alice).json()["jobs"]] == [mine["id"]]
        other = theirs["id"]
        view = proxy.get(f"/api/jobs/{other}", headers=bob).json()
        file = view["items"][0]["download"]["file"]
        for path in (
            f"/api/jobs/{other}",
            f"/api/jobs/{other}/events",
            f"/api/jobs/{other}/archive.zip",
            f"/api/jobs/{other}/stream",
            f"/media/{file}",
        ):
            assert proxy.get(path, headers=alice).status_code == 404, path
            assert proxy.get(path.replace(other, "01" + "z" * 24), headers=alice).status_code == 404  # the same
        for command in ("cancel", "retry", "start"):
            assert proxy.post(f"/api/jobs/{other}/{command}", headers=alice).status_code == 404, command
        assert proxy.delete(f"/api/jobs/{other}", headers=alice).status_code == 404
        bulk = proxy.post("/api/jobs/bulk", json={"action": "delete", "ids": [other]}, headers=alice).json()
        assert bulk["not_found"] == 1 and bulk["done"] == 0
        # Their own: all of it works; the admin reads anyone's.
        assert proxy.get(f"/media/{file}", headers=bob).status_code == 200
        assert proxy.get(f"/media/{file}", headers=root).status_code == 200
        assert proxy.get(f"/api/jobs/{other}/archive.zip", headers=bob).status_code == 200
        # The jobs stream shows each their own.
        with proxy.stream("GET", "/api/jobs/stream", headers=alice) as stream:
            first = next(line for line in stream.iter_lines() if line.startswith("data:"))
        assert mine["id"] in first and other not in first
        # Who did what: the command's events say so.
        deleted = proxy.delete(f"/api/jobs/{mine['id']}", headers=alice)
        assert deleted.status_code == 202
        events = proxy.get(f"/api/jobs/{mine['id']}/events", headers=alice).json()
        actors = {e["type"]: e.get("actor") for e in events}
        assert actors["requested"] == "alice" and actors["job.deleted"] == "alice" and actors.get("resolved") is None
        # Subscriptions: theirs only.
        made = proxy.post(
            "/api/subscriptions", json={"url": media.feed_url("clip1.mp4"), "interval": "1h"}, headers=bob
        )
        assert made.status_code == 201 and made.json()["owner"] == "bob", made.text
        sid = made.json()["id"]
        assert proxy.get("/api/subscriptions", headers=alice).json() == []
        assert proxy.get(f"/api/subscriptions/{sid}", headers=alice).status_code == 404
        assert proxy.delete(f"/api/subscriptions/{sid}", headers=alice).status_code == 404
        assert [s["id"] for s in proxy.get("/api/subscriptions", headers=root).json()] == [sid]
        # Its jobs are bob's.
        sub = wait_for(lambda: proxy.get(f"/api/subscriptions/{sid}", headers=bob).json()["last_new"], 60, "a job")
        job = sub[0]["job_id"]
        assert proxy.get(f"/api/jobs/{job}", headers=bob).json()["owner"] == "bob"
        assert proxy.get(f"/api/jobs/{job}", headers=alice).status_code == 404
        proxy.close()


def test_presets_and_cookie_profiles_are_each_persons_own_and_an_admins_are_everyones(media):
    """A person's preset and cookie profile: listed and used by them only (someone else's name is unknown to
    another); the download reads the owner's own cookies; an admin's preset and profile serve everyone."""
    from tests.e2e.test_cookies import cookies_txt

    env = {"TUBEFLOW_AUTH": "forward", "TUBEFLOW_TRUSTED_PROXIES": "127.0.0.2/32"}
    with nats_server() as server, tubeflow(server.url, ["api", "progress", "downloader"], env) as stack:
        proxy = client_from("127.0.0.2", stack.base)
        alice, bob = {"Remote-User": "alice"}, {"Remote-User": "bob"}
        root = {"Remote-User": "root", "Remote-Groups": "admins"}
        assert proxy.put("/api/presets/small", json={"quality": "360"}, headers=alice).json()["owner"] == "alice"
        family = proxy.put("/api/presets/family", json={"mode": "audio"}, headers=root).json()
        assert family["owner"] is None
        # Shipped examples stay read-only for a person too (no shadowing them).
        assert proxy.put("/api/presets/audio-mp3", json={"mode": "audio"}, headers=alice).status_code == 409

        def names(path: str, who: dict) -> set[str]:
            body = proxy.get(path, headers=who).json()
            return {p["name"] for p in body.get("presets", body.get("profiles", []))}

        assert {"small", "family"} <= names("/api/presets", alice)
        assert "small" not in names("/api/presets", bob) and "family" in names("/api/presets", bob)
        url = media.url(media.fresh("clip1.mp4"))
        refused = proxy.post("/api/jobs", json={"url": url, "preset": "small"}, headers=bob)
        assert refused.status_code == 422 and refused.json()["errors"][0]["code"] == "unknown_preset"
        assert proxy.post("/api/jobs", json={"url": url, "preset": "small"}, headers=alice).status_code == 202
        assert proxy.delete("/api/presets/small", headers=bob).status_code == 404
        # A request can't say whose cookies to read.
        forged = proxy.post("/api/jobs", json={"url": url, "cookies_owner": "alice"}, headers=bob)
        assert forged.status_code == 422, forged.text

        # Alice's own cookie profile opens the private page for her jobs only.
        stored = proxy.put("/api/cookies/login", content=cookies_txt(), headers={**alice, "Content-Type": "text/plain"})
        assert stored.status_code == 200 and stored.json()["owner"] == "alice", stored.text
        assert names("/api/cookies", alice) == {"login"} and names("/api/cookies", bob) == set()
        private = f"{media.base}/private/{media.fresh('clip3.mp4')}"
        refused = proxy.post("/api/jobs", json={"url": private, "cookies": "login"}, headers=bob)
        assert refused.status_code == 422 and refused.json()["errors"][0]["code"] == "unknown_cookies"
        made = proxy.post("/api/jobs", json={"url": private, "cookies": "login", "metadata": False}, headers=alice)
        assert made.status_code == 202, made.text

        def finished() -> dict | None:
            view = proxy.get(f"/api/jobs/{made.json()['id']}", headers=alice).json()
            return view if view["status"] in ("completed", "failed") else None

        view = wait_for(finished, 90, "alice's private download")
        assert view["status"] == "completed", view.get("error")
        assert not (stack.data_dir / "cookies" / "login.txt").exists()  # hers, not everyone's
        # An admin's profile is everyone's: bob may name it.
        shared = proxy.put("/api/cookies/house", content=cookies_txt(), headers={**root, "Content-Type": "text/plain"})
        assert shared.json()["owner"] is None
        assert "house" in names("/api/cookies", bob)
        assert proxy.post("/api/jobs", json={"url": url, "cookies": "house"}, headers=bob).status_code == 202
        assert proxy.delete("/api/cookies/house", headers=bob).status_code == 404
        assert proxy.delete("/api/cookies/login", headers=alice).status_code == 204
        proxy.close()


def test_a_persons_webhook_hears_of_their_own_jobs_only_and_an_admins_of_everyones(media):
    from tests.e2e.test_notifications import Receiver

    env = {"TUBEFLOW_AUTH": "forward", "TUBEFLOW_TRUSTED_PROXIES": "127.0.0.2/32"}
    services = ["api", "progress", "downloader", "notifier"]
    with nats_server() as server, tubeflow(server.url, services, env) as stack:
        proxy = client_from("127.0.0.2", stack.base)
        people = {"alice": {"Remote-User": "alice"}, "bob": {"Remote-User": "bob"}}
        root = {"Remote-User": "root", "Remote-Groups": "admins"}
        receivers = {who: Receiver(f"secret-of-{who}-0123456789", failures=0) for who in ("alice", "bob", "root")}
        hooks = {}
        for who, headers in {**people, "root": root}.items():
            body = {"url": receivers[who].url, "events": ["job.completed"], "secret": receivers[who].secret}
            made = proxy.post("/api/webhooks", json=body, headers=headers)
            assert made.status_code == 201, made.text
            hooks[who] = made.json()["webhook"]
        assert hooks["alice"]["owner"] == "alice" and hooks["root"]["owner"] is None
        # Listed, read and removed by their owner only (someone else's is 404).
        assert [h["id"] for h in proxy.get("/api/webhooks", headers=people["bob"]).json()] == [hooks["bob"]["id"]]
        assert len(proxy.get("/api/webhooks", headers=root).json()) == 3
        assert proxy.get(f"/api/webhooks/{hooks['alice']['id']}", headers=people["bob"]).status_code == 404
        assert proxy.get(f"/api/webhooks/{hooks['alice']['id']}/deliveries", headers=people["bob"]).status_code == 404
        assert proxy.delete(f"/api/webhooks/{hooks['alice']['id']}", headers=people["bob"]).status_code == 404
        jobs = {
            who: proxy.post("/api/jobs", json={"url": media.url(media.fresh("clip1.mp4"))}, headers=headers).json()[
                "id"
            ]
            for who, headers in people.items()
        }
        wait_for(lambda: len(receivers["root"].requests) >= 2, 90, "the admin's webhook hears of both jobs")
        wait_for(lambda: receivers["alice"].requests and receivers["bob"].requests, 30, "each person's own")
        time.sleep(2.0)  # nothing more may come
        heard = {who: [r["body"]["job"]["id"] for r in receiver.requests] for who, receiver in receivers.items()}
        assert heard["alice"] == [jobs["alice"]] and heard["bob"] == [jobs["bob"]], heard
        assert sorted(heard["root"]) == sorted(jobs.values()), heard
        proxy.close()


def test_a_users_file_gives_people_their_tokens_and_roles(media, tmp_path):
    """TUBEFLOW_USERS_FILE: in token mode each person's token (kept as SHA-256) signs them in with their role; in any
    mode it names roles over groups. A file that can't be used stops the API naming it."""
    import hashlib

    users = tmp_path / "users.json"
    users.write_text(
        json.dumps(
            {
                "alice": {"token_sha256": hashlib.sha256(b"alice-token-0123456789").hexdigest()},
                "grandpa": {"role": "viewer", "token_sha256": hashlib.sha256(b"grandpa-token-0123456789").hexdigest()},
                "carol": {"role": "admin"},
            }
        )
    )
    env = {"TUBEFLOW_API_TOKEN": "admin-s3cret", "TUBEFLOW_USERS_FILE": str(users)}
    with nats_server() as server, tubeflow(server.url, ["api"], env) as stack:
        with httpx.Client(base_url=stack.base, timeout=30) as client:
            alice = {"Authorization": "Bearer alice-token-0123456789"}
            me = client.get("/api/me", headers=alice).json()
            assert me["user"] == "alice" and me["role"] == "user" and me["via"] == "users_file", me
            made = client.post("/api/jobs", json={"url": media.url("clip1.mp4")}, headers=alice)
            assert made.status_code == 202 and made.json()["owner"] == "alice"
            grandpa = {"Authorization": "Bearer grandpa-token-0123456789"}
            assert client.post("/api/jobs", json={"url": media.url("clip1.mp4")}, headers=grandpa).status_code == 403
            assert client.get("/api/jobs", headers=grandpa).json()["jobs"] == []  # his own: none
            assert client.get("/api/me", headers={"Authorization": "Bearer alice-token"}).status_code == 401
    forward = {
        "TUBEFLOW_AUTH": "forward",
        "TUBEFLOW_TRUSTED_PROXIES": "127.0.0.2/32",
        "TUBEFLOW_USERS_FILE": str(users),
    }
    with nats_server() as server, tubeflow(server.url, ["api"], forward) as stack:
        proxy = client_from("127.0.0.2", stack.base)
        assert proxy.get("/api/me", headers={"Remote-User": "carol"}).json()["role"] == "admin"
        as_admin_group = {"Remote-User": "grandpa", "Remote-Groups": "admins"}
        assert proxy.get("/api/me", headers=as_admin_group).json()["role"] == "viewer"  # the file wins
        proxy.close()
    users.write_text('{"alice": {"role": "owner"}}')
    with nats_server() as server:
        env = {**os.environ, "TUBEFLOW_NATS_URL": server.url, "TUBEFLOW_USERS_FILE": str(users),
               "TUBEFLOW_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
        refused = run_cli("service", "api", "--port", "9", timeout=60, env=env)
        assert refused.returncode != 0 and "TUBEFLOW_USERS_FILE" in refused.stderr + refused.stdout, refused.stderr


def test_a_file_an_output_folder_put_outside_the_job_folder_is_its_owners_to_read(media):
    env = {"TUBEFLOW_AUTH": "forward", "TUBEFLOW_TRUSTED_PROXIES": "127.0.0.2/32"}
    with nats_server() as server, tubeflow(server.url, ["api", "progress", "downloader"], env) as stack:
        proxy = client_from("127.0.0.2", stack.base)
        alice, bob = {"Remote-User": "alice"}, {"Remote-User": "bob"}
        body = {"url": media.url(media.fresh("clip1.mp4")), "metadata": False, "output": {"folder": "alice/music"}}
        mine = proxy.post("/api/jobs", json=body, headers=alice).json()
        # Bob's lands in the same folder (a folder is only a name): a podcast feed of it is still each one's own.
        theirs_body = {"url": media.url(media.fresh("clip2.mp4")), "output": {"folder": "alice/music"}}
        theirs = proxy.post("/api/jobs", json=theirs_body, headers=bob).json()

        def done(job: str, who: dict) -> dict | None:
            view = proxy.get(f"/api/jobs/{job}", headers=who).json()
            return view if view["status"] in ("completed", "failed") else None

        view = wait_for(lambda: done(mine["id"], alice), 90, "alice's job")
        wait_for(lambda: done(theirs["id"], bob), 90, "bob's job")
        file = view["items"][0]["download"]["file"]
        assert file.startswith("alice/music/"), file
        assert proxy.get(f"/media/{file}", params={"job": mine["id"]}, headers=alice).status_code == 200
        assert proxy.get(f"/media/{file}", headers=alice).status_code == 404  # without its job: an admin's only
        # Bob can't read it: not naming alice's job (404), nor his own (not one of its files).
        assert proxy.get(f"/media/{file}", params={"job": mine["id"]}, headers=bob).status_code == 404
        assert proxy.get(f"/media/{file}", params={"job": theirs["id"]}, headers=bob).status_code == 404
        assert proxy.get(f"/media/{file}", params={"job": "x" * 100}, headers=bob).status_code == 422
        root = {"Remote-User": "root", "Remote-Groups": "admins"}
        assert proxy.get(f"/media/{file}", headers=root).status_code == 200

        def feed(who: dict) -> tuple[str, list[str]]:
            made = proxy.post("/api/feeds", json={"folder": "alice/music"}, headers=who)
            assert made.status_code == 200, made.text
            url = made.json()["url"]
            enclosures = re.findall(r'<enclosure url="([^"]+)"', httpx.get(url, timeout=10).text)
            return url, [html.unescape(e) for e in enclosures]

        (alices, [alices_file]), (bobs, [bobs_file]) = feed(alice), feed(bob)
        assert alices != bobs and unquote(alices_file).split("/alice/music/")[1].split("?")[0] == file.split("/")[-1]
        assert "clip2" in unquote(bobs_file) and "clip1" in unquote(alices_file)
        assert httpx.get(alices_file, timeout=10).status_code == 200
        # Bob's key opens none of alice's files; he sees his own feed only.
        bobs_key = bobs.split("key=")[1]
        assert httpx.get(alices_file.split("?key=")[0] + f"?key={bobs_key}", timeout=10).status_code == 404
        assert [f["name"] for f in proxy.get("/api/feeds", headers=bob).json()] == ["alice/music"]
        assert proxy.delete("/api/feeds", params={"folder": "alice/music"}, headers=bob).status_code == 200
        assert httpx.get(bobs, timeout=10).status_code == 404 and httpx.get(alices, timeout=10).status_code == 200
        admins = feed(root)[1]
        assert len(admins) == 2, admins  # an admin's feed: everyone's files in the folder
        proxy.close()
