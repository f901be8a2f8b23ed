"""pipeline.core.memory: large tensors reuse freed memory instead of faulting in fresh pages."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's")

# Large tensors (96 and 64 MiB, above glibc's largest mmap threshold) made, filled and freed
# eight times over: the page faults after a first round, in a fresh process (the setting is
# process-wide).
PROBE = """
import json, resource, torch
from pipeline.core.memory import reuse_freed_memory
took = reuse_freed_memory()
def round_():
    a = torch.empty(24 * 2**20); a.fill_(1.0)
    b = torch.empty(16 * 2**20); b.fill_(2.0)
    del a, b
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    round_()
print(json.dumps({"took": took, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(setting: str) -> dict:
    env = {**os.environ, "DFE_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_large_tensors_are_reused_instead_of_faulted_in_again_and_system_turns_it_off():
    reuse, system = _probe("reuse"), _probe("system")
    assert reuse["took"] and not system["took"]
    pages = 8 * 160 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert system["faults"] > 0.9 * pages  # the C library's default: a fresh mmap per tensor, every page faulted in
    # reused: the heap still grows now and then (a 64-byte-aligned request the size of a freed block
    # fits in it only where the block borders the heap's top), about a quarter of the pages here
    assert reuse["faults"] < 0.5 * system["faults"]
