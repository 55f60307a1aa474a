"""`avatar eval ...`: GSB studies from the command line (create, assign, score, export)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="evaluate: automatic metrics and GSB preference studies", no_args_is_help=True)
gsb_app = typer.Typer(help="GSB (good/same/bad) side-by-side studies", no_args_is_help=True)
app.add_typer(gsb_app, name="gsb")
console = Console()

DEFAULT_DB = os.environ.get("AVATAR_GSB_DB", "outputs/gsb.db")
Db = Annotated[str, typer.Option("--db", help="SQLAlchemy URL or SQLite file ($AVATAR_GSB_DB)")]
RaterUrl = Annotated[Optional[str], typer.Option(help="rater app address, to print each rater's link")]


def print_rater_links(tokens: dict[str, str], base_url: str | None, load: dict[str, int] | None = None) -> None:
    """Each rater's link (or token), one per line and never cut, with their number of pairs when known."""
    console.print("raters" + (" (pairs)" if load is not None else "") + ":")
    for name, token in tokens.items():
        link = f"{base_url.rstrip('/')}/?token={token}" if base_url else f"token {token}"
        count = f" ({load.get(name, 0)})" if load is not None else ""
        console.print(f"  {name}{count}: {link}", soft_wrap=True, highlight=False)


@gsb_app.command("create")
def create(
    name: str = typer.Argument(..., help="study name (unique in the database)"),
    system_a: str = typer.Option(..., "--a", help="system under test: NAME=FOLDER of <case_id>.mp4"),
    system_b: str = typer.Option(..., "--b", help="baseline: NAME=FOLDER of <case_id>.mp4"),
    cases: Optional[Path] = typer.Option(None, help="case list (.csv/.jsonl/.parquet, column case_id + metadata)"),
    rater: list[str] = typer.Option([], "--rater", help="rater name (repeat)"),
    controls: int = typer.Option(0, help="control pairs (A's video on both sides; must be rated 'same')"),
    categories: str = typer.Option(",".join(("overall", "visual_quality", "motion_quality", "motion_expressiveness",
                                             "lip_sync", "text_relevance", "identity")), help="comma-separated"),
    seed: int = typer.Option(0, help="seed of the left/right draw and the assignment"),
    media_dir: Optional[Path] = typer.Option(None, help="where the blinded copies raters see go (default: beside "
                                                         "a SQLite database)"),
    db: Db = DEFAULT_DB,
    rater_url: RaterUrl = None,
) -> None:
    """Match the two systems' videos by case id and make blinded pairs (re-encoded copies, no metadata)."""
    from evaluation.gsb import Study

    study = Study.create(db, name, system_a, system_b, cases=cases, raters=rater, seed=seed, control_pairs=controls,
                         categories=[c.strip() for c in categories.split(",") if c.strip()], media_dir=media_dir)
    console.print(f"study {name!r} in {db}: {study.counts()}")
    missing = study.missing_cases()
    if missing:
        table = Table(title=f"{len(missing)} cases without a pair (missing videos)")
        table.add_column("case")
        table.add_column("missing in")
        for case, systems in missing.items():
            table.add_row(case, ", ".join(systems))
        console.print(table)
    if rater:
        print_rater_links(study.tokens(), rater_url)


@gsb_app.command("assign")
def assign(
    name: str = typer.Argument(...),
    raters_per_pair: int = typer.Option(3, help="distinct raters per pair"),
    rater: list[str] = typer.Option([], "--rater", help="add a rater first (repeat)"),
    db: Db = DEFAULT_DB,
    rater_url: RaterUrl = None,
) -> None:
    """Give each pair k raters (balanced; controls to everyone). Rerun to top up after adding raters."""
    from evaluation.gsb import Study

    study = Study.open(db, name)
    if rater:
        study.add_raters(rater)
    load = study.assign(raters_per_pair)
    print_rater_links(study.tokens(), rater_url, load)


@gsb_app.command("score")
def score(
    name: str = typer.Argument(...),
    kind: Optional[str] = typer.Option(None, help="only cases of this kind (speech, singing, ...)"),
    n_boot: int = typer.Option(2000, help="bootstrap resamples of cases"),
    keep_flagged: bool = typer.Option(False, help="keep raters who failed control pairs"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the report as JSON"),
    db: Db = DEFAULT_DB,
) -> None:
    """Per category G/S/B, (G+S)/(B+S) and (G-B)/(G+S+B) with 95% CIs over cases, sign test, agreement."""
    from evaluation.gsb import Study
    from evaluation.scoring import ScoreConfig

    report = Study.open(db, name).score(ScoreConfig(n_boot=n_boot, kind=kind, drop_flagged=not keep_flagged))
    table = Table(title=f"GSB {name} ({report.n_cases} cases{', ' + kind if kind else ''}), "
                        f"agreement alpha {report.agreement:.2f}")
    for col in ("category", "G", "S", "B", "(G+S)/(B+S)", "95% CI", "(G-B)/N", "95% CI ", "sign p", "alpha"):
        table.add_column(col, justify="right")
    for r in report.categories.itertuples():
        table.add_row(r.category, str(r.G), str(r.S), str(r.B), f"{r.gsb:.2f}", f"[{r.gsb_low:.2f}, {r.gsb_high:.2f}]",
                      f"{r.net:+.2f}", f"[{r.net_low:+.2f}, {r.net_high:+.2f}]", f"{r.sign_p:.3g}", f"{r.alpha:.2f}")
    console.print(table)
    raters = Table(title="raters")
    for col in ("rater", "judgments", "left share", "position p", "control pass", "flagged"):
        raters.add_column(col, justify="right")
    for r in report.raters.itertuples():
        raters.add_row(r.rater, str(r.judgments), f"{r.left_share:.2f}", f"{r.position_p:.3g}",
                       f"{r.control_pass:.2f}", "yes" if r.flagged else "")
    console.print(raters)
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=2, default=str))


@gsb_app.command("export")
def export(name: str = typer.Argument(...), out: Path = typer.Option(..., "--out", help=".csv or .parquet"),
           db: Db = DEFAULT_DB) -> None:
    """Write every judgment (with case metadata and the true system on each side) to a file."""
    from evaluation.gsb import Study

    path = Study.open(db, name).export(out)
    console.print(f"wrote {path}")
