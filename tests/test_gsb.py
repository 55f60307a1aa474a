"""GSB studies through the store, on SQLite and on a real PostgreSQL."""

import multiprocessing as mp
import os
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from conftest import make_system_videos

from evaluation.gsb import CATEGORIES, AccessDenied, Study, StudyError

CASES = [f"case{i:02d}" for i in range(12)]


@pytest.fixture
def systems(tmp_path):
    ours = make_system_videos(tmp_path / "ours", CASES, seed=1)
    base = make_system_videos(tmp_path / "base", CASES[:-1] + ["extra"], seed=2)  # case11 missing, one extra
    meta = pd.DataFrame({"case_id": CASES, "kind": ["speech"] * 6 + ["singing"] * 6,
                         "prompt": [f"prompt {c}" for c in CASES], "language": "en"})
    meta.to_csv(tmp_path / "cases.csv", index=False)
    return {"a": f"ours={ours}", "b": f"base={base}", "cases": tmp_path / "cases.csv"}


def make_study(db_url, systems, raters=("ann", "bob", "cy", "dee"), **kw):
    return Study.create(db_url, "s1", systems["a"], systems["b"], cases=systems["cases"], raters=raters,
                        control_pairs=2, seed=7, **kw)


def test_create_matches_cases_and_reports_missing(db_url, systems):
    study = make_study(db_url, systems)
    assert study.missing_cases() == {"case11": ["base"]}
    counts = study.counts()
    assert counts == {"cases": 12, "pairs": 11, "control_pairs": 2, "raters": 4, "assignments": 0, "judgments": 0}
    assert Study.list(db_url) == ["s1"] and Study.open(db_url, "s1").id == study.id
    with pytest.raises(StudyError, match="already exists"):
        make_study(db_url, systems)
    with pytest.raises(StudyError, match="no study named 'nope'"):
        Study.open(db_url, "nope")


def test_left_right_is_seeded_and_balanced(tmp_path, systems):
    sides = []
    for run in range(2):
        study = Study.create(tmp_path / f"seeded{run}.db", "s", systems["a"], systems["b"], seed=3)
        j = study.judgments()  # empty; read the pairs through a rater instead
        study.add_raters(["x"])
        study.assign(1)
        tok = study.tokens()["x"]
        sides.append(sorted((study.sides(p.pair_id)[0], p.prompt) for p in study.pairs_for(tok)))
        assert j.empty
    assert sides[0] == sides[1]
    ours_left = sum(folder == "ours" for folder, _ in sides[0])
    assert 0 < ours_left < len(sides[0])  # randomised, not all on one side


def test_assignment_is_balanced_and_never_repeats(db_url, systems):
    study = make_study(db_url, systems)
    load = study.assign(raters_per_pair=3)
    assert sum(load.values()) == 11 * 3 + 2 * 4  # controls go to every rater
    assert max(load.values()) - min(load.values()) <= 1
    for token in study.tokens().values():
        ids = [p.pair_id for p in study.pairs_for(token)]
        assert len(ids) == len(set(ids))
    assert study.assign(raters_per_pair=3) == load  # idempotent
    study.add_raters(["eve"])
    topped = study.assign(raters_per_pair=4)
    assert sum(topped.values()) == 11 * 4 + 2 * 5
    with pytest.raises(StudyError, match="has 5 raters"):
        study.assign(raters_per_pair=6)


def test_judgments_are_relative_to_the_system_under_test(db_url, systems):
    study = make_study(db_url, systems)
    study.assign(2)
    tokens = study.tokens()
    token = tokens["ann"]
    pairs = [p for p in study.pairs_for(token)]
    clicked = {}
    for p in pairs:  # ann always clicks the side showing our video, and "same" on control pairs
        left, right = study.sides(p.pair_id)
        clicked[p.pair_id] = "same" if left == right else "left" if left == "ours" else "right"
        study.submit(token, p.pair_id, {"overall": clicked[p.pair_id], "lip_sync": "same"})
    j = study.judgments()
    test = j[~j.is_control]
    assert set(test[test.category == "overall"].value) == {1}
    assert set(test[test.category == "lip_sync"].value) == {0}
    overall = j[j.category == "overall"]
    assert dict(zip(overall.pair, overall.choice)) == clicked  # what was clicked, pair by pair
    assert {"left", "right"} <= set(clicked.values())  # ours was shown on both sides
    # a second submission updates, never duplicates
    first = pairs[0].pair_id
    study.submit(token, first, {"overall": "same"})
    j2 = study.judgments()
    assert len(j2) == len(j)
    assert j2[(j2.pair == first) & (j2.category == "overall")].value.tolist() == [0]
    assert study.pairs_for(token)[0].judgments["overall"] == "same"  # resume sees it
    report = study.score()
    assert report.flagged == []
    assert report.categories.set_index("category").loc["overall", "G"] == len(test[test.category == "overall"]) - 1


def test_tokens_and_media_are_guarded(db_url, systems, tmp_path):
    study = make_study(db_url, systems)
    study.assign(1)
    tokens = study.tokens()
    ann, bob = study.pairs_for(tokens["ann"]), study.pairs_for(tokens["bob"])
    not_anns = next(p.pair_id for p in bob if p.pair_id not in {q.pair_id for q in ann})
    with pytest.raises(AccessDenied, match="token is not valid"):
        study.pairs_for("forged-token")
    with pytest.raises(AccessDenied, match="not assigned"):
        study.submit(tokens["ann"], not_anns, {"overall": "left"})
    with pytest.raises(AccessDenied, match="not assigned"):
        study.media(tokens["ann"], not_anns, "left")
    with pytest.raises(StudyError, match="choice"):
        study.submit(tokens["ann"], ann[0].pair_id, {"overall": "better"})
    with pytest.raises(StudyError, match="category"):
        study.submit(tokens["ann"], ann[0].pair_id, {"smell": "left"})
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not for raters")
    with pytest.raises(AccessDenied, match="refused"):
        study.check_media(secret)
    ours = study.systems()["ours"].folder
    with pytest.raises(AccessDenied, match="refused"):
        study.check_media(f"{ours}/../secret.mp4")
    os.symlink(secret, f"{ours}/link.mp4")
    with pytest.raises(AccessDenied, match="refused"):
        study.check_media(f"{ours}/link.mp4")
    assert study.check_media(study.media(tokens["ann"], ann[0].pair_id, "right")).is_file()
    # the rater's view carries no system name and no path
    text = repr(ann)
    assert "ours" not in text and "base" not in text and "/" not in text


def test_bad_inputs_name_the_fix(tmp_path, systems):
    db = tmp_path / "bad.db"
    with pytest.raises(StudyError, match="does not exist"):
        Study.create(db, "x", tmp_path / "nope", systems["b"])
    with pytest.raises(StudyError, match="both systems are named"):
        Study.create(db, "x", systems["a"], systems["a"])
    bad = tmp_path / "bad.csv"
    bad.write_text("id,prompt\n1,a\n")
    with pytest.raises(StudyError, match="no case_id column"):
        Study.create(db, "x", systems["a"], systems["b"], cases=bad)
    with pytest.raises(StudyError, match="readable"):
        Study.create(db, "x", systems["a"], systems["b"], cases=tmp_path / "cases.txt")


def test_export_round_trip(tmp_path, systems):
    study = make_study(tmp_path / "e.db", systems)
    study.assign(1)
    token = study.tokens()["cy"]
    for p in study.pairs_for(token):
        study.submit(token, p.pair_id, {c: "same" for c in CATEGORIES})
    n = len(study.judgments())
    assert len(pd.read_csv(study.export(tmp_path / "j.csv"))) == n
    assert len(pd.read_parquet(study.export(tmp_path / "j.parquet"))) == n
    with pytest.raises(StudyError, match=".csv or .parquet"):
        study.export(tmp_path / "j.xlsx")


def _submit_at_once(db, name, token, pair_id, choice, seconds, barrier) -> tuple[str, float, int]:
    """One writer of the race: wait for all the others, then submit the same judgment with its own values."""
    study = Study.open(db, name)
    study.pairs_for(token)  # warm the connection, so that the writes, not the connects, race
    barrier.wait()
    revision = study.submit(token, pair_id, {"overall": choice}, seconds=seconds)["overall"]
    return choice, seconds, revision


WRITERS = 12


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_concurrent_writes_of_one_judgment_keep_the_last_commit(db_url, systems, executor):
    """WRITERS writers submit the same (pair, rater, category) at the same moment, each with its own
    (choice, seconds): exactly one row survives, every write was applied once (revisions 1..WRITERS, none lost
    or merged), and the row holds the values of the write that committed last."""
    study = make_study(db_url, systems)
    study.assign(raters_per_pair=1)
    token = study.tokens()["ann"]
    pair_id = study.pairs_for(token)[0].pair_id
    args = [(db_url, "s1", token, pair_id, ("left", "same", "right")[i % 3], float(i)) for i in range(WRITERS)]
    if executor == "threads":
        import threading

        barrier = threading.Barrier(WRITERS)
        with ThreadPoolExecutor(WRITERS) as pool:
            results = list(pool.map(lambda a: _submit_at_once(*a, barrier), args))
    else:
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager, ctx.Pool(WRITERS) as pool:
            barrier = manager.Barrier(WRITERS)
            results = pool.starmap(_submit_at_once, [(*a, barrier) for a in args])
    assert sorted(r[2] for r in results) == list(range(1, WRITERS + 1))
    rows = study.judgments()
    rows = rows[(rows.pair == pair_id) & (rows.category == "overall")]
    assert len(rows) == 1
    last = max(results, key=lambda r: r[2])
    assert (rows.choice.iloc[0], rows.seconds.iloc[0], rows.revision.iloc[0]) == last


def test_cli_create_assign_score_export(tmp_path, systems):
    from typer.testing import CliRunner

    from pipelines.cli import app

    runner = CliRunner()
    db = str(tmp_path / "cli.db")
    common = ["--db", db]
    res = runner.invoke(app, ["eval", "gsb", "create", "cli", "--a", systems["a"], "--b", systems["b"], "--cases",
                              str(systems["cases"]), "--rater", "ann", "--rater", "bob", "--controls", "1", *common])
    assert res.exit_code == 0, res.output
    assert "case11" in res.output and "missing" in res.output
    res = runner.invoke(app, ["eval", "gsb", "assign", "cli", "--raters-per-pair", "2", "--rater", "cy", *common])
    assert res.exit_code == 0, res.output
    study = Study.open(db, "cli")
    for token in study.tokens().values():
        for p in study.pairs_for(token):
            study.submit(token, p.pair_id, {c: "same" for c in CATEGORIES})
    res = runner.invoke(app, ["eval", "gsb", "score", "cli", "--n-boot", "200", "--json", str(tmp_path / "r.json"),
                              *common])
    assert res.exit_code == 0, res.output
    report = __import__("json").loads((tmp_path / "r.json").read_text())
    assert report["categories"][0]["S"] == 11 * 2 and report["flagged_raters"] == []
    res = runner.invoke(app, ["eval", "gsb", "export", "cli", "--out", str(tmp_path / "j.parquet"), *common])
    assert res.exit_code == 0 and len(pd.read_parquet(tmp_path / "j.parquet")) == len(study.judgments())
    res = runner.invoke(app, ["eval", "gsb", "score", "nope", *common])
    assert res.exit_code != 0 and "no study named" in str(res.exception or res.output)


def _tagged_copy(source, target, title: str):
    """`source` remuxed with container tags naming its maker, as a system's own files may be."""
    import av

    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        out.metadata.update({"title": title, "comment": f"made by {title}", "encoder": f"{title}-encoder"})
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return target


def test_raters_receive_blinded_copies_without_metadata(tmp_path):
    import av

    cases = ["c0", "c1", "c2"]
    folders = {}
    for name, seed in (("labsecret", 1), ("rivalsys", 2)):
        plain = make_system_videos(tmp_path / f"plain-{name}", cases, seed=seed)
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for c in cases:
            _tagged_copy(plain / f"{c}.mp4", folders[name] / f"{c}.mp4", name)
    assert b"labsecret" in (folders["labsecret"] / "c0.mp4").read_bytes()
    study = Study.create(tmp_path / "g.db", "blind", f"labsecret={folders['labsecret']}",
                         f"rivalsys={folders['rivalsys']}", raters=["ann"], control_pairs=1)
    study.assign(1)
    token = study.tokens()["ann"]
    encoders = set()
    for p in study.pairs_for(token):
        for side in ("left", "right"):
            path = study.media(token, p.pair_id, side)
            data = path.read_bytes()
            assert b"labsecret" not in data and b"rivalsys" not in data and "secret" not in path.name
            with av.open(str(path)) as f:
                assert not {"title", "comment", "encoder"} & set(f.metadata)
                encoders.add((f.streams.video[0].codec_context.name, f.streams.video[0].width))
    assert len(encoders) == 1  # both systems encoded alike
    assert study.check_media(study.media(token, study.pairs_for(token)[0].pair_id, "left"))
    with pytest.raises(AccessDenied):  # the systems' own files are no longer served
        study.check_media(folders["labsecret"] / "c0.mp4")


def test_a_typo_in_the_database_path_is_an_error_not_a_new_database(tmp_path):
    with pytest.raises(StudyError, match="does not exist"):
        Study.open(tmp_path / "typo" / "x.db", "s")
    assert not (tmp_path / "typo").exists()


def test_cli_score_on_a_missing_database_says_so(avatar, tmp_path):
    code, _, err = avatar("eval", "gsb", "score", "s", "--db", tmp_path / "typo" / "x.db")
    assert code == 2 and "does not exist" in err and not (tmp_path / "typo").exists()


def test_cli_prints_rater_links_whole(avatar, systems, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    url = "http://a-rather-long-host-name.example.org:8501"
    code, out, _ = avatar("eval", "gsb", "create", "links", "--a", systems["a"], "--b", systems["b"], "--rater", "ann",
                          "--rater", "bob", "--db", tmp_path / "l.db", "--rater-url", url)
    assert code == 0
    for token in Study.open(tmp_path / "l.db", "links").tokens().values():
        assert f"{url}/?token={token}" in out  # whole, on one line


def test_blind_copies_keep_the_sound_on_the_frames(tmp_path):
    """A study's blind copy re-encodes the sound sample-aligned with the frames: a click at 0.5 s of the source is at
    0.5 s of the copy (within the resampler's one sample at 48 kHz; the AAC priming lag was 1024 samples before)."""
    import av
    import numpy as np

    from evaluation.media import blind_copy
    from model.sampling.media import export_to_mp4

    audio = np.zeros(32000, np.float32)
    audio[8000:8400] = 0.8
    export_to_mp4(np.zeros((50, 32, 32, 3), np.uint8), 25.0, tmp_path / "source.mp4", audio, 16000)
    blind_copy(tmp_path / "source.mp4", tmp_path / "copy.mp4")
    with av.open(str(tmp_path / "copy.mp4")) as f:
        pcm = np.concatenate([frame.to_ndarray()[0] for frame in f.decode(f.streams.audio[0])])
    assert abs(int(np.argmax(np.abs(pcm) > 0.3)) - 24000) <= 2
