"""The small model and the large-model backends."""
