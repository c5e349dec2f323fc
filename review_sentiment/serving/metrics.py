"""The service's Prometheus metrics at /metrics.

HTTP requests by route, method and status, and their latency histogram (`HttpMetrics`, named as
prometheus-fastapi-instrumentator 8.1 names them: `http_requests_total{handler,method,status}` and
`http_request_duration_seconds{handler,method}`); predictions by label, model version and variant, the
prediction log's queue and the served versions' latest monitoring status. Each app has its own
registry, so apps built in one process (the tests) do not share counts.

`HttpMetrics` is ours, not the instrumentator, because the instrumentator's own work per request (it
matches the route again, builds a Request, a Response and an Info, and gathers async hooks) cost a
fifth of the service's throughput on single reviews; this reads the route the router matched and
updates two metrics. A path no route matches is counted as handler "none", so no client can add series.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


METRICS_PATH = "/metrics"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)  # answers take ms


class HttpMetrics:
    """ASGI middleware: each HTTP request counted by route, method and status, and timed to its last byte."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry):
        self.app = app
        self.requests = Counter("http_requests", "HTTP requests by route, method and status",
                                ["handler", "method", "status"], registry=registry)
        self.latency = Histogram("http_request_duration_seconds", "Seconds from a request's arrival to the end of "
                                 "its answer", ["handler", "method"], buckets=LATENCY_BUCKETS, registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # 500: what the server answers when the app raises

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            handler = getattr(scope.get("route"), "path", "none")  # the template the router matched
            if handler != METRICS_PATH:
                self.requests.labels(handler, scope["method"], str(status)).inc()
                self.latency.labels(handler, scope["method"]).observe(time.perf_counter() - started)


def instrument(app: FastAPI, prediction_log: PredictionLog | None, watcher: ModelWatcher) -> Counter:
    """Add /metrics to `app`; returns the predictions counter, for the /predict route to count with."""
    registry = CollectorRegistry()
    registry.register(_Monitoring(watcher))
    app.add_middleware(HttpMetrics, registry=registry)

    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    if prediction_log is not None:
        registry.register(_LogState(prediction_log))
    return Counter("predictions", "Predictions answered, by label, model version and variant",
                   ["label", "model_version", "variant"], registry=registry)
