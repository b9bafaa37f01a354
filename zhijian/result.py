"""The one result object: what `zhijian score --json`, the API and the report all give for a dialogue.

Spans are ``[start, end)`` offsets into the turn's ``text`` in Unicode code points (Python string
indices): ``text[start:end]``. JavaScript strings count UTF-16 units, so a page slices with
``Array.from(text)`` when emoji come before a span.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_serializer


class LabelScore(BaseModel):
    label: str
    prob: float


class TurnResult(BaseModel):
    """A turn as given, and for agent turns the model's labels, tone and evidence spans."""

    index: int
    role: str
    text: str
    labels: list[LabelScore] | None = None
    tone: float | None = Field(None, description="[0, 1] = (tone - 1) / 4 on the taxonomy's 1–5 scale.")
    evidence: dict[str, tuple[int, int]] | None = Field(
        None, description="Per flagged label, the [start, end) characters of `text` that carry it."
    )

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler):  # customer turns carry no labels, tone or evidence
        return {key: value for key, value in handler(self).items() if value is not None}


class CheckFinding(BaseModel):
    """A dialogue check's outcome (taxonomy section 3): what `zhijian.checks` finds and every result shows."""

    check: str
    status: Literal["passed", "failed", "not_checked"]
    turn: int | None = None
    detail: str | None = None


class Deduction(BaseModel):
    source: Literal["model", "check", "rule"]
    label: str = Field(description="A label id, a check id, or a shop rule's id.")
    turn: int | None
    span: tuple[int, int] | None = Field(None, description="[start, end) in the turn's text, when there is one.")
    points: float
    fatal: bool = False
    capped: bool = Field(False, description="Points reduced by the template's per-item cap.")


class Versions(BaseModel):
    model: str
    template: str


class QualityScore(BaseModel):
    """One dialogue-quality scale on STC-3's -2..2 ratings."""

    distribution: list[float] = Field(description="Probabilities of the ratings -2, -1, 0, 1, 2.")
    expected: float = Field(ge=-2, le=2, description="The expected rating.")


class DialogueResult(BaseModel):
    id: str
    turns: list[TurnResult]
    score: float = Field(ge=0, le=100)
    passed: bool
    fatal: bool
    tone: float | None = Field(None, description="Mean agent tone, [0, 1].")
    checks: list[CheckFinding]
    deductions: list[Deduction]
    versions: Versions
    quality: dict[str, QualityScore] | None = Field(
        None,
        description="A (task accomplished), S (customer satisfied), E (dialogue effective), "
        "when the model has the dialogue-quality head.",
    )
    meta: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _omit_missing(self, handler):
        data = handler(self)
        for key in ("quality", "meta"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    def to_json(self) -> dict:
        return self.model_dump(mode="json")
