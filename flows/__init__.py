"""Prefect flows: thin wrappers, one task per kcm.steps function. Only this package imports
prefect; the library (kcm/) never does."""
