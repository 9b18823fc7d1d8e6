"""Real-site settings and facts, pure: what a bad setting says, how rules and targets match, what the facts call a
problem, the hints for the failures real sites cause."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from pydantic import ValidationError

from contracts.engine import EngineFacts, JsRuntime, PoTokenProvider, SolverScripts, engine_key, target_available
from contracts.hints import hint_for
from contracts.options import DownloadOptions
from services.engine.errors import classify
from services.engine.options import OperatorOptionsError, operator_params
from services.engine.realsites import RealSites, merged_params, unavailable_rules
from services.runtime.settings import Settings, impersonate_rules

TARGETS = ["chrome-131:macos-14", "chrome-99:android-12", "safari-18.0:ios-18.0", "firefox-135:macos-14"]


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("impersonate", "vimeo.com=opera mini", "TUBEFLOW_IMPERSONATE: 'vimeo.com=opera mini'"),
        ("impersonate", "vimeo.com", "TUBEFLOW_IMPERSONATE: 'vimeo.com' is not site=value"),
        ("impersonate", "vi/meo=chrome", "TUBEFLOW_IMPERSONATE: 'vi/meo' is not a host name"),
        ("pot_provider_url", "ftp://bgutil:4416", "TUBEFLOW_POT_PROVIDER_URL must be an http(s) URL"),
        ("pot_provider_url", "bgutil:4416", "TUBEFLOW_POT_PROVIDER_URL must be an http(s) URL"),
        ("plugin_dirs", "/no/such/folder", "TUBEFLOW_PLUGIN_DIRS: /no/such/folder is not a folder"),
        ("js_runtime", "/no/such/deno", "TUBEFLOW_JS_RUNTIME: /no/such/deno is not an executable file"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(setting, value, said):
    with pytest.raises(ValidationError) as caught:
        Settings(**{setting: value})
    assert said in str(caught.value)


def test_good_settings():
    settings = Settings(
        impersonate="Vimeo.com=chrome, www.example.org=safari-18.0:ios ,*=", pot_provider_url="http://bgutil:4416/"
    )
    assert impersonate_rules(settings.impersonate) == {"vimeo.com": "chrome", "example.org": "safari-18.0:ios", "*": ""}
    assert settings.pot_provider_url == "http://bgutil:4416"
    assert Settings(js_runtime="none").js_runtime_path() is None
    assert Settings().js_runtime_path()  # the deno `uv sync` installed


def test_rules_match_sites_and_a_jobs_option_wins():
    sites = RealSites(impersonate=(("vimeo.com", "chrome"), ("example.org", ""), ("*", "safari")))
    assert sites.target_for("https://player.vimeo.com/video/1") == "chrome"
    assert sites.target_for("https://www.example.org/a") is None
    assert sites.target_for("https://other.net/a") == "safari"
    assert sites.target_for("https://other.net/a", "firefox") == "firefox"
    assert RealSites().target_for("https://vimeo.com/1") is None


def test_targets_match_the_way_yt_dlp_matches_them():
    assert target_available("chrome", TARGETS)
    assert target_available("chrome-131", TARGETS)
    assert target_available("chrome:android", TARGETS)
    assert target_available("safari-18.0:ios-18.0", TARGETS)
    assert not target_available("chrome-130", TARGETS)
    assert not target_available("edge", TARGETS)
    assert not target_available("chrome", [])
    sites = RealSites(impersonate=(("a.com", "chrome"), ("b.com", "edge"), ("*", "")))
    assert unavailable_rules(sites, TARGETS) == ["b.com=edge"]


def test_the_job_option_is_checked_and_changes_no_file():
    from services.engine.options import signature

    assert DownloadOptions(impersonate="chrome-131:macos-14").impersonate == "chrome-131:macos-14"
    with pytest.raises(ValidationError, match="impersonation target"):
        DownloadOptions(impersonate="chrome 131")
    assert signature(DownloadOptions(impersonate="chrome")) == signature(None)


def test_params_merge_extractor_args_and_keep_remote_code_off():
    sites = RealSites(js_runtime="/opt/deno", pot_provider_url="http://bgutil:4416")
    params = merged_params({"retries": 2}, sites.params(), {"extractor_args": {"youtube": {"player_client": ["web"]}}})
    assert params["js_runtimes"] == {"deno": {"path": "/opt/deno"}}
    assert params["remote_components"] == []
    assert params["extractor_args"] == {
        "youtubepot-bgutilhttp": {"base_url": ["http://bgutil:4416"]},
        "youtube": {"player_client": ["web"]},
    }
    assert RealSites(js_runtime=None).params()["js_runtimes"] == {}
    assert sites.provider_endpoint() == ("bgutil", 4416)


@pytest.mark.parametrize("reserved", ["js_runtimes", "remote_components", "impersonate"])
def test_the_operators_params_may_not_turn_remote_code_on_or_bypass_the_settings(tmp_path, reserved):
    path = tmp_path / "options.json"
    path.write_text(f'{{"{reserved}": ["ejs:github"]}}')
    with pytest.raises(OperatorOptionsError, match=reserved):
        operator_params(path)


def complete_facts(**changes) -> EngineFacts:
    facts = EngineFacts(
        checked_at=datetime(2026, 12, 2, tzinfo=timezone.utc),
        yt_dlp="2026.10.26",
        yt_dlp_released=date(2026, 10, 26),
        js_runtime=JsRuntime(name="deno", version="2.9.8", path="/x/deno", supported=True),
        solver=SolverScripts(version="0.8.0", source="python package"),
        impersonate_targets=TARGETS,
        pot_provider=PoTokenProvider(url="http://bgutil:4416", answering=True, version="2.0.2"),
        ffmpeg="9.0",
    )
    return facts.model_copy(update=changes)


def test_complete_facts_have_no_problems_and_each_missing_part_is_one_line_saying_what_to_do():
    today = date(2026, 12, 2)
    assert complete_facts().problems(today) == []
    assert complete_facts(pot_provider=PoTokenProvider()).problems(today) == []  # no provider set: not a problem
    [runtime] = complete_facts(js_runtime=None, solver=SolverScripts(error="no runtime")).problems(today)
    assert "no JavaScript runtime" in runtime and "TUBEFLOW_JS_RUNTIME" in runtime
    [solver] = complete_facts(solver=SolverScripts(error="hash mismatch")).problems(today)
    assert "challenge-solver" in solver and "yt-dlp-ejs" in solver
    [curl] = complete_facts(impersonate_targets=[]).problems(today)
    assert "impersonation" in curl and "curl_cffi" in curl
    [down] = complete_facts(pot_provider=PoTokenProvider(url="http://bgutil:4416", answering=False)).problems(today)
    assert "http://bgutil:4416 does not answer" in down and "docs/deploy.md" in down
    [stale] = complete_facts(yt_dlp_released=date(2026, 6, 1)).problems(today)
    assert "184 days old" in stale
    assert engine_key("host-1:1234") == "host-1_1234"


def test_real_site_failures_have_hints_that_name_the_fix():
    assert "impersonate" in hint_for("http_403") and "tubeflow doctor" in hint_for("http_403")
    assert "cookie profile" in hint_for("http_401")
    assert "TUBEFLOW_POT_PROVIDER_URL" in hint_for("bot_check")
    assert "JavaScript runtime" in hint_for("format_unavailable")
    assert "/api/info" in hint_for("impersonate_unavailable")


def test_an_unavailable_target_is_its_own_code():
    from yt_dlp.networking.exceptions import RequestError

    error = classify(RequestError('Impersonate target "opera" is not available. See --list-impersonate-targets'))
    assert error.code == "impersonate_unavailable"
