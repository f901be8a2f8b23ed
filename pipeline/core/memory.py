"""Large tensors and the C library's allocator.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh mmap and
unmaps it on free, so each 512 px activation (64 x 512 x 512 fp32 = 64 MiB) is zero-filled by
the kernel page by page the next time one is needed: a paper-profile edit spends about 40 % of
its first run faulting pages in (`python -m benchmarks.malloc`). `reuse_freed_memory` keeps
freed memory in the process, where later tensors mostly find it (the heap still grows now and
then: tests/test_memory.py). Small-profile tensors stay under the threshold and are
unaffected; results are bit for bit the same.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
ENV = "DFE_MALLOC"  # "system": leave the allocator as the C library sets it


def reuse_freed_memory() -> bool:
    """Ask glibc to serve large blocks from the heap and keep what is freed (no mmap per
    tensor, no trimming below 2 GiB). Process-wide; True if it took effect, False where the C
    library has no mallopt (macOS, Windows, musl returns 0) or $DFE_MALLOC is "system"."""
    if os.environ.get(ENV, "").strip().lower() == "system":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
