"""Where the 68 face points of COCO-WholeBody come from when MediaPipe Holistic runs (curation/wholebody.py).

On frames of every real talking clip of ../shared/data (`--frames` per clip, faces that dlib's HOG detector finds
alone), dlib's 68-point predictor (iBUG 300-W layout, the layout COCO-WholeBody's face uses) and MediaPipe's face
mesh (on a square crop twice the face box) both run. For each of the 68 points, the mesh vertex nearest to it, in
inter-ocular distances, median over faces, is its source; the residual says how far that vertex sits from dlib's
point. Prints the table (to compare with curation.wholebody.FACE68_FROM_MESH) and the residuals per region.

    .venv/bin/python benchmarks/curation_face68.py [--frames 6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, emit, setup_env  # noqa: E402

REGIONS = {"jaw": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36), "eyes": slice(36, 48),
           "mouth": slice(48, 68)}


def square_crop(frame: np.ndarray, box: tuple[float, float, float, float], size: int = 256):
    """A square crop twice the box's size, resized to `size`; and (x0, y0, side) to map points back."""
    import cv2

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1])
    x0, y0, side = int(cx - half), int(cy - half), int(2 * half)
    pad = max(0, -x0, -y0, x0 + side - frame.shape[1], y0 + side - frame.shape[0])
    padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT) if pad else frame
    return cv2.resize(padded[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side], (size, size)), (x0, y0, side)


def faces(frames_per_clip: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, 68, 2) dlib points and (N, 468, 2) mesh vertices of the same N faces, and the clips they came from."""
    import cv2
    import dlib
    from face_recognition_models import pose_predictor_model_location
    from mediapipe.python.solutions import face_mesh

    predictor, detector = dlib.shape_predictor(pose_predictor_model_location()), dlib.get_frontal_face_detector()
    videos = sorted((SHARED / "data" / "talking").glob("*.mp4"))
    videos.append(SHARED / "data" / "talking_head_infinitetalk" / "ref_video.mp4")
    dlib_points, mesh_points, clips = [], [], []
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        for video in videos:
            cap = cv2.VideoCapture(str(video))
            for t in np.linspace(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) - 1, frames_per_clip).astype(int):
                cap.set(cv2.CAP_PROP_POS_FRAMES, int(t))
                ok, bgr = cap.read()
                found = detector(bgr[..., ::-1].copy(), 1) if ok else []
                if len(found) != 1:  # one face only: no doubt which mesh belongs to which dlib face
                    continue
                rgb, f = bgr[..., ::-1].copy(), found[0]
                crop, (x0, y0, side) = square_crop(rgb, (f.left(), f.top(), f.right(), f.bottom()))
                result = mesh.process(crop).multi_face_landmarks
                if not result:
                    continue
                dlib_points.append([(p.x, p.y) for p in predictor(rgb, f).parts()])
                mesh_points.append([(p.x * side + x0, p.y * side + y0) for p in result[0].landmark[:468]])
                clips.append(video.stem)
    return np.array(dlib_points, np.float32), np.array(mesh_points, np.float32), clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=6, help="frames per clip")
    args = parser.parse_args()
    setup_env()
    from curation.wholebody import FACE68_FROM_MESH

    d, m, clips = faces(args.frames)
    iod = np.linalg.norm(d[:, 36:42].mean(1) - d[:, 42:48].mean(1), axis=1)
    dist = np.linalg.norm(d[:, :, None] - m[:, None], axis=-1) / iod[:, None, None]  # (N, 68, 468)
    median = np.median(dist, 0)
    table = median.argmin(1)
    residual = median[np.arange(68), table]
    used = median[np.arange(68), list(FACE68_FROM_MESH)]
    emit("curation_face68", {
        "faces": int(len(d)), "clips": sorted(set(clips)), "table": table.tolist(),
        "same_as_curation_wholebody": table.tolist() == list(FACE68_FROM_MESH),
        "residual_iod": {"median": round(float(np.median(residual)), 4),
                         "p90": round(float(np.percentile(residual, 90)), 4), "max": round(float(residual.max()), 4),
                         **{k: round(float(np.median(residual[s])), 4) for k, s in REGIONS.items()}},
        "residual_iod_of_the_table_in_use": round(float(np.median(used)), 4)})


if __name__ == "__main__":
    main()
