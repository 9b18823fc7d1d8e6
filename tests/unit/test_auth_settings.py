"""Auth modes (issue 28): what TUBEFLOW_AUTH resolves to, settings that can't work refused naming them, and an open
API on a public address refused unless said on purpose."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.api.main import refuse_open_public
from services.runtime.settings import Settings


def test_the_mode_follows_the_token_unless_said():
    assert Settings().auth_mode() == "none"
    assert Settings(api_token="t").auth_mode() == "token"
    assert Settings(auth="forward", trusted_proxies="10.0.0.0/8").auth_mode() == "forward"
    assert Settings(auth="oidc", oidc_issuer="https://id.example.org", oidc_client_id="t").auth_mode() == "oidc"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"auth": "forward"}, "TUBEFLOW_TRUSTED_PROXIES"),
        ({"auth": "forward", "trusted_proxies": "10.0.0.0/8,proxy"}, "TUBEFLOW_TRUSTED_PROXIES"),
        ({"auth": "token"}, "TUBEFLOW_API_TOKEN"),
        ({"auth": "none", "api_token": "t"}, "TUBEFLOW_AUTH=none"),
        ({"auth": "oidc"}, "TUBEFLOW_OIDC_ISSUER"),
        ({"auth": "oidc", "oidc_issuer": "https://id.example.org"}, "TUBEFLOW_OIDC_CLIENT_ID"),
        ({"auth": "oidc", "oidc_issuer": "id.example.org", "oidc_client_id": "t"}, "TUBEFLOW_OIDC_ISSUER"),
        (
            {"auth": "oidc", "oidc_issuer": "https://id.example.org", "oidc_client_id": "t", "oidc_scopes": "email"},
            "TUBEFLOW_OIDC_SCOPES",
        ),
        ({"auth": "sso"}, "auth"),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_them(fields, named):
    with pytest.raises(ValidationError, match=named):
        Settings(**fields)


def test_an_open_api_on_a_public_address_refuses_to_start_unless_said_on_purpose():
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        refuse_open_public(Settings(), host)
    with pytest.raises(ValueError, match="TUBEFLOW_AUTH=none"):
        refuse_open_public(Settings(), "0.0.0.0")
    with pytest.raises(ValueError, match="TUBEFLOW_API_TOKEN"):
        refuse_open_public(Settings(), "192.0.2.10")
    refuse_open_public(Settings(auth="none"), "0.0.0.0")
    refuse_open_public(Settings(api_token="t"), "0.0.0.0")


def test_a_users_file_names_roles_and_hashed_tokens_and_a_bad_one_is_refused_naming_the_problem(tmp_path):
    import hashlib
    import json

    from services.api.identity import Identity, read_users_file
    from services.runtime.jsonfile import SettingsFileError

    digest = hashlib.sha256(b"alice-secret-token").hexdigest()
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"alice": {"token_sha256": digest}, "grandpa": {"role": "viewer"}}))
    users = read_users_file(path)
    assert users.identify("alice-secret-token") == Identity("alice", "user", "users_file")
    assert users.identify("alice-secret-token ") is None and users.identify(digest) is None
    assert users.apply(Identity("grandpa", "admin", "forward")).role == "viewer"
    assert users.apply(Identity("bob", "user", "forward")).role == "user"
    for body, says in (
        ({"a b": {}}, "is not a user name"),
        ({"alice": {"role": "owner"}}, "alice: role"),
        ({"alice": {"token_sha256": "secret"}}, "alice: token_sha256"),
        ({"alice": {"token": "x"}}, "alice: token"),
        ({"alice": {"token_sha256": digest}, "bob": {"token_sha256": digest}}, "bob has alice's token"),
        ([], "must be a JSON object"),
    ):
        path.write_text(json.dumps(body))
        with pytest.raises(SettingsFileError, match="TUBEFLOW_USERS_FILE") as caught:
            read_users_file(path)
        assert says in str(caught.value), (body, caught.value)
