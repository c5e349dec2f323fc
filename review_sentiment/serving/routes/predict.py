"""POST /predict: label reviews with the champion (or, for a share of callers, the challenger), each
answer committed to the prediction log before it is sent."""
from __future__ import annotations

import collections
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic_core import to_json

from review_sentiment.constants import CHALLENGER, CHAMPION
from review_sentiment.serving.model_watcher import choose_variant
from review_sentiment.serving.prediction_log import LoggedRequest, new_prediction_ids
from review_sentiment.serving.routes.log_writes import committed, queued
from review_sentiment.serving.routes.state import Service
from review_sentiment.serving.schemas import CALLER_ID_HEADER, PREDICT_OPENAPI, PredictResponse, predict_request

router = APIRouter()


@router.post("/predict", response_model=PredictResponse, openapi_extra=PREDICT_OPENAPI, responses={
    413: {"description": "body too large"},
    415: {"description": "the body is not sent as JSON"},
    422: {"description": "the body or the caller id is not valid: `detail` says where and why, in one line"},
    503: {"description": "no model loaded yet, or the prediction log is full (see Retry-After)"}})
async def predict(request: Request, service: Service) -> Response:
    """Label reviews, in order, with the champion (or, for a share of callers, the challenger)."""
    x_caller_id = request.headers.get(CALLER_ID_HEADER)
    body = predict_request(await request.body(), request.headers.get("content-type"), x_caller_id)
    variants = service.watcher.current
    if variants.champion is None:
        raise HTTPException(503, variants.problem)
    variant = choose_variant(x_caller_id, service.challenger_share) if variants.challenger else CHAMPION
    model = variants.challenger if variant == CHALLENGER and variants.challenger else variants.champion
    scored = model.score(body.reviews, body.explain)
    answered = LoggedRequest(
        request_id=secrets.token_hex(16), prediction_ids=new_prediction_ids(len(body.reviews)),
        time=datetime.now(UTC).isoformat(timespec="milliseconds"),
        variant=variant, model_name=model.name, model_version=model.version, caller_id=x_caller_id,
        reviews=body.reviews, labels=scored.label_ids, scores=scored.scores, probabilities=scored.probabilities,
        latency_ms=(time.perf_counter() - request.scope["received_at"]) * 1000)
    explanations: Sequence[list[tuple[str, float]] | None] = scored.explanations or [None] * len(body.reviews)
    probabilities: Sequence[float | None] = scored.probabilities or [None] * len(body.reviews)
    predictions = [
        {"id": pid, "label": label, "label_id": label_id, "score": score, "probability": probability,
         "model_name": model.name, "model_version": model.version, "variant": variant,
         "explanation": None if terms is None else [{"term": t, "weight": w} for t, w in terms]}
        for pid, label, label_id, score, probability, terms in zip(
            answered.prediction_ids, scored.labels, scored.label_ids, scored.scores, probabilities, explanations,
            strict=True)
    ]
    if service.prediction_log is not None:
        await committed(queued(service.prediction_log.record, answered))
    for label, count in collections.Counter(scored.labels).items():
        service.predictions_made.labels(label, model.version, variant).inc(count)
    # The bytes `response_model` would give, without validating what was just built here: 0.06 ms
    # for 100 predictions instead of 0.21 ms. The route still declares PredictResponse for /docs.
    return Response(to_json({"predictions": predictions}), media_type="application/json")
