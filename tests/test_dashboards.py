"""Streamlit apps: logic through AppTest, and the rater app end to end in a real headless Chromium."""

import contextlib
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import make_system_videos
from streamlit.testing.v1 import AppTest

from dashboards import APPS
from evaluation.gsb import CATEGORIES, Study

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "benchmarks" / "results"
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(app: str, env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APPS[app]), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], env={**os.environ, **env}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"streamlit {app} did not start on port {port}")


@contextlib.contextmanager
def app_in_browser(app: str, env: dict, chromium_path: str):
    """Serve a dashboard with streamlit and yield (browser, base URL); both are stopped after."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = _serve(app, env, port)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path, args=BROWSER_ARGS)
            yield browser, f"http://127.0.0.1:{port}"
            browser.close()
    finally:
        server.kill()


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


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
        page.screenshot(path=str(SCREENSHOTS / "dashboard_rater.png"), full_page=True)
        page.get_by_role("button", name="Submit and next").click()
        page.get_by_text("1 of 5 pairs rated").wait_for(timeout=60_000)
        wrong = browser.new_page()
        wrong.goto(f"{base}/?token=forged")
        wrong.get_by_text("not valid").wait_for(timeout=60_000)
    j = study.judgments()
    assert len(j) == len(CATEGORIES) and set(j.rater) == {"bob"} and set(j.choice) == {"right"}
    assert len(j.pair.unique()) == 1


@pytest.mark.parametrize("app", ["results", "dataset"])
def test_screenshots_of_the_other_apps(app, study, chromium_path, tmp_path, request):
    """Serve results (on the study) and dataset (the demo's when present) in Chromium and screenshot them."""
    rng = random.Random(0)
    for token in study.tokens().values():  # raters who prefer ours more often than not, and pass the controls
        for p in study.pairs_for(token):
            left, right = study.media(token, p.pair_id, "left"), study.media(token, p.pair_id, "right")
            ours = "left" if left.parent.name == "ours" else "right"
            theirs = "right" if ours == "left" else "left"
            study.submit(token, p.pair_id, {c: "same" if left == right else rng.choices([ours, "same", theirs],
                                                                                        [0.5, 0.3, 0.2])[0]
                                            for c in CATEGORIES})
    dataset = ROOT / "outputs" / "demo"
    if app == "dataset" and not (dataset / "clips.parquet").exists():
        annotator, clip = request.getfixturevalue("annotator"), request.getfixturevalue("synthetic_clip")
        dataset = tmp_path / "ds"
        annotator.write([annotator(clip.save(tmp_path, "crossing"))], dataset)
    env = {"AVATAR_GSB_DB": study.db, "AVATAR_GSB_STUDY": "ui", "AVATAR_DATASET": str(dataset)}
    with app_in_browser(app, env, chromium_path) as (browser, base):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/")
        page.wait_for_selector("[data-testid='stApp']")
        page.locator("[data-testid='stMetric']").first.wait_for(timeout=90_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SCREENSHOTS / f"dashboard_{app}.png"), full_page=True)
