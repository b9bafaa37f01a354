"""`zhijian serve`: the inspector behind FastAPI.

Routes: ``POST /v1/score`` (one transcript, a list, or a plain-text chat -> the same
:class:`DialogueResult` as ``zhijian score --json``), ``POST /v1/utterances`` (bare agent texts
with optional context, for checks while the agent types), ``GET /v1/model``, ``GET /healthz``
(alive), ``GET /readyz`` (model loaded and warmed up), ``GET /metrics`` (Prometheus), and the
inspector page at ``/``. Requests share model calls through a micro-batcher with a bounded queue;
limits, the optional API key and the scoring template (re-read when its file changes) come from
the model folder's ``serving`` config and the template file.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field, TypeAdapter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.batcher import MicroBatcher, Overloaded
from zhijian.config import ConfigError, ServingSection
from zhijian.model import ModelFolderError
from zhijian.inspector import Inspector, model_version
from zhijian.result import DialogueResult, TurnResult
from zhijian.scorer import Scorer
from zhijian.taxonomy import LABEL_BY_ID, LABEL_IDS
from zhijian.template import DEFAULT_TEMPLATE, ScoringTemplate, load_template
from zhijian.transcripts import Transcript, TranscriptError, parse_text, parse_transcript

log = logging.getLogger("zhijian.serving")
STATIC = Path(__file__).resolve().parent / "static"
RETRY_AFTER_SECONDS = 1


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    reason: str | None = None
    model: str | None = None
    template: str | None = None
    template_error: str | None = None


class LabelInfo(BaseModel):
    id: str
    zh: str
    severity: str
    threshold: float


class ModelInfo(BaseModel):
    model: str
    template: str
    device: str
    backend: str
    calibrated: bool
    labels: list[LabelInfo]
    limits: dict[str, int]


class ContextTurn(BaseModel):
    role: str = Field(pattern="^(agent|customer)$")
    text: str = Field(min_length=1)


class Utterance(BaseModel):
    text: str = Field(min_length=1, description="The agent's reply, as typed so far.")
    context: list[ContextTurn] = Field(default_factory=list, description="Earlier turns, oldest first.")


class UtterancesRequest(BaseModel):
    utterances: list[Utterance] = Field(min_length=1)


class UtterancesResponse(BaseModel):
    results: list[TurnResult]
    versions: dict[str, str]


class TemplateFile:
    """The scoring template, re-read when its file changes: a shop edits its rules, the next request uses them.

    A file that no longer validates is reported (``/readyz``, the log) and the last good template
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


class Metrics:
    """Prometheus metrics in the app's own registry (several apps can live in one process, as in tests)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("zhijian_requests_total", "Requests by route and status.", ["route", "status"], registry=self.registry)
        self.latency = Histogram("zhijian_request_seconds", "Request latency by route.", ["route"], registry=self.registry)
        self.batch_size = Histogram(
            "zhijian_batch_dialogues", "Dialogues per model call.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry
        )
        self.model_latency = Histogram("zhijian_model_seconds", "Seconds per model call (a whole micro-batch).", registry=self.registry)
        self.queue_depth = Gauge("zhijian_queue_depth", "Requests waiting for the model.", registry=self.registry)

    def batch(self, dialogues: int, seconds: float) -> None:
        self.batch_size.observe(dialogues)
        self.model_latency.observe(seconds)


SCORE_REQUEST_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TypeAdapter(Transcript | list[Transcript]).json_schema()},
            "text/plain": {"schema": {"type": "string", "example": "买家: 能开发票吗\n客服: 要发票得加6个点\n"}},
        },
    }
}


def _check_limits(dialogues: list[Transcript], limits: ServingSection, single: bool, field: str = "body") -> None:
    """Every limit breach, named with the field and the config key (422): one check for both /v1 routes.

    On /v1/utterances (``field="utterances"``) a dialogue is an utterance's context and then its reply, and
    turns are named as sent: ``utterances[0].context[2].text``, ``utterances[0].text``.
    """
    problems = []
    if len(dialogues) > limits.max_dialogues:
        problems.append(f"{field}: {len(dialogues)} dialogues, the limit is {limits.max_dialogues} (serving.max_dialogues)")
    for n, dialogue in enumerate(dialogues):
        where = field if single else f"{field}[{n}]"
        if len(dialogue.turns) > limits.max_turns:
            problems.append(f"{where}.turns: {len(dialogue.turns)} turns, the limit is {limits.max_turns} (serving.max_turns)")
        last = len(dialogue.turns) - 1
        for t, turn in enumerate(dialogue.turns):
            if len(turn.text) > limits.max_turn_chars:
                name = f"{where}.turns[{t}]" if field != "utterances" else where if t == last else f"{where}.context[{t}]"
                problems.append(f"{name}.text: {len(turn.text)} characters, the limit is {limits.max_turn_chars} (serving.max_turn_chars)")
    if problems:
        raise HTTPException(422, problems[:20])


class BodyLimit:
    """ASGI middleware: a request body over ``serving.max_request_bytes`` gets a 413, by its Content-Length or,
    for a chunked body, as soon as the bytes received pass the limit: never more than that is buffered."""

    def __init__(self, app, limits_of):
        self.app, self.limits_of = app, limits_of

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits_of().max_request_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = JSONResponse({"detail": f"body: {int(declared)} bytes, the limit is {limit} (serving.max_request_bytes)"}, 413)
            return await response(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # raised inside the route's body read: Starlette answers it as a 413
                raise HTTPException(413, f"body: more than {limit} bytes, the limit is {limit} (serving.max_request_bytes)")
            return message

        await self.app(scope, counted, send)


async def read_transcripts_body(request: Request) -> tuple[list[Transcript], bool]:
    """The dialogues of a request and whether it sent one (an object or a one-dialogue text).

    A plain-text transcript (``text/plain``), or JSON whatever its content type (`curl -d
    @chat.json` sends a form type). Errors name the field: ``body[1]: turns[0].role: ...``.
    """
    raw = await request.body()  # BodyLimit has held it to serving.max_request_bytes
    limits = request.app.state.limits
    if request.headers.get("content-type", "").startswith("text/plain"):
        try:
            dialogues = parse_text(raw.decode("utf-8"), "body")
        except UnicodeDecodeError as error:
            raise HTTPException(400, f"the body is not UTF-8 text: {error}") from None
        except TranscriptError as error:
            raise HTTPException(422, [str(error)]) from None
        if not dialogues:
            raise HTTPException(422, ["body: no turns (one 客服:/买家: line per turn)"])
        _check_limits(dialogues, limits, len(dialogues) == 1)
        return dialogues, len(dialogues) == 1
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
    if len(items) > limits.max_dialogues:
        raise HTTPException(422, [f"body: {len(items)} dialogues, the limit is {limits.max_dialogues} (serving.max_dialogues)"])
    dialogues, problems = [], []
    for number, item in enumerate(items):
        try:
            dialogues.append(parse_transcript(item, "body" if single else f"body[{number}]"))
        except TranscriptError as error:
            problems.append(str(error))
    if problems:
        raise HTTPException(422, problems)
    _check_limits(dialogues, limits, single)
    return dialogues, single


REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a client's X-Request-ID is kept only in this form


def require_api_key(request: Request) -> None:
    """With an API key configured, every /v1 route needs ``Authorization: Bearer <key>``."""
    expected = request.app.state.api_key
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Bytes, not str: compare_digest refuses non-ASCII str (a 500); any such header is simply a wrong key.
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong API key (Authorization: Bearer <key>)", headers={"WWW-Authenticate": "Bearer"})


def current_inspector(app: FastAPI) -> Inspector:
    """The loaded inspector, under the template as it is now (503 with the reason while there is none)."""
    state = app.state
    if not state.ready:
        raise HTTPException(503, f"not ready: {state.not_ready}", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    template = state.template_file.current()
    if template is not state.inspector.template:
        state.inspector = state.inspector.with_template(template)
    return state.inspector


def get_inspector(request: Request) -> Inspector:
    """A dependency, so tests can override it."""
    return current_inspector(request.app)


InspectorDep = Annotated[Inspector, Depends(get_inspector)]
Authorized = [Depends(require_api_key)]


async def _inspect(request: Request, dialogues: list[Transcript]) -> list[DialogueResult]:
    state = request.app.state
    current_inspector(request.app)  # 503 with the reason when no model is loaded
    state.metrics.queue_depth.set(state.batcher.depth)
    try:
        return await state.batcher.submit(dialogues)
    except Overloaded as error:
        raise HTTPException(503, f"busy: {error}; retry shortly", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None


def create_app(
    model_dir: str | Path,
    device: str | None = None,
    template: str | Path | None = None,
    serving: dict[str, Any] | None = None,
    api_key: str | None = None,
) -> FastAPI:
    """The app for one model folder; `serving` overrides keys of the folder's `serving` config.

    The API key is `api_key`, else the environment variable named by `serving.api_key_env`.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.ready = False
        state.template_file = TemplateFile(template)
        overrides = serving or {}
        state.api_key = api_key or os.environ.get(ServingSection().api_key_env) or None  # guarded even when not ready
        try:
            scorer = Scorer.load(model_dir, device, overrides.get("backend"))
        except (ModelFolderError, ConfigError, FileNotFoundError, RuntimeError) as error:
            # Alive but not ready: /readyz says why, /v1 answers 503 with the reason; no traceback as the only message.
            state.not_ready = str(error)
            log.error("not ready: %s", error)
            yield
            return
        # validated, not just copied: a bad override is an error that names the key
        state.limits = ServingSection.model_validate(scorer.config.serving.model_dump() | {k: v for k, v in overrides.items() if k != "backend"})
        state.api_key = api_key or os.environ.get(state.limits.api_key_env) or None
        state.inspector = Inspector(scorer, state.template_file.template, model_version(model_dir), state.limits.evidence)
        state.inspector.inspect([Transcript(id="warm-up", turns=[{"role": "agent", "text": "您好,请问有什么可以帮您"}])])
        state.batcher = MicroBatcher(
            lambda dialogues: current_inspector(app).inspect(dialogues),
            max_dialogues=state.limits.batch_max_dialogues,
            max_wait=state.limits.batch_max_wait_ms / 1000,
            queue_size=state.limits.queue_size,
            on_batch=state.metrics.batch,
        )
        state.batcher.start()
        state.ready, state.not_ready = True, None
        log.info("ready: %s on %s, template %s", state.inspector.versions.model, scorer.device, state.inspector.versions.template)
        yield
        state.ready = False
        await state.batcher.stop()

    app = FastAPI(title="Zhijian 质检", version=importlib.metadata.version("zhijian"), lifespan=lifespan)  # pyproject.toml's
    app.state.metrics = Metrics()
    app.state.ready, app.state.not_ready = False, "loading the model"
    app.state.limits = ServingSection()  # until the model folder is read
    app.add_middleware(BodyLimit, limits_of=lambda: app.state.limits)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        """Request id, timing, metrics and one log line per request (no transcript text unless serving.log_text)."""
        request_id = request.headers.get("x-request-id", "")
        if not REQUEST_ID.fullmatch(request_id):  # logged as sent: only short ids of safe characters (no log injection)
            request_id = uuid.uuid4().hex[:16]
        start = time.perf_counter()
        response = await call_next(request)
        seconds = time.perf_counter() - start
        route = request.scope.get("route")
        name = route.path if route is not None else "unmatched"
        app.state.metrics.requests.labels(name, str(response.status_code)).inc()
        app.state.metrics.latency.labels(name).observe(seconds)
        response.headers["X-Request-ID"] = request_id
        log.info("%s %s %s %d %.1f ms", request_id, request.method, name, response.status_code, 1000 * seconds)
        return response

    @app.get("/", include_in_schema=False)
    def inspector_page() -> FileResponse:
        """The inspector page: paste a chat or drop a JSON Lines file (static, no build step)."""
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/healthz")
    def healthz() -> Health:
        """The process answers."""
        return Health(status="ok")

    @app.get("/readyz", responses={503: {"model": Ready}})
    def readyz(request: Request):
        """The model is loaded and warmed up (503 until then)."""
        state = request.app.state
        if not state.ready:
            return JSONResponse(Ready(ready=False, reason=state.not_ready).model_dump(), status_code=503)
        return Ready(
            ready=True, model=state.inspector.versions.model, template=state.template_file.current().version_tag,
            template_error=state.template_file.error,
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        state = request.app.state
        if getattr(state, "batcher", None):
            state.metrics.queue_depth.set(state.batcher.depth)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model", dependencies=Authorized)
    def model_info(request: Request, inspector: InspectorDep) -> ModelInfo:
        """Labels with their thresholds, model and template versions, device and backend, limits."""
        scorer, limits = inspector.scorer, request.app.state.limits
        return ModelInfo(
            model=inspector.versions.model, template=inspector.versions.template, device=scorer.device,
            backend=scorer.config.serving.backend, calibrated=bool(scorer.config.calibration.temperature),
            labels=[
                LabelInfo(id=label, zh=LABEL_BY_ID[label].zh, severity=LABEL_BY_ID[label].severity.value, threshold=float(scorer.thresholds[k]))
                for k, label in enumerate(LABEL_IDS)
            ],
            limits={key: getattr(limits, key) for key in ("max_dialogues", "max_turns", "max_turn_chars", "max_request_bytes", "queue_size", "batch_max_dialogues")},
        )

    @app.post("/v1/score", openapi_extra=SCORE_REQUEST_DOC, dependencies=Authorized, responses={503: {"description": "Busy; see Retry-After."}})
    async def score(request: Request) -> DialogueResult | list[DialogueResult]:
        """One transcript (an object), several (a list), or a plain-text chat (`text/plain`), in the taxonomy's format."""
        dialogues, single = await read_transcripts_body(request)
        if request.app.state.limits.log_text:
            log.info("texts: %s", json.dumps([d.model_dump() for d in dialogues], ensure_ascii=False))
        results = await _inspect(request, dialogues)
        return results[0] if single else results

    @app.post("/v1/utterances", dependencies=Authorized, responses={503: {"description": "Busy; see Retry-After."}})
    async def utterances(request: Request, body: UtterancesRequest) -> UtterancesResponse:
        """Agent replies with optional context: labels, tone and evidence per reply, while the agent types."""
        dialogues, problems = [], []
        for n, u in enumerate(body.utterances):
            turns = [*(turn.model_dump() for turn in u.context), {"role": "agent", "text": u.text}]
            try:  # the transcript rules (no blank text, ...) with the utterance's own location
                dialogues.append(parse_transcript({"id": f"u{n}", "turns": turns}, f"utterances[{n}]"))
            except TranscriptError as error:
                problems.append(str(error))
        if problems:
            raise HTTPException(422, problems)
        # The context and the reply are one dialogue's turns: the same limits as /v1/score, named alike.
        _check_limits(dialogues, request.app.state.limits, single=False, field="utterances")
        results = await _inspect(request, dialogues)
        versions = results[0].versions.model_dump()
        return UtterancesResponse(results=[result.turns[-1] for result in results], versions=versions)

    return app
