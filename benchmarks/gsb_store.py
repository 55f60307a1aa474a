"""GSB store under load: 20 concurrent raters on SQLite and PostgreSQL, and scoring time.

A study of 300 cases (+10 control pairs) with 20 raters and 5 raters per pair; every rater submits all
their pairs (7 categories per submission) from its own thread (or process). Side by side for each
database: our submission (one transaction, one upsert for the 7 categories) vs the naive one (one
transaction per judgment, read then insert or update). Then scoring of the 300 x 5 x 7 judgments.

    .venv/bin/python benchmarks/gsb_store.py [--postgres URL] [--cases 300]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks.common import emit  # noqa: E402
from evaluation.gsb import CATEGORIES, Study  # noqa: E402
from evaluation.scoring import ScoreConfig, score_judgments  # noqa: E402
from evaluation.store import JudgmentRow, PairRow, utcnow  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://avatar:avatar@127.0.0.1:5432/avatar_test"


def choices_for(rater_index: int, pair_index: int) -> dict[str, str]:
    rng = np.random.default_rng(rater_index * 100_003 + pair_index)
    return {c: str(rng.choice(["left", "same", "right"], p=[0.45, 0.3, 0.25])) for c in CATEGORIES}


def submit_ours(study: Study, token: str, pair_id: str, choices: dict[str, str]) -> None:
    study.submit(token, pair_id, choices)


def submit_naive(study: Study, token: str, pair_id: str, choices: dict[str, str]) -> None:
    """What a first version does: per judgment, its own transaction, select then insert or update."""
    rater = study.rater(token)
    for category, choice in choices.items():
        with study.session() as s, s.begin():
            pair = s.scalar(select(PairRow).where(PairRow.public_id == pair_id))
            row = s.scalar(select(JudgmentRow).where(JudgmentRow.pair_id == pair.id, JudgmentRow.rater_id == rater.id,
                                                     JudgmentRow.category == category))
            value = {"left": 1, "same": 0, "right": -1}[choice]
            if row is None:
                s.add(JudgmentRow(pair_id=pair.id, rater_id=rater.id, category=category, choice=choice, value=value))
            else:
                row.choice, row.value, row.updated_at = choice, value, utcnow()


def rate(db: str, name: str, rater_index: int, token: str, mode: str) -> tuple[list[float], float, float]:
    """One rater submits all their pairs ("same" on control pairs); returns latencies, start and end time."""
    study = Study.open(db, name)
    submit = submit_ours if mode == "ours" else submit_naive
    pairs = study.pairs_for(token)
    answers = [{c: "same" for c in CATEGORIES}
               if study.media(token, p.pair_id, "left") == study.media(token, p.pair_id, "right")
               else choices_for(rater_index, i) for i, p in enumerate(pairs)]
    latencies, start = [], time.time()
    for pair, choices in zip(pairs, answers):
        tic = time.perf_counter()
        submit(study, token, pair.pair_id, choices)
        latencies.append(time.perf_counter() - tic)
    end = time.time()
    study.engine.dispose()
    return latencies, start, end


def _rate_star(args):
    return rate(*args)


def run_load(db: str, systems: tuple[str, str], cases: int, mode: str, workers: str) -> tuple[dict, Study]:
    name = f"bench-{mode}-{workers}"
    study = Study.create(db, name, *systems, raters=[f"r{i:02d}" for i in range(20)], control_pairs=10, seed=0)
    study.assign(raters_per_pair=5)
    jobs = [(db, name, i, token, mode) for i, token in enumerate(study.tokens().values())]
    if workers == "threads":
        with ThreadPoolExecutor(20) as pool:
            runs = list(pool.map(_rate_star, jobs))
    else:
        with mp.get_context("spawn").Pool(20) as pool:
            runs = pool.map(_rate_star, jobs)
    # sustained: from the first rater's first submission to the last rater's last (start-up excluded)
    seconds = max(end for _, _, end in runs) - min(start for _, start, _ in runs)
    flat = np.concatenate([np.asarray(lat) for lat, _, _ in runs])
    counts = study.counts()
    expected = int(len(flat) * len(CATEGORIES))
    result = {"submissions": int(len(flat)), "judgments": counts["judgments"], "expected_judgments": expected,
              "lost_or_duplicated": expected - counts["judgments"], "seconds": round(seconds, 2),
              "submissions_per_s": round(len(flat) / seconds, 1),
              "judgments_per_s": round(counts["judgments"] / seconds, 1),
              "latency_p50_ms": round(float(np.percentile(flat, 50)) * 1e3, 1),
              "latency_p95_ms": round(float(np.percentile(flat, 95)) * 1e3, 1)}
    return result, study


def make_systems(root: Path, cases: int) -> tuple[str, str]:
    """Two systems' folders of tiny real videos (a study re-encodes each into its blinded copy)."""
    from curation.video import write_video

    rng = np.random.default_rng(0)
    for name in ("ours", "base"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(cases):
            frames = np.repeat(rng.integers(0, 255, size=(1, 32, 32, 3), dtype=np.uint8), 4, axis=0)
            write_video(root / name / f"case{i:04d}.mp4", frames, fps=8)
    return f"ours={root / 'ours'}", f"base={root / 'base'}"


def fresh_postgres(url: str) -> tuple[str, callable]:
    name = f"avatar_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(url).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default=os.environ.get("AVATAR_TEST_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gsb_bench_"))
    systems = make_systems(root, args.cases)
    backends = {"sqlite": (str(root / "gsb.db"), lambda: None)}
    try:
        backends["postgresql"] = fresh_postgres(args.postgres)
    except Exception as exc:  # noqa: BLE001
        print(f"PostgreSQL at {args.postgres} not reachable ({exc}); SQLite only", file=sys.stderr)

    results, scored_study = {}, None
    for backend, (db, drop) in backends.items():
        results[backend] = {}
        for workers in ("threads", "processes"):
            for mode in ("ours", "naive"):
                res, study = run_load(db, systems, args.cases, mode, workers)
                results[backend][f"{mode}_{workers}"] = res
                print(backend, workers, mode, res, file=sys.stderr)
                if backend == "sqlite" and mode == "ours" and workers == "threads":
                    scored_study = study
        for workers in ("threads", "processes"):
            ours, naive = results[backend][f"ours_{workers}"], results[backend][f"naive_{workers}"]
            results[backend][f"ours_over_naive_judgments_per_s_{workers}"] = round(
                ours["judgments_per_s"] / naive["judgments_per_s"], 2)

    # scoring: 300 cases x 5 raters x 7 categories (+ control pairs rated by all 20)
    tic = time.perf_counter()
    table = scored_study.judgments()
    read_s = time.perf_counter() - tic
    tic = time.perf_counter()
    report = score_judgments(table, list(CATEGORIES), ScoreConfig(n_boot=args.n_boot))
    score_s = time.perf_counter() - tic
    scoring = {"judgments": int(len(table)), "scored_judgments": int(report.categories["judgments"].sum()),
               "cases": report.n_cases, "n_boot": args.n_boot, "read_seconds": round(read_s, 2),
               "score_seconds": round(score_s, 2), "overall_gsb": round(float(report.categories["gsb"].iloc[0]), 3),
               "overall_ci": [round(float(report.categories["gsb_low"].iloc[0]), 3),
                              round(float(report.categories["gsb_high"].iloc[0]), 3)],
               "agreement_alpha": round(report.agreement, 3)}
    for _, drop in backends.values():
        drop()
    emit("gsb_store", {"cases": args.cases, "raters": 20, "raters_per_pair": 5, "categories": len(CATEGORIES),
                       "load": results, "scoring": scoring})


if __name__ == "__main__":
    main()
