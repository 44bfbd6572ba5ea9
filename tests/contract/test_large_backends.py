"""One contract for every large-model backend: shapes, caching, the ledger, hints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kcm.config import EmbeddingHeadConfig, MLPTeacherConfig, OpenAIConfig
from kcm.data.batch import Batch, Task
from kcm.errors import ConfigError
from kcm.models.cache import ResponseCache
from kcm.models.large import LargeModel
from kcm.models.large.callable import CallableModel
from kcm.registry import LARGE_BACKENDS
from tests.llm_server import LLMServer

LABELS = ("cat", "dog", "fish")
TEXT = Task(kind="text", label_names=LABELS, text_col="text")
NUM = Task(kind="numeric", label_names=LABELS, feature_cols=("a", "b"))
TEXTS = ["my cat sleeps", "the dog barks", "a fish swims", "cat and mouse", "dog days", "fish tank"]


def _text_batch() -> Batch:
    y = np.array([0, 1, 2, 0, 1, 2])
    return Batch(
        ids=np.array([str(i) for i in range(6)], dtype=object),
        inputs=list(TEXTS),
        label=y,
        gold=y.copy(),
    )


def _keyword(inputs: list[Any], hints: np.ndarray | None) -> np.ndarray:
    out = np.full((len(inputs), 3), 0.05)
    for i, t in enumerate(inputs):
        j = next((k for k, lab in enumerate(LABELS) if lab in str(t)), 0)
        out[i, j] = 0.9
    return out


@pytest.fixture(params=sorted(LARGE_BACKENDS))
def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[LargeModel, list[Any]]]:
    name = request.param
    if name == "replay":
        from kcm.config import ReplayConfig
        from kcm.models.large.replay import ReplayModel

        answers = [next(lab for lab in LABELS if lab in t) for t in TEXTS]
        path = tmp_path / "answers.csv"
        pd.DataFrame({"text": TEXTS, "gpt4": answers}).to_csv(path, index=False)
        yield ReplayModel(TEXT, ReplayConfig(path=str(path))), list(TEXTS)
    elif name == "callable":
        yield CallableModel(TEXT, _keyword), list(TEXTS)
    elif name == "mlp-teacher":
        from kcm.models.large.heads import MLPTeacherModel

        rng = np.random.default_rng(0)
        y = np.repeat(np.arange(3), 30)
        x = (np.eye(3)[y][:, :2] * 3 + rng.normal(scale=0.3, size=(90, 2))).astype(np.float32)
        m = MLPTeacherModel(NUM, MLPTeacherConfig(hidden=(16,), epochs=50))
        m.fit(Batch(ids=np.arange(90).astype(str).astype(object), inputs=x, label=y, gold=y))
        yield m, list(x[:6])
    elif name == "embedding-head":
        from kcm.models.large.heads import EmbeddingHeadModel

        m = EmbeddingHeadModel(TEXT, EmbeddingHeadConfig(epochs=100))
        m.fit(_text_batch())
        yield m, list(TEXTS)
    else:
        from kcm.models.large.openai import OpenAIChatModel

        with LLMServer(list(LABELS)) as srv:
            yield (
                OpenAIChatModel(TEXT, OpenAIConfig(base_url=srv.base_url, backoff=0.01)),
                list(TEXTS),
            )


def test_returns_one_distribution_per_input(backend: tuple[LargeModel, list[Any]]) -> None:
    model, inputs = backend
    out = model.predict_proba(inputs)
    assert out.raw.shape == (len(inputs), 3) and out.answer.shape == (len(inputs), 3)
    assert out.ok.all()
    assert np.allclose(out.raw.sum(axis=1), 1.0, atol=1e-5)
    assert model.ledger.calls == len(inputs) and model.ledger.failures == 0
    assert model.ledger.latency_s > 0


def test_cached_inputs_are_never_paid_twice(backend: tuple[LargeModel, list[Any]]) -> None:
    model, inputs = backend
    first = model.predict_proba(inputs)
    calls = model.ledger.calls
    again = model.predict_proba(inputs[::-1])
    assert model.ledger.calls == calls
    assert model.ledger.cache_hits == len(inputs)
    assert np.allclose(again.raw[::-1], first.raw)


def test_identical_inputs_in_one_call_are_sent_once(
    backend: tuple[LargeModel, list[Any]],
) -> None:
    model, inputs = backend
    twice = [inputs[0], inputs[1], inputs[0], inputs[0], inputs[1]]
    out = model.predict_proba(twice)
    assert model.ledger.calls == 2 and out.ok.all()
    assert np.allclose(out.raw[2], out.raw[0]) and np.allclose(out.raw[4], out.raw[1])


def test_hint_changes_answer_or_prompt(backend: tuple[LargeModel, list[Any]]) -> None:
    model, inputs = backend
    hints = np.tile([0.0, 0.0, 1.0], (len(inputs), 1))
    plain = model.predict_proba(inputs)
    hinted = model.predict_proba(inputs, hints)
    assert hinted.ok.all()
    if model.hint_in_request:  # the hint is in the prompt: a new request per input
        assert model.ledger.calls == 2 * len(inputs)
    else:  # classifier backends fuse the small model's distribution
        assert np.allclose(plain.raw, hinted.raw)
        assert (hinted.answer[:, 2] >= plain.answer[:, 2] - 1e-9).all()


def test_describe_names_backend_without_secrets(
    backend: tuple[LargeModel, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = backend
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    d = model.describe()
    assert d["backend"] == model.name
    assert "sk-secret" not in repr(d)


def test_persistent_cache_survives_a_new_instance(tmp_path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    calls = []

    def fn(inputs: list[Any], hints: np.ndarray | None) -> np.ndarray:
        calls.append(len(inputs))
        return _keyword(inputs, hints)

    CallableModel(TEXT, fn, cache=cache).predict_proba(TEXTS)
    cache.close()
    again = CallableModel(TEXT, fn, cache=ResponseCache(tmp_path / "c.sqlite"))
    again.predict_proba(TEXTS)
    assert calls == [len(TEXTS)] and again.ledger.cache_hits == len(TEXTS)


def test_replay_records_a_failure_for_an_unknown_input_or_answer(tmp_path: Path) -> None:
    from kcm.config import ReplayConfig
    from kcm.models.large.replay import ReplayModel

    path = tmp_path / "answers.csv"
    pd.DataFrame({"text": ["my cat sleeps", "the dog barks"], "gpt4": ["cat", "wolf"]}).to_csv(
        path, index=False
    )
    m = ReplayModel(TEXT, ReplayConfig(path=str(path)))
    out = m.predict_proba(["my cat sleeps", "the dog barks", "never recorded"])
    assert out.ok.tolist() == [True, False, False]
    assert out.raw[0].tolist() == [1.0, 0.0, 0.0]
    errors = [f["error"] for f in m.ledger.failed]
    assert errors == [
        "recorded answer outside the label set: 'wolf'",
        "no recorded answer for this input",
    ]
    with pytest.raises(ConfigError, match=r"large\.replay\.path"):
        ReplayModel(TEXT, ReplayConfig()).predict_proba(["x"])
