"""The COCO-WholeBody 133-keypoint layout, and how MediaPipe Holistic's landmarks fill it.

COCO-WholeBody (the DWPose / RTMW output): 0-16 body (COCO-17), 17-22 feet, 23-90 face (the 68 points of
iBUG 300-W / dlib), 91-111 left hand, 112-132 right hand (21 each: wrist, then thumb, index, middle, ring, little
finger from base to tip). "Left" is the person's left.

Where each of the 133 comes from with MediaPipe Holistic (pose 33, face mesh 478, hands 21 + 21):
- body 17: the pose landmarks of the same name (nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
  ankles); score = the landmark's visibility.
- feet: heels from the pose heels; big toes from the pose foot index (the tip of the foot, beside the big toe: an
  approximation); the small toes have NO source (score 0).
- face 68: one face-mesh vertex each (FACE68_FROM_MESH). The table was derived, not copied: on 94 real faces of
  ../shared/data (benchmarks/curation_face68.py) the mesh vertex nearest to each of dlib's 68 points, median over
  faces; the residual is 0.037 inter-ocular distances at the median point (eyes 0.022, mouth 0.027, jaw 0.068).
  The mesh has no per-point confidence: every face point gets the pose nose's visibility when a face is found.
- hands: MediaPipe's 21 hand landmarks are in COCO-WholeBody's order already; Holistic's left hand is the
  person's left (it is cropped around the pose's left wrist). Score: the pose wrist's visibility.
"""

from __future__ import annotations

import numpy as np

NUM_WHOLEBODY = 133
BODY, FEET, FACE, LEFT_HAND, RIGHT_HAND = (slice(0, 17), slice(17, 23), slice(23, 91), slice(91, 112),
                                          slice(112, 133))
MOUTH = slice(23 + 48, 23 + 68)  # face points 48-67: the lips

# pose-33 index of each COCO-17 body keypoint
BODY_FROM_POSE = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
# pose-33 index of each foot keypoint (left big toe, left small toe, left heel, right ...); None: no source
FEET_FROM_POSE = (31, None, 29, 32, None, 30)
POSE_NOSE, POSE_LEFT_WRIST, POSE_RIGHT_WRIST = 0, 15, 16
FACE68_FROM_MESH = (127, 234, 177, 215, 138, 136, 149, 148, 152, 377, 378, 365, 397, 435, 401, 454, 356, 70, 63, 105,
                    66, 55, 336, 296, 334, 293, 300, 168, 197, 195, 4, 75, 97, 2, 326, 305, 33, 160, 158, 155, 153,
                    144, 382, 385, 387, 263, 373, 380, 61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13,
                    312, 308, 317, 14, 87)


def points(landmarks, width: float, height: float) -> np.ndarray:
    """A MediaPipe NormalizedLandmarkList -> (N, 3) x, y in pixels of a `width` x `height` image, visibility."""
    return np.array([(p.x * width, p.y * height, getattr(p, "visibility", 1.0)) for p in landmarks.landmark],
                    np.float32)


def holistic_to_wholebody(pose: np.ndarray | None, face: np.ndarray | None, left: np.ndarray | None,
                          right: np.ndarray | None) -> np.ndarray:
    """(133, 3) COCO-WholeBody keypoints from Holistic's pose (33, 3), face (468+, 3), hands (21, 3) (pixels,
    visibility; None where Holistic found nothing). Keypoints without a source keep score 0."""
    out = np.zeros((NUM_WHOLEBODY, 3), np.float32)
    if pose is None:
        return out  # Holistic finds face and hands from the pose: without it there is nothing to place
    vis = np.clip(pose[:, 2], 0, 1)
    out[BODY, :2], out[BODY, 2] = pose[list(BODY_FROM_POSE), :2], vis[list(BODY_FROM_POSE)]
    for k, j in enumerate(FEET_FROM_POSE):
        if j is not None:
            out[FEET.start + k] = (*pose[j, :2], vis[j])
    if face is not None:
        out[FACE, :2], out[FACE, 2] = face[list(FACE68_FROM_MESH), :2], vis[POSE_NOSE]
    for hand, part, wrist in ((left, LEFT_HAND, POSE_LEFT_WRIST), (right, RIGHT_HAND, POSE_RIGHT_WRIST)):
        if hand is not None:
            out[part, :2], out[part, 2] = hand[:, :2], vis[wrist]
    return out
