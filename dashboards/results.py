"""Results app: per-category GSB bars with confidence intervals, counts, agreement and raters.

Configured by AVATAR_GSB_DB (and optionally AVATAR_GSB_STUDY), set by `avatar dash results`.
"""

from __future__ import annotations

import os

import altair as alt
import streamlit as st

from dashboards.access import owner_allowed
from evaluation.gsb import Study, StudyError, shot_table
from evaluation.scoring import ScoreConfig

st.set_page_config(page_title="GSB results", layout="wide")


@st.cache_data(ttl=15, show_spinner="scoring (bootstrap over cases)...")
def score(db: str, name: str, kind: str | None, drop_flagged: bool, n_judgments: int):
    """Scores are cached per study state (n_judgments changes when raters submit)."""
    report = Study.open(db, name).score(ScoreConfig(kind=kind, drop_flagged=drop_flagged))
    return report.categories, report.raters, report.agreement, report.n_cases, report.flagged


def ci_chart(table, value: str, low: str, high: str, reference: float, title: str) -> alt.LayerChart:
    base = alt.Chart(table).encode(y=alt.Y("category:N", sort=None, title=None))
    bars = base.mark_bar(opacity=0.75).encode(x=alt.X(f"{value}:Q", title=title),
                                               tooltip=["category", "G", "S", "B", value, low, high])
    errors = base.mark_errorbar(ticks=True).encode(x=alt.X(f"{low}:Q", title=title), x2=f"{high}:Q")
    rule = alt.Chart({"values": [{"x": reference}]}).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    return (bars + errors + rule).properties(height=34 * len(table))


def main() -> None:
    if not owner_allowed(st.query_params.get("token")):
        st.error("This page needs the owner's link (it ends in ?token=...), printed by `avatar dash results`.")
        return
    db = os.environ.get("AVATAR_GSB_DB", "outputs/gsb.db")
    try:
        names = Study.list(db)
    except Exception as exc:  # noqa: BLE001 - shown to the user as is
        st.error(f"cannot open the study database {db}: {exc}")
        return
    if not names:
        st.info(f"No studies in {db} yet: make one with `avatar eval gsb create`.")
        return
    wanted = os.environ.get("AVATAR_GSB_STUDY")
    name = st.sidebar.selectbox("study", names, index=names.index(wanted) if wanted in names else 0)
    try:
        study = Study.open(db, name)
    except StudyError as exc:
        st.error(str(exc))
        return
    judgments = study.judgments()
    kinds = sorted(k for k in judgments["kind"].dropna().unique())
    kind = st.sidebar.selectbox("case kind", ["all"] + kinds)
    drop_flagged = st.sidebar.checkbox("leave out raters who fail control pairs", value=True)
    categories, raters, agreement, n_cases, flagged = score(db, name, None if kind == "all" else kind, drop_flagged,
                                                           len(judgments))
    systems = {s.name: s.under_test for s in study.systems().values()}
    test = next(n for n, t in systems.items() if t)
    base = next(n for n, t in systems.items() if not t)

    st.title(f"GSB: {test} vs {base}")
    counts = study.counts()
    cols = st.columns(5)
    cols[0].metric("cases scored", n_cases)
    cols[1].metric("pairs", counts["pairs"])
    cols[2].metric("raters", counts["raters"])
    cols[3].metric("judgments", counts["judgments"])
    cols[4].metric("agreement (Krippendorff alpha)", "n/a" if agreement != agreement else f"{agreement:.2f}")
    if flagged:
        st.warning(f"Raters failing control pairs{' (left out)' if drop_flagged else ''}: {', '.join(flagged)}")
    if categories["judgments"].sum() == 0:
        st.info("No judgments yet.")
    else:
        left, right = st.columns(2)
        left.altair_chart(ci_chart(categories, "gsb", "gsb_low", "gsb_high", 1.0, "(G+S)/(B+S), 95% CI"),
                          width="stretch")
        right.altair_chart(ci_chart(categories, "net", "net_low", "net_high", 0.0, "(G-B)/(G+S+B), 95% CI"),
                           width="stretch")
    st.subheader("Per category")
    st.dataframe(categories, hide_index=True, width="stretch")
    metrics = study.metrics_summary(None if kind == "all" else kind)
    if not metrics.empty:
        st.subheader("Automatic metrics (mean over cases)")
        st.caption("Computed by `avatar eval gsb metrics`; 'experimental' metrics have not passed their validation "
                   "(benchmarks/metrics_validation.py).")
        st.dataframe(metrics, hide_index=True, width="stretch")
    st.subheader("Raters")
    st.dataframe(raters, hide_index=True, width="stretch")
    storylines = study.storylines()
    if storylines:
        st.subheader("Storylines")
        case = st.selectbox("case", list(storylines))
        story = storylines[case]
        st.text(f"Prompt: {story.get('prompt', '')}")
        for line in story.get("conflicts", []):
            st.text(f"Conflict: {line}")
        st.dataframe(shot_table(story), hide_index=True, width="stretch")
    missing = study.missing_cases()
    if missing:
        st.subheader(f"{len(missing)} cases without a pair")
        st.dataframe([{"case": c, "missing in": ", ".join(s)} for c, s in missing.items()], hide_index=True)


main()
