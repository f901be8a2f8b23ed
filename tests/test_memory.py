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

# A 96 MiB tensor (above glibc's largest mmap threshold) filled, freed and made again: the page
# faults of the second one, in a fresh process (the setting is process-wide).
PROBE = """
import json, resource, torch
from pipeline.core.memory import reuse_freed_memory
took = reuse_freed_memory()
t = torch.empty(24 * 2**20); t.fill_(1.0); del t
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t = torch.empty(24 * 2**20); t.fill_(2.0)
print(json.dumps({"took": took, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(setting: str) -> dict:
    env = {**os.environ, "DFE_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_freed_large_tensor_is_reused_without_page_faults_and_system_turns_it_off():
    reuse, system = _probe("reuse"), _probe("system")
    assert reuse["took"] and not system["took"]
    pages = 96 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert system["faults"] > 0.5 * pages  # the C library's default: a fresh mmap, every page faulted in again
    assert reuse["faults"] < 0.05 * pages  # the freed block, reused
