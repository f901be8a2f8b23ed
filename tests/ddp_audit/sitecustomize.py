"""Test-only: record what each torchrun worker writes (tests/test_ddp.py puts this folder on
PYTHONPATH, so every Python process it starts imports this file at startup).

In a process with RANK set and DFE_TEST_AUDIT naming a folder, a Python audit hook records every
file opened for writing, renamed, created or removed under $DFE_TEST_AUDIT_ROOT (tempfile,
numpy, torch.save, dvclive and the safetensors temp-then-rename all pass through these
events); at exit the list goes to $DFE_TEST_AUDIT/writes-rank<RANK>.json. Nothing happens in
any other process (the torchrun agent, the `dfe` command before it relaunches itself).
"""

import atexit
import json
import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _install(out_dir: str, root: str, rank: str) -> None:
    writes: set[str] = set()
    recording = [True]

    def audit(event: str, args: tuple) -> None:
        if not recording[0]:
            return
        if event == "open":
            path, mode, flags = args
            writing = (flags or 0) & _WRITE_FLAGS or (mode is not None and any(c in mode for c in "wax+"))
            paths = [path] if writing else []
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir"):
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        else:
            return
        for p in paths:
            if isinstance(p, int):
                continue
            p = os.path.abspath(os.fsdecode(p))
            if p.startswith(root + os.sep):
                writes.add(f"{event} {os.path.relpath(p, root)}")

    def dump() -> None:
        recording[0] = False  # not the report itself
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"writes-rank{rank}.json"), "w") as f:
            json.dump({"rank": int(rank), "pid": os.getpid(), "argv": sys.argv, "writes": sorted(writes)}, f)

    sys.addaudithook(audit)
    atexit.register(dump)


if os.environ.get("DFE_TEST_AUDIT") and "RANK" in os.environ:
    _install(os.environ["DFE_TEST_AUDIT"], os.path.realpath(os.environ["DFE_TEST_AUDIT_ROOT"]), os.environ["RANK"])
