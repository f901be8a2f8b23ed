"""Plain line drawings of the 68 landmarks: the simplest sketch a person draws.

Our synthesized sketches have one look; people draw others. A drawing of just the landmark
contours (jaw, brows, eyes, nose, lips as thin polylines) is the far end of that range: the
sketch autoencoder learns to map it to the same geometry latent as the full sketch of the same
face (training.train_sketch_ae), and evaluate measures whether a drawing of another person's
contours moves a face's geometry to that person's (`line_drawing` metrics).
"""

from __future__ import annotations

import cv2
import numpy as np

# (first, last, closed) index ranges of the iBUG 68-point layout, one polyline each.
STROKES: tuple[tuple[int, int, bool], ...] = (
    (0, 16, False),  # jaw
    (17, 21, False), (22, 26, False),  # brows
    (27, 30, False), (31, 35, False),  # nose bridge, nostrils
    (36, 41, True), (42, 47, True),  # eyes
    (48, 59, True), (60, 67, True),  # outer and inner lips
)
# Points a similarity fit between two faces uses: eye centres and mouth corners.
EYE1, EYE2, MOUTH_CORNERS = slice(36, 42), slice(42, 48), (48, 54)


def contour_drawing(landmarks: np.ndarray, resolution: int, thickness: int | None = None) -> np.ndarray:
    """(R,R) uint8, black polylines of the landmark contours on white; thickness defaults to
    2 px at 128 (R/64)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68,2) landmarks, got {lm.shape}")
    t = thickness or max(1, resolution // 64)
    out = np.full((resolution, resolution), 255, np.uint8)
    shift = 4  # sub-pixel precision for cv2.polylines
    for a, b, closed in STROKES:
        pts = np.round(lm[a : b + 1] * (1 << shift)).astype(np.int32)
        cv2.polylines(out, [pts], closed, 0, t, cv2.LINE_AA, shift)
    return out


def anchor_points(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, np.float64)
    return np.stack([lm[EYE1].mean(0), lm[EYE2].mean(0), lm[MOUTH_CORNERS[0]], lm[MOUTH_CORNERS[1]]])


def warp_into_frame(landmarks: np.ndarray, frame_landmarks: np.ndarray) -> np.ndarray:
    """`landmarks` (person B) moved into the frame of `frame_landmarks` (person A) by the
    similarity that best maps B's eye centres and mouth corners onto A's: B's face shape,
    placed where A's face is."""
    src, dst = anchor_points(landmarks), anchor_points(frame_landmarks)
    m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    if m is None:
        raise ValueError("no similarity fits these landmarks (degenerate points)")
    lm = np.asarray(landmarks, np.float64)
    return lm @ m[:, :2].T + m[:, 2]
