"""The batch's answers, where a downstream job reads them: one CSV per processed batch under
``flow.answers`` (default ``data/answers/`` in the workspace; a folder or an fsspec URL),
named after the batch. One row per accepted input: the batch's row id, the label answered
(``out_of_scope`` where the large model said no class fits),
C_x, who answered (small / large / small-fallback) and, where the large call failed, why.
Written once, whole (atomic rename locally), before the batch is learned: the ``deliver``
step of the cycle (``deliver_answers``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kcm.answers import Predictions
from kcm.config import KCMConfig
from kcm.data.batch import Batch, Task, label_name
from kcm.steps.answer import assemble
from kcm.steps.systems import challenger
from kcm.workspace import Workspace, atomic_write_bytes


def answers_location(cfg: KCMConfig, ws: Workspace) -> str:
    where = cfg.flow.answers
    if "://" in where or Path(where).is_absolute():
        return where
    return str(ws.root / where)


def answers_frame(batch: Batch, preds: Predictions, task: Task) -> pd.DataFrame:
    errors = preds.large_errors if preds.large_errors is not None else [""] * len(batch)
    return pd.DataFrame(
        {
            "id": list(batch.ids),
            "label": [label_name(task, int(k)) for k in preds.answer],
            "confidence": preds.confidence.astype(float),
            "answered_by": list(preds.answered_by),
            "large_error": list(errors),
            "cost": preds.cost if preds.cost is not None else np.zeros(len(batch)),
        }
    )


def deliver(cfg: KCMConfig, ws: Workspace, name: str, batch: Batch, preds: Predictions) -> str:
    """Write the answers of batch ``name``; returns where they are (relative to the workspace
    when inside it)."""
    import fsspec

    data = answers_frame(batch, preds, ws.task()).to_csv(index=False).encode()
    stem = name.rsplit(".", 1)[0] if "." in name else name
    root = answers_location(cfg, ws)
    if "://" not in root:
        path = Path(root) / f"{stem}.csv"
        atomic_write_bytes(path, data)
        return ws.rel(path)
    url = f"{root.rstrip('/')}/{stem}.csv"
    with fsspec.open(url, "wb") as fh:
        fh.write(data)
    return url


def deliver_answers(cfg: KCMConfig, ws: Workspace, name: str) -> str:
    """The step: assemble the routed batch's answers (the recorded routing and every chunk's
    large-model output) and write them; returns where they are."""
    batch = ws.load_batch(name)
    preds = assemble(ws, name, challenger(ws, cfg), batch)
    return deliver(cfg, ws, name, batch, preds)
