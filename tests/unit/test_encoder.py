"""The sentence encoder's embedding cache (hit, miss, resume after SIGKILL, a changed model
invalidates), the featurizer contract over both text kinds, and the frozen choice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kcm.config import KCMConfig, check_frozen, with_overrides
from kcm.data.batch import Task
from kcm.encoder import CHUNK, EmbeddingCache, SentenceEncoder, default_model_path, reopen_cache
from kcm.errors import ConfigError, DataError
from kcm.features import (
    EncoderFeaturizer,
    Features,
    TextFeaturizer,
    features_kind,
    make_featurizer,
)

VERBS = ("top up", "freeze", "activate", "replace", "cancel", "find", "order", "link")
THINGS = ("virtual", "physical", "new", "old", "blue", "metal")
TEXTS = [f"how do I {v} my {t} card" for v in VERBS for t in THINGS]
TASK = Task(kind="text", label_names=("a", "b"), text_col="text", label_col="label")


def _fresh(path: Path) -> EmbeddingCache:
    """The cache object as a new process would open it."""
    return reopen_cache(path)


def test_encode_once_then_hit(tmp_path: Path) -> None:
    path = tmp_path / "emb.sqlite"
    cache = _fresh(path)
    e = SentenceEncoder(cache_path=path)
    x = e.encode([*TEXTS, TEXTS[0]])
    assert x.shape == (len(TEXTS) + 1, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x[0], x[-1])
    assert cache.misses == len(TEXTS) and cache.hits == 1
    # another process (a new cache object on the same file) encodes nothing
    again = _fresh(path)
    y = SentenceEncoder(cache_path=path).encode(TEXTS)
    assert again.misses == 0 and again.hits == len(TEXTS)
    np.testing.assert_array_equal(x[:-1], y)
    assert len(again) == len(TEXTS)


def test_similar_texts_are_near() -> None:
    x = SentenceEncoder().encode(["freeze my card", "block my card", "what is the exchange rate"])
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2


def test_model_change_invalidates(tmp_path: Path) -> None:
    path = tmp_path / "emb.sqlite"
    SentenceEncoder(cache_path=path).encode(TEXTS[:5])
    other = tmp_path / "model"
    shutil.copytree(default_model_path(), other)
    cfg = other / "config.json"
    cfg.write_text(cfg.read_text().replace("{", '{"kcm_test_marker": 1, ', 1))
    cache = _fresh(path)
    SentenceEncoder(other, cache_path=path).encode(TEXTS[:5])
    assert cache.misses == 5  # same texts, another model: encoded again
    cache.misses = 0
    SentenceEncoder(max_length=32, cache_path=path).encode(TEXTS[:5])
    assert cache.misses == 5  # another maximum length changes the embeddings too


def test_missing_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"features.encoder.model_path=.*no transformer model"):
        SentenceEncoder(tmp_path / "nothing").encode(["x"])


def test_resume_after_kill(tmp_path: Path) -> None:
    path = tmp_path / "emb.sqlite"
    texts = [f"{t} number {i}" for i, t in enumerate(TEXTS * 12)][: CHUNK + 100]
    code = (
        "import json,sys; from kcm.encoder import SentenceEncoder; "
        f"SentenceEncoder(cache_path={str(path)!r}).encode(json.load(sys.stdin))"
    )
    env = {**os.environ, "KCM_FAILPOINT": "encode.chunk_committed"}
    import json

    proc = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(texts), text=True, env=env, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL
    cache = _fresh(path)
    assert len(cache) == CHUNK  # the first chunk was committed before the kill
    SentenceEncoder(cache_path=path).encode(texts)
    assert cache.misses == 100 and cache.hits == CHUNK


@pytest.mark.parametrize("kind", ["tfidf", "encoder"])
def test_featurizer_contract(kind: str, tmp_path: Path) -> None:
    cfg = with_overrides(KCMConfig(), [f"features.kind={kind}", "features.judge_dim=4"])
    f = make_featurizer(TASK, cfg, tmp_path)
    assert isinstance(f, EncoderFeaturizer if kind == "encoder" else TextFeaturizer)
    with pytest.raises(Exception, match=r"not fitted|fit"):
        f.transform(TEXTS[:2])
    assert f.fit(TEXTS) is f
    out = f.transform(TEXTS[:7])
    assert isinstance(out, Features) and len(out) == 7
    assert out.dense.shape == (7, 4) and out.dense.dtype == np.float32
    assert out.small.shape[0] == 7
    # the learned state round-trips without pickle and gives the same features
    g = make_featurizer(TASK, cfg, tmp_path).load_state(f.state())
    again = g.transform(TEXTS[:7])
    np.testing.assert_allclose(again.dense, out.dense, atol=1e-6)
    small = out.small.toarray() if hasattr(out.small, "toarray") else out.small
    small2 = again.small.toarray() if hasattr(again.small, "toarray") else again.small
    np.testing.assert_allclose(small2, small, atol=1e-6)
    if kind == "encoder":
        assert (tmp_path / "embeddings.sqlite").is_file()


def test_encoder_state_refuses_another_model(tmp_path: Path) -> None:
    cfg = with_overrides(KCMConfig(), ["features.kind=encoder", "features.judge_dim=4"])
    state = make_featurizer(TASK, cfg).fit(TEXTS).state()
    state["model_id"] = np.frombuffer(b"another-model:0123:128", np.uint8)
    with pytest.raises(DataError, match=r"another-model.*features.encoder.model_path"):
        make_featurizer(TASK, cfg).load_state(state)


def test_auto_kind_follows_the_backend() -> None:
    base = KCMConfig()
    assert features_kind(TASK, with_overrides(base, ["large.backend=replay"])) == "encoder"
    assert features_kind(TASK, with_overrides(base, ["large.backend=openai"])) == "encoder"
    numeric = Task(kind="numeric", label_names=("a", "b"))
    assert features_kind(numeric, with_overrides(base, ["features.kind=encoder"])) == "numeric"
    assert features_kind(TASK, with_overrides(base, ["features.kind=tfidf"])) == "tfidf"


def test_feature_kind_is_frozen() -> None:
    built = with_overrides(KCMConfig(), ["features.kind=encoder"])
    with pytest.raises(ConfigError, match=r"features.kind='tfidf'.*built with 'encoder'"):
        check_frozen(built, with_overrides(built, ["features.kind=tfidf"]))
    with pytest.raises(ConfigError, match=r"features\.encoder\.model_path"):
        check_frozen(built, with_overrides(built, ["features.encoder.model_path=/elsewhere"]))
