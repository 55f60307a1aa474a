"""Re-make the README's screenshots of the three dashboards (benchmarks/results/dashboard_*.png, tracked in git).

Each app is served by `streamlit run` and photographed in Debian's Chromium (Playwright), as the browser tests
do. The study is made here: 4 cases of tiny generated videos (colour blocks, not avatars), 2 raters and 1 control
pair; its judgments come from SIMULATED raters (random votes preferring system A 0.5 / 0.3 / 0.2), not people.
The dataset app shows a synthetic two-person crossing curated by the real annotator.

    .venv/bin/python benchmarks/dashboard_screenshots.py [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks.common import RESULTS, SHARED, setup_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    setup_env()
    from browser import app_in_browser, open_app, save_screenshot
    from conftest import crossing_clips, make_system_videos
    from test_dashboards import simulate_raters

    from curation import AnnotatorConfig, ClipAnnotator, ReadConfig
    from evaluation.gsb import CATEGORIES, Study

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = [f"case{i}" for i in range(4)]
        study = Study.create(str(tmp / "gsb.db"), "screenshots",
                             f"system-A={make_system_videos(tmp / 'ours', cases, seed=1)}",
                             f"system-B={make_system_videos(tmp / 'base', cases, seed=2)}",
                             raters=["rater1", "rater2"], control_pairs=1, seed=3,
                             cases=[{"case_id": c, "kind": "speech" if i % 2 else "singing", "prompt": f"say hi {i}"}
                                    for i, c in enumerate(cases)])
        study.assign(raters_per_pair=2)
        gsb_env = {"AVATAR_GSB_DB": study.db, "AVATAR_GSB_STUDY": "screenshots"}
        with app_in_browser("rater", gsb_env, args.chromium) as (browser, base):
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"{base}/?token={study.tokens()['rater1']}")
            radios = page.locator("[data-testid='stRadio']")
            radios.first.wait_for(timeout=60_000)
            for i in range(len(CATEGORIES)):
                radios.nth(i).get_by_text("Right better").click()
            page.wait_for_timeout(1000)
            written = [save_screenshot(page, RESULTS / "dashboard_rater.png")]
        simulate_raters(study)
        with app_in_browser("results", gsb_env, args.chromium) as (browser, base):
            written.append(save_screenshot(open_app(browser, base), RESULTS / "dashboard_results.png"))
        config = AnnotatorConfig(read=ReadConfig(max_side=480))
        config.tracker.backend = config.pose.backend = "ultralytics"
        annotator = ClipAnnotator(config)
        clip = crossing_clips(SHARED / "data")[0]
        annotator.write([annotator(clip.save(tmp, "crossing"))], tmp / "dataset")
        with app_in_browser("dataset", {"AVATAR_DATASET": str(tmp / "dataset")}, args.chromium) as (browser, base):
            written.append(save_screenshot(open_app(browser, base), RESULTS / "dashboard_dataset.png"))
    for path in written:
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
