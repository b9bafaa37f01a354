"""`zhijian serve`: the scorer behind FastAPI.

``POST /v1/score`` takes one transcript or a list and answers with what ``zhijian score --json``
prints; ``GET /healthz`` says whether the model is loaded and on which device.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from zhijian.scorer import Scorer
from zhijian.transcripts import Transcript


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

    @app.post("/v1/score", response_model_exclude_none=True)
    async def score(
        body: Transcript | list[Transcript], request: Request, scorer: ScorerDep
    ) -> DialogueScore | list[DialogueScore]:
        dialogues = body if isinstance(body, list) else [body]
        async with request.app.state.lock:
            results = await asyncio.to_thread(scorer.score, dialogues)
        return results if isinstance(body, list) else results[0]

    return app
