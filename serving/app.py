"""`zhijian serve`: the inspector behind FastAPI.

``POST /v1/score`` takes one transcript or a list and answers with what ``zhijian score --json``
prints (the same :class:`DialogueResult`); ``GET /healthz`` says whether the model is loaded, on
which device, and which model and scoring template versions answer. The template file is re-read
when it changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, TypeAdapter

from zhijian.config import ConfigError
from zhijian.inspector import Inspector, model_version
from zhijian.result import DialogueResult
from zhijian.scorer import Scorer
from zhijian.template import DEFAULT_TEMPLATE, ScoringTemplate, load_template
from zhijian.transcripts import Transcript, TranscriptError, parse_transcript


log = logging.getLogger("zhijian.serving")


class Health(BaseModel):
    status: str
    device: str
    model: str
    template: str
    template_error: str | None = None


class TemplateFile:
    """The scoring template, re-read when its file changes: a shop edits its rules, the next request uses them.

    A file that no longer validates is reported (``/healthz``, the log) and the last good template
    stays in use, so a typo never takes scoring down.
    """

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else DEFAULT_TEMPLATE
        self.template = load_template(self.path)  # at startup a bad template is an error
        self.mtime = self.path.stat().st_mtime_ns
        self.error: str | None = None

    def current(self) -> ScoringTemplate:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError as error:
            self.error = f"{self.path}: {error.strerror}; still using {self.template.version_tag}"
            return self.template
        if mtime != self.mtime:
            self.mtime = mtime
            try:
                self.template, self.error = load_template(self.path), None
                log.info("scoring template reloaded: %s", self.template.version_tag)
            except ConfigError as error:
                self.error = f"{error}; still using {self.template.version_tag}"
                log.error(self.error)
        return self.template


def get_inspector(request: Request) -> Inspector:
    """The inspector loaded at startup, under the template as it is now (a dependency, so tests can override it)."""
    state = request.app.state
    template = state.template_file.current()
    if template is not state.inspector.template:
        state.inspector = state.inspector.with_template(template)
    return state.inspector


InspectorDep = Annotated[Inspector, Depends(get_inspector)]


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


def create_app(model_dir: str | Path, device: str | None = None, template: str | Path | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.template_file = TemplateFile(template)
        app.state.inspector = Inspector(
            Scorer.load(model_dir, device), app.state.template_file.template, model_version(model_dir)
        )
        # One forward pass at a time: torch already uses every core for one batch.
        app.state.lock = asyncio.Lock()
        yield

    app = FastAPI(title="Zhijian 质检", version="0.1.0", lifespan=lifespan)

    @app.get("/healthz")
    def healthz(request: Request, inspector: InspectorDep) -> Health:
        return Health(
            status="ok", device=inspector.scorer.device, model=inspector.versions.model,
            template=inspector.versions.template, template_error=request.app.state.template_file.error,
        )

    @app.post("/v1/score", openapi_extra=SCORE_REQUEST_DOC)
    async def score(request: Request, inspector: InspectorDep) -> DialogueResult | list[DialogueResult]:
        """One transcript (an object) or several (a list), in the taxonomy's format."""
        body = await read_transcripts_body(request)
        dialogues = body if isinstance(body, list) else [body]
        async with request.app.state.lock:
            results = await asyncio.to_thread(inspector.inspect, dialogues)
        return results if isinstance(body, list) else results[0]

    return app
