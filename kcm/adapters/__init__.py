"""Adapters: the only modules that import great_expectations, mlflow and dvc."""
