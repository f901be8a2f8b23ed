"""Worker pools for the data stages. Results never depend on the worker count.

Decoding (Pillow), warping (OpenCV) and dlib's detector release the GIL, so those stages use
threads; sketch drawing is Python-heavy, so it uses processes where starting them pays
(pipeline.data.sketch.draw.sketch_workers). The worker count is an
execution setting like the device, not a param: it comes from `--workers` or $DFE_WORKERS
(default: every core this process may use), so changing it never invalidates DVC outputs.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice
from typing import TypeVar

from pipeline.core.progress import track

T = TypeVar("T")
R = TypeVar("R")

WORKERS_ENV = "DFE_WORKERS"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(workers: int | None = None) -> int:
    """`workers` if > 0, else $DFE_WORKERS if set and > 0, else all available cores."""
    if workers is not None and workers > 0:
        return int(workers)
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"${WORKERS_ENV} must be an integer, got {env!r}") from None
        if value > 0:
            return value
    return available_cores()


def thread_map(fn: Callable[[T], R], items: Sequence[T], description: str, workers: int | None = None) -> list[R]:
    """[fn(x) for x in items] on a thread pool, in order, with a progress bar."""
    return list(thread_imap(fn, items, description, workers))


def thread_imap(fn: Callable[[T], R], items: Sequence[T], description: str, workers: int | None = None) -> Iterator[R]:
    """fn(x) for x in items on a thread pool, yielded in order, with a progress bar. At most
    4 items a thread run ahead of the consumer, so results written out as they come (a
    memory-mapped array) never pile up in memory."""
    n = resolve_workers(workers)
    if n <= 1 or len(items) <= 1:
        yield from (fn(x) for x in track(items, description))
        return

    def results() -> Iterator[R]:
        with ThreadPoolExecutor(n) as pool:
            todo = iter(items)
            running = deque(pool.submit(fn, x) for x in islice(todo, 4 * n))
            while running:
                result = running.popleft().result()
                for x in islice(todo, 1):
                    running.append(pool.submit(fn, x))
                yield result

    yield from track(results(), description, total=len(items))


def _init_process_worker() -> None:
    # One busy process per core: stop OpenCV from starting its own threads inside each.
    import cv2

    cv2.setNumThreads(1)


@contextmanager
def process_pool(workers: int, preload: Sequence[str] = ()) -> Iterator[Executor | None]:
    """A process pool of `workers`, or None for `workers` <= 1 (run in-process).

    Not plain fork: a forked child inherits OpenCV's and torch's thread pools mid-state and
    can deadlock in them (it does, after a threaded stage ran in the same process). Where it
    exists, a fork server is used instead: one clean process imports the caller's main module
    and the `preload` modules once, then forks each worker from itself in milliseconds
    (the first pool of a process sets what its fork server preloads). Elsewhere
    workers are spawned. Either way the caller's main module is imported again, so a script
    that uses a pool needs the usual `if __name__ == "__main__":` guard (`dfe`, pytest and
    notebooks have it).
    """
    if workers <= 1:
        yield None
        return
    if "forkserver" in multiprocessing.get_all_start_methods():
        from multiprocessing import forkserver

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", *preload])
        forkserver.ensure_running()  # returns at once; the server imports while the caller works
    else:
        ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_process_worker) as pool:
        yield pool
