"""What the routes serve with, kept on `app.state` by `create_app` and handed to them as dependencies."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter

from review_sentiment.constants import ANONYMOUS
from review_sentiment.serving.model_watcher import ModelWatcher
from review_sentiment.serving.prediction_log import PredictionLog


@dataclass(frozen=True)
class ServiceState:
    watcher: ModelWatcher
    prediction_log: PredictionLog | None  # None: the service logs nothing
    challenger_share: float
    api_key: str | None  # None: the write endpoints are open (loopback only)
    predictions_made: Counter  # /metrics' count of answered predictions

    @property
    def giver(self) -> str:
        """Who a label comes from, as the log records it."""
        return key_identity(self.api_key) if self.api_key else ANONYMOUS


def key_identity(api_key: str) -> str:
    """Who gave a label with this key, as the log records it: a digest, never the key itself."""
    return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


async def service_state(request: Request) -> ServiceState:
    """Async on purpose: FastAPI runs a plain `def` dependency on its thread pool, a hop that cost
    ~0.2 ms a request (single reviews: 1,455 → 1,099 req/s in bench_serving.py)."""
    state: ServiceState = request.app.state.service
    return state


Service = Annotated[ServiceState, Depends(service_state)]


async def authorized(service: Service, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(
        HTTPBearer(auto_error=False, description="the service's API key"))]) -> None:
    """401 unless the request carries the service's API key (when it has one)."""
    if service.api_key is None:
        return
    if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), service.api_key.encode()):
        raise HTTPException(401, "this endpoint needs the header 'Authorization: Bearer <API key>' with the "
                                 "key the service was started with", headers={"WWW-Authenticate": "Bearer"})
