"""What the composition (editing.compose) adds to an edit, against the model time, at the small
and paper profiles.

    python -m benchmarks.compose                   # small: models/ if trained, else random; paper random
    python -m benchmarks.compose --photo ~/me.jpg  # another photo size

One sketch edit as `dfe edit PHOTO -s EDITED -a OTHER` runs it, on a London photo (1024 px):
model = the renders the composition compares (the photo's own sketch and the edited one with
the photo's appearance, the edited one with the other appearance; one `EditRenders`, as `dfe
edit` shares their work); compose = the sketch flow,
the warp of the photo's own pixels, the residual and the Lab appearance change, at the photo's
resolution. Decoding, detection and the sketch drawing are left out (the same for both paths).
Random paper weights share one module per kind across the parts (same FLOPs, a fifth of the
memory), as benchmarks.edit does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.edit import random_editor  # one module per kind shared by the parts


def one_edit(editor, target, own_sketch, edited_sketch, other_face):
    """(model seconds, compose seconds, output) of one sketch + appearance edit."""
    from pipeline.editing.blend import inner_face_mask
    from pipeline.editing.compose import compose
    from pipeline.editing.edit import edit_aligned
    from pipeline.editing.renders import EditRenders

    t0 = time.perf_counter()
    renders = EditRenders(editor)  # as `dfe edit` runs them: the three renders share their work
    with torch.inference_mode():
        a1 = edit_aligned(editor, other_face, geometry_sketch=edited_sketch, renders=renders)
        r0 = edit_aligned(editor, target.face, geometry_sketch=own_sketch, renders=renders)
        r1 = edit_aligned(editor, target.face, geometry_sketch=edited_sketch, renders=renders)
    t1 = time.perf_counter()
    mask = inner_face_mask(target.landmarks, target.face.shape[0])
    out = compose(target.photo, target.transform, geometry=(r0, r1), sketches=(own_sketch, edited_sketch),
                  appearance=(r1, a1), inner_mask=mask)
    return t1 - t0, time.perf_counter() - t1, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models")
    ap.add_argument("--photo", default=None, help="default: London neutral/001_03.jpg")
    ap.add_argument("--london", type=Path, default=Path(os.environ.get("DFE_LONDON_DIR", "../shared/datasets/london-faces")))
    ap.add_argument("--iters", type=int, default=10, help="edits timed at the small profile (paper: 2)")
    ap.add_argument("--no-paper", action="store_true")
    args = ap.parse_args()

    from dataclasses import replace

    from pipeline.core.profiles import get_profile
    from pipeline.data.sketch.draw import SketchStyle
    from pipeline.editing.edit import FaceDetector, align_image, draw_face_sketch, read_image
    from pipeline.models.editor import load_editor
    device = torch.device("cpu")
    photo_path = Path(args.photo) if args.photo else args.london / "neutral" / "001_03.jpg"
    other_path = args.london / "neutral" / "004_03.jpg"
    photo = read_image(photo_path)
    det = FaceDetector()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; photo {photo.shape[1]}x{photo.shape[0]}")
    print("| profile | weights | model ms (3 renders) | compose ms | compose / model |")
    print("|---|---|---|---|---|")
    for name in ("small",) if args.no_paper else ("small", "paper"):
        profile = get_profile(name)
        r = profile.resolution
        if name == "small" and (Path(args.models) / "fusion" / "fusion.safetensors").exists():
            editor, weights = load_editor(args.models, profile, device), "trained"
        else:
            editor, weights = random_editor(profile, device), "random"
        target = align_image(photo, r, det, str(photo_path))
        other = align_image(read_image(other_path), r, det, str(other_path)).face
        own = draw_face_sketch(target, replace(SketchStyle(), randomize=0.0))
        edited = own.copy()
        lm = target.landmarks
        cv2.line(edited, tuple(np.round(lm[48]).astype(int)), tuple(np.round(lm[54] + [0, -0.04 * r]).astype(int)), 0,
                 max(1, r // 64))  # a stroke across the mouth
        iters = args.iters if name == "small" else 2
        runs = [one_edit(editor, target, own, edited, other) for _ in range(iters + 1)][1:]  # first: warm-up
        model, comp = statistics.median(m for m, _, _ in runs), statistics.median(c for _, c, _ in runs)
        print(f"| {name} ({r} px) | {weights} | {1e3 * model:.0f} | {1e3 * comp:.0f} | {comp / model:.3f} |", flush=True)


if __name__ == "__main__":
    main()
