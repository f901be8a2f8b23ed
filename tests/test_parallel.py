"""Worker pools (pipeline/core/parallel.py): the worker count is an execution setting, never a result."""

from __future__ import annotations

import threading

import pytest

from pipeline.core.parallel import WORKERS_ENV, available_cores, resolve_workers, thread_imap, thread_map


def test_resolve_workers(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert resolve_workers(None) == available_cores() >= 1
    assert resolve_workers(3) == 3
    monkeypatch.setenv(WORKERS_ENV, "5")
    assert resolve_workers(None) == 5 and resolve_workers(0) == 5 and resolve_workers(2) == 2
    monkeypatch.setenv(WORKERS_ENV, "0")
    assert resolve_workers(None) == available_cores()
    monkeypatch.setenv(WORKERS_ENV, "many")
    with pytest.raises(ValueError, match=WORKERS_ENV):
        resolve_workers(None)


def test_thread_map_keeps_order_and_uses_threads():
    seen: set[int] = set()
    barrier = threading.Barrier(2, timeout=10)

    def work(x: int) -> int:
        seen.add(threading.get_ident())
        if x < 2:
            barrier.wait()  # the first two items only finish if they run at the same time
        return x * x

    assert thread_map(work, list(range(20)), "squares", workers=2) == [x * x for x in range(20)]
    assert len(seen) == 2
    assert thread_map(lambda x: -x, [1, 2, 3], "serial", workers=1) == [-1, -2, -3]


def test_thread_imap_runs_only_a_few_items_ahead():
    """Results stream out in order and the pool never runs far ahead of the consumer (a fast
    pool feeding a slow writer must not hold the whole set in memory)."""
    started = []
    lock = threading.Lock()

    def work(x: int) -> int:
        with lock:
            started.append(x)
        return x + 1

    workers, out = 2, []
    for i, y in enumerate(thread_imap(work, list(range(100)), "ahead", workers=workers)):
        out.append(y)
        with lock:
            assert len(started) <= i + 1 + 4 * workers, (i, len(started))
    assert out == list(range(1, 101)) and sorted(started) == list(range(100))
