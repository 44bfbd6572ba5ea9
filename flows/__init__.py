"""Prefect flows: thin wrappers, one task per kcm.pipeline function. Only this package imports
prefect; the library (kcm/) never does."""
