"""Cost of DFI: classic (L-BFGS through VGG-19) against the yardstick of one bare VGG-19
forward+backward at the same size, and fast DFI in the learned spaces (one pass through the
part encoders, generators and fusion, no VGG, no optimisation).

    python -m benchmarks.dfi --sizes 128 256 --iters 5 --profile small

VGG weights are random (timing does not depend on their values), so this runs without the
ImageNet checkpoint; fast-DFI modules are randomly initialised `--profile` networks.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

from pipeline.dfi.interpolation import apply_learned_dfi, dfi_features, dfi_reconstruct, dfi_targets
from pipeline.models.vgg import DFI_LAYERS, LAYER_INDEX, VGG19Features


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeat


def bench_classic(vgg: VGG19Features, size: int, n_alphas: int, iters: int, repeat: int, device: torch.device) -> float:
    """Prints and returns seconds per L-BFGS iteration of classic DFI at `size`."""
    x = torch.rand(1, 3, size, size, device=device) * 2 - 1

    def bare() -> None:  # full VGG-19 features (to relu5_4), gradient w.r.t. the input only
        img = x.expand(n_alphas, -1, -1, -1).clone().requires_grad_(True)
        out = vgg(img, ("relu5_4",))["relu5_4"]
        torch.autograd.grad(out.square().sum(), img)

    t_bare = _time(bare, device, repeat)
    with torch.no_grad():
        phi_x = dfi_features(vgg, x)
    w = torch.nn.functional.normalize(torch.randn_like(phi_x[0]), dim=0)
    targets = dfi_targets(phi_x, w, torch.linspace(0.2, 1.0, n_alphas).tolist())
    dfi_reconstruct(vgg, x, targets, iters=1)  # warm-up
    _sync(device)
    start = time.perf_counter()
    result = dfi_reconstruct(vgg, x, targets, iters=iters)
    _sync(device)
    t_iter = (time.perf_counter() - start) / iters
    evals = result.evaluations / iters
    print(
        f"{size:>5} px  alphas {n_alphas}  L-BFGS iteration {1e3 * t_iter:9.1f} ms"
        f"  ({evals:.2f} evaluations/iteration)  bare VGG-19 fwd+bwd {1e3 * t_bare:8.1f} ms"
        f"  ratio {t_iter / t_bare:5.2f}x  ->  {iters} iterations ~ {t_iter * iters:.1f} s,"
        f" 500 (official) ~ {t_iter * 500:.0f} s"
    )
    return t_iter


def bench_fast(profile_name: str, batch: int, repeat: int, device: torch.device) -> float | None:
    """Seconds per image of a fast-DFI edit: encode parts, shift latents, decode, fuse."""
    try:
        from pipeline.models import networks
        from pipeline.core.profiles import get_profile, part_boxes
    except ImportError as err:  # networks are written in parallel; this half is optional
        print(f"fast DFI: skipped, pipeline.models.networks is not importable ({err})")
        return None
    profile = get_profile(profile_name)
    boxes = part_boxes(profile.resolution)
    torch.manual_seed(0)
    mods = {part: networks.build_part_modules(profile) for part in boxes}
    for m in mods.values():
        for module in m.values():
            module.to(device).eval()
    fusion = networks.GlobalFusion(profile).to(device).eval()
    faces = torch.rand(batch, 3, profile.resolution, profile.resolution, device=device) * 2 - 1
    vectors = {}
    for part, (_, _, s) in boxes.items():
        vectors[part] = {
            "geometry": torch.randn(profile.latent_channels, s // 16, s // 16, device=device),
            "appearance": torch.randn(profile.app_code, device=device),
        }

    @torch.no_grad()
    def edit() -> None:
        z, codes = {}, {}
        for part, (x0, y0, s) in boxes.items():
            crop = faces[:, :, y0 : y0 + s, x0 : x0 + s]
            z[part] = mods[part]["image_encoder"](crop)
            codes[part] = mods[part]["generator"].style(crop)
        z, codes = apply_learned_dfi(z, codes, vectors, 0.4)
        feats = {}
        for part in boxes:
            mods[part]["sketch_decoder"](z[part])  # the edited, editable sketch
            feats[part] = mods[part]["generator"].decode(z[part], codes[part])[1]
        fusion(networks.fuse_canvas(feats, boxes))

    t = _time(edit, device, repeat) / batch
    print(
        f"fast DFI ({profile_name} profile, {profile.resolution} px, random weights, batch {batch}):"
        f" {1e3 * t:.1f} ms per image (encoders + generators + sketch decoders + fusion)"
    )
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--alphas", type=int, default=1, help="alphas optimised together (the batch)")
    ap.add_argument("--iters", type=int, default=5, help="timed L-BFGS iterations per size")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats of the bare pass / fast edit")
    ap.add_argument("--profile", default="small", help="network profile for fast DFI")
    ap.add_argument("--batch", type=int, default=1, help="faces per fast-DFI pass")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    os.environ.setdefault("DFE_NO_PROGRESS", "1")
    device = torch.device(args.device)
    torch.manual_seed(0)
    vgg = VGG19Features().to(device).eval().requires_grad_(False)
    print(
        f"device {device} ({torch.get_num_threads()} CPU threads), VGG-19 random weights,"
        f" DFI layers {'/'.join(DFI_LAYERS)} (deepest: features.{max(LAYER_INDEX[n] for n in DFI_LAYERS)})"
    )
    per_iter = {size: bench_classic(vgg, size, args.alphas, args.iters, args.repeat, device) for size in args.sizes}
    t_fast = bench_fast(args.profile, args.batch, args.repeat, device)
    from pipeline.core.profiles import get_profile

    res = get_profile(args.profile).resolution
    if t_fast is not None and res in per_iter:
        print(
            f"fast DFI per image = {t_fast / per_iter[res]:.2f} classic L-BFGS iterations at {res} px"
            f" (classic needs 150-500 per edit)"
        )


if __name__ == "__main__":
    main()
