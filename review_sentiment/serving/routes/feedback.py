"""POST /feedback: a logged prediction's true label, with who gave it; the first label stands."""
from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request

from review_sentiment.constants import LABEL_NAMES
from review_sentiment.serving.prediction_log import Feedback
from review_sentiment.serving.routes.log_writes import committed, queued
from review_sentiment.serving.routes.state import Service
from review_sentiment.serving.schemas import FeedbackRequest, FeedbackResponse

router = APIRouter()


@router.post("/feedback", response_model=FeedbackResponse, responses={
    401: {"description": "API key missing or wrong (only when the service has one)"},
    404: {"description": "unknown prediction id"},
    409: {"description": "this prediction already has a different true label"},
    503: {"description": "prediction log unavailable or behind (see Retry-After)"}})
async def feedback(body: FeedbackRequest, request: Request, service: Service) -> FeedbackResponse:
    """Record the true label of a logged prediction (the A/B report's macro-F1 uses it), with who gave
    it (the API key's identity, or anonymous on a service without one) and from which address. Only
    labels given with a key are trusted to train and judge models by default. The first label
    stands: sending it again is fine, a different one is refused."""
    if service.prediction_log is None:
        raise HTTPException(503, "this service keeps no prediction log (started with --no-prediction-log)")
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    client = request.client.host if request.client else None
    outcome = await committed(queued(service.prediction_log.feedback, body.prediction_id,
                                     LABEL_NAMES.index(body.label), now, service.giver, client))
    if outcome is Feedback.UNKNOWN:
        raise HTTPException(404, f"no logged prediction has id {body.prediction_id!r}")
    if outcome is Feedback.CONFLICT:
        raise HTTPException(409, f"prediction {body.prediction_id!r} already has a different true label; "
                                 f"a recorded label is never overwritten")
    return FeedbackResponse(prediction_id=body.prediction_id, label=body.label)
