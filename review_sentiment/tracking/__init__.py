"""Tracking: how a model is logged to MLflow, what the registry holds, and when `champion` moves."""
