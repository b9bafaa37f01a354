"""The JSON bodies of the HTTP API: what the OpenAPI schema (and schemathesis) sees.

``/v1/score`` returns :class:`DialogueResult` (the same as ``zhijian score --json``); its request body
is read by hand (JSON or plain text, see :func:`serving.deps.read_transcripts`), so its schema is
declared here as an OpenAPI extra.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, TypeAdapter

from zhijian.result import TurnResult
from zhijian.transcripts import Transcript


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

    def turns(self) -> list[dict[str, str]]:
        """The context and then the reply: one dialogue's turns, checked by the transcript rules like any other."""
        return [*(turn.model_dump() for turn in self.context), {"role": "agent", "text": self.text}]


class UtterancesRequest(BaseModel):
    utterances: list[Utterance] = Field(min_length=1)


class UtterancesResponse(BaseModel):
    results: list[TurnResult]
    versions: dict[str, str]


# /v1/score reads its body itself (JSON whatever the content type, or a plain-text chat), so FastAPI
# cannot infer it: the schema says what the route accepts, for the docs and for schemathesis.
SCORE_REQUEST_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TypeAdapter(Transcript | list[Transcript]).json_schema()},
            "text/plain": {"schema": {"type": "string", "example": "买家: 能开发票吗\n客服: 要发票得加6个点\n"}},
        },
    }
}
