"""Stroke-continuity measures for sketches, and the Canny baseline they are compared against.

A hand drawing is a few long connected strokes; an edge map is many short fragments. We
measure that directly: thin the ink to a one-pixel skeleton, split it into 8-connected
components (the strokes), and report the mean component length (skeleton pixels) and count.
"""

from __future__ import annotations

from typing import TypedDict

import cv2
import numpy as np
from skimage.morphology import skeletonize


class StrokeStats(TypedDict):
    mean_stroke_length: float
    n_fragments: int
    ink_fraction: float


def stroke_stats(
    binary_or_gray: np.ndarray, black_on_white: bool = True, ink_threshold: int = 128
) -> StrokeStats:
    """Skeleton-component statistics of one sketch (H,W) uint8.

    Ink is `value < ink_threshold` for black-on-white input, `value >= ink_threshold` otherwise.
    mean_stroke_length is in skeleton pixels (0.0 when there is no ink).
    """
    img = np.asarray(binary_or_gray)
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ValueError(f"stroke_stats wants a (H,W) uint8 image, got {img.shape} {img.dtype}")
    ink = img < ink_threshold if black_on_white else img >= ink_threshold
    skel = skeletonize(ink)
    n_labels, _, cc_stats, _ = cv2.connectedComponentsWithStats(
        skel.astype(np.uint8), connectivity=8
    )
    lengths = cc_stats[1:, cv2.CC_STAT_AREA]  # label 0 is the background
    return StrokeStats(
        mean_stroke_length=float(lengths.mean()) if len(lengths) else 0.0,
        n_fragments=int(n_labels - 1),
        ink_fraction=float(ink.mean()),
    )


def canny_sketch(
    image_rgb: np.ndarray, low: float = 50.0, high: float = 150.0, blur_sigma: float = 1.0
) -> np.ndarray:
    """OpenCV Canny edges of an RGB uint8 image as black-on-white (H,W) uint8.

    A light Gaussian pre-blur (the usual practice) keeps the baseline fair: without it Canny
    fragments even more.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"canny_sketch wants (H,W,3) uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}")
    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    if blur_sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), blur_sigma)
    return 255 - cv2.Canny(gray, low, high)


def compare_with_canny(
    images: np.ndarray, sketches: np.ndarray, low: float = 50.0, high: float = 150.0
) -> dict[str, dict[str, float] | float]:
    """Mean per-face stroke statistics of `sketches` and of Canny on `images`, with ratios.

    images: (N,H,W,3) uint8 RGB; sketches: (N,H,W) uint8 black on white.
    stroke_length_ratio = ours / canny (higher: longer strokes);
    fragment_ratio = canny / ours (higher: ours has fewer fragments).
    """
    if images.ndim != 4 or sketches.ndim != 3 or images.shape[:3] != sketches.shape:
        raise ValueError(f"shape mismatch: images {images.shape}, sketches {sketches.shape}")
    ours = [stroke_stats(s) for s in sketches]
    canny = [stroke_stats(canny_sketch(im, low, high)) for im in images]

    def summary(stats: list[StrokeStats]) -> dict[str, float]:
        return {
            "mean_stroke_length": float(np.mean([s["mean_stroke_length"] for s in stats])),
            "fragments_per_face": float(np.mean([s["n_fragments"] for s in stats])),
            "ink_fraction": float(np.mean([s["ink_fraction"] for s in stats])),
        }

    o, c = summary(ours), summary(canny)
    return {
        "ours": o,
        "canny": c,
        "stroke_length_ratio": o["mean_stroke_length"] / max(c["mean_stroke_length"], 1e-9),
        "fragment_ratio": c["fragments_per_face"] / max(o["fragments_per_face"], 1e-9),
    }
