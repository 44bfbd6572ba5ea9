"""Spend caps (issue #24): what a purpose may spend per run and per rolling day, kept in one
file that every run and process of a workspace shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kcm.budget import DAY, SpendGuard
from kcm.config import ReplayConfig
from kcm.cost import resolve_price
from kcm.data.batch import Task


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_admit_lets_through_the_calls_that_fit_and_settles_what_they_cost(tmp_path: Path) -> None:
    g = SpendGuard("serve", "r1", per_run=1.0, per_day=None, path=tmp_path / "s.sqlite")
    t = g.admit([0.4, 0.4, 0.4])
    assert t.n == 2 and t.reserved == pytest.approx(0.8)
    assert g.remaining() == pytest.approx(0.2)
    g.settle(t, 0.5)  # cheaper than estimated: the difference is free again
    assert g.remaining() == pytest.approx(0.5) and g.admit([0.4]).n == 1
    assert g.refused_ == 1


def test_the_day_is_rolling_and_survives_a_restart(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "s.sqlite"
    first = SpendGuard("serve", "r1", None, per_day=1.0, path=path, clock=clock)
    first.settle(first.admit([0.6]), 0.6)
    first.close()
    again = SpendGuard("serve", "r2", None, per_day=1.0, path=path, clock=clock)  # a new run
    assert again.admit([0.6]).n == 0 and again.exhausted()
    clock.t += DAY / 2
    assert again.admit([0.6]).n == 0
    clock.t += DAY / 2 + 1  # the first spend left the window
    assert not again.exhausted() and again.admit([0.6]).n == 1


def test_purposes_and_runs_are_counted_apart(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    serve = SpendGuard("serve", "r1", per_run=1.0, per_day=None, path=path)
    evaluate = SpendGuard("evaluate", "r1", per_run=0.1, per_day=None, path=path)
    serve.settle(serve.admit([0.9]), 0.9)
    assert evaluate.admit([0.1]).n == 1  # evaluating never eats the serving budget
    assert SpendGuard("serve", "r2", per_run=1.0, per_day=None, path=path).admit([0.9]).n == 1


def test_a_reservation_a_crash_left_unsettled_stays_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    SpendGuard("serve", "r1", None, per_day=1.0, path=path).admit([0.7])  # never settled
    assert SpendGuard("serve", "r2", None, per_day=1.0, path=path).remaining() == pytest.approx(0.3)


def test_a_capped_large_model_stops_at_the_cap_within_one_calls_price(tmp_path: Path) -> None:
    from kcm.models.large.replay import ReplayModel

    texts = [
        f"I would like fruit number {i} please, an {'apple' if i % 2 else 'orange'}"
        for i in range(40)
    ]
    path = tmp_path / "answers.csv"
    pd.DataFrame(
        {"text": texts, "gpt4": ["apple" if i % 2 else "orange" for i in range(40)]}
    ).to_csv(path, index=False)
    task = Task(kind="text", label_names=("apple", "orange"), text_col="text")

    def model() -> ReplayModel:
        m = ReplayModel(task, ReplayConfig(path=str(path)))
        m.price = resolve_price(None, None, 0.0, "USD", "gpt-4")
        m.chunk_size = 7
        return m

    full = model().predict_proba(texts)
    total = float(full.cost.sum())
    m = model()
    m.guard = SpendGuard("serve", "r", per_run=total / 2, per_day=None)
    out = m.predict_proba(texts)
    refused = out.refused_mask()
    assert refused.any() and not refused[: int(np.argmax(refused))].any()  # a prefix was sent
    one_call = float(full.cost.max())
    assert total / 2 - one_call <= m.ledger.cost <= total / 2
    assert m.ledger.refused == int(refused.sum()) and m.ledger.failures == 0
    assert not out.ok[refused].any() and out.ok[~refused].all()
