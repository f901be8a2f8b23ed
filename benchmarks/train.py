"""Training throughput per stage and the share of step time spent outside the model.

    python -m benchmarks.train --profile small --steps 20
    python -m benchmarks.train --paths fp32,bf16 --steps 10             # what bf16 autocast buys, per stage
    python -m benchmarks.train --paths fp32,channels_last --isa avx2    # fp32 paths as on an AVX2-only CPU
    python -m benchmarks.train --profile paper        # what a full-scale run costs (benchmarks.train_cost)

`--paths` runs the same steps on the same data along each path and prints each path's ms/step
per stage as a ratio to fp32 eager, and the training steps of params.yaml's stages projected
from it (steps x ms/step; no validation, sample grids or data stages): fp32 is eager fp32
(autocast off); channels_last the same with every trained module in channels_last memory
format (a path tried, not used: it did not pay); bf16 is the trainer's bf16 autocast, only on CPUs
with native bf16. `--isa avx2` reruns the benchmark with oneDNN and ATen held to AVX2
(ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2): the kernels an AVX2-only CPU runs, on
this CPU's cores, clock and memory (so close, not equal, to such a CPU); bf16 is dropped there.

Runs every stage (sketch_ae, image_encoder, local per part; then fusion) for `--steps` steps in
a temporary directory, on `--components` if given, else on a synthetic components set of
`--faces` faces at the profile's resolution. Prints images/s per stage and part, and the share
of step time outside forward/backward/optimiser (data reading + augmentation, and logging +
sample grids), which should stay under 10%.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

from pipeline import PARTS
from pipeline.core.profiles import get_profile
from pipeline.core.progress import console


PATHS = ("fp32", "channels_last", "bf16")


@contextlib.contextmanager
def channels_last_training():
    """Every module the trainer's optimisers get, in channels_last memory format (a benchmark
    path only: the training stages do not use it)."""
    import torch

    from pipeline.training.loop import Trainer

    adam = Trainer.adam

    def adam_channels_last(self, *modules, lr=None):
        for m in modules:
            m.to(memory_format=torch.channels_last)
        return adam(self, *modules, lr=lr)

    Trainer.adam = adam_channels_last
    try:
        yield
    finally:
        Trainer.adam = adam


def stage_steps() -> dict[str, int]:
    """Steps per training stage in params.yaml (the defaults where a key is absent)."""
    from pipeline.core.config import load_params, section

    params = load_params()
    return {stage: int(section(params, f"train_{stage}")["steps"])
            for stage in ("sketch_ae", "image_encoder", "local", "fusion")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="small")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--faces", type=int, default=160)
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts for stages 1-3")
    ap.add_argument("--components", type=Path, default=None, help="a real data/components dir")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--paths", default="",
                    help="comma-separated: fp32, channels_last, bf16; default: the trainer's own choice only")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="avx2: hold oneDNN and ATen to AVX2 kernels (rerun in a child process)")
    args, rest = ap.parse_known_args(argv)
    if args.isa == "avx2" and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":
        # both are read when torch loads its kernels: only a fresh process can change them
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
        argv = sys.argv[1:] if argv is None else argv
        sys.exit(subprocess.call([sys.executable, "-m", "benchmarks.train", *argv], env=env))
    if args.profile == "paper":  # a few steps per stage at 512 px: the cost table and the GPU projection
        from benchmarks.train_cost import main as cost

        return cost(["--profile", "paper", *rest])
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")

    import torch

    from pipeline.training.train_fusion import train_fusion
    from pipeline.training.train_image_encoder import train_image_encoder
    from pipeline.training.train_local import train_local
    from pipeline.training.train_sketch_ae import train_sketch_ae
    from pipeline.data.loader import synthetic_components
    from pipeline.training.loop import TrainConfig, bf16_autocast_pays

    if args.threads:
        torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    parts = tuple(p for p in args.parts.split(",") if p)
    table = Table(title=f"training throughput, profile {profile.name}, batch {args.batch_size}, {args.steps} steps")
    for col in ("stage", "part", "images/s", "ms/step", "data %", "log %", "outside model %"):
        table.add_column(col, justify="right")
    totals = {"data": 0.0, "model": 0.0, "log": 0.0}
    # default: the trainer's own choice (bf16 autocast where it pays); AVX2 kernels run fp32, as such a CPU would
    paths = [q for q in args.paths.split(",") if q] or ["fp32" if args.isa == "avx2" else "default"]
    unknown = set(paths) - set(PATHS) - {"default"}
    if unknown:
        ap.error(f"unknown paths {sorted(unknown)}; choose from {', '.join(PATHS)}")
    native = bf16_autocast_pays(torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"))
    if args.isa == "avx2" or not native:
        if "bf16" in paths:
            console.print("bf16 dropped: no native bf16 " + ("(--isa avx2)" if args.isa == "avx2" else "on this CPU"))
        paths = [q for q in paths if q != "bf16"] or ["fp32"]
    console.print(f"kernels: {torch.backends.cpu.get_cpu_capability()}"
                  + (" (held to AVX2)" if args.isa == "avx2" else ""))
    ms: dict[tuple[str, str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="dfe-bench-") as tmp:
        root = Path(tmp)
        comps = args.components or synthetic_components(root / "components", profile.resolution, args.faces, 4)

        def cfg(stage: str, part: str, path: str) -> TrainConfig:
            return TrainConfig(
                stage=stage, part=part, profile=profile.name, steps=args.steps, batch_size=args.batch_size,
                log_every=10, ckpt_every=args.steps, sample_every=args.steps, device=args.device,
                amp=path in ("bf16", "default"), progress=False, timing_sync=True, components=str(comps),
                models_dir=str(root / f"models-{path}"), checkpoints_dir=str(root / f"checkpoints-{path}"),
                live_root=str(root / f"dvclive-{path}"),
            )

        runs = [(s, p) for s in ("sketch_ae", "image_encoder", "local") for p in parts]
        if set(parts) == set(PARTS):
            runs.append(("fusion", "fusion"))
        fns = {"sketch_ae": train_sketch_ae, "image_encoder": train_image_encoder, "local": train_local}
        wall = time.perf_counter()
        for path in paths:
            for stage, part in runs:
                c = cfg(stage, part, path)
                with channels_last_training() if path == "channels_last" else contextlib.nullcontext():
                    r = train_fusion(c) if stage == "fusion" else fns[stage](part, c)
                sec = r.seconds
                step_total = sum(sec.values())
                ms[stage, part, path] = 1000 * step_total / args.steps
                if path != paths[-1]:
                    continue
                for k in totals:
                    totals[k] += sec.get(k, 0.0)
                table.add_row(
                    stage, part, f"{r.images_per_s:.1f}", f"{1000 * step_total / args.steps:.0f}",
                    f"{100 * sec['data'] / step_total:.1f}", f"{100 * sec['log'] / step_total:.1f}",
                    f"{100 * (sec['data'] + sec['log']) / step_total:.1f}",
                )
        wall = time.perf_counter() - wall
    if len(paths) > 1:
        speed = Table(title="ms/step per path (same steps, same data); x = fp32 ms / path ms")
        speed.add_column("stage", justify="right")
        speed.add_column("part", justify="right")
        for path in paths:
            speed.add_column(f"{path} ms", justify="right")
            if path != paths[0]:
                speed.add_column(f"x {paths[0]}", justify="right")

        def row(values: dict[str, float]) -> list[str]:
            cells = []
            for path in paths:
                cells.append(f"{values[path]:.0f}")
                if path != paths[0]:
                    cells.append(f"{values[paths[0]] / values[path]:.2f}x")
            return cells

        for stage, part in runs:
            speed.add_row(stage, part, *row({q: ms[stage, part, q] for q in paths}))
        speed.add_row("all", "", *row({q: sum(ms[s_, p_, q] for s_, p_ in runs) for q in paths}))
        console.print(speed)
    if set(parts) == set(PARTS):
        steps = stage_steps()
        line = ", ".join(
            f"{q} {sum(ms[s_, p_, q] * steps[s_] for s_, p_ in runs) / 60000:.1f} min" for q in paths)
        console.print(f"params.yaml's training steps ({', '.join(f'{k} {v}' for k, v in steps.items())}) "
                      f"at these ms/step, batch {args.batch_size}: {line}")
    console.print(table)
    all_steps = sum(totals.values())
    console.print(
        f"device {torch.device('cuda' if torch.cuda.is_available() and args.device != 'cpu' else 'cpu')}, "
        f"{torch.get_num_threads()} threads; all stages: {all_steps:.1f} s in steps, {wall:.1f} s wall; "
        f"outside forward/backward: {100 * (totals['data'] + totals['log']) / all_steps:.1f}% "
        f"(data+augment {100 * totals['data'] / all_steps:.1f}%, logging+samples {100 * totals['log'] / all_steps:.1f}%)"
    )


if __name__ == "__main__":
    main()
