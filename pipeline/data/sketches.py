"""The sketch stages' glue: synthesise sketches for all aligned faces (`sketch`), and measure
their stroke continuity against Canny (`sketch_report`).

The report is its own stage so that its settings (how many faces, at what size) never
invalidate the sketches, and with them the components and every training stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import resolve_device
from pipeline.core.io import load_npy, npy_writer
from pipeline.data.sketch.draw import SketchStyle


@dataclass(frozen=True)
class SketchesConfig:
    """params.yaml `sketches:`."""

    seed: int = 0
    device: str = "auto"  # cpu | cuda | auto
    batch_size: int = 16  # faces per batch on the device
    style: SketchStyle = field(default_factory=SketchStyle)


def run_sketch(cfg: SketchesConfig, aligned_dir: Path, out_dir: Path, workers: int | None = None) -> dict[str, Any]:
    """Sketches (N,R,R) uint8 of the aligned faces -> out_dir/sketches.npy; returns a summary."""
    from pipeline.core.parallel import process_pool
    from pipeline.data.sketch.draw import sketch_workers

    images = load_npy(aligned_dir / "images.npy")
    batch_size = int(cfg.batch_size)
    n_workers = sketch_workers(workers, len(images), images.shape[1], batch_size)
    # The pool starts before torch is imported here, so its workers get ready meanwhile.
    with process_pool(n_workers, preload=("pipeline.data.sketch.synthesis",)) as pool:  # = sketch.POOL_PRELOAD
        from pipeline.data.sketch.synthesis import synthesize_sketches

        landmarks = load_npy(aligned_dir / "landmarks.npy")
        seed, device = int(cfg.seed), resolve_device(cfg.device)
        with npy_writer(out_dir / "sketches.npy", images.shape[:3], np.uint8) as sketches:  # filled batch by batch
            synthesize_sketches(images, landmarks, cfg.style, seed, device, batch_size, workers=1, pool=pool,
                                out=sketches)
    return {"faces": int(len(images)), "resolution": int(images.shape[1])}


