"""The prediction service's HTTP app: its routes (in `routes/`), limits and error shapes put together.

Everything a caller sends is validated into a one-line 4xx (`schemas`); nothing a caller sends chooses
a model, a path or a URI — the served models come only from the `ModelWatcher`. A prediction is
answered only once the prediction log has committed it; prediction ids are 128-bit random, so
feedback cannot be guessed onto someone else's prediction, and a first true label is never overwritten.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

import review_sentiment
from review_sentiment.serving.metrics import instrument
from review_sentiment.serving.model_watcher import ModelWatcher
from review_sentiment.serving.prediction_log import PredictionLog
from review_sentiment.serving.routes import feedback, predict, status
from review_sentiment.serving.routes.state import ServiceState, authorized
from review_sentiment.serving.schemas import (
    MAX_BODY_BYTES,
    MAX_REVIEW_CHARS,
    MAX_REVIEWS,
    NOT_JSON,
    BodyLimit,
    one_line,
    sent_as_json,
)


def create_app(watcher: ModelWatcher, prediction_log: PredictionLog | None, challenger_share: float,
               api_key: str | None = None) -> FastAPI:
    """The service; `prediction_log` None logs nothing, `api_key` guards the write endpoints."""
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watcher.start()
        yield
        if prediction_log is not None:  # first: a watcher stuck in a download must not hold up the log
            await prediction_log.close()
        watcher.stop()

    description = (f"Labels product reviews with the registry's `champion` model. Up to {MAX_REVIEWS} reviews per "
                   f"request, each at most {MAX_REVIEW_CHARS} characters; bodies over {MAX_BODY_BYTES // 2**20} MiB "
                   "get 413.")
    app = FastAPIOffline(title="Flipkart review sentiment", description=description, lifespan=lifespan,
                         version=review_sentiment.__version__)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.state.service = ServiceState(watcher, prediction_log, challenger_share, api_key,
                                     instrument(app, prediction_log, watcher))
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.include_router(predict.router)
    app.include_router(feedback.router, dependencies=[Depends(authorized)] if api_key else [])
    app.include_router(status.router)
    return app


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body the schemas refuse: 415 if it is not JSON at all, else 422 with the first problem in one line."""
    if not sent_as_json(request.headers.get("content-type")):
        return JSONResponse({"detail": NOT_JSON}, 415)
    return JSONResponse({"detail": one_line(list(exc.errors()))}, status_code=422)
