"""Training on several processes from one command: params.yaml `train.nproc`.

A training command run with nproc > 1 that is not already a torchrun worker (no RANK and
WORLD_SIZE in its environment) replaces itself with
`python -m torch.distributed.run --standalone --nproc_per_node N <its own command line>`,
so `dvc exp run -S train.nproc=8` trains every stage on eight GPUs with the same dvc.yaml.
The process count is not a stage param: `batch_size` is the global batch, split over the
processes (see pipeline.training.loop), so one process and N agree within rounding.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence


def under_torchrun(env: Mapping[str, str] = os.environ) -> bool:
    """True in a torchrun worker (it sets RANK and WORLD_SIZE)."""
    return "RANK" in env and "WORLD_SIZE" in env


def check_nproc(nproc: object, batch_size: int, device: str) -> int:
    """`nproc` as a validated process count; ValueError (one line) where it cannot work."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"train.nproc must be a whole number >= 1, got {nproc!r}")
    if batch_size % nproc:
        raise ValueError(f"batch_size {batch_size} does not split over train.nproc={nproc} processes: "
                         f"use a multiple of {nproc}")
    if nproc > 1 and device != "cpu":
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus and nproc > gpus:  # one process per GPU (cuda:LOCAL_RANK)
            raise ValueError(f"train.nproc={nproc} but this machine has {gpus} CUDA device(s): "
                             f"use at most {gpus}, or more nodes (README: Full scale on GPU)")
    return nproc


def torchrun_argv(nproc: int, args: Sequence[str]) -> list[str]:
    """The command line that runs `python <args>` on `nproc` local processes. --standalone picks
    a free rendezvous port, so parallel runs (`dvc exp run --queue`) do not collide."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def relaunch(nproc: int, args: Sequence[str]) -> None:
    """Replace this process with torchrun running `python <args>` on `nproc` processes; return
    (doing nothing) with nproc 1 or inside a torchrun worker. exec, not a child process: signals
    (a killed `dvc exp run`) reach torchrun, which stops its workers, and its exit code is ours."""
    if nproc == 1 or under_torchrun():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    argv = torchrun_argv(nproc, args)
    os.execv(argv[0], argv)
