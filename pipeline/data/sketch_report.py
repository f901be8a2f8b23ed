"""The `sketch_report` stage: stroke continuity of the sketches against Canny.

Its own stage so that its settings (how many faces, at what size) never invalidate the
sketches, and with them the components and every training stage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import resolve_device
from pipeline.core.io import load_npy
from pipeline.data.sketches import SketchesConfig


@dataclass(frozen=True)
class SketchReportConfig:
    """params.yaml `sketch_report:`."""

    faces: int = 16  # faces measured
    resolution: int = 256  # also measured on the same faces re-aligned at this size (0: off)


def run_sketch_report(
    cfg: SketchReportConfig, sketch_cfg: SketchesConfig, aligned_dir: Path, sketch_dir: Path,
    picture: Path | None = None, workers: int | None = None,
) -> dict[str, Any]:
    """Stroke continuity of the first `faces` sketches against Canny on the same faces, at the
    aligned resolution and, when `resolution` is larger, on the same faces re-aligned from
    their photos at that size and sketched there with the sketch stage's style (randomisation
    off) on its device. `picture`: a PNG of face | Canny | ours rows at the larger size."""
    from pipeline.data.sketch.strokes import compare_with_canny

    images = load_npy(aligned_dir / "images.npy")
    sketches = load_npy(sketch_dir / "sketches.npy")
    if len(sketches) != len(images):
        raise ValueError(f"{sketch_dir / 'sketches.npy'} has {len(sketches)} sketches for {len(images)} aligned "
                         "faces: rebuild the sketches (`dvc repro sketches`)")
    n = min(len(images), int(cfg.faces))
    r_cmp = int(cfg.resolution)
    summary: dict[str, Any] = {"faces": n}
    if not n:
        if picture is not None:  # DVC expects the declared plot: say why it is empty
            from pipeline.core.io import save_png
            from pipeline.core.viz import text_image

            save_png(picture, text_image([f"no faces measured (sketch_report.faces = {cfg.faces})"]))
        return summary
    faces, ours = np.asarray(images[:n]), np.asarray(sketches[:n])
    summary["continuity"] = compare_with_canny(faces, ours)
    # Below ~256 px Canny's edges merge into tangles that a connected-length measure rewards;
    # the fair comparison re-aligns the same faces from their photos at 256.
    if r_cmp > images.shape[1]:
        from pipeline.data.sketch.synthesis import synthesize_sketches

        faces, lms = realign(aligned_dir, n, r_cmp, workers)
        style = replace(sketch_cfg.style, randomize=0.0)
        ours = synthesize_sketches(faces, lms, style, int(sketch_cfg.seed), resolve_device(sketch_cfg.device),
                                   batch_size=max(1, int(sketch_cfg.batch_size) // 4), workers=workers)
        summary[f"continuity_{r_cmp}px"] = compare_with_canny(faces, ours)
    if picture is not None:
        comparison_sheet(faces, ours, picture)
    return summary


def comparison_sheet(faces: np.ndarray, sketches: np.ndarray, path: Path, n: int = 4) -> np.ndarray:
    """Rows of face | Canny | ours for the first n faces, saved as a PNG."""
    from pipeline.core.io import save_png
    from pipeline.data.sketch.strokes import canny_sketch
    from pipeline.core.viz import make_grid

    tiles: list[np.ndarray] = []
    for face, ours in zip(faces[:n], sketches[:n]):
        tiles += [face, canny_sketch(face), ours]
    sheet = make_grid(tiles, nrow=3, col_labels=["aligned face", "OpenCV Canny", "dfe sketch"])
    save_png(path, sheet)
    return sheet


def realign(aligned_dir: Path, n: int, resolution: int, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first n aligned faces again at another resolution, from their source photos."""
    import pandas as pd

    from pipeline.data.align import warp_photo
    from pipeline.core.io import image_size
    from pipeline.core.parallel import thread_map

    manifest = pd.read_csv(aligned_dir / "manifest.csv").iloc[:n]
    transforms = load_npy(aligned_dir / "transforms.npy")
    landmarks = load_npy(aligned_dir / "landmarks.npy")
    k = resolution / load_npy(aligned_dir / "images.npy").shape[1]

    def warp(row) -> np.ndarray:
        return warp_photo(row.path, np.array(transforms[row.row]) * k, resolution, min(image_size(row.path)))

    faces = np.stack(thread_map(warp, list(manifest.itertuples()), "sketch report: re-aligning faces", workers))
    return faces, np.asarray(landmarks[manifest["row"].to_numpy()]) * k
