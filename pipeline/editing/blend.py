"""Paste-back a person accepts: blend only what the model renders well, in the photo's light.

The networks render the inner face well and hair, ears and background poorly (they are a
blur of the training set), so the blend mask is the inner face from the landmarks (jaw line
up to just above the brows), feathered *inside* that outline: no generated hair or dark
border reaches the photo, and there is no ring where the crop meets it. Before blending, the
output's Lab statistics inside the mask are moved to the photo's when the appearance came
from the photo itself (a reconstruction or a sketch edit: colours must not drift). When it
came from another photo nothing is matched: matching even the lightness undid most of a
skin-tone swap (London test faces 006/009/010), and the inner-face mask alone leaves no ring.
"""

from __future__ import annotations

import cv2
import numpy as np

JAW = list(range(0, 17))
BROWS = list(range(17, 27))


def inner_face_mask(landmarks: np.ndarray, resolution: int, feather: float = 0.06, lift: float = 0.08) -> np.ndarray:
    """(R,R) float32 in [0,1]: 1 on the inner face, 0 outside, a soft edge just inside the outline.

    landmarks: (68,2) in the aligned frame. The outline is the hull of the jaw and of the brows
    raised by `lift` x R (the brows' upper edge and a little forehead); the edge ramps over
    `feather` x R, eroded first so that the mask reaches 0 on the outline, not beyond it."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68,2) landmarks, got {lm.shape}")
    r = resolution
    brows = lm[BROWS] - np.array([0.0, lift * r])
    hull = cv2.convexHull(np.concatenate([lm[JAW], brows]).astype(np.float32)).astype(np.int32)
    mask = np.zeros((r, r), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA)
    k = max(3, int(feather * r) | 1)
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return np.clip(cv2.GaussianBlur(mask, (2 * k + 1, 2 * k + 1), 0), 0.0, 1.0)


def match_colour(output: np.ndarray, reference: np.ndarray, mask: np.ndarray, lightness_only: bool = False) -> np.ndarray:
    """`output` (R,R,3) uint8 with its Lab mean and std inside `mask` (> 0.5) moved to those of
    `reference` (the photo's aligned face) in the same region; the rest of the image keeps
    the same per-channel affine map, so the mask's soft edge blends consistent colours."""
    inside = mask > 0.5
    if inside.sum() < 16:
        return output
    out_lab = cv2.cvtColor(output, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref_lab = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    for c in (0,) if lightness_only else (0, 1, 2):
        o, f = out_lab[..., c][inside], ref_lab[..., c][inside]
        scale = float(np.clip(f.std() / max(o.std(), 1e-3), 0.5, 2.0))  # a flat output must not explode
        out_lab[..., c] = (out_lab[..., c] - o.mean()) * scale + f.mean()
    return cv2.cvtColor(np.clip(out_lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def face_region_mask(landmarks: np.ndarray, resolution: int, grow: float = 0.06, lift: float = 0.08) -> np.ndarray:
    """(R,R) float32 in [0,1]: the face with its outline (the hull of the jaw and of the brows
    raised by `lift` x R) grown by `grow` x R, soft-edged: where a geometry edit may move the
    photo. Hair, ears and background stay out: a flow there smears them."""
    lm = np.asarray(landmarks, np.float64)
    r = resolution
    brows = lm[BROWS] - np.array([0.0, lift * r])
    hull = cv2.convexHull(np.concatenate([lm[JAW], brows]).astype(np.float32)).astype(np.int32)
    mask = np.zeros((r, r), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA)
    k = 2 * max(1, round(grow * r)) + 1
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return np.clip(cv2.GaussianBlur(mask, (k, k), 0), 0.0, 1.0)

