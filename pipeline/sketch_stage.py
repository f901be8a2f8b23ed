"""The sketch stage's glue: synthesise sketches for all aligned faces and measure continuity."""

from __future__ import annotations

from dataclasses import replace
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
        # Below ~256 px Canny's edges merge into tangles that a connected-length measure
        # rewards; the fair comparison re-aligns the same faces from their photos at 256.
        r_cmp = int(params.get("continuity_resolution", 256))
        if r_cmp > images.shape[1]:
            faces, lms = realign(aligned_dir, n, r_cmp)
            ours = synthesize_sketches(faces, lms, replace(style, randomize=0.0), seed=int(params.get("seed", 0)),
                                       device=resolve_device(device))
            summary[f"continuity_{r_cmp}px"] = compare_with_canny(faces, ours)
    return summary


def realign(aligned_dir: Path, n: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n aligned faces again at another resolution, from their source photos."""
    import pandas as pd

    from .align import warp_face
    from .io import load_image

    manifest = pd.read_csv(aligned_dir / "manifest.csv").iloc[:n]
    transforms = load_npy(aligned_dir / "transforms.npy")
    landmarks = load_npy(aligned_dir / "landmarks.npy")
    k = resolution / load_npy(aligned_dir / "images.npy").shape[1]
    faces = np.zeros((len(manifest), resolution, resolution, 3), np.uint8)
    for i, row in enumerate(manifest.itertuples()):
        photo, s = load_image(row.path)
        m = np.array(transforms[row.row]) * k
        m[:, :2] /= s
        faces[i] = warp_face(photo, m, resolution)
    return faces, np.asarray(landmarks[manifest["row"].to_numpy()]) * k
