"""Dataset app: browse a curated dataset - frames with masks and keypoints, per-frame verdicts, failures.

Configured by AVATAR_DATASET (the datasets it may show, set by `avatar dash dataset`) and, when served beyond
loopback, AVATAR_OWNER_TOKEN (dashboards.access).
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from curation.dataset import CuratedDataset
from curation.errors import CurationError
from curation.overlay import draw
from dashboards.access import allowed_datasets, owner_allowed

st.set_page_config(page_title="Curated dataset", layout="wide")


@st.cache_resource
def open_dataset(folder: str) -> CuratedDataset:
    return CuratedDataset(folder)


@st.cache_data(max_entries=4, show_spinner="decoding the clip...")
def load(folder: str, clip_id: str):
    record = open_dataset(folder).load(clip_id)
    return record.clip.frames, record.masks, record.keypoints, record.valid, record.reasons


def main() -> None:
    if not owner_allowed(st.query_params.get("token")):
        st.error("This page needs the owner's link (it ends in ?token=...), printed by `avatar dash dataset`.")
        return
    folders = allowed_datasets()  # only the datasets the app was started with: no path typed in a browser
    folder = st.sidebar.selectbox("dataset", folders) if len(folders) > 1 else folders[0]
    try:
        data = open_dataset(folder)
    except CurationError as exc:
        st.error(str(exc))
        return
    clips = data.clips
    done = clips[clips["status"] == "done"]
    st.title(f"Dataset {folder}")
    cols = st.columns(4)
    cols[0].metric("clips", len(clips))
    cols[1].metric("done", len(done))
    cols[2].metric("failed", int((clips["status"] == "failed").sum()))
    cols[3].metric("pass validation", int(done["passed"].fillna(False).sum()))
    st.dataframe(clips[["clip_id", "source", "status", "num_frames", "num_persons", "quality", "passed", "error"]],
                 hide_index=True, width="stretch")
    failed = data.failed()
    if len(failed):
        st.subheader("Failed clips")
        st.dataframe(failed, hide_index=True, width="stretch")
    if done.empty:
        return
    st.subheader("Frames")
    labels = {r.clip_id: f"{os.path.basename(r.source)} ({r.clip_id})" for r in done.itertuples()}
    clip_id = st.selectbox("clip", list(labels), format_func=labels.get)
    frames, masks, keypoints, valid, reasons = load(folder, clip_id)
    t = st.slider("frame", 0, len(frames) - 1, 0) if len(frames) > 1 else 0
    left, right = st.columns([3, 2])
    left.image(draw(frames[t], masks[t], keypoints[t], valid[t]), caption=f"frame {t}: masks, keypoints, ids "
               "('!' = failed validation)", width="stretch")
    right.dataframe(pd.DataFrame({"person": range(masks.shape[1]), "valid": valid[t],
                                  "reasons": [", ".join(r) for r in reasons[t]]}), hide_index=True)
    right.caption(f"valid person-frames in this clip: {valid.mean():.0%}")
    right.bar_chart(pd.DataFrame({"valid persons": valid.sum(axis=1)}))


main()
