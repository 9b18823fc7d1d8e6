"""Page sessions on a real NATS (issue 28): a second replica knows a session from the bucket's own messages, one
person keeps at most MAX_PER_USER live sessions (the oldest end), and an ended one is refused by both replicas."""

from __future__ import annotations

import asyncio

from services.api.identity import Identity
from services.api.sessions import MAX_PER_USER, SessionBook
from services.runtime.nats.topology import SESSIONS_BUCKET


async def test_sessions_are_shared_by_replicas_bounded_per_person_and_ended_everywhere(fresh_nc):
    kv = await fresh_nc.jetstream().key_value(SESSIONS_BUCKET)
    one, other = await SessionBook().start(fresh_nc, kv), await SessionBook().start(fresh_nc, kv)
    try:
        alice, bob = Identity("alice", "user", "oidc"), Identity("bob", "viewer", "oidc")
        cookies = [(await one.open(alice))[0] for _ in range(MAX_PER_USER + 2)]
        bobs, _ = await one.open(bob)
        await asyncio.sleep(0.3)  # the other replica hears the bucket
        assert other.find(cookies[-1]).identity() == alice
        assert other.find(bobs).role == "viewer"
        # The two oldest of alice's ended; the newest MAX_PER_USER live; bob's untouched.
        assert [c for c in cookies if one.find(c) is None] == cookies[:2]
        assert [c for c in cookies if other.find(c) is None] == cookies[:2]
        assert await other.end(cookies[-1])
        await asyncio.sleep(0.3)
        assert one.find(cookies[-1]) is None and other.find(cookies[-1]) is None
        assert one.find("o." + "x" * 43) is None and one.find("not-ours") is None
    finally:
        await one.stop()
        await other.stop()
