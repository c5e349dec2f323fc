"""What the service accepts and answers: limits, request and response shapes, and how a refused
request is said in one line. Everything a caller sends is validated here into a one-line 4xx."""
from __future__ import annotations

import codecs
import email.message
import functools
import time
from typing import Annotated, Any, Literal

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

MAX_REVIEWS = 1000
MAX_REVIEW_CHARS = 5000
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_CALLER_ID_CHARS = 200


def _not_blank(review: str) -> str:
    if not review.strip():
        raise ValueError("review is empty or whitespace only")
    return review


Review = Annotated[StrictStr, Field(max_length=MAX_REVIEW_CHARS), AfterValidator(_not_blank)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"reviews": ["Superb laptop, great battery", "Not good at all, stopped working"]}]})

    reviews: Annotated[list[Review], Field(min_length=1, max_length=MAX_REVIEWS)]
    explain: StrictBool = Field(False, description="add the terms that pushed each decision most")


CALLER_ID_HEADER = "x-caller-id"
NOT_JSON = "send the body as JSON (Content-Type: application/json)"


@functools.lru_cache(maxsize=64)
def sent_as_json(content_type: str | None) -> bool:
    """Whether a body of this Content-Type is read as JSON: application/json or application/*+json, any
    case, any parameters, and not when none is said; FastAPI 0.150's rule (`strict_content_type`, in
    fastapi/routing.py), which the routes that leave their body to FastAPI follow."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


# /predict reads its own body and caller id (`predict_request`), so /docs learns them from here
PREDICT_OPENAPI = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": PredictRequest.model_json_schema()}}},
    "parameters": [{"name": CALLER_ID_HEADER, "in": "header", "required": False,
                    "description": "stable id of the caller: the same id always gets the same variant",
                    "schema": {"type": "string", "maxLength": MAX_CALLER_ID_CHARS}}],
}


def predict_request(body: bytes, content_type: str | None, caller_id: str | None) -> PredictRequest:
    """The request, parsed and validated in one pass from the raw bytes (UTF-8, as RFC 8259 wants JSON
    between systems; a leading byte order mark is ignored); 415 for a body not sent as JSON, else
    RequestValidationError (a one-line 422) naming the caller id's problem first, as FastAPI did. FastAPI's
    own body and header parameters (json.loads, then validation of the objects, then header lookups) cost
    /predict 15% of its single-review throughput (bench_serving.py)."""
    if not sent_as_json(content_type):
        raise HTTPException(415, NOT_JSON)
    errors: list[dict[str, Any]] = []
    if caller_id is not None and len(caller_id) > MAX_CALLER_ID_CHARS:
        errors.append({"type": "string_too_long", "loc": ("header", CALLER_ID_HEADER),
                       "msg": f"String should have at most {MAX_CALLER_ID_CHARS} characters"})
    try:
        request = PredictRequest.model_validate_json(body.removeprefix(codecs.BOM_UTF8))
    except ValidationError as err:
        errors += [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]
    if errors:
        raise RequestValidationError(errors)
    return request


class Term(BaseModel):
    term: str = Field(description="stemmed term (or bigram) as the model sees it")
    weight: float = Field(description="TF-IDF weight × model weight; > 0 pushes towards positive")


class Prediction(BaseModel):
    id: str = Field(description="prediction id, for POST /feedback")
    label: Literal["negative", "positive"]
    label_id: Literal[0, 1]
    score: float = Field(description="the model's raw score, monotone in its decision; see GET /model for what it "
                                     "is for this model (not a probability for every family)")
    probability: float | None = Field(description=(
        "calibrated P(positive): of reviews given 0.8, about 80% are positive. Null for a version logged "
        "before calibration (GET /model says so). The label is the model's own decision, tuned for macro-F1, "
        "so near the boundary a positive label can come with a probability under 0.5"))
    model_name: str
    model_version: str
    variant: Literal["champion", "challenger"]
    explanation: list[Term] | None = None


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    label: Literal["negative", "positive"] = Field(description="the review's true sentiment")


class FeedbackResponse(BaseModel):
    prediction_id: str
    label: Literal["negative", "positive"]


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413 before anything parses them, and stamp
    each request with its arrival time (the logged latency starts there)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope["received_at"] = time.perf_counter()
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                too_big = JSONResponse({"detail": f"request body is over {self.max_bytes} bytes"}, 413)
                return await too_big(scope, receive, send)
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        return await self.app(scope, replay, send)


def one_line(errors: list[dict]) -> str:
    """The first validation error as `where: what`, e.g. `reviews[2]: review is empty ...`."""
    first = errors[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"][1:]).lstrip(".")
    if first["type"] == "json_invalid":
        what = f"body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})"
    elif first["type"] in ("model_type", "model_attributes_type"):
        what = 'body must be a JSON object, e.g. {"reviews": ["Great battery life"]}'
    else:
        what = f"{where or 'body'}: {first['msg'].removeprefix('Value error, ')}"
    more = len(errors) - 1
    return what + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
