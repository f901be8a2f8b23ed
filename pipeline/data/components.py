"""components: crop the paper's part boxes from aligned photos and sketches, packed per split.

Output per split: {part}_photo.npy (N,s,s,3) and {part}_sketch.npy (N,s,s) uint8 plus a
manifest, so training reads any face in O(1) from a memory map.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.io import npy_writer, release, save_csv
from pipeline.core.profiles import part_boxes

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ComponentsConfig:
    """params.yaml `components:` (the crop size follows the top-level `profile`)."""

    sheet_faces: int = 16  # faces on the contact sheet


def crop_parts(images: np.ndarray, resolution: int) -> dict[str, np.ndarray]:
    """(N,R,R[,C]) -> part -> (N,s,s[,C]) views (copies are made when saving)."""
    assert images.shape[1] == images.shape[2] == resolution, (images.shape, resolution)
    return {p: images[:, y:y + s, x:x + s] for p, (x, y, s) in part_boxes(resolution).items()}


def run_components(
    aligned_manifest: pd.DataFrame, images: np.ndarray, sketches: np.ndarray, split: pd.DataFrame,
    resolution: int, out_dir: Path, chunk: int = 512,
) -> dict[str, int]:
    assert images.shape[:3] == sketches.shape[:3], (images.shape, sketches.shape)
    df = aligned_manifest.merge(split[["id", "split"]], on="id", how="left")
    counts = {}
    boxes = part_boxes(resolution)
    for name in SPLITS:
        sel = df[df["split"] == name]
        rows = sel["row"].to_numpy(int)
        with ExitStack() as files:  # memory-mapped outputs, filled a chunk of faces at a time
            out = {(part, kind): files.enter_context(npy_writer(
                       out_dir / name / f"{part}_{kind}.npy", (len(rows), s, s, *src.shape[3:]), src.dtype))
                   for part, (_, _, s) in boxes.items() for kind, src in (("photo", images), ("sketch", sketches))}
            for a in range(0, len(rows), chunk):
                chunk_rows = rows[a : a + chunk]
                for kind, src in (("photo", images), ("sketch", sketches)):
                    for part, crop in crop_parts(src[chunk_rows], resolution).items():
                        out[part, kind][a : a + len(chunk_rows)] = crop
                release(images, sketches, *out.values())  # memory stays one chunk deep
        manifest = sel.drop(columns=["split"]).assign(source_row=rows, row=np.arange(len(rows)))
        save_csv(out_dir / name / "manifest.csv", manifest)
        counts[name] = len(rows)
    return counts


def contact_sheet(
    images: np.ndarray, sketches: np.ndarray, resolution: int, path: Path, n: int = 16, per_row: int = 4
) -> np.ndarray:
    """Aligned faces with their part boxes, each beside its sketch; saved as a PNG."""
    import cv2

    from pipeline.core.io import save_png

    colours = {"eye1": (230, 60, 60), "eye2": (60, 160, 230), "nose": (60, 200, 90),
               "mouth": (230, 170, 40), "bg": (150, 150, 150)}
    n = min(n, len(images))
    tiles = []
    for i in range(n):
        face = np.ascontiguousarray(images[i]).copy()
        for part, (x, y, s) in part_boxes(resolution).items():
            if part != "bg":
                cv2.rectangle(face, (x, y), (x + s - 1, y + s - 1), colours[part], max(1, resolution // 128))
        sk = np.repeat(np.asarray(sketches[i])[..., None], 3, axis=2)
        tiles.append(np.concatenate([face, sk], axis=1))
    if not tiles:
        sheet = np.full((resolution, 2 * resolution, 3), 255, np.uint8)
    else:
        pad = per_row - (len(tiles) % per_row or per_row)
        tiles += [np.full_like(tiles[0], 255)] * pad
        rows = [np.concatenate(tiles[j:j + per_row], axis=1) for j in range(0, len(tiles), per_row)]
        sheet = np.concatenate(rows, axis=0)
    save_png(path, sheet)
    return sheet
