"""What reusing freed memory buys (pipeline.core.memory, on for every `dfe` command): one face
edit's model time with aligned input (benchmarks.edit's edit) at the small and the paper
profile, in a fresh process per allocator setting, the first edit (what a one-shot `dfe edit`
pays) and the median of the next ones (the studio's strokes), and their ratios.

    python -m benchmarks.malloc                    # small (models/ if trained) and paper (random weights)
    python -m benchmarks.malloc --paper-iters 2 --isa avx2     # oneDNN / ATen held to AVX2 kernels

The outputs of the two settings are compared pixel for pixel (they must be the same).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys

from benchmarks.dtype import ISAS

SETTINGS = ("system", "reuse")  # the C library's defaults | pipeline.core.memory.reuse_freed_memory


def child(setting: str, profile_name: str, iters: int, models: str) -> dict:
    from pathlib import Path

    import torch

    from benchmarks.edit import random_editor, time_edit
    from pipeline.core.memory import reuse_freed_memory
    from pipeline.core.profiles import get_profile
    from pipeline.models.editor import load_editor

    took = reuse_freed_memory() if setting == "reuse" else False
    profile = get_profile(profile_name)
    trained = profile_name == "small" and (Path(models) / "fusion" / "fusion.safetensors").exists()
    editor = load_editor(models, profile, torch.device("cpu")) if trained else random_editor(profile, torch.device("cpu"))
    outputs: list = []
    times = time_edit(editor, iters, warmup=0, outputs=outputs)
    digest = hashlib.sha256(outputs[-1].tobytes()).hexdigest()
    return {"setting": setting, "took_effect": took, "weights": "trained" if trained else "random", "times": times,
            "digest": digest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models", help="small-profile weights; random if absent")
    ap.add_argument("--small-iters", type=int, default=10)
    ap.add_argument("--paper-iters", type=int, default=4)
    ap.add_argument("--profiles", default="small,paper")
    ap.add_argument("--isa", choices=sorted(ISAS), default="native", help="hold oneDNN and ATen to this CPU's kernels")
    ap.add_argument("--child", nargs=2, metavar=("SETTING", "PROFILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        setting, profile = args.child
        iters = args.small_iters if profile == "small" else args.paper_iters
        print(json.dumps(child(setting, profile, iters, args.models)))
        return
    env = {**os.environ, **ISAS[args.isa]}
    print(f"kernels: {args.isa}; one process per setting; seconds of model time per edit")
    for profile in args.profiles.split(","):
        runs = {}
        for setting in SETTINGS:
            cmd = [sys.executable, "-m", "benchmarks.malloc", "--child", setting, profile, "--models", args.models,
                   "--small-iters", str(args.small_iters), "--paper-iters", str(args.paper_iters)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[setting] = json.loads(done.stdout.strip().splitlines()[-1])
        base, new = runs["system"], runs["reuse"]
        first = new["times"][0] / base["times"][0]
        rest = statistics.median(new["times"][1:]) / statistics.median(base["times"][1:]) if len(new["times"]) > 1 else float("nan")
        for s in SETTINGS:
            t = runs[s]["times"]
            print(f"{profile:6} {s:7} ({runs[s]['weights']} weights): first {t[0]:.3f} s, then median "
                  f"{statistics.median(t[1:]) if len(t) > 1 else float('nan'):.3f} s")
        print(f"{profile:6} reuse / system: first edit {first:.2f}x, later edits {rest:.2f}x; "
              f"took effect: {new['took_effect']}; same output: {new['digest'] == base['digest']}")


if __name__ == "__main__":
    main()
