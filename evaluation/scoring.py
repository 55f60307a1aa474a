"""Scoring of GSB judgments: counts, ratios with bootstrap CIs over cases, sign test, agreement, rater checks.

Input is one row per judgment with `value` relative to the system under test (+1 good, 0 same, -1 bad).
Cases, not judgments, are the independent unit: confidence intervals resample cases and the sign test
counts a case as won or lost by the sum of its raters' votes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import krippendorff
import numpy as np
import pandas as pd
from scipy import stats

JUDGMENT_COLUMNS = ("case_key", "kind", "pair", "rater", "category", "choice", "value", "is_control")


@dataclass(frozen=True)
class ScoreConfig:
    n_boot: int = 2000
    confidence: float = 0.95
    seed: int = 0
    control_threshold: float = 0.8  # a rater must answer "same" on at least this share of control judgments
    drop_flagged: bool = True  # leave flagged raters out of the scores (they stay in the rater table)
    kind: str | None = None  # score only cases of this kind (speech, singing, ...)


@dataclass
class GSBReport:
    categories: pd.DataFrame  # one row per category
    raters: pd.DataFrame  # one row per rater
    agreement: float  # Krippendorff's alpha (ordinal) over all categories
    n_cases: int
    flagged: list[str] = field(default_factory=list)
    config: ScoreConfig = field(default_factory=ScoreConfig)

    def to_dict(self) -> dict:
        return {"n_cases": self.n_cases, "agreement_alpha": self.agreement, "flagged_raters": self.flagged,
                "dropped_flagged": self.config.drop_flagged, "kind": self.config.kind,
                "categories": self.categories.to_dict(orient="records"),
                "raters": self.raters.to_dict(orient="records")}


def gsb_ratio(g, s, b):
    """(G+S)/(B+S): above 1 means the system under test is preferred (the reports' headline number)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(np.add(g, s), np.add(b, s), dtype=float)


def net_preference(g, s, b):
    """(G-B)/(G+S+B), in [-1, 1]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(np.subtract(g, b), np.add(np.add(g, s), b), dtype=float)


def krippendorff_alpha(table: pd.DataFrame, item_columns: list[str]) -> float:
    """Ordinal alpha over raters x items; NaN when there is nothing to agree on."""
    if table.empty:
        return float("nan")
    matrix = table.pivot_table(index="rater", columns=item_columns, values="value", aggfunc="first")
    data = matrix.to_numpy(dtype=float)
    paired = np.sum(~np.isnan(data), axis=0) >= 2
    values = np.unique(data[:, paired][~np.isnan(data[:, paired])]) if paired.any() else []
    if len(values) < 2:  # alpha is undefined without two raters on one item and two distinct values
        return float("nan")
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal",
                                    value_domain=[-1, 0, 1]))


def _bootstrap_ci(counts: np.ndarray, statistic, config: ScoreConfig) -> tuple[float, float]:
    """Percentile CI of statistic(G, S, B) resampling cases (rows of counts)."""
    if len(counts) < 2:
        return float("nan"), float("nan")

    def stat(g, s, b, axis=-1):
        return statistic(g.sum(axis=axis), s.sum(axis=axis), b.sum(axis=axis))

    with np.errstate(divide="ignore", invalid="ignore"):
        res = stats.bootstrap((counts[:, 0], counts[:, 1], counts[:, 2]), stat, paired=True, vectorized=True,
                              n_resamples=config.n_boot, confidence_level=config.confidence, method="percentile",
                              rng=np.random.default_rng(config.seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def rater_table(judgments: pd.DataFrame, config: ScoreConfig) -> pd.DataFrame:
    """Per rater: judgments, position bias (share of left among left/right choices) and control pass rate."""
    rows = []
    judgments = judgments.astype({"is_control": bool})
    for rater, own in judgments.groupby("rater", sort=True):
        test = own[~own["is_control"]]
        control = own[own["is_control"]]
        left, right = int((test["choice"] == "left").sum()), int((test["choice"] == "right").sum())
        control_pass = float((control["choice"] == "same").mean()) if len(control) else float("nan")
        rows.append({
            "rater": rater,
            "judgments": int(len(test)),
            "pairs": int(test["pair"].nunique()),
            "left_share": left / (left + right) if left + right else float("nan"),
            "position_p": float(stats.binomtest(left, left + right).pvalue) if left + right else 1.0,
            "control_judgments": int(len(control)),
            "control_pass": control_pass,
            "flagged": bool(len(control) and control_pass < config.control_threshold),
        })
    columns = ["rater", "judgments", "pairs", "left_share", "position_p", "control_judgments", "control_pass", "flagged"]
    return pd.DataFrame(rows, columns=columns)


def score_judgments(judgments: pd.DataFrame, categories: list[str], config: ScoreConfig = ScoreConfig()) -> GSBReport:
    """Score a judgments table (columns JUDGMENT_COLUMNS) per category."""
    missing = set(JUDGMENT_COLUMNS) - set(judgments.columns)
    if missing:
        raise ValueError(f"judgments table lacks columns {sorted(missing)}")
    judgments = judgments.astype({"is_control": bool, "value": int})
    raters = rater_table(judgments, config)
    flagged = raters.loc[raters["flagged"], "rater"].tolist()
    scored = judgments[~judgments["is_control"]]
    if config.drop_flagged and flagged:
        scored = scored[~scored["rater"].isin(flagged)]
    if config.kind is not None:
        scored = scored[scored["kind"] == config.kind]

    rows = []
    for category in categories:
        own = scored[scored["category"] == category]
        per_case = (own.assign(g=own["value"] > 0, s=own["value"] == 0, b=own["value"] < 0)
                    .groupby("case_key")[["g", "s", "b"]].sum())
        counts = per_case.to_numpy(dtype=float)
        g, s, b = (int(x) for x in counts.sum(axis=0)) if len(counts) else (0, 0, 0)
        net_votes = own.groupby("case_key")["value"].sum()
        wins, losses = int((net_votes > 0).sum()), int((net_votes < 0).sum())
        ratio_ci = _bootstrap_ci(counts, gsb_ratio, config)
        net_ci = _bootstrap_ci(counts, net_preference, config)
        rows.append({
            "category": category, "G": g, "S": s, "B": b, "judgments": g + s + b, "cases": len(per_case),
            "gsb": float(gsb_ratio(g, s, b)), "gsb_low": ratio_ci[0], "gsb_high": ratio_ci[1],
            "net": float(net_preference(g, s, b)), "net_low": net_ci[0], "net_high": net_ci[1],
            "cases_won": wins, "cases_lost": losses,
            "sign_p": float(stats.binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0,
            "alpha": krippendorff_alpha(own, ["pair"]),
        })
    return GSBReport(categories=pd.DataFrame(rows), raters=raters,
                     agreement=krippendorff_alpha(scored, ["pair", "category"]),
                     n_cases=int(scored["case_key"].nunique()), flagged=flagged, config=config)
