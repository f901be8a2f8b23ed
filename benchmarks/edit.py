"""Latency of one face edit with aligned input, model only (E_image geometry + appearance codes +
render: part generators and global fusion), at the small profile and at the paper profile, and
their ratio.

    python -m benchmarks.edit                       # small: models/ if trained, else random
    python -m benchmarks.edit --device cuda --paper-iters 10

The paper editor uses random weights with one image encoder and one generator shared by the
five parts (same FLOPs as five distinct modules at a fifth of the ~4.5 GB of weights).
Decoding, landmark detection, alignment and paste-back are excluded (see `dfe edit`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import PARTS
from pipeline.editing.edit import edit_aligned
from pipeline.core.profiles import Profile, get_profile, part_boxes
from pipeline.models.editor import Editor, load_editor


def random_editor(profile: Profile, device: torch.device) -> Editor:
    from pipeline.models import networks as N

    torch.manual_seed(0)
    shared = {"image_encoder": N.image_encoder(profile).to(device).eval(),
              "sketch_encoder": N.sketch_encoder(profile).to(device).eval(),
              "generator": N.PartGenerator(profile).to(device).eval()}
    return Editor(profile, part_boxes(profile.resolution), {p: shared for p in PARTS},
                  N.GlobalFusion(profile).to(device).eval())


def time_edit(editor: Editor, iters: int, warmup: int, outputs: list | None = None) -> list[float]:
    """Seconds per edit (geometry from one face, appearance from another, mouth from a third);
    `outputs` receives the last edit's (R,R,3) output."""
    r = editor.profile.resolution
    rng = np.random.default_rng(0)
    geo, app, mouth = (rng.integers(0, 256, (r, r, 3), dtype=np.uint8) for _ in range(3))
    device = next(editor.fusion.parameters()).device
    times = []
    for k in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        out = edit_aligned(editor, app, geometry_photo=geo, part_appearance={"mouth": mouth})
        if k >= warmup:
            times.append(time.perf_counter() - t)  # edit_aligned returns a CPU array: already synced
    assert out.shape == (r, r, 3)
    if outputs is not None:
        outputs.append(out)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models", help="small-profile weights; random if absent")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paper-iters", type=int, default=2)
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    small = get_profile("small")
    if (Path(args.models) / "fusion" / "fusion.safetensors").exists():
        editor, weights = load_editor(args.models, small, device), f"trained ({args.models})"
    else:
        editor, weights = random_editor(small, device), "random"
    t_small = time_edit(editor, iters=20, warmup=3)
    print(f"small  {small.resolution} px, {weights} weights: min {1e3 * min(t_small):.1f} ms, "
          f"median {1e3 * statistics.median(t_small):.1f} ms (20 edits)")

    paper = get_profile("paper")
    t0 = time.perf_counter()
    editor = random_editor(paper, device)
    print(f"paper  modules built in {time.perf_counter() - t0:.1f} s")
    t_paper = time_edit(editor, iters=args.paper_iters, warmup=0 if device.type == "cpu" else 2)
    print(f"paper  {paper.resolution} px, random weights: " + ", ".join(f"{1e3 * s:.0f}" for s in t_paper) + " ms")
    print(f"ratio paper/small = {min(t_paper) / min(t_small):.0f}x (min over passes)")


if __name__ == "__main__":
    main()
