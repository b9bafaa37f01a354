"""The scoring template: what a dialogue loses points for, what fails it, and the shop's own rules.

A template is YAML in ``configs/scoring/`` (``default.yaml`` follows the taxonomy's severities).
It holds the points (per severity, per label, per check, per rule), the fatal items, the per-item
cap, the pass mark, the dialogue checks' thresholds and the shop keyword rules. It is read when a
run starts (and re-read by the server when the file changes), so a shop changes it without
retraining. Every key is checked; errors name the file and the key.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from zhijian.config import ConfigError, Section, describe_validation_error, read_yaml_mapping
from zhijian.result import Deduction
from zhijian.taxonomy import CHECK_IDS, LABEL_BY_ID, LABEL_IDS, CheckId, LabelId, Severity

# Package data, so a wheel install has it too; configs/scoring/default.yaml links here, to copy and edit.
DEFAULT_TEMPLATE = Path(str(files("zhijian") / "defaults" / "scoring.yaml"))


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"bad regular expression {pattern!r}: {error}") from None
    return pattern


Regex = Annotated[str, AfterValidator(_compiles)]




class CheckSettings(Section):
    """Thresholds and phrase patterns of the dialogue checks (taxonomy section 3)."""

    greeting: list[Regex] = Field(min_length=1, description="The agent's first message must match one of these.")
    closing: list[Regex] = Field(min_length=1, description="The agent's last message must match one of these.")
    slow_first_response_seconds: float = Field(15.0, gt=0)
    slow_response_seconds: float = Field(300.0, gt=0)
    message_flood: int = Field(5, ge=2, description="This many agent messages in a row, without a customer message, is a flood.")
    no_reply_needed: list[Regex] = Field(
        default_factory=list, description="A last customer message matching one of these (好的/谢谢) needs no reply."
    )
    asks: list[Regex] = Field(min_length=1, description="What makes an agent message a request for information.")
    information: dict[str, list[Regex]] = Field(
        min_length=1, description="Kinds of information an agent asks for (订单号, 手机号, …), each a list of patterns."
    )


class ShopRule(Section):
    """A keyword rule: literal words and/or regular expressions, scoped to a role, with an allow-list."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    label: LabelId | None = Field(None, description="Report the hit as this taxonomy label; otherwise as the rule id.")
    words: list[str] = Field(default_factory=list, description="Literal words or phrases (case-insensitive).")
    regex: list[Regex] = Field(default_factory=list)
    role: Literal["agent", "customer", "any"] = "agent"
    allow: list[str] = Field(default_factory=list, description="Phrases that win over an overlapping match (大麻烦 over 大麻).")
    points: float | None = Field(None, ge=0, description="Default: the label's points, else the severity's.")
    severity: Severity = Severity.medium

    @model_validator(mode="after")
    def _has_patterns(self) -> ShopRule:
        if not self.words and not self.regex:
            raise ValueError(f"rule {self.id!r} needs `words` or `regex`")
        return self


class ScoringTemplate(Section):
    name: str = "default"
    version: str = "1"
    pass_mark: float = Field(80.0, ge=0, le=100)
    severity_points: dict[Severity, float] = Field(
        default_factory=lambda: {Severity.low: 2, Severity.medium: 5, Severity.high: 10, Severity.critical: 20}
    )
    label_points: dict[LabelId, Annotated[float, Field(ge=0)]] = Field(default_factory=dict, description="Overrides of the severity points.")
    check_points: dict[CheckId, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    fatal: list[str] = Field(default_factory=list, description="Labels, checks or rule ids that fail the dialogue outright.")
    fatal_score: float | None = Field(0.0, ge=0, le=100, description="The score of a dialogue with a fatal item (null: keep the arithmetic).")
    cap: float = Field(20.0, ge=0, description="At most this many points per label, check or rule in one dialogue.")
    caps: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict, description="Per-item caps overriding `cap`.")
    checks: CheckSettings
    allow: list[str] = Field(default_factory=list, description="Allow-list applied to every rule.")
    rules: list[ShopRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _items_exist(self) -> ScoringTemplate:
        rule_ids = [rule.id for rule in self.rules]
        clashes = sorted({r for r in rule_ids if rule_ids.count(r) > 1 or r in LABEL_IDS or r in CHECK_IDS})
        if clashes:
            raise ValueError(f"rule id(s) {clashes} repeat or clash with a label or check id")
        known = {*LABEL_IDS, *CHECK_IDS, *rule_ids}
        for key, items in (("fatal", self.fatal), ("caps", list(self.caps))):
            unknown = [item for item in items if item not in known]
            if unknown:
                raise ValueError(f"{key}: unknown item(s) {unknown}; use label ids, check ids or rule ids")
        return self

    @property
    def version_tag(self) -> str:
        return f"{self.name}@{self.version}"

    def label_points_for(self, label: str) -> float:
        return self.label_points.get(label, self.severity_points.get(LABEL_BY_ID[label].severity, 0.0))

    def rule_points_for(self, rule: ShopRule) -> float:
        if rule.points is not None:
            return rule.points
        return self.label_points_for(rule.label) if rule.label else self.severity_points.get(rule.severity, 0.0)

    def cap_for(self, item: str) -> float:
        return self.caps.get(item, self.cap)


def load_template(path: str | Path | None = None) -> ScoringTemplate:
    """Read a scoring template (default: configs/scoring/default.yaml); errors name the file and key."""
    path = Path(path) if path else DEFAULT_TEMPLATE
    raw = read_yaml_mapping(path, "scoring template")
    try:
        return ScoringTemplate.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{path}: {describe_validation_error(error)}") from None


def assess(template: ScoringTemplate, deductions: list[Deduction]) -> tuple[list[Deduction], float, bool, bool]:
    """Apply the template to the candidate deductions (in reading order): caps, fatal items, score, pass.

    Returns (deductions with their final points, score 0–100, passed, fatal).
    """
    spent: dict[str, float] = {}
    final = []
    for deduction in sorted(deductions, key=lambda d: (d.turn if d.turn is not None else -1)):
        room = max(0.0, template.cap_for(deduction.label) - spent.get(deduction.label, 0.0))
        points = min(deduction.points, room)
        spent[deduction.label] = spent.get(deduction.label, 0.0) + points
        final.append(deduction.model_copy(update={
            "points": points, "capped": points < deduction.points, "fatal": deduction.label in template.fatal,
        }))
    fatal = any(d.fatal for d in final)
    score = max(0.0, 100.0 - sum(d.points for d in final))
    if fatal and template.fatal_score is not None:
        score = min(score, template.fatal_score)
    return final, round(score, 2), score >= template.pass_mark and not fatal, fatal
