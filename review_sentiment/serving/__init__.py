"""Serving: the FastAPI app, the model watcher, the prediction log, the A/B report and the web page."""
