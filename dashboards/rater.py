"""Rater app: a rater opens ?token=..., rates their assigned pairs blind, and can come back later.

Configured by AVATAR_GSB_DB and AVATAR_GSB_STUDY (set by `avatar dash rater`).
"""

from __future__ import annotations

import os
import time

import streamlit as st

from dashboards.media import side_by_side_html
from evaluation.gsb import AccessDenied, Study, StudyError

LABELS = {"left": "Left better", "same": "Same", "right": "Right better"}

st.set_page_config(page_title="Rate videos", layout="wide")


@st.cache_resource
def open_study(db: str, name: str | None) -> Study:
    return Study.open(db, name)


def main() -> None:
    db, name = os.environ.get("AVATAR_GSB_DB", "outputs/gsb.db"), os.environ.get("AVATAR_GSB_STUDY") or None
    token = st.query_params.get("token", "")
    if not token:
        st.error("This page needs your personal link (it ends in ?token=...). Ask the study owner for it.")
        return
    try:
        study = open_study(db, name)
        pairs = study.pairs_for(token)
    except (AccessDenied, StudyError) as exc:
        st.error(str(exc))
        return
    if not pairs:
        st.info("No pairs are assigned to you yet.")
        return
    categories = study.categories
    done = [len(p.judgments) == len(categories) for p in pairs]
    if "index" not in st.session_state:  # resume at the first pair not fully rated
        st.session_state.index = done.index(False) if False in done else 0
    index = st.session_state.index
    pair = pairs[index]

    st.title("Which video is better?")
    st.progress(sum(done) / len(pairs), text=f"{sum(done)} of {len(pairs)} pairs rated - this is pair {index + 1}")
    if all(done):
        st.success("All your pairs are rated. Thank you! You can still change any answer.")
    if pair.prompt:
        st.caption(f"Prompt: {pair.prompt}")
    left, right = study.media(token, pair.pair_id, "left"), study.media(token, pair.pair_id, "right")
    st.iframe(side_by_side_html(left.read_bytes(), right.read_bytes()), height=420)
    st.session_state.setdefault(f"shown-{pair.pair_id}", time.time())

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
            st.session_state.index = min(index + 1, len(pairs) - 1)
            st.rerun()

    back, _, forward = st.columns([1, 4, 1])
    if back.button("Previous", disabled=index == 0):
        st.session_state.index = index - 1
        st.rerun()
    if forward.button("Next", disabled=index == len(pairs) - 1):
        st.session_state.index = index + 1
        st.rerun()


main()
