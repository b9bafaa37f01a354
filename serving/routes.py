"""The routes: the key-guarded ``/v1`` API, the probes (``/healthz``, ``/readyz``, ``/metrics``) and the page at ``/``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.batcher import Overloaded
from serving.deps import InspectorDep, StateDep, TranscriptsDep, get_inspector, require_api_key, unavailable, utterance_dialogues
from serving.schemas import SCORE_REQUEST_DOC, Health, LabelInfo, ModelInfo, Ready, UtterancesRequest, UtterancesResponse
from serving.state import ServingState
from zhijian.result import DialogueResult
from zhijian.taxonomy import LABEL_BY_ID, LABEL_IDS
from zhijian.transcripts import Transcript

log = logging.getLogger("zhijian.serving")
STATIC = Path(__file__).resolve().parent / "static"
BUSY = {503: {"description": "Busy; see Retry-After."}}
LIMITS_SHOWN = ("max_dialogues", "max_turns", "max_turn_chars", "max_request_bytes", "queue_size", "batch_max_dialogues")

api = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
probes = APIRouter()
page = APIRouter()


async def inspect(state: ServingState, dialogues: list[Transcript]) -> list[DialogueResult]:
    """The dialogues through the micro-batcher: 503 while not ready, and when the queue is full."""
    get_inspector(state)  # 503 with the reason when no model is loaded
    try:
        return await state.batcher.submit(dialogues)
    except Overloaded as error:
        raise unavailable(f"busy: {error}; retry shortly") from None


@api.post("/score", openapi_extra=SCORE_REQUEST_DOC, responses=BUSY)
async def score(state: StateDep, transcripts: TranscriptsDep) -> DialogueResult | list[DialogueResult]:
    """One transcript (an object), several (a list), or a plain-text chat (`text/plain`), in the taxonomy's format."""
    dialogues, single = transcripts
    if state.limits.log_text:
        log.info("texts: %s", json.dumps([d.model_dump() for d in dialogues], ensure_ascii=False))
    results = await inspect(state, dialogues)
    return results[0] if single else results


@api.post("/utterances", responses=BUSY)
async def utterances(state: StateDep, body: UtterancesRequest) -> UtterancesResponse:
    """Agent replies with optional context: labels, tone and evidence per reply, while the agent types."""
    results = await inspect(state, utterance_dialogues(body.utterances, state.limits))
    return UtterancesResponse(results=[result.turns[-1] for result in results], versions=results[0].versions.model_dump())


@api.get("/model")
def model_info(state: StateDep, inspector: InspectorDep) -> ModelInfo:
    """Labels with their thresholds, model and template versions, device and backend, limits."""
    scorer = inspector.scorer
    return ModelInfo(
        model=inspector.versions.model, template=inspector.versions.template, device=scorer.device,
        backend=scorer.config.serving.backend, calibrated=bool(scorer.config.calibration.temperature),
        labels=[
            LabelInfo(id=label, zh=LABEL_BY_ID[label].zh, severity=LABEL_BY_ID[label].severity.value, threshold=float(scorer.thresholds[k]))
            for k, label in enumerate(LABEL_IDS)
        ],
        limits={key: getattr(state.limits, key) for key in LIMITS_SHOWN},
    )


@probes.get("/healthz")
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@probes.get("/readyz", responses={503: {"model": Ready}})
def readyz(state: StateDep):
    """The model is loaded and warmed up (503 until then)."""
    if not state.ready:
        return JSONResponse(Ready(ready=False, reason=state.not_ready).model_dump(), status_code=503)
    return Ready(
        ready=True, model=state.inspector.versions.model, template=state.template_file.current().version_tag,
        template_error=state.template_file.error,
    )


@probes.get("/metrics", include_in_schema=False)
def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@page.get("/", include_in_schema=False)
def inspector_page() -> FileResponse:
    """The inspector page: paste a chat or drop a JSON Lines file (static, no build step)."""
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


ROUTERS = (api, probes, page)
