import json

import pandas as pd
import pytest

from curation.errors import CurationError
from pipelines.manifest import read_manifest


def test_csv_with_bad_rows_kept_as_failures(tmp_path):
    (tmp_path / "m.csv").write_text(
        "video,audio,start,end\n"
        "a.mp4,a.wav,0,10\n"
        ",,,\n"
        "/abs/b.mp4,,x,\n"
        "c.mp4,,5,5\n"
        "d.mp4,,,\n"
    )
    items = read_manifest(tmp_path / "m.csv")
    assert [i.row for i in items] == [1, 2, 3, 4, 5]
    assert items[0].video == str(tmp_path / "a.mp4") and items[0].audio == str(tmp_path / "a.wav")
    assert (items[0].start, items[0].end, items[0].error) == (0, 10, None)
    assert "row 2" in items[1].error and "empty" in items[1].error
    assert "row 3" in items[2].error and "'x'" in items[2].error
    assert "row 4" in items[3].error and "not after" in items[3].error
    assert items[4].end is None and items[4].error is None
    assert len({i.clip_id for i in items}) == 5


def test_jsonl_and_parquet_give_the_same_ids(tmp_path):
    rows = [{"path": "/v/a.mp4", "start": 2, "end": 8}, {"path": "/v/b.mp4"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "m.parquet")
    a, b = read_manifest(tmp_path / "m.jsonl"), read_manifest(tmp_path / "m.parquet")
    assert [i.clip_id for i in a] == [i.clip_id for i in b]
    assert (a[0].start, a[0].end) == (2, 8) and a[1].end is None


@pytest.mark.parametrize("content,suffix,match", [
    ("file,start\nx.mp4,0\n", ".csv", "no video column"),
    ("{not json", ".jsonl", "cannot be read"),
    ("video\nx.mp4\n", ".txt", "unknown format"),
])
def test_malformed_manifest_names_the_file(tmp_path, content, suffix, match):
    path = tmp_path / f"m{suffix}"
    path.write_text(content)
    with pytest.raises(CurationError, match=match) as err:
        read_manifest(path)
    assert str(path) in str(err.value)


def test_a_broken_jsonl_line_is_one_failed_row(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"video": "a.mp4"}\n{"video": "b.mp4",,}\n\n{"video": "c.mp4"}\n')
    items = read_manifest(tmp_path / "m.jsonl")
    assert [i.error is None for i in items] == [True, False, True]
    assert "line 2 is not a JSON object" in items[1].error and str(tmp_path / "m.jsonl") in items[1].error


def test_path_spellings_give_one_clip_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "v").mkdir()
    (tmp_path / "lists").mkdir()
    monkeypatch.chdir(tmp_path / "v")
    (tmp_path / "lists" / "m.csv").write_text(f"video\n../a.mp4\n{tmp_path}/a.mp4\n{tmp_path}/./a.mp4\n"
                                              "../lists/../a.mp4\n")
    items = read_manifest("../lists/m.csv")  # relative paths are from the manifest's folder
    assert {i.video for i in items} == {str(tmp_path / "a.mp4")}  # absolute, one spelling
    assert len({i.clip_id for i in items}) == 1
    monkeypatch.chdir(tmp_path)
    assert read_manifest("lists/m.csv")[0].clip_id == items[0].clip_id  # the same manifest from elsewhere


def test_audio_is_part_of_a_clips_identity(tmp_path):
    (tmp_path / "m.csv").write_text("video,audio\na.mp4,x.wav\na.mp4,y.wav\na.mp4,\n")
    assert len({i.clip_id for i in read_manifest(tmp_path / "m.csv")}) == 3
