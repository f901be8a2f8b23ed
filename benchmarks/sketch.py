"""Sketch synthesis throughput and stroke continuity against Canny.

    python -m benchmarks.sketch --n 32 --resolution 128 [--aligned-dir data/aligned] [--examples DIR]

Reads the align stage's output (images.npy (N,R,R,3) uint8, landmarks.npy (N,68,2) float32),
shrinks to a lower --resolution or re-aligns the same faces from their photos at a higher
one (upsampling would compare blurry faces), times `synthesize_sketches` (after one warm-up face)
and prints mean stroke length and fragments per face for ours and Canny, with their ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import pipeline.data.sketch.synthesis
from pipeline.core.io import save_png
from pipeline.data.sketch.synthesis import SketchStyle, synthesize_sketches
from pipeline.data.sketch_report import realign
from pipeline.data.sketch.strokes import canny_sketch, compare_with_canny


def load_aligned(aligned_dir: Path, n: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """First n aligned faces and landmarks, rescaled to `resolution`."""
    img_path, lm_path = aligned_dir / "images.npy", aligned_dir / "landmarks.npy"
    if not img_path.exists() or not lm_path.exists():
        raise SystemExit(
            f"error: {aligned_dir} has no images.npy/landmarks.npy; run the align stage first "
            "(`dvc repro align`) or pass --aligned-dir pointing at aligned faces"
        )
    images = np.load(img_path, mmap_mode="r")[:n]
    landmarks = np.load(lm_path)[:n].astype(np.float32)
    src = images.shape[1]
    if resolution > src:  # upsampling would invent a blurry face: align again from the photos
        faces, lms = realign(aligned_dir, n, resolution)
        return faces, lms.astype(np.float32)
    if resolution < src:
        images = np.stack([cv2.resize(np.asarray(im), (resolution, resolution), interpolation=cv2.INTER_AREA)
                           for im in images])
        landmarks = landmarks * np.float32(resolution / src)
    return np.ascontiguousarray(images), landmarks


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--aligned-dir", type=Path, default=Path("data/aligned"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None, help="drawing processes [default: $DFE_WORKERS or all cores]")
    ap.add_argument("--fdog-threads", type=int, default=None,
                    help="torch threads for the line responses while drawing [default: pipeline.data.sketch.synthesis.fdog_threads]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--randomize", type=float, default=0.0)
    ap.add_argument("--examples", type=Path, default=None, help="write face | ours | canny PNGs here")
    args = ap.parse_args(argv)

    images, landmarks = load_aligned(args.aligned_dir, args.n, args.resolution)
    if args.fdog_threads is not None:
        pipeline.data.sketch.synthesis.fdog_threads = lambda res: args.fdog_threads
    style = SketchStyle(randomize=args.randomize)
    synthesize_sketches(images[:1], landmarks[:1], style, args.seed, args.device)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    sketches = synthesize_sketches(images, landmarks, style, args.seed, args.device, args.batch_size, args.workers)
    elapsed = time.perf_counter() - t0
    cmp = compare_with_canny(images, sketches)

    print(f"faces: {len(images)} at {args.resolution}px on {args.device} "
          f"(batch {args.batch_size}, {torch.get_num_threads()} torch threads, "
          f"{pipeline.data.sketch.synthesis.fdog_threads(args.resolution)} for FDoG while drawing, workers {args.workers or 'auto'})")
    print(f"throughput: {len(images) / elapsed:.2f} faces/s ({elapsed:.2f} s)")
    print(f"{'':8s}{'mean stroke length (px)':>26s}{'fragments/face':>17s}{'ink fraction':>14s}")
    for name in ("ours", "canny"):
        s = cmp[name]
        print(f"{name:8s}{s['mean_stroke_length']:26.1f}{s['fragments_per_face']:17.1f}{s['ink_fraction']:14.3f}")
    print(f"ratios: stroke length ours/canny = {cmp['stroke_length_ratio']:.2f}x, "
          f"fragments canny/ours = {cmp['fragment_ratio']:.2f}x")

    if args.examples is not None:
        for i in range(min(len(images), 8)):
            gray3 = [np.repeat(x[..., None], 3, 2) for x in (sketches[i], canny_sketch(images[i]))]
            save_png(args.examples / f"face{i:02d}_{args.resolution}.png", np.concatenate([images[i], *gray3], 1))
        print(f"examples: {args.examples}/face*_{args.resolution}.png (face | ours | canny)")


if __name__ == "__main__":
    main(sys.argv[1:])
