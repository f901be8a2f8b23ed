"""One training stage in a torchrun worker, for tests/test_ddp.py; reports what its rank did.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py SPEC.json

SPEC: {"stage", "part", "cfg": TrainConfig fields, "out": report folder, "kill": [rank, step]
(optional: that rank SIGKILLs itself before running that step)}. Each rank writes
OUT/rank<r>.json: sha256 of every checkpointed module's and optimiser's state after the run, of
its global RNG and sampler state, and the TrainResult. The files each rank writes are
recorded by tests/ddp_audit/sitecustomize.py. The production code has no test hooks: this
script patches Trainer from outside.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def digest(obj) -> str:
    """sha256 of nested dicts/lists of tensors and scalars (state_dicts, optimiser states)."""
    import torch

    h = hashlib.sha256()

    def walk(o) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{o.dtype}{tuple(o.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                h.update(f"K{k}".encode())
                walk(o[k])
        elif isinstance(o, (list, tuple)):
            h.update(f"L{len(o)}".encode())
            for v in o:
                walk(v)
        else:
            h.update(f"V{o!r}".encode())

    walk(obj)
    return h.hexdigest()


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ["RANK"])

    import torch

    from pipeline.training import loop

    report: dict = {"rank": rank, "world_size": int(os.environ["WORLD_SIZE"])}
    real_fit, real_set_lr = loop.Trainer.fit, loop.Trainer._set_lr

    def fit(self, task):
        result = real_fit(self, task)
        report["modules"] = {k: digest(m.state_dict()) for k, m in task.modules.items()}
        report["optimizers"] = {k: digest(o.state_dict()) for k, o in task.optimizers.items()}
        report["rng"] = digest(torch.get_rng_state())
        report["sampler"] = digest(task.sampler.state_dict())
        report["result"] = {"steps": result.steps, "steps_run": result.steps_run,
                            "resumed_from": result.resumed_from, "losses": result.losses}
        return result

    kill = spec.get("kill")

    def set_lr(self, task, step):
        if kill is not None and rank == kill[0] and step + 1 == kill[1]:
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill: no cleanup, no exception
        return real_set_lr(self, task, step)

    loop.Trainer.fit, loop.Trainer._set_lr = fit, set_lr
    cfg = loop.TrainConfig(stage=spec["stage"], part=spec["part"], **spec["cfg"])
    stage = spec["stage"]
    train = getattr(importlib.import_module(f"pipeline.training.train_{stage}"), f"train_{stage}")
    if stage == "fusion":
        train(cfg)
    else:
        train(spec["part"], cfg)
    out = Path(spec["out"]) / f"rank{rank}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main(sys.argv[1])
