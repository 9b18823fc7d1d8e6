"""yt-dlp updates at run time (issue 27): when the automatic look is due, what an update may be asked for, and who
may ask without a token."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from litestar.exceptions import HTTPException
from pydantic import ValidationError

from services.api.routes.engine import UpdateRequest, _may_update
from services.engine.versions import NIGHTLY_HOUR, next_auto_update


def test_the_automatic_look_is_due_daily_or_nightly_and_never_when_off():
    now = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
    assert next_auto_update("off", None, now) is None
    assert next_auto_update("daily", None, now) == now
    assert next_auto_update("daily", now - timedelta(hours=5), now) == now + timedelta(hours=19)
    night = next_auto_update("nightly", now, now).astimezone()
    assert night.hour == NIGHTLY_HOUR and night.minute == 0 and now < night <= now + timedelta(days=1)
    # Never looked: tonight's (or, past it already, the one just gone: due at once).
    first = next_auto_update("nightly", None, now)
    assert first is not None and first <= now + timedelta(days=1)


def test_a_version_is_a_version_and_nothing_else():
    assert UpdateRequest(version="2026.11.20").version == "2026.11.20"
    assert UpdateRequest().version is None
    for bad in ("1.0; rm -rf /", "../../x", "", "x" * 60, "--index-url=http://evil"):
        with pytest.raises(ValidationError):
            UpdateRequest(version=bad)
    with pytest.raises(ValidationError):
        UpdateRequest(version="1", index="http://evil")  # the index is the operator's, never a request's


def test_without_a_token_only_this_machine_may_update_and_with_auth_only_an_admin():
    from services.api.identity import LOCAL, Identity

    def request(host: str, identity=LOCAL) -> SimpleNamespace:  # noqa: ANN001
        return SimpleNamespace(client=SimpleNamespace(host=host), state=SimpleNamespace(identity=identity))

    open_settings = SimpleNamespace(auth_mode=lambda: "none")
    _may_update(request("127.0.0.1"), open_settings)
    _may_update(request("::1"), open_settings)
    for host in ("192.0.2.7", "10.0.0.3", "unknown"):
        with pytest.raises(HTTPException) as refused:
            _may_update(request(host), open_settings)
        assert refused.value.status_code == 403
    with_token = SimpleNamespace(auth_mode=lambda: "token")
    _may_update(request("192.0.2.7", Identity("admin", "admin", "token")), with_token)  # the guard checked it
    with pytest.raises(HTTPException) as refused:
        _may_update(request("127.0.0.1", Identity("alice", "user", "personal_token")), with_token)
    assert refused.value.status_code == 403
