"""Rater app: a rater opens ?token=..., rates their assigned pairs blind, and can come back later.

Configured by AVATAR_GSB_DB (set by `avatar dash rater`); the study is the one the token belongs to
(AVATAR_GSB_STUDY, when set, must be it). Case text is shown as plain text, never rendered.
"""

from __future__ import annotations

import os
import time

import streamlit as st

from dashboards.media import side_by_side_html
from evaluation.gsb import AccessDenied, Study, StudyError, shot_table

LABELS = {"left": "Left better", "same": "Same", "right": "Right better"}

st.set_page_config(page_title="Rate videos", layout="wide")


@st.cache_resource
def study_of(db: str, token: str) -> Study:
    return Study.for_token(db, token)


def show_videos(study: Study, token: str, pair) -> bool:
    """The pair's two videos side by side; False (and the problem recorded for the owner) if they cannot be shown."""
    try:
        left, right = study.media(token, pair.pair_id, "left"), study.media(token, pair.pair_id, "right")
        st.iframe(side_by_side_html(left.read_bytes(), right.read_bytes()), height=420)
        return True
    except (AccessDenied, StudyError, OSError) as exc:
        study.report_problem(token, pair.pair_id, f"{type(exc).__name__}: {exc}")
        st.warning("The videos of this pair cannot be shown right now. The study owner has been told; "
                   "please go on with the next pair.")
        return False


def main() -> None:
    db, name = os.environ.get("AVATAR_GSB_DB", "outputs/gsb.db"), os.environ.get("AVATAR_GSB_STUDY") or None
    token = st.query_params.get("token", "")
    if not token:
        st.error("This page needs your personal link (it ends in ?token=...). Ask the study owner for it.")
        return
    try:
        study = study_of(db, token)
        if name is not None and study.name != name:
            raise AccessDenied("this link's token is not valid")
        pairs = study.pairs_for(token)
    except (AccessDenied, StudyError) as exc:
        st.error(str(exc) if isinstance(exc, AccessDenied) else "The study cannot be opened; tell the study owner.")
        return
    if not pairs:
        st.info("No pairs are assigned to you yet.")
        return
    categories = study.categories
    rated = [len(p.judgments) == len(categories) for p in pairs]
    done = [r or p.unavailable for r, p in zip(rated, pairs)]  # a pair that could not be shown is passed over
    if "index" not in st.session_state:  # resume at the first pair not yet done
        st.session_state.index = done.index(False) if False in done else 0
    index = st.session_state.index
    pair = pairs[index]

    st.title("Which video is better?")
    st.progress(sum(rated) / len(pairs), text=f"{sum(rated)} of {len(pairs)} pairs rated - this is pair {index + 1}")
    if all(rated):
        st.success("All your pairs are rated. Thank you! You can still change any answer.")
    if pair.prompt:
        st.text(f"Prompt: {pair.prompt}")  # plain text: a case's text is data, not Markdown
    if pair.storyline:
        with st.expander("Storyline: the shots both videos were asked for"):
            st.dataframe(shot_table(pair.storyline), hide_index=True, width="stretch")
    if show_videos(study, token, pair):
        st.session_state.setdefault(f"shown-{pair.pair_id}", time.time())
        rate(study, token, pair, categories, index, len(pairs))
    navigation(index, len(pairs))


def rate(study: Study, token: str, pair, categories: list[str], index: int, total: int) -> None:
    with st.form(f"rate-{pair.pair_id}"):
        answers = {}
        for category in categories:
            previous = pair.judgments.get(category)
            answers[category] = st.radio(category.replace("_", " ").capitalize(), list(LABELS), horizontal=True,
                                         format_func=LABELS.get, key=f"{pair.pair_id}-{category}",
                                         index=list(LABELS).index(previous) if previous else None)
        submitted = st.form_submit_button("Submit and next", type="primary")
    if submitted:
        if any(v is None for v in answers.values()):
            st.warning("Answer every category before submitting.")
        else:
            seconds = time.time() - st.session_state[f"shown-{pair.pair_id}"]
            study.submit(token, pair.pair_id, answers, seconds=seconds)
            st.session_state.index = min(index + 1, total - 1)
            st.rerun()


def navigation(index: int, total: int) -> None:
    back, _, forward = st.columns([1, 4, 1])
    if back.button("Previous", disabled=index == 0):
        st.session_state.index = index - 1
        st.rerun()
    if forward.button("Next", disabled=index == total - 1):
        st.session_state.index = index + 1
        st.rerun()


main()
