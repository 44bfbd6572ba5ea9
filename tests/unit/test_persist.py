from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kcm.config import load_config
from kcm.data import Batch, Task
from kcm.data.stream import build_bundle
from kcm.errors import KCMError
from kcm.models.large import make_large_model
from kcm.models.large.callable import CallableModel
from kcm.persist import load_system, save_system
from kcm.system import CollaborationSystem


def _same(a: CollaborationSystem, b: CollaborationSystem, batch: Batch) -> None:
    pa, pb = a.predict(batch), b.predict(batch)
    assert (pa.answer == pb.answer).all()
    assert np.allclose(pa.confidence, pb.confidence, atol=1e-6)


def test_digits_round_trip_predicts_and_learns_identically(tmp_path: Path) -> None:
    cfg = load_config(None, ["judge.epochs=20"])
    b = build_bundle(cfg)
    large = make_large_model(cfg, b.task)
    large.fit(b.pretrain)
    sys_a = CollaborationSystem(b.task, cfg, large).setup(b.pretrain)
    for batch in b.stream[:2]:
        sys_a.learn(batch, sys_a.predict(batch))
    save_system(sys_a, tmp_path / "v1")
    sys_b = load_system(tmp_path / "v1")
    _same(sys_a, sys_b, b.test)
    nxt = b.stream[2]
    sys_a.learn(nxt, sys_a.predict(nxt))
    sys_b.learn(nxt, sys_b.predict(nxt))
    _same(sys_a, sys_b, b.test)
    with pytest.raises(KCMError, match="exists already"):
        save_system(sys_a, tmp_path / "v1")


def test_text_system_with_sparse_features_round_trips(tmp_path: Path) -> None:
    task = Task(kind="text", label_names=("a", "b"), text_col="text")
    texts = [f"alpha word {i}" for i in range(30)] + [f"beta thing {i}" for i in range(30)]
    y = np.array([0] * 30 + [1] * 30)
    batch = Batch(
        ids=np.arange(60).astype(str).astype(object), inputs=texts, label=y, gold=y.copy()
    )

    def oracle(inputs: list[str], hints: np.ndarray | None) -> list[str]:
        return ["a" if "alpha" in t else "b" for t in inputs]

    cfg = load_config(None, ["features.text.n_features=4096", "judge.epochs=5"])
    sys_a = CollaborationSystem(task, cfg, CallableModel(task, oracle)).setup(batch)
    sys_a.learn(batch, sys_a.predict(batch))
    save_system(sys_a, tmp_path / "s")
    size = sum(f.stat().st_size for f in (tmp_path / "s").iterdir())
    sys_b = load_system(tmp_path / "s", large=CallableModel(task, oracle))
    _same(sys_a, sys_b, batch)
    assert size < 2_000_000  # untouched hashed rows are not stored
    assert not list(tmp_path.glob(".s.tmp-*"))


def test_load_refuses_a_folder_without_a_system(tmp_path: Path) -> None:
    with pytest.raises(KCMError, match=r"no meta\.json"):
        load_system(tmp_path)


def test_a_version_saved_before_the_auto_settings_loads_under_todays_defaults(
    tmp_path: Path,
) -> None:
    """Saved when features.judge_dim was 32 for every kind and features.kind did not exist:
    today's defaults (auto, null) pass the frozen check, and an explicit other value does not."""
    import json

    from kcm.errors import ConfigError

    cfg = load_config(None, ["judge.epochs=5"])
    b = build_bundle(cfg)
    large = make_large_model(cfg, b.task)
    large.fit(b.pretrain)
    system = CollaborationSystem(b.task, cfg, large).setup(b.pretrain)
    system.learn(b.stream[0], system.predict(b.stream[0]))
    save_system(system, tmp_path / "v1")
    meta = tmp_path / "v1" / "meta.json"
    tree = json.loads(meta.read_text())
    tree["config"]["features"]["judge_dim"] = 32
    del tree["config"]["features"]["kind"]
    meta.write_text(json.dumps(tree))
    again = load_system(tmp_path / "v1", cfg=cfg)
    _same(system, again, b.test)
    with pytest.raises(ConfigError, match=r"features\.judge_dim=16"):
        load_system(tmp_path / "v1", cfg=load_config(None, ["features.judge_dim=16"]))
