"""Orchestration: the Prefect flows (scheduled retrain, batch scoring) and a local Prefect server."""
