"""``kcm bench --jobs``: seeds mapped over worker processes come back in seed order."""

from __future__ import annotations

import pytest

from kcm.bench.parallel import check_jobs, map_seeds
from kcm.errors import ConfigError


def square(seed: int, progress) -> int:
    return seed * seed


def test_map_seeds_in_order_in_processes_and_inline() -> None:
    heard: list[str] = []
    assert map_seeds(square, [3, 1, 2], jobs=2, progress=heard.append) == [9, 1, 4]
    assert sorted(heard) == ["seed 1 done", "seed 2 done", "seed 3 done"]
    assert map_seeds(square, [3, 1], jobs=1) == [9, 1]


def test_jobs_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="--jobs 0"):
        check_jobs(0)
