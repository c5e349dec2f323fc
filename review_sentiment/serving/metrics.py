"""The service's Prometheus metrics at /metrics.

HTTP requests by route, method and status, and their latency histogram, come from
prometheus-fastapi-instrumentator; predictions by label, model version and variant, the prediction
log's queue and the served versions' latest monitoring status are ours. Each app has its own
registry, so apps built in one process (the tests) do not share counts.
"""
from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator

from review_sentiment.constants import CHAMPION
from review_sentiment.serving.model_watcher import ModelWatcher
from review_sentiment.serving.prediction_log import PredictionLog


class _LogState(Collector):
    """Reads the log's counters at scrape time (they live in the log; nothing to keep in step)."""

    def __init__(self, prediction_log: PredictionLog):
        self.prediction_log = prediction_log

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = self.prediction_log.state
        yield GaugeMetricFamily("prediction_log_queued_rows", "Rows waiting to be committed to the prediction log",
                                value=state.queued_rows)
        yield CounterMetricFamily("prediction_log_written_rows", "Rows committed to the prediction log",
                                  value=state.written_rows)
        yield CounterMetricFamily("prediction_log_failed_rows", "Rows the prediction log's database refused",
                                  value=state.failed_rows)
        yield CounterMetricFamily("prediction_log_rejected_requests", "Requests refused (503) while the queue was "
                                  "full", value=state.rejected_requests)


class _Monitoring(Collector):
    """The latest monitoring check's status of each served version (the check records it on the version;
    the watcher reads it with every poll): 1 for the status it has, so an alert can fire on
    `model_monitoring_status{status="suspect-feedback"} == 1`."""

    def __init__(self, watcher: ModelWatcher):
        self.watcher = watcher

    def collect(self) -> Iterator[GaugeMetricFamily]:
        variants = self.watcher.current
        gauge = GaugeMetricFamily("model_monitoring_status", "The served version's latest monitoring check status",
                                  labels=["variant", "model_version", "status"])
        for variant, status in variants.monitoring.items():
            served = variants.champion if variant == CHAMPION else variants.challenger
            if served is not None:
                gauge.add_metric([variant, served.version, status], 1)
        yield gauge


def instrument(app: FastAPI, prediction_log: PredictionLog | None, watcher: ModelWatcher) -> Counter:
    """Add /metrics to `app`; returns the predictions counter, for the /predict route to count with."""
    registry = CollectorRegistry()
    registry.register(_Monitoring(watcher))
    Instrumentator(registry=registry, should_group_status_codes=False, excluded_handlers=["/metrics"]).instrument(
        app).expose(app, include_in_schema=False)
    if prediction_log is not None:
        registry.register(_LogState(prediction_log))
    return Counter("predictions", "Predictions answered, by label, model version and variant",
                   ["label", "model_version", "variant"], registry=registry)
