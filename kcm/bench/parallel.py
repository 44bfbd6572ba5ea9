"""Seeds run side by side (``kcm bench --jobs N``): one worker process per seed at a time,
each with its share of the cores for torch (two processes with two threads each on two
cores run several times slower than one after the other: the threads spin against each
other). Results come back in seed order; a worker's exception is raised here."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from kcm.errors import ConfigError

log = logging.getLogger(__name__)


def check_jobs(jobs: int) -> int:
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give a number of worker processes ≥ 1, e.g. 2")
    return jobs


def _init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def map_seeds(
    fn: Callable[..., Any],
    seeds: Sequence[int],
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> list[Any]:
    """``[fn(seed, progress) for seed in seeds]``; with ``jobs`` > 1, in that many spawned
    processes (``fn`` must be picklable: a module-level function or a ``partial`` of one);
    ``progress`` then hears of each seed as it finishes."""
    check_jobs(jobs)
    if jobs == 1 or len(seeds) <= 1:
        return [fn(seed, progress) for seed in seeds]
    workers = min(jobs, len(seeds))
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    done: dict[int, Any] = {}
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(threads,)) as ex:
        futures = {ex.submit(fn, seed, None): seed for seed in seeds}
        for fut in as_completed(futures):
            seed = futures[fut]
            done[seed] = fut.result()
            log.info("seed %d done", seed)
            if progress:
                progress(f"seed {seed} done")
    return [done[s] for s in seeds]
