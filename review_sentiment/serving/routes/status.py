"""GET /health, /model and the web page: what is served, and whether it can serve."""
from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse

from review_sentiment.serving.routes.state import Service

PAGE = files("review_sentiment.serving") / "web" / "index.html"
router = APIRouter()


@router.get("/health", responses={503: {"description": "no model loaded yet"}})
async def health(service: Service) -> JSONResponse:
    """200 once a champion is loaded: "ready", or "degraded" with the reason when a version the
    registry points at could not be loaded (the previous one serves) or the log cannot write."""
    variants = service.watcher.current
    writer = service.prediction_log.state.report() if service.prediction_log else {"state": "off"}
    if variants.champion is None:
        return JSONResponse({"status": "unavailable", "detail": variants.problem, "prediction_log": writer},
                            status_code=503)
    log_trouble = None if writer["state"] in {"writing", "off"} else f"prediction log {writer['state']}"
    detail = "; ".join(t for t in (variants.degraded, log_trouble) if t) or None
    return JSONResponse({"status": "degraded" if detail else "ready", "detail": detail,
                         "champion_version": variants.champion.version,
                         "challenger_version": variants.challenger.version if variants.challenger else None,
                         "prediction_log": writer})


@router.get("/model")
async def model_info(service: Service) -> dict[str, Any]:
    """What is served: name, version, alias, family, logged metrics and data digest per variant."""
    variants = service.watcher.current
    return {
        "champion": variants.champion.describe() if variants.champion else None,
        "challenger": variants.challenger.describe() if variants.challenger else None,
        "challenger_share": service.challenger_share if variants.challenger else 0.0,
        "problem": variants.problem or variants.degraded,
        "registry_checked_at": variants.checked_at,
        "poll_seconds": service.watcher.poll_seconds,
    }


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def home() -> HTMLResponse:
    return HTMLResponse(_page())


@functools.cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")
