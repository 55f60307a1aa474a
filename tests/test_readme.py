"""The README tells the truth at a glance: its commands are what CI runs, its pictures render on the repository
page, and it mentions only test options that exist."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readmes_test_command():
    commands = re.findall(r"^(bash \.ci/setup && \.venv/bin/\S+.*?)\s+#", README, flags=re.M)
    assert len(commands) == 2 and "avatar demo" in commands[0] and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == commands[1].strip()


def test_readme_images_are_small_tracked_files():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert images, "the README shows the dashboards"
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split())
    for image in images:
        assert image in tracked, f"{image} is not tracked by git: it would not render on the repository page"
        assert (ROOT / image).stat().st_size < 200_000, f"{image} is large: re-make it with benchmarks/dashboard_screenshots.py"


def test_slow_tests_are_mentioned_only_if_there_are_some():
    files = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    marked = any("mark.slow" in p.read_text() for p in files)
    assert ("-m slow" in README) == marked


def test_relative_links_of_the_readme_docs_and_benchmarks_point_at_files():
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links only, not code
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            path = target.partition("#")[0]
            if re.match(r"[a-z]+:", target) or not path:
                continue
            assert (page.parent / path).exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
