"""The service-quality taxonomy (v1): the contract between data, training, serving and evaluation.

Mirrors ``shared/spec/taxonomy.md``. Label ids never change meaning and their order here is the
order of the model's outputs; new labels get new ids appended at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated

from pydantic import AfterValidator


class Severity(str, Enum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


@dataclass(frozen=True)
class Label:
    id: str
    zh: str
    severity: Severity


LABELS: tuple[Label, ...] = (
    Label("over_promise", "过度承诺", Severity.high),
    Label("blunt_refusal", "生硬拒绝", Severity.medium),
    Label("rhetorical_question", "反问", Severity.medium),
    Label("contempt", "鄙视", Severity.high),
    Label("abuse", "辱骂", Severity.critical),
    Label("perfunctory", "敷衍", Severity.low),
    Label("invoice_refusal", "拒开发票", Severity.high),
    Label("off_platform", "引导站外交易", Severity.critical),
    Label("review_bargaining", "以评价换取处理", Severity.high),
    Label("privacy_leak", "泄露买家信息", Severity.critical),
    Label("after_sales_refusal", "拒绝售后", Severity.high),
    Label("payment_refusal", "拒绝约定支付方式", Severity.medium),
)

LABEL_IDS: tuple[str, ...] = tuple(label.id for label in LABELS)
LABEL_INDEX: dict[str, int] = {label_id: i for i, label_id in enumerate(LABEL_IDS)}
LABEL_BY_ID: dict[str, Label] = {label.id: label for label in LABELS}

AGENT, CUSTOMER = "agent", "customer"
ROLES = (AGENT, CUSTOMER)
ROLE_ZH = {AGENT: "客服", CUSTOMER: "买家"}

TONE_MIN, TONE_MAX = 1, 5
TONE_NAMES = {5: "warm", 4: "polite", 3: "neutral", 2: "cold", 1: "hostile"}


def tone_to_unit(tone: float) -> float:
    """Tone on the taxonomy's 1–5 scale -> the model's [0, 1] target."""
    return (tone - TONE_MIN) / (TONE_MAX - TONE_MIN)


def unit_to_tone(unit: float) -> float:
    """The model's [0, 1] output -> the 1–5 scale a person reads."""
    return TONE_MIN + unit * (TONE_MAX - TONE_MIN)


@dataclass(frozen=True)
class Check:
    id: str
    zh: str
    needs_time: bool  # only checked when the turns carry `ts`


# Section 3 of the taxonomy: rules over the whole transcript (text and timestamps), not the model.
CHECKS: tuple[Check, ...] = (
    Check("no_greeting", "缺少问候", False),
    Check("no_closing", "缺少结束语", False),
    Check("slow_first_response", "首次响应慢", True),
    Check("slow_response", "响应超时", True),
    Check("unanswered", "未回复", False),
    Check("repeated_question", "重复询问", False),
    Check("message_flood", "刷屏骚扰", False),
)
CHECK_IDS: tuple[str, ...] = tuple(check.id for check in CHECKS)
CHECK_BY_ID: dict[str, Check] = {check.id: check for check in CHECKS}


def one_of(kind: str, ids: tuple[str, ...]) -> AfterValidator:
    """A pydantic validator for ids of one kind: anything else is an error that lists them."""

    def check(value: str) -> str:
        if value not in ids:
            raise ValueError(f"unknown {kind} {value!r}; {kind}s are: {', '.join(ids)}")
        return value

    return AfterValidator(check)


# The one check of label and check ids, wherever they are read: configs, templates, transcripts, recipes.
LabelId = Annotated[str, one_of("label", LABEL_IDS)]
CheckId = Annotated[str, one_of("check", CHECK_IDS)]
