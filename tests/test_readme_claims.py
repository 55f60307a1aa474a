"""The reported numbers are the measured ones: every claim of benchmarks/claims.py is on its README line and equals,
as rounded there, the value in the results JSON it names; every result cited says which commit made it."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

from benchmarks.claims import CLAIMS, Claim

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@cache
def result(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def value_at(data, path: str):
    """The value at a dotted path; a key that itself holds dots ("wan-1.3b") is matched whole."""
    parts = path.split(".")
    while parts:
        if isinstance(data, list):
            data, parts = data[int(parts[0])], parts[1:]
            continue
        n = next((n for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in data), None)
        assert n is not None, f"no {parts[0]!r} at {path!r}"
        data, parts = data[".".join(parts[:n])], parts[n:]
    return data


def section_lines(claim: Claim) -> list[str]:
    """The document's lines, or only those of the claim's section (its heading to the next heading)."""
    lines = (ROOT / claim.doc).read_text().splitlines()
    if not claim.section:
        return lines
    starts = [i for i, x in enumerate(lines) if x.startswith("#") and x.lstrip("#").strip() == claim.section]
    assert len(starts) == 1, f"section {claim.section!r} is not one heading of {claim.doc}"
    end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[starts[0]:end]


def line_of(claim: Claim) -> str:
    lines = [x for x in section_lines(claim) if claim.line in x]
    where = f"{claim.doc}" + (f" ({claim.section})" if claim.section else "")
    assert len(lines) == 1, f"{claim.line!r} is on {len(lines)} lines of {where}, not one"
    return lines[0]


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: f"{c.result}:{c.path}")
def test_the_readme_says_what_the_results_json_holds(claim):
    line = line_of(claim)
    assert re.search(rf"(?<![\d.]){re.escape(claim.written)}(?![\d])", line), f"{claim.written} not on: {line}"
    value = float(value_at(result(claim.result), claim.path)) * claim.scale
    decimals = len(claim.written.split(".")[1]) if "." in claim.written else 0
    assert abs(value - float(claim.written)) <= 0.5 * 10 ** -decimals + 1e-9, (
        f"{claim.doc} writes {claim.written} ({claim.line!r}) but {claim.result}.json {claim.path} is {value:g}")


def test_every_cited_result_says_which_commit_made_it():
    """A results JSON that records its commit (benchmarks/common.emit) is cited with that commit."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    for path in sorted(RESULTS.glob("*.json")):
        made_at = json.loads(path.read_text()).get("commit")
        citations = [x for x in text.splitlines() if f"(results/{path.name})" in x]
        if made_at and citations:
            assert any(made_at.split("+")[0] in x for x in citations), f"{path.name} (commit {made_at}) cited without it"


def test_claims_name_results_that_exist_and_cover_each_section():
    cited = set(re.findall(r"\(results/(\w+)\.json\)", (ROOT / "benchmarks" / "README.md").read_text()))
    claimed = {c.result for c in CLAIMS}
    assert claimed <= {p.stem for p in RESULTS.glob("*.json")}
    missing = cited - claimed - {"model_refactor_equivalence", "learning_tests"}  # results with nothing to round
    assert not missing, f"results cited in benchmarks/README.md with no claim checked: {sorted(missing)}"
