"""The pyfunc model definition MLflow loads "from code" (no pickle)."""

import mlflow

from kcm.adapters.mlflow_pyfunc import KCMSystemModel

mlflow.models.set_model(KCMSystemModel())
