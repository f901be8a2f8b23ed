"""What a paper-profile (512 px) training run costs: a few real steps of every stage at a
micro-batch this machine holds, measured, then projected to the README's full-scale recipe.

    python -m benchmarks.train --profile paper                 # = python -m benchmarks.train_cost
    python -m benchmarks.train_cost --steps 2 --batches 1,2 --gpu h100 --mfu 0.35
    python -m benchmarks.train_cost --batches 1 --steps 10 --gpu h200 --out cost.json   # on a GPU
    python -m benchmarks.train_cost --stages fusion --batches 1,8                          # one stage

Per stage and part: seconds per step, peak resident memory of the process, trainable
parameters, and training FLOPs per image (forward + backward of generator and discriminator
steps, counted by torch.utils.flop_counter on one step). Weights are random, which costs the
same as trained ones; so is the VGG-19 of the perceptual loss when its ImageNet weights are
absent (a random VGG stands in, so its FLOPs count).

The projection: GPU hours = sum over stages and parts of steps x global batch x FLOPs per
image / (utilisation x the GPU's dense bf16 peak), for `--steps-recipe` (the README's
full-scale `dvc exp run`: 20k / 20k / 100k steps per part, 50k fusion) at `--global-batch`.
Memory per GPU at a per-GPU batch B is extrapolated from the measured micro-batches, less the
idle interpreter's resident memory: peak(1) + (B - 1) x (peak(2) - peak(1)), as measured here
(bf16 autocast only where the CPU has native bf16); a GPU's bf16 autocast keeps activations in
half the bytes, so this is an upper bound.

On a GPU the steps are the measurement: each row also shows the TFLOP/s reached and its share of
`--gpu`'s peak, and a second table projects the recipe from the measured s/step at the recipe's
per-GPU batch (GPU hours = steps x s/step x GPUs, summed over parts), which needs no assumed
utilisation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.table import Table

from pipeline import PARTS
from pipeline.core.progress import console

# Dense bf16 tensor-core peak, FLOP/s (vendor datasheets, without sparsity).
GPUS = {"h100": ("NVIDIA H100 SXM", 989e12), "h200": ("NVIDIA H200", 989e12), "a100": ("NVIDIA A100 SXM", 312e12)}
# What each stage loads from the stages before it (fusion: of every part).
UPSTREAM = {"sketch_ae": (), "image_encoder": ("sketch_ae",), "local": ("sketch_ae", "image_encoder"),
            "fusion": ("sketch_ae", "image_encoder", "local")}
# The README's full-scale recipe: steps per part (stages 1-3) and for fusion.
RECIPE = {"sketch_ae": 20000, "image_encoder": 20000, "local": 100000, "fusion": 50000}


def peak_rss() -> float:
    """Peak resident memory of this process since the last reset, bytes (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM")


def _task(stage: str, part: str, trainer):
    from pipeline.training.train_fusion import FusionTask
    from pipeline.training.train_image_encoder import ImageEncoderTask
    from pipeline.training.train_local import LocalTask
    from pipeline.training.train_sketch_ae import SketchAETask

    if stage == "fusion":
        return FusionTask(trainer)
    return {"sketch_ae": SketchAETask, "image_encoder": ImageEncoderTask, "local": LocalTask}[stage](trainer, part)


def measure(stage: str, part: str, profile: str, batch: int, steps: int, root: Path, components: Path,
            aligned: Path, amp: bool, cudnn_benchmark: bool = True) -> dict:
    """One stage at one micro-batch: s/step (median after a counted warm-up step), peak memory
    (this process's RSS on CPU, allocated bytes on CUDA), FLOPs per image, trainable parameters.
    Writes the weights later stages load."""
    import statistics

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.models.vgg import VGG19Features
    from pipeline.training.loop import Trainer, TrainConfig

    def config(stage: str, part: str, steps: int, batch: int) -> TrainConfig:
        return TrainConfig(stage=stage, part=part, profile=profile, steps=steps, batch_size=batch, amp=amp,
                           progress=False, components=str(components), aligned=str(aligned),
                           models_dir=str(root / "models"), checkpoints_dir=str(root / "checkpoints"),
                           live_root=str(root / "dvclive"), device="auto")

    # A stage measured without the stages it loads (--stages): those exported untrained, which costs the same.
    missing = [(s, p) for s in UPSTREAM[stage] for p in (PARTS if stage == "fusion" else (part,))
               if not config(s, p, 1, 1).weights_path.exists()]
    for upstream, p in missing:
        seeding = Trainer(config(upstream, p, 1, 1))
        seeding.export(_task(upstream, p, seeding))
        del seeding
    if missing:
        Path("/proc/self/clear_refs").write_text("5")  # the peaks from here on are this stage's
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    cfg = config(stage, part, steps + 1, batch)
    base = peak_rss()  # the interpreter with torch imported: not the stage's
    trainer = Trainer(cfg)
    torch.backends.cudnn.benchmark = cudnn_benchmark  # the trainer turns it on on CUDA; off: cuDNN's heuristics
    task = _task(stage, part, trainer)
    perceptual = getattr(task, "perceptual", None)
    if perceptual is not None and not perceptual.available:  # same cost as ImageNet's weights
        perceptual.vgg = VGG19Features().to(trainer.device).eval().requires_grad_(False)
    with FlopCounterMode(display=False) as counter:
        task.train_step(task.next_batch())
    flops = counter.get_total_flops() / batch
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        task.train_step(task.next_batch())
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        times.append(time.perf_counter() - t)
    peak, kind = peak_rss(), "rss"
    if trainer.device.type == "cuda":  # the GPU's, not the host's
        peak, kind = float(torch.cuda.max_memory_allocated(trainer.device)), "cuda"
    trainable = sum(p.numel() for m in task.modules.values() for p in m.parameters() if p.requires_grad)
    trainer.export(task)
    return {"stage": stage, "part": part, "batch": batch, "s_per_step": statistics.median(times),
            "peak_bytes": peak, "peak_kind": kind, "base_bytes": base, "flops_per_image": flops, "trainable": trainable}


def _measure_in_child(stage: str, part: str, profile: str, batch: int, steps: int, root: Path, components: Path,
                      aligned: Path, amp: bool, cudnn_benchmark: bool = True) -> dict:
    """`measure` in a fresh process, so that its peak memory is this stage's alone."""
    import json
    import subprocess
    import sys

    spec = json.dumps({"stage": stage, "part": part, "profile": profile, "batch": batch, "steps": steps,
                       "root": str(root), "components": str(components), "aligned": str(aligned), "amp": amp,
                       "cudnn_benchmark": cudnn_benchmark})
    done = subprocess.run([sys.executable, "-m", "benchmarks.train_cost", "--child", spec],
                          capture_output=True, text=True)
    if done.returncode != 0:  # out of memory (killed: -9) or an error: reported, the others still run
        why = "killed (out of memory?)" if done.returncode < 0 else (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"stage": stage, "part": part, "batch": batch, "failed": f"exit {done.returncode}: {why}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def projection(rows: list[dict], gpu: str, mfu: float, global_batch: int, per_gpu: int,
               recipe: dict[str, int]) -> list[dict]:
    """Per measured stage: GPU hours for the recipe's steps and the largest part's memory per GPU."""
    peak = GPUS[gpu][1]
    out = []
    for stage, steps in recipe.items():
        mine = [r for r in rows if r["stage"] == stage]
        if not mine:
            continue
        parts = sorted({r["part"] for r in mine})
        one = {p: min((r for r in mine if r["part"] == p), key=lambda r: r["batch"]) for p in parts}
        hours = sum(steps * global_batch * one[p]["flops_per_image"] for p in parts) / (mfu * peak) / 3600
        mems = []
        for p in parts:
            by_b = {r["batch"]: r["peak_bytes"] - (r["base_bytes"] if r["peak_kind"] == "rss" else 0.0)
                    for r in mine if r["part"] == p}
            if 1 in by_b and 2 in by_b:
                mems.append(by_b[1] + (per_gpu - 1) * max(0.0, by_b[2] - by_b[1]))
            else:
                mems.append(max(by_b.values()) * per_gpu / max(by_b))
        out.append({"stage": stage, "parts": parts, "steps": steps, "gpu_hours": hours,
                    "max_flops_per_image": max(one[p]["flops_per_image"] for p in parts), "memory_bytes": max(mems)})
    return out


def measured_projection(rows: list[dict], per_gpu: int, gpus: int, recipe: dict[str, int]) -> list[dict]:
    """Per stage with every part measured at `per_gpu` images: the recipe's wall hours (its parts
    one after another, as the pipeline runs them) and GPU hours on `gpus` GPUs, from the measured
    s/step (data-parallel overhead not included)."""
    out = []
    for stage, steps in recipe.items():
        mine = [r for r in rows if r["stage"] == stage and r["batch"] == per_gpu]
        if not mine:
            continue
        wall = steps * sum(r["s_per_step"] for r in mine) / 3600
        out.append({"stage": stage, "parts": sorted(r["part"] for r in mine), "steps": steps, "wall_hours": wall,
                    "gpu_hours": wall * gpus})
    return out


def project(rows: list[dict], gpu: str, mfu: float, global_batch: int, per_gpu: int, recipe: dict[str, int]) -> Table:
    name, peak = GPUS[gpu]
    table = Table(title=f"projection: README full-scale recipe, global batch {global_batch}, {name} "
                        f"at {mfu:.0%} of {peak / 1e12:.0f} TFLOP/s bf16, {per_gpu} image(s) per GPU")
    for col in ("stage", "parts", "steps / part", "GFLOP / image (largest part)", "GPU hours",
                "memory / GPU (GB, fp32 bound)"):
        table.add_column(col, justify="right")
    stages = projection(rows, gpu, mfu, global_batch, per_gpu, recipe)
    for st in stages:
        table.add_row(st["stage"], ",".join(st["parts"]), f"{st['steps']}", f"{st['max_flops_per_image'] / 1e9:.1f}",
                      f"{st['gpu_hours']:.1f}", f"{st['memory_bytes'] / 1e9:.1f}")
    table.add_row("all", "", "", "", f"{sum(st['gpu_hours'] for st in stages):.1f}", "")
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per stage and batch (after one counted step)")
    ap.add_argument("--batches", default="1,2", help="micro-batches measured (1 and 2 give memory per image)")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--stages", default="sketch_ae,image_encoder,local,fusion",
                    help="stages measured; the stages they load are exported untrained first when not measured")
    ap.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    ap.add_argument("--mfu", type=float, default=0.35, help="assumed share of the GPU's bf16 peak reached")
    ap.add_argument("--global-batch", type=int, default=8, help="the recipe's global batch (params.yaml default 8)")
    ap.add_argument("--gpus", type=int, default=8, help="GPUs the global batch is split over")
    ap.add_argument("--amp", choices=("on", "off"), default="on")
    ap.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                    help="cuDNN times its kernels per shape, as the training stages have it on CUDA (GPU only)")
    ap.add_argument("--out", help="also write the measured rows here (JSON)")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # one measurement, JSON in and out (see _measure_in_child)
    args = ap.parse_args(argv)
    if args.child:
        import json

        spec = json.loads(args.child)
        for k in ("root", "components", "aligned"):
            spec[k] = Path(spec[k])
        print(json.dumps(measure(**spec)))
        return

    import torch

    from pipeline.core.profiles import get_profile
    from pipeline.data.loader import synthetic_components

    profile = get_profile(args.profile)
    parts = tuple(p for p in args.parts.split(",") if p)
    batches = sorted({int(b) for b in args.batches.split(",")})
    rows: list[dict] = []
    table = Table(title=f"training cost per step, profile {profile.name} ({profile.resolution} px), "
                        f"{torch.get_num_threads()} threads, {'bf16 autocast where it pays' if args.amp == 'on' else 'fp32'}"
                        f"{'' if args.cudnn_benchmark else ', cudnn.benchmark off'}")
    for col in ("stage", "part", "batch", "s / step", "peak GB", "of it the idle interpreter", "trainable M",
                "GFLOP / image", f"TFLOP/s (share of {args.gpu}'s peak)"):
        table.add_column(col, justify="right")
    gpu_peak = GPUS[args.gpu][1]
    stages = [s for s in args.stages.split(",") if s]
    runs = [(s, p) for s in ("sketch_ae", "image_encoder", "local") if s in stages for p in parts]
    if "fusion" in stages and set(parts) == set(PARTS):
        runs.append(("fusion", "fusion"))
    with tempfile.TemporaryDirectory(prefix="dfe-cost-") as tmp:
        root = Path(tmp)
        comps = synthetic_components(root / "components", profile.resolution, max(4, 2 * max(batches)), 2,
                                     aligned_dir=root / "aligned")
        for batch in batches:
            for stage, part in runs:
                r = _measure_in_child(stage, part, profile.name, batch, args.steps, root / f"b{batch}", comps,
                                      root / "aligned", args.amp == "on", args.cudnn_benchmark)
                if "failed" in r:
                    console.print(f"{stage}/{part} batch {batch}: {r['failed']}", highlight=False)
                    table.add_row(stage, part, str(batch), "failed", "", "", "", "", "")
                    continue
                rows.append(r)
                reached = r["flops_per_image"] * batch / r["s_per_step"]
                table.add_row(stage, part, str(batch), f"{r['s_per_step']:.3f}", f"{r['peak_bytes'] / 1e9:.2f}",
                              f"{r['base_bytes'] / 1e9:.2f}" if r["peak_kind"] == "rss" else "-",
                              f"{r['trainable'] / 1e6:.1f}", f"{r['flops_per_image'] / 1e9:.1f}",
                              f"{reached / 1e12:.1f} ({reached / gpu_peak:.1%})" if r["peak_kind"] == "cuda" else "-")
                console.print(f"{stage}/{part} batch {batch}: {r['s_per_step']:.2f} s/step, "
                              f"peak {r['peak_bytes'] / 1e9:.2f} GB", highlight=False)
    console.print(table)
    if args.out:
        import json

        Path(args.out).write_text(json.dumps({"torch": torch.__version__, "device": _device_name(), "amp": args.amp,
                                              "profile": profile.name, "rows": rows}, indent=1))
    per_gpu = max(1, args.global_batch // args.gpus)
    console.print(project(rows, args.gpu, args.mfu, args.global_batch, per_gpu, RECIPE))
    measured = measured_projection([r for r in rows if r["peak_kind"] == "cuda"], per_gpu, args.gpus, RECIPE)
    if measured:
        table = Table(title=f"measured on {_device_name()}: the recipe at {per_gpu} image(s) per GPU on {args.gpus} GPUs "
                            "(data-parallel overhead not included)")
        for col in ("stage", "parts", "steps / part", "wall hours", "GPU hours"):
            table.add_column(col, justify="right")
        for st in measured:
            table.add_row(st["stage"], ",".join(st["parts"]), f"{st['steps']}", f"{st['wall_hours']:.2f}",
                          f"{st['gpu_hours']:.1f}")
        table.add_row("all", "", "", f"{sum(st['wall_hours'] for st in measured):.2f}",
                      f"{sum(st['gpu_hours'] for st in measured):.1f}")
        console.print(table)
    else:
        console.print("GPU hours scale with 1/utilisation: halve --mfu, double the hours. FLOPs are counted, "
                      "not estimated; time on a GPU is not measured here.")


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"


if __name__ == "__main__":
    main()
