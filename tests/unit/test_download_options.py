"""A job's options in yt-dlp's terms (services/downloader/options.py): the params yt-dlp's own parser makes of them,
checked here for what can't run offline (SponsorBlock needs YouTube) and for what each option must switch on."""

from __future__ import annotations

import json

import pytest

from contracts.options import DownloadOptions
from services.engine.options import OperatorOptionsError, operator_params, signature, ytdlp_params
from services.runtime.jsonfile import SettingsFileError


def keys(params: dict) -> list[str]:
    return [pp["key"] for pp in params.get("postprocessors", [])]


def test_sponsorblock_reaches_yt_dlps_sponsorblock_post_processors():
    params = ytdlp_params(DownloadOptions(sponsorblock={"remove": ["sponsor", "selfpromo"], "mark": ["intro"]}))
    (sponsorblock,) = [pp for pp in params["postprocessors"] if pp["key"] == "SponsorBlock"]
    assert sponsorblock["categories"] == {"sponsor", "selfpromo", "intro"}
    (chapters,) = [pp for pp in params["postprocessors"] if pp["key"] == "ModifyChapters"]
    assert chapters["remove_sponsor_segments"] == {"sponsor", "selfpromo"}
    assert keys(params).index("SponsorBlock") < keys(params).index("ModifyChapters")


def test_quality_codec_and_container_sort_formats_and_never_fail():
    params = ytdlp_params(DownloadOptions(quality="720", video_codec="av1", container="mp4"))
    assert params["format_sort"] == ["res:720", "vcodec:av01", "ext:mp4:m4a"]
    assert params["merge_output_format"] == "mp4" and "FFmpegVideoRemuxer" in keys(params)
    assert "format" not in params  # a preference, not a selector that can find nothing
    assert ytdlp_params(DownloadOptions(quality="worst"))["format_sort"] == ["+res", "+size", "+br"]
    assert "format_sort" not in ytdlp_params(DownloadOptions())


def test_subtitles_thumbnail_metadata_clip_and_chapters():
    params = ytdlp_params(
        DownloadOptions(
            subtitles={"languages": ["en", "pt-BR"], "auto": True, "format": "vtt"},
            thumbnail="embed",
            clip={"start": "1:30", "end": "2:45", "exact": True},
            split_chapters=True,
        )
    )
    assert params["writesubtitles"] and params["writeautomaticsub"] and params["subtitleslangs"] == ["en", "pt-BR"]
    assert {"FFmpegSubtitlesConvertor", "FFmpegEmbedSubtitle", "EmbedThumbnail", "FFmpegSplitChapters"} <= set(
        keys(params)
    )
    assert params["writethumbnail"] and params["force_keyframes_at_cuts"]
    assert list(params["download_ranges"]({}, None)) == [{"start_time": 90.0, "end_time": 165.0}]
    assert "FFmpegMetadata" in keys(ytdlp_params(None))  # on by default
    assert "FFmpegMetadata" not in keys(ytdlp_params(DownloadOptions(metadata=False)))
    assert not any(pp.get("when") == "playlist" for pp in params["postprocessors"])  # items download one by one


def test_the_signature_tells_downloads_apart_but_not_by_cookie_profile():
    assert signature(None) == signature(DownloadOptions()) == "{}"
    assert signature(DownloadOptions(quality="720")) != signature(DownloadOptions(quality="1080"))
    assert signature(DownloadOptions(cookies="me")) == signature(None)


def test_the_operators_params_file(tmp_path):
    good = tmp_path / "ytdlp.json"
    good.write_text(json.dumps({"extractor_args": {"youtube": {"player_client": ["web"]}}, "socket_timeout": 7}))
    assert operator_params(good)["socket_timeout"] == 7
    assert operator_params(None) == {}
    reserved = tmp_path / "reserved.json"
    reserved.write_text(json.dumps({"proxy": "http://elsewhere:3128", "paths": {"home": "/"}}))
    with pytest.raises(OperatorOptionsError, match="paths, proxy"):
        operator_params(reserved)
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(SettingsFileError, match="TUBEFLOW_YTDLP_OPTIONS_FILE"):
        operator_params(broken)


def test_a_pooled_instance_gets_the_operators_params():
    from services.engine.ytdlp import YtDlp

    engine = YtDlp(size=1, operator_params={"socket_timeout": 7, "extractor_args": {"generic": {"x": ["y"]}}})
    ydl = engine._acquire(DownloadOptions(quality="360"))
    assert ydl.params["socket_timeout"] == 7 and ydl.params["format_sort"] == ["res:360"]
    default = engine._acquire()
    assert default.params["socket_timeout"] == 7 and "format_sort" not in default.params
