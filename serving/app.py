"""`zhijian serve`: the scorer behind FastAPI.

``POST /v1/score`` takes one transcript or a list and answers with what ``zhijian score --json``
prints; ``GET /healthz`` says whether the model is loaded and on which device.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, TypeAdapter

from zhijian.scorer import Scorer
from zhijian.transcripts import Transcript, TranscriptError, parse_transcript


class LabelScore(BaseModel):
    label: str
    prob: float


class TurnScore(BaseModel):
    index: int
    role: str
    text: str
    labels: list[LabelScore] | None = None
    tone: float | None = None


class DialogueScore(BaseModel):
    id: str
    turns: list[TurnScore]
    meta: dict[str, Any] | None = None


class Health(BaseModel):
    status: str
    device: str
    model: str


def get_scorer(request: Request) -> Scorer:
    """The scorer loaded at startup (a dependency, so tests can override it)."""
    return request.app.state.scorer


ScorerDep = Annotated[Scorer, Depends(get_scorer)]


SCORE_REQUEST_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": TypeAdapter(Transcript | list[Transcript]).json_schema()}},
    }
}


async def read_transcripts_body(request: Request) -> Transcript | list[Transcript]:
    """The body as JSON whatever its content type (`curl -d @chat.json` sends a form type), validated.

    Errors name the field: ``[1].turns[0].role: Input should be 'agent' or 'customer'``.
    """
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HTTPException(400, f"the body is not valid JSON: {error}") from None
    if isinstance(data, dict):
        items, single = [data], True
    elif isinstance(data, list) and data:
        items, single = data, False
    else:
        raise HTTPException(422, "the body must be one transcript (an object) or a non-empty list of them")
    dialogues, problems = [], []
    for number, item in enumerate(items):
        try:
            dialogues.append(parse_transcript(item, "body" if single else f"body[{number}]"))
        except TranscriptError as error:
            problems.append(str(error))
    if problems:
        raise HTTPException(422, problems)
    return dialogues[0] if single else dialogues


def create_app(model_dir: str | Path, device: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.scorer = Scorer.load(model_dir, device)
        # One forward pass at a time: torch already uses every core for one batch.
        app.state.lock = asyncio.Lock()
        yield

    app = FastAPI(title="Zhijian 质检", version="0.1.0", lifespan=lifespan)

    @app.get("/healthz")
    def healthz(scorer: ScorerDep) -> Health:
        return Health(status="ok", device=scorer.device, model=str(model_dir))

    @app.post("/v1/score", response_model_exclude_none=True, openapi_extra=SCORE_REQUEST_DOC)
    async def score(request: Request, scorer: ScorerDep) -> DialogueScore | list[DialogueScore]:
        """One transcript (an object) or several (a list), in the taxonomy's format."""
        body = await read_transcripts_body(request)
        dialogues = body if isinstance(body, list) else [body]
        async with request.app.state.lock:
            results = await asyncio.to_thread(scorer.score, dialogues)
        return results if isinstance(body, list) else results[0]

    return app
