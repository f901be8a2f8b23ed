"""Time one full editing forward pass (per part: image encoder + part generator; fuse_canvas;
global fusion) for a profile and for `small`, and print the ratio.

    python -m benchmarks.forward --profile paper            # 512 px, 1.23 B parameters
    python -m benchmarks.forward --profile paper --device cuda

Weights are random (cost does not depend on them) and one image encoder and one generator
serve all five parts: the FLOPs are those of five distinct per-part modules at a fifth of the
memory (the paper build would otherwise need ~4.5 GB of weights).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipeline.models.networks import GlobalFusion, PartGenerator, count_parameters, fuse_canvas, image_encoder
from pipeline.core.profiles import Profile, get_profile, part_boxes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_forward(profile: Profile, device: torch.device, iters: int, warmup: int, batch: int = 1) -> list[float]:
    """Seconds per editing forward pass at `profile.resolution`, one value per timed iteration."""
    torch.manual_seed(0)
    enc, gen, fusion = (
        m.to(device).eval() for m in (image_encoder(profile), PartGenerator(profile), GlobalFusion(profile))
    )
    boxes = part_boxes(profile.resolution)
    face = torch.rand(batch, 3, profile.resolution, profile.resolution, device=device) * 2 - 1

    def run() -> torch.Tensor:
        feats = {}
        for part, (x0, y0, s) in boxes.items():
            crop = face[:, :, y0 : y0 + s, x0 : x0 + s]
            _, feats[part] = gen(enc(crop), crop)
        return fusion(fuse_canvas(feats, boxes))

    for _ in range(warmup):
        run()
    times = []
    for _ in range(iters):
        _sync(device)
        t = time.perf_counter()
        out = run()
        _sync(device)
        times.append(time.perf_counter() - t)
    assert out.shape == face.shape
    n_params = 5 * (count_parameters(enc) + count_parameters(gen)) + count_parameters(fusion)
    print(
        f"{profile.name:>6}: {profile.resolution} px, {n_params / 1e6:8.2f} M params on the edit path, "
        f"{iters} timed (+{warmup} warm-up): " + ", ".join(f"{1e3 * s:.0f}" for s in times) + " ms"
    )
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=None, help="timed passes (default: 2 for paper on CPU, else 10)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed passes (default: 0 for paper on CPU, else 2)")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    device = torch.device(args.device)
    heavy = args.profile == "paper" and device.type == "cpu"
    iters = args.iters if args.iters is not None else (2 if heavy else 10)
    warmup = args.warmup if args.warmup is not None else (0 if heavy else 2)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")

    small = time_forward(get_profile("small"), device, 10, 2, args.batch)
    target = time_forward(get_profile(args.profile), device, iters, warmup, args.batch)
    # The minimum is the least noisy estimate with so few passes.
    ms_small, ms_target = 1e3 * min(small), 1e3 * min(target)
    print(f"small  {ms_small:.1f} ms (min; median {1e3 * statistics.median(small):.1f})")
    print(f"{args.profile:<6} {ms_target:.1f} ms (min)")
    print(f"ratio {args.profile}/small = {ms_target / ms_small:.1f}x")


if __name__ == "__main__":
    main()
