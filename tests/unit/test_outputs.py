"""Where a download lands: never in another job's folder, whatever a title spells (issue 23, item 5)."""

from __future__ import annotations

import pytest
import yt_dlp

from contracts.options import Output
from services.engine.outputs import place
from services.runtime.failures import MediaError

OTHER_JOB = "01m83k4jf56nq6vkg3q02xgxav"


def test_a_title_that_spells_a_job_id_never_places_into_that_jobs_folder(tmp_path):
    root = tmp_path / "media"
    (root / OTHER_JOB).mkdir(parents=True)
    main = root / "01m83k4jf56nq6vkg3q02xgxaw" / "v.mp4"
    main.parent.mkdir()
    main.write_bytes(b"x")
    ydl = yt_dlp.YoutubeDL({"quiet": True})
    info = {"id": "v", "title": OTHER_JOB, "ext": "mp4"}
    with pytest.raises(MediaError) as refused:
        place(ydl, info, main, [], Output(template="%(title)s/pwn.%(ext)s"), root, False)
    assert refused.value.code == "invalid_template" and not list((root / OTHER_JOB).iterdir())
    # In a folder of its own, the same title is just a name.
    placed, _ = place(ydl, info, main, [], Output(folder="mine", template="%(title)s/ok.%(ext)s"), root, False)
    assert placed == root / "mine" / OTHER_JOB / "ok.mp4" and placed.read_bytes() == b"x"


@pytest.mark.parametrize(
    ("title", "uploader", "template", "expected"),
    [
        (".hack//SIGN", "Bandai", "%(title)s.%(ext)s", "hack⧸⧸SIGN.mp4"),
        ("Episode 1", "..hidden", "%(uploader)s/%(title)s.%(ext)s", "hidden/Episode 1.mp4"),
        ("...", "x", "%(title)s.%(ext)s", "_.mp4"),
    ],
)
def test_names_from_a_sites_values_are_never_hidden_files(tmp_path, title, uploader, template, expected):
    root = tmp_path / "media"
    main = root / "01m83k4jf56nq6vkg3q02xgxaw" / "v.mp4"
    main.parent.mkdir(parents=True)
    main.write_bytes(b"x")
    ydl = yt_dlp.YoutubeDL({"quiet": True})
    info = {"id": "v", "title": title, "uploader": uploader, "ext": "mp4"}
    placed, _ = place(ydl, info, main, [], Output(folder="library", template=template), root, False)
    assert placed.relative_to(root / "library").as_posix() == expected
    assert not any(part.startswith(".") for part in placed.relative_to(root).parts)
