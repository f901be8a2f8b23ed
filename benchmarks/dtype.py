"""bf16 against fp32 inference: the time of one face edit and how far bf16's output is from fp32's.

    python -m benchmarks.dtype                     # paper profile at 512 px, on the CPU
    python -m benchmarks.dtype --device cuda --iters 5
    python -m benchmarks.dtype --profile small     # quick look

One edit as `dfe edit` runs it on an aligned face, model only (E_image geometry, appearance
codes of two donors, part generators, global fusion): the same random inputs go through the
editor in fp32 and through a copy cast to bf16 (`Editor.cast`, what `--dtype bf16` does), the
two taking turns so that a change in the machine's load hits both alike. The paper editor has random weights with one image encoder and one generator shared by
the five parts (benchmarks.edit.random_editor: the same FLOPs at a fifth of the memory).
PSNR compares the uint8 outputs (what a user gets) of bf16 against fp32 on the same input.
Times are wall seconds and this process's CPU seconds (on a shared machine the CPU time is the
steadier of the two); the fastest edit of each dtype counts.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from benchmarks.edit import random_editor
from pipeline.core.profiles import get_profile
from pipeline.editing.edit import edit_aligned


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def timed_edit(editor, faces) -> tuple[float, float, np.ndarray]:
    """Wall and CPU seconds of one edit, and its output."""
    geo, app, mouth = faces
    if editor.device.type == "cuda":
        torch.cuda.synchronize(editor.device)
    t, c = time.perf_counter(), time.process_time()
    out = edit_aligned(editor, app, geometry_photo=geo, part_appearance={"mouth": mouth})
    return time.perf_counter() - t, time.process_time() - c, out  # a CPU array: already synced


def native_bf16(device: torch.device) -> str:
    if device.type == "cuda":
        return "yes"
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return "yes" if (probe is not None and probe()) or (amx is not None and amx()) else "no (emulated)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=2, help="edits per dtype; the fastest counts")
    args = ap.parse_args()
    device, profile = torch.device(args.device), get_profile(args.profile)
    r = profile.resolution
    print(f"{profile.name} profile, {r} px, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"native bf16: {native_bf16(device)}, random weights")

    t0 = time.perf_counter()
    editor = random_editor(profile, device)
    print(f"modules built in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (r, r, 3), dtype=np.uint8) for _ in range(3)]

    editors = {"fp32": editor, "bf16": copy.deepcopy(editor).cast(torch.bfloat16)}
    rows: dict[str, tuple[list[float], list[float], np.ndarray]] = {k: ([], [], None) for k in editors}
    for _ in range(args.iters):
        for name, ed in editors.items():
            wall, cpu, out = timed_edit(ed, faces)
            rows[name] = (rows[name][0] + [wall], rows[name][1] + [cpu], out)
    wall0, cpu0, ref = min(rows["fp32"][0]), min(rows["fp32"][1]), rows["fp32"][2]
    print(f"{'dtype':6} {'wall s':>8} {'x fp32':>7} {'CPU s':>8} {'x fp32':>7} {'PSNR vs fp32':>13}")
    for name, (wall, cpu, out) in rows.items():
        psnr = "-" if name == "fp32" else f"{psnr_uint8(out, ref):.1f} dB"
        print(f"{name:6} {min(wall):8.2f} {min(wall) / wall0:7.2f} {min(cpu):8.2f} {min(cpu) / cpu0:7.2f} {psnr:>13}")
    out = rows["bf16"][2]
    print(f"bf16 output: {100 * float(np.mean(out != ref)):.1f}% of values differ from fp32, "
          f"max {int(np.abs(out.astype(int) - ref).max())} levels; {args.iters} edits per dtype, the fastest shown")


if __name__ == "__main__":
    main()
