"""Training throughput per stage and the share of step time spent outside the model.

    python -m benchmarks.train --profile small --steps 20
    python -m benchmarks.train --profile paper        # what a full-scale run costs (benchmarks.train_cost)

Runs every stage (sketch_ae, image_encoder, local per part; then fusion) for `--steps` steps in
a temporary directory, on `--components` if given, else on a synthetic components set of
`--faces` faces at the profile's resolution. Prints images/s per stage and part, and the share
of step time outside forward/backward/optimiser (data reading + augmentation, and logging +
sample grids), which should stay under 10%.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.table import Table

from pipeline import PARTS
from pipeline.core.profiles import get_profile
from pipeline.core.progress import console


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
    ap.add_argument("--amp", choices=("on", "off", "both"), default="on",
                    help="bf16 autocast (on: where it pays, see training.loop.bf16_autocast_pays); "
                         "both: run fp32 and bf16 and print the speed-up per stage")
    args, rest = ap.parse_known_args(argv)
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
    from pipeline.training.loop import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    parts = tuple(p for p in args.parts.split(",") if p)
    table = Table(title=f"training throughput, profile {profile.name}, batch {args.batch_size}, {args.steps} steps")
    for col in ("stage", "part", "images/s", "ms/step", "data %", "log %", "outside model %"):
        table.add_column(col, justify="right")
    totals = {"data": 0.0, "model": 0.0, "log": 0.0}
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.amp]
    ms: dict[tuple[str, str, bool], float] = {}
    with tempfile.TemporaryDirectory(prefix="dfe-bench-") as tmp:
        root = Path(tmp)
        comps = args.components or synthetic_components(root / "components", profile.resolution, args.faces, 4)

        def cfg(stage: str, part: str, amp: bool) -> TrainConfig:
            return TrainConfig(
                stage=stage, part=part, profile=profile.name, steps=args.steps, batch_size=args.batch_size,
                log_every=10, ckpt_every=args.steps, sample_every=args.steps, device=args.device, amp=amp,
                progress=False, timing_sync=True, components=str(comps), models_dir=str(root / f"models{amp}"),
                checkpoints_dir=str(root / f"checkpoints{amp}"), live_root=str(root / f"dvclive{amp}"),
            )

        runs = [(s, p) for s in ("sketch_ae", "image_encoder", "local") for p in parts]
        if set(parts) == set(PARTS):
            runs.append(("fusion", "fusion"))
        fns = {"sketch_ae": train_sketch_ae, "image_encoder": train_image_encoder, "local": train_local}
        wall = time.perf_counter()
        for amp in modes:
            for stage, part in runs:
                c = cfg(stage, part, amp)
                r = train_fusion(c) if stage == "fusion" else fns[stage](part, c)
                sec = r.seconds
                step_total = sum(sec.values())
                ms[stage, part, amp] = 1000 * step_total / args.steps
                if amp != modes[-1]:
                    continue
                for k in totals:
                    totals[k] += sec.get(k, 0.0)
                table.add_row(
                    stage, part, f"{r.images_per_s:.1f}", f"{1000 * step_total / args.steps:.0f}",
                    f"{100 * sec['data'] / step_total:.1f}", f"{100 * sec['log'] / step_total:.1f}",
                    f"{100 * (sec['data'] + sec['log']) / step_total:.1f}",
                )
        wall = time.perf_counter() - wall
    if len(modes) == 2:
        speed = Table(title="bf16 autocast: fp32 ms/step / bf16 ms/step (same steps, same data)")
        for col in ("stage", "part", "fp32 ms", "bf16 ms", "speed-up"):
            speed.add_column(col, justify="right")
        for stage, part in runs:
            a, b = ms[stage, part, False], ms[stage, part, True]
            speed.add_row(stage, part, f"{a:.0f}", f"{b:.0f}", f"{a / b:.2f}x")
        total_a = sum(ms[s, p, False] for s, p in runs)
        total_b = sum(ms[s, p, True] for s, p in runs)
        speed.add_row("all", "", f"{total_a:.0f}", f"{total_b:.0f}", f"{total_a / total_b:.2f}x")
        console.print(speed)
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
