"""The sketch stage's glue: synthesise sketches for all aligned faces and measure continuity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .io import load_npy, save_npy
from .landmarks import resolve_device


def run_sketch(params: dict[str, Any], aligned_dir: Path, out_dir: Path, device: str = "auto") -> dict[str, Any]:
    from .sketch import SketchStyle, synthesize_sketches
    from .strokes import compare_with_canny

    images = np.asarray(load_npy(aligned_dir / "images.npy"))
    landmarks = np.asarray(load_npy(aligned_dir / "landmarks.npy"))
    style = SketchStyle(**params.get("style", {}))
    sketches = synthesize_sketches(
        images, landmarks, style, seed=int(params.get("seed", 0)), device=resolve_device(device),
        batch_size=int(params.get("batch_size", 16)),
    )
    assert sketches.shape == images.shape[:3] and sketches.dtype == np.uint8, sketches.shape
    save_npy(out_dir / "sketches.npy", sketches)
    n = min(len(images), int(params.get("continuity_faces", 32)))
    summary: dict[str, Any] = {"faces": int(len(images))}
    if n:
        summary["continuity"] = compare_with_canny(images[:n], sketches[:n])
    return summary
