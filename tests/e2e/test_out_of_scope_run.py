"""End-to-end: classes held back from the task arrive as out-of-scope queries; the large model
(through the configured rule) says so, the answers say ``out_of_scope``, and the figures reach
the report and the MLflow parent run. A batch carrying the ``out_of_scope`` label is valid."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kcm_app.cli import main


@pytest.mark.slow
def test_out_of_scope_queries_are_answered_and_counted(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    out = tmp_path / "ws"
    sets = [
        "data.out_of_scope_classes=2",
        "data.stream.n_batches=3",
        "data.stream.label_fraction=0.5",
        "large.out_of_scope.below=0.9",
    ]
    args = ["run", "--no-progress", "--in-process", "--out", str(out)]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert not rep["quarantined"], "a batch with out_of_scope labels is valid input"
    assert len(rep["cycles"]) == 3
    for c in rep["cycles"]:
        assert c["oos_recall"] is not None and c["oos_confident_wrong"] is not None
    assert sum(c["out_of_scope"] for c in rep["cycles"]) > 0
    final = rep["final_out_of_scope"]
    assert final["n"] > 50 and final["oos_recall"] > 0.3
    answers = pd.concat(pd.read_csv(p) for p in sorted((out / "data/answers").glob("*.csv")))
    assert (answers["label"] == "out_of_scope").sum() == sum(
        c["out_of_scope"] for c in rep["cycles"]
    )
    assert set(answers.loc[answers["label"] == "out_of_scope", "answered_by"]) == {"large"}
    c = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow/mlflow.db")
    exp = c.get_experiment_by_name("kcm-ws")  # kcm-<project>
    parent = [
        r for r in c.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(parent) == 1
    for key in ("batch_oos_recall", "oos_view_oos_confident_wrong", "batch_out_of_scope"):
        history = c.get_metric_history(parent[0].info.run_id, key)
        assert sorted(m.step for m in history) == [0, 1, 2], key
