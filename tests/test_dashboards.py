"""Streamlit apps: logic through AppTest, and the rater app end to end in a real headless Chromium."""

import random
import re

import pytest
from browser import app_in_browser, image_stats, open_app, save_screenshot
from conftest import make_system_videos
from streamlit.testing.v1 import AppTest

from dashboards import APPS
from evaluation.gsb import CATEGORIES, Study

OURS, BASE = "avatarkit-v1", "baseline-v0"  # names that must never reach a rater's page


@pytest.fixture
def study(tmp_path, monkeypatch):
    cases = [f"case{i}" for i in range(4)]
    ours = make_system_videos(tmp_path / "ours", cases, seed=1)
    base = make_system_videos(tmp_path / "base", cases, seed=2)
    db = str(tmp_path / "gsb.db")
    s = Study.create(db, "ui", f"{OURS}={ours}", f"{BASE}={base}", raters=["ann", "bob"], control_pairs=1, seed=3,
                     cases=[{"case_id": c, "kind": "speech" if i % 2 else "singing", "prompt": f"say hi {i}"}
                            for i, c in enumerate(cases)])
    s.assign(raters_per_pair=2)
    monkeypatch.setenv("AVATAR_GSB_DB", db)
    monkeypatch.setenv("AVATAR_GSB_STUDY", "ui")
    return s


def rater_app(token=None):
    app = AppTest.from_file(str(APPS["rater"]), default_timeout=60)
    if token:
        app.query_params["token"] = token
    return app.run()


def test_rater_app_refuses_missing_or_wrong_token(study):
    assert "personal link" in rater_app().error[0].value
    app = rater_app("wrong")
    assert "not valid" in app.error[0].value
    assert not app.radio


def test_rater_app_rates_resumes_and_hides_systems(study):
    token = study.tokens()["ann"]
    app = rater_app(token)
    assert len(app.radio) == len(CATEGORIES)
    app.button[0].click().run()  # submit with nothing chosen
    assert "every category" in app.warning[0].value
    for radio in app.radio:
        radio.set_value("left")
    app.button[0].click().run()
    assert len(study.judgments()) == len(CATEGORIES)
    assert "1 of 5 pairs rated" in app.get("progress")[0].proto.text
    # a fresh session resumes at the second pair
    again = rater_app(token)
    assert "this is pair 2" in again.get("progress")[0].proto.text
    page = re.sub(r"data:video/mp4;base64,[A-Za-z0-9+/=]+", "DATA", str([e.proto for e in again.main]))
    assert page.count("DATA") == 2
    assert OURS not in page and BASE not in page and str(study.systems()[OURS].folder) not in page


def test_results_app_scores_and_filters(study):
    for name, token in study.tokens().items():
        for p in study.pairs_for(token):
            study.submit(token, p.pair_id, {c: "left" if name == "ann" else "same" for c in CATEGORIES})
    app = AppTest.from_file(str(APPS["results"]), default_timeout=120).run()
    assert not app.exception
    assert app.title[0].value == f"GSB: {OURS} vs {BASE}"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["judgments"] == str(2 * 5 * len(CATEGORIES)) and metrics["raters"] == "2"
    table = app.dataframe[0].value
    # ann chose "left" on the control pair too: she is flagged and left out, bob's 4 "same" remain
    assert "ann" in app.warning[0].value
    assert list(table["category"]) == list(CATEGORIES) and table[["G", "S", "B"]].iloc[0].tolist() == [0, 4, 0]
    app.sidebar.checkbox[0].uncheck().run()
    assert app.dataframe[0].value["judgments"].iloc[0] == 8
    app.sidebar.selectbox[1].set_value("speech").run()
    assert app.dataframe[0].value["judgments"].iloc[0] == 4


def test_dataset_app_browses_a_curated_dataset(tmp_path, monkeypatch, synthetic_clip, annotator):
    from curation import schema

    video = synthetic_clip.save(tmp_path, "crossing")
    result = annotator(video)
    annotator.write([result], tmp_path / "ds", failed=[schema.clip_row("broken", "broken.mp4", status="failed",
                                                                       error="broken.mp4 is not a readable video")])
    monkeypatch.setenv("AVATAR_DATASET", str(tmp_path / "ds"))
    app = AppTest.from_file(str(APPS["dataset"]), default_timeout=120).run()
    assert not app.exception
    assert {m.label: m.value for m in app.metric}["done"] == "1"
    assert len(app.get("image")) == 1
    app.slider[0].set_value(3).run()
    assert not app.exception and "frame 3" in str(app.get("image")[0].proto)
    monkeypatch.setenv("AVATAR_DATASET", str(tmp_path / "nothing"))
    assert "not a curated dataset" in AppTest.from_file(str(APPS["dataset"])).run().error[0].value


def test_rater_app_in_a_real_browser(study, chromium_path, tmp_path):
    token = study.tokens()["bob"]
    env = {"AVATAR_GSB_DB": study.db, "AVATAR_GSB_STUDY": "ui"}
    with app_in_browser("rater", env, chromium_path) as (browser, base):
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(f"{base}/?token={token}")
        page.wait_for_selector("[data-testid='stApp']")
        radios = page.locator("[data-testid='stRadio']")
        radios.first.wait_for(timeout=60_000)
        assert radios.count() == len(CATEGORIES)
        html = re.sub(r"data:video/mp4;base64,[A-Za-z0-9+/=]+", "DATA", page.content())
        assert OURS not in html and BASE not in html and study.systems()[OURS].folder not in html
        frame = page.frame_locator("iframe").first
        frame.locator("video#left").wait_for(state="attached")
        for i in range(len(CATEGORIES)):
            radios.nth(i).get_by_text("Right better").click()
        size, spread = image_stats(save_screenshot(page, tmp_path / "rater.png"))
        assert size[0] == 900 and size[1] > 600 and spread > 20  # the page drew (a blank one has spread ~0)
        page.get_by_role("button", name="Submit and next").click()
        page.get_by_text("1 of 5 pairs rated").wait_for(timeout=60_000)
        wrong = browser.new_page()
        wrong.goto(f"{base}/?token=forged")
        wrong.get_by_text("not valid").wait_for(timeout=60_000)
    j = study.judgments()
    assert len(j) == len(CATEGORIES) and set(j.rater) == {"bob"} and set(j.choice) == {"right"}
    assert len(j.pair.unique()) == 1


def page_metrics(page) -> dict[str, str]:
    """label -> value of the st.metric widgets on a browser page."""
    metrics = page.locator("[data-testid='stMetric']")
    return {metrics.nth(i).locator("[data-testid='stMetricLabel']").inner_text().strip():
            metrics.nth(i).locator("[data-testid='stMetricValue']").inner_text().strip() for i in range(metrics.count())}


def simulate_raters(study, seed: int = 0) -> None:
    """Simulated raters (not people): prefer ours with odds 0.5 / 0.3 / 0.2 (better / same / worse), pass controls."""
    rng = random.Random(seed)
    under_test = next(name for name, row in study.systems().items() if row.under_test)
    for token in study.tokens().values():
        for p in study.pairs_for(token):
            left, right = study.sides(p.pair_id)
            ours = "left" if left == under_test else "right"
            theirs = "right" if ours == "left" else "left"
            study.submit(token, p.pair_id, {c: "same" if left == right else rng.choices([ours, "same", theirs],
                                                                                        [0.5, 0.3, 0.2])[0]
                                            for c in CATEGORIES})


def test_results_app_in_a_real_browser(study, chromium_path, tmp_path):
    simulate_raters(study)
    n = len(study.judgments())
    with app_in_browser("results", {"AVATAR_GSB_DB": study.db, "AVATAR_GSB_STUDY": "ui"}, chromium_path) as (b, base):
        page = open_app(b, base)
        assert f"GSB: {OURS} vs {BASE}" in page.inner_text("h1")
        assert page_metrics(page)["judgments"] == str(n)
        assert page.locator("[data-testid='stVegaLiteChart'], .vega-embed").count() >= 1  # the CI bars drew
        size, spread = image_stats(save_screenshot(page, tmp_path / "results.png"))
    assert size[0] == 900 and size[1] > 600 and spread > 20


def test_dataset_app_in_a_real_browser(chromium_path, annotator, synthetic_clip, tmp_path):
    dataset = tmp_path / "ds"  # always a dataset of its own: never whatever a demo left in outputs/
    result = annotator(synthetic_clip.save(tmp_path, "crossing"))
    annotator.write([result], dataset)
    with app_in_browser("dataset", {"AVATAR_DATASET": str(dataset)}, chromium_path) as (browser, base):
        page = open_app(browser, base)
        passed = str(int(result.validation.passed))
        assert page_metrics(page) == {"clips": "1", "done": "1", "failed": "0", "pass validation": passed}
        assert page.locator("[data-testid='stImage'] img").count() == 1  # the frame with masks drawn
        size, spread = image_stats(save_screenshot(page, tmp_path / "dataset.png"))
    assert size[0] == 900 and size[1] > 600 and spread > 20


def test_a_multi_study_database_serves_each_rater_their_own_study(tmp_path, monkeypatch):
    cases = ["k0", "k1"]
    db = str(tmp_path / "two.db")
    ours, base = make_system_videos(tmp_path / "ours", cases, seed=1), make_system_videos(tmp_path / "base", cases, seed=2)
    first = Study.create(db, "alpha-confidential", f"{OURS}={ours}", f"{BASE}={base}", raters=["ann"])
    second = Study.create(db, "beta-private", f"{OURS}={ours}", f"{BASE}={base}", raters=["bob"])
    for s in (first, second):
        s.assign(1)
    monkeypatch.setenv("AVATAR_GSB_DB", db)
    monkeypatch.delenv("AVATAR_GSB_STUDY", raising=False)
    for study, rater, other in ((first, "ann", "beta-private"), (second, "bob", "alpha-confidential")):
        app = rater_app(study.tokens()[rater])
        assert not app.error and len(app.radio) == len(CATEGORIES)
        assert other not in str([e.proto for e in app.main])


def test_a_missing_video_lets_the_rater_go_on(study):
    token = study.tokens()["ann"]
    first = study.pairs_for(token)[0]
    study.media(token, first.pair_id, "left").unlink()
    app = rater_app(token)
    assert not app.exception and "cannot be shown" in app.warning[0].value
    page = str([e.proto for e in app.main])
    assert "Traceback" not in page and "/" not in app.warning[0].value
    problems = study.problems()
    assert list(problems.pair) == [first.pair_id] and "not a file" in problems.reason.iloc[0]
    assert "this is pair 2" in rater_app(token).get("progress")[0].proto.text  # a new visit goes on past it


def test_case_text_is_shown_as_plain_text(tmp_path, monkeypatch):
    db = str(tmp_path / "md.db")
    prompt = "**bold** <b>tag</b> [click](http://example.invalid)"
    s = Study.create(db, "md", f"{OURS}={make_system_videos(tmp_path / 'o', ['c'], seed=1)}",
                     f"{BASE}={make_system_videos(tmp_path / 'b', ['c'], seed=2)}", raters=["ann"],
                     cases=[{"case_id": "c", "prompt": prompt}])
    s.assign(1)
    monkeypatch.setenv("AVATAR_GSB_DB", db)
    app = rater_app(s.tokens()["ann"])
    assert [t.value for t in app.text] == [f"Prompt: {prompt}"] and not any(prompt in m.value for m in app.markdown)


def test_owner_apps_answer_only_the_owner_link_when_served_beyond_loopback(study, tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_OWNER_TOKEN", "owner-secret")
    monkeypatch.setenv("AVATAR_DATASET", str(tmp_path / "none"))
    for name in ("results", "dataset"):
        page = AppTest.from_file(str(APPS[name]), default_timeout=60).run()
        assert "owner's link" in page.error[0].value and not page.dataframe
        page = AppTest.from_file(str(APPS[name]), default_timeout=60)
        page.query_params["token"] = "owner-secret"
        page.run()
        assert not page.exception and "owner's link" not in str([e.value for e in page.error])
    page = AppTest.from_file(str(APPS["dataset"]), default_timeout=60)
    page.query_params["token"] = "owner-secret"
    assert not page.run().sidebar.text_input  # no folder can be typed in: only the datasets it was started with


def test_avatar_dash_stops_its_server_on_sigterm(tmp_path):
    import signal
    import socket
    import subprocess
    import sys
    import time

    import psutil

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cli = subprocess.Popen([sys.executable, "-c", "from pipelines.cli import main; main()", "dash", "dataset",
                            str(tmp_path), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not psutil.Process(cli.pid).children():
            time.sleep(0.2)
        server = psutil.Process(cli.pid).children()[0]
        cli.send_signal(signal.SIGTERM)
        cli.wait(timeout=30)
        server.wait(timeout=30)  # raises if the server outlives the command
        assert not server.is_running()
    finally:
        for p in psutil.Process(cli.pid).children(recursive=True) if cli.poll() is None else []:
            p.kill()
        cli.kill()


def test_both_apps_show_a_cases_storyline(tmp_path, monkeypatch):
    """A case list's `storyline` column (a plan.json from `avatar direct`) is stored with the case and shown."""
    from evaluation.gsb import StudyError
    from model.storyline import Shot, Storyline

    plan = tmp_path / "plan.json"
    plan.write_text(Storyline(duration_s=4, prompt="two friends talk", conflicts=["asked to sing, audio is speech"],
                              shots=[Shot(start_s=0, end_s=1.8, prompt="he asks", speakers=[0], emotion="calm"),
                                     Shot(start_s=1.8, end_s=4, prompt="she laughs", speakers=[1],
                                          negative_prompt="frowning")]).model_dump_json())
    videos = {n: make_system_videos(tmp_path / n, ["c", "d"], seed=i) for i, n in enumerate(("o", "b"))}
    cases = [{"case_id": "c", "prompt": "talk", "storyline": str(plan)}, {"case_id": "d", "prompt": "talk"}]
    with pytest.raises(StudyError, match="case d: storyline .*nope.json could not be read"):
        Study.create(str(tmp_path / "bad.db"), "s", f"{OURS}={videos['o']}", f"{BASE}={videos['b']}",
                     cases=[cases[0], {"case_id": "d", "storyline": str(tmp_path / "nope.json")}])
    s = Study.create(str(tmp_path / "s.db"), "s", f"{OURS}={videos['o']}", f"{BASE}={videos['b']}", raters=["ann"],
                     cases=cases, seed=0)
    s.assign(1)
    assert list(s.storylines()) == ["c"]
    monkeypatch.setenv("AVATAR_GSB_DB", str(tmp_path / "s.db"))
    app = rater_app(s.tokens()["ann"])
    if not any(e.label.startswith("Storyline") for e in app.expander):  # the case with it may come second
        app.button[-1].click().run()
    assert [e.label for e in app.expander] == ["Storyline: the shots both videos were asked for"]
    assert list(app.dataframe[0].value["prompt"]) == ["he asks", "she laughs"]
    results = AppTest.from_file(str(APPS["results"]), default_timeout=120).run()
    assert not results.exception
    assert "Conflict: asked to sing, audio is speech" in [t.value for t in results.text]
    assert list(results.dataframe[-1].value["negative prompt"]) == ["", "frowning"]
