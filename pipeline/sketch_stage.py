"""The sketch stage's glue: synthesise sketches for all aligned faces and measure continuity."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .io import load_npy, save_npy
from .config import resolve_device


def run_sketch(
    params: dict[str, Any], aligned_dir: Path, out_dir: Path, device: str = "auto", workers: int | None = None
) -> dict[str, Any]:
    from .parallel import process_pool
    from .sketch_draw import sketch_workers

    images = np.asarray(load_npy(aligned_dir / "images.npy"))
    batch_size = int(params.get("batch_size", 16))
    n = min(len(images), int(params.get("continuity_faces", 16)))
    r_cmp = int(params.get("continuity_resolution", 256))
    # One pool for the sketches and the continuity check, when there is enough work for it.
    # It starts before torch is imported here, so its workers get ready meanwhile.
    n_workers = sketch_workers(workers, len(images) + (n * r_cmp**2) // images.shape[1] ** 2, images.shape[1], batch_size)
    with process_pool(n_workers, preload=("pipeline.sketch",)) as pool:  # = sketch.POOL_PRELOAD
        from .sketch import SketchStyle, synthesize_sketches
        from .strokes import compare_with_canny

        landmarks = np.asarray(load_npy(aligned_dir / "landmarks.npy"))
        style = SketchStyle(**params.get("style", {}))
        seed, device = int(params.get("seed", 0)), resolve_device(device)
        sketches = synthesize_sketches(images, landmarks, style, seed, device, batch_size, workers=1, pool=pool)
        assert sketches.shape == images.shape[:3] and sketches.dtype == np.uint8, sketches.shape
        save_npy(out_dir / "sketches.npy", sketches)
        summary: dict[str, Any] = {"faces": int(len(images))}
        if n:
            summary["continuity"] = compare_with_canny(images[:n], sketches[:n])
            # Below ~256 px Canny's edges merge into tangles that a connected-length measure
            # rewards; the fair comparison re-aligns the same faces from their photos at 256.
            if r_cmp > images.shape[1]:
                faces, lms = realign(aligned_dir, n, r_cmp, workers)
                ours = synthesize_sketches(faces, lms, replace(style, randomize=0.0), seed, device,
                                           batch_size=max(1, batch_size // 4), workers=1, pool=pool)
                summary[f"continuity_{r_cmp}px"] = compare_with_canny(faces, ours)
    return summary


def realign(aligned_dir: Path, n: int, resolution: int, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first n aligned faces again at another resolution, from their source photos."""
    import pandas as pd
    from PIL import Image

    from .align import warp_photo
    from .parallel import thread_map

    manifest = pd.read_csv(aligned_dir / "manifest.csv").iloc[:n]
    transforms = load_npy(aligned_dir / "transforms.npy")
    landmarks = load_npy(aligned_dir / "landmarks.npy")
    k = resolution / load_npy(aligned_dir / "images.npy").shape[1]

    def warp(row) -> np.ndarray:
        with Image.open(row.path) as im:  # header only: the size
            short = min(im.size)
        return warp_photo(row.path, np.array(transforms[row.row]) * k, resolution, short)

    faces = np.stack(thread_map(warp, list(manifest.itertuples()), "sketch: re-aligning faces", workers))
    return faces, np.asarray(landmarks[manifest["row"].to_numpy()]) * k
