"""Dialogue checks (taxonomy section 3) and shop keyword rules: plain rules over the transcript.

Every finding names its turn; keyword hits also name the characters they matched, as offsets
into the original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from zhijian.result import CheckFinding
from zhijian.taxonomy import AGENT, CUSTOMER
from zhijian.template import CheckSettings, ScoringTemplate, ShopRule
from zhijian.transcripts import Transcript

PASSED, FAILED, NOT_CHECKED = "passed", "failed", "not_checked"


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


def _matches(patterns: list[str], text: str) -> bool:
    # Each pattern alone: joined into one alternation, a pattern's own inline flags would break the others.
    return any(_compiled(pattern).search(text) for pattern in patterns)


def _agent_turns(dialogue: Transcript) -> list[int]:
    return [i for i, turn in enumerate(dialogue.turns) if turn.role == AGENT]


def no_greeting(dialogue: Transcript, settings: CheckSettings) -> list[CheckFinding]:
    agent = _agent_turns(dialogue)
    if not agent:
        return [CheckFinding(check="no_greeting", status=NOT_CHECKED, detail="no agent message")]
    first = agent[0]
    if _matches(settings.greeting, dialogue.turns[first].text):
        return [CheckFinding(check="no_greeting", status=PASSED)]
    return [CheckFinding(check="no_greeting", status=FAILED, turn=first, detail="the agent's first message has no greeting")]


def no_closing(dialogue: Transcript, settings: CheckSettings) -> list[CheckFinding]:
    agent = _agent_turns(dialogue)
    if not agent:
        return [CheckFinding(check="no_closing", status=NOT_CHECKED, detail="no agent message")]
    last = agent[-1]
    if _matches(settings.closing, dialogue.turns[last].text):
        return [CheckFinding(check="no_closing", status=PASSED)]
    return [CheckFinding(check="no_closing", status=FAILED, turn=last, detail="the agent's last message has no thanks or closing courtesy")]


def _waits(dialogue: Transcript) -> list[tuple[int, int]]:
    """(customer turn, agent turn) per agent reply: the first customer message of a run, and the reply that ends it."""
    pairs, waiting_since = [], None
    for i, turn in enumerate(dialogue.turns):
        if turn.role == CUSTOMER and waiting_since is None:
            waiting_since = i
        elif turn.role == AGENT and waiting_since is not None:
            pairs.append((waiting_since, i))
            waiting_since = None
    return pairs


def _seconds(dialogue: Transcript, customer: int, agent: int) -> float | None:
    start, end = dialogue.turns[customer].ts, dialogue.turns[agent].ts
    return None if start is None or end is None else end - start


def slow_first_response(dialogue: Transcript, settings: CheckSettings) -> list[CheckFinding]:
    waits = _waits(dialogue)
    if not waits:
        return [CheckFinding(check="slow_first_response", status=NOT_CHECKED, detail="no agent reply to a customer message")]
    seconds = _seconds(dialogue, *waits[0])
    if seconds is None:
        return [CheckFinding(check="slow_first_response", status=NOT_CHECKED, detail="no timestamps (ts)")]
    limit = settings.slow_first_response_seconds
    if seconds <= limit:
        return [CheckFinding(check="slow_first_response", status=PASSED)]
    return [CheckFinding(check="slow_first_response", status=FAILED, turn=waits[0][1], detail=f"first reply after {seconds:g} s (limit {limit:g} s)")]


def slow_response(dialogue: Transcript, settings: CheckSettings) -> list[CheckFinding]:
    """Every later reply (the first one is slow_first_response's) against the limit."""
    timed = [(pair, _seconds(dialogue, *pair)) for pair in _waits(dialogue)[1:]]
    timed = [(pair, seconds) for pair, seconds in timed if seconds is not None]
    if not timed:
        return [CheckFinding(check="slow_response", status=NOT_CHECKED, detail="no timestamps (ts) on later replies")]
    limit = settings.slow_response_seconds
    slow = [
        CheckFinding(check="slow_response", status=FAILED, turn=agent, detail=f"replied after {seconds:g} s (limit {limit:g} s)")
        for (_, agent), seconds in timed
        if seconds > limit
    ]
    return slow or [CheckFinding(check="slow_response", status=PASSED)]


def unanswered(dialogue: Transcript, settings: CheckSettings) -> list[CheckFinding]:
    last = len(dialogue.turns) - 1
    turn = dialogue.turns[last]
    if turn.role == AGENT or _matches(settings.no_reply_needed, turn.text.strip()):
        return [CheckFinding(check="unanswered", status=PASSED)]
    return [CheckFinding(check="unanswered", status=FAILED, turn=last, detail="the dialogue ends on a customer message with no reply")]


def repeated_question(dialogue: Transcript, settings: CheckSettings) -> list[CheckFinding]:
    """An agent request for a kind of information already asked for and answered (a customer turn in between)."""
    asked: dict[str, int] = {}  # kind -> turn of the last request
    last_customer = -1
    found = []
    for i, turn in enumerate(dialogue.turns):
        if turn.role == CUSTOMER:
            last_customer = i
            continue
        if not _matches(settings.asks, turn.text):
            continue
        for kind, patterns in settings.information.items():
            if not _matches(patterns, turn.text):
                continue
            if kind in asked and last_customer > asked[kind]:
                found.append(CheckFinding(check="repeated_question", status=FAILED, turn=i, detail=f"asks again for {kind} (first asked at turn {asked[kind]})"))
            asked[kind] = i
    return found or [CheckFinding(check="repeated_question", status=PASSED)]


def message_flood(dialogue: Transcript, settings: CheckSettings) -> list[CheckFinding]:
    found, run_start = [], None
    turns = dialogue.turns
    for i in range(len(turns) + 1):
        if i < len(turns) and turns[i].role == AGENT:
            run_start = i if run_start is None else run_start
            continue
        if run_start is not None and i - run_start >= settings.message_flood:
            found.append(CheckFinding(check="message_flood", status=FAILED, turn=run_start, detail=f"{i - run_start} agent messages in a row (turns {run_start}–{i - 1})"))
        run_start = None
    return found or [CheckFinding(check="message_flood", status=PASSED)]


CHECK_FUNCTIONS = (no_greeting, no_closing, slow_first_response, slow_response, unanswered, repeated_question, message_flood)


def run_checks(dialogue: Transcript, settings: CheckSettings) -> list[CheckFinding]:
    """All seven checks, in the taxonomy's order: failures one per hit, else one passed or not_checked."""
    return [result for check in CHECK_FUNCTIONS for result in check(dialogue, settings)]


@dataclass(frozen=True)
class RuleHit:
    rule: ShopRule
    turn: int
    span: tuple[int, int]


def _rule_patterns(rule: ShopRule) -> list[re.Pattern]:
    return [_compiled(re.escape(word)) for word in rule.words] + [_compiled(p) for p in rule.regex]


def _allowed_spans(phrases: list[str], text: str) -> list[tuple[int, int]]:
    lowered = text.lower()
    spans = []
    for phrase in phrases:
        start = lowered.find(phrase.lower())
        while start != -1:
            spans.append((start, start + len(phrase)))
            start = lowered.find(phrase.lower(), start + 1)
    return spans


def find_rule_hits(dialogue: Transcript, template: ScoringTemplate) -> list[RuleHit]:
    """The first match per rule and turn that no allow-list phrase overlaps (the allow-list always wins)."""
    hits = []
    for rule in template.rules:
        patterns = _rule_patterns(rule)
        allow = template.allow + rule.allow
        for t, turn in enumerate(dialogue.turns):
            if rule.role != "any" and turn.role != rule.role:
                continue
            allowed = _allowed_spans(allow, turn.text)
            matches = sorted((m.start(), m.end()) for p in patterns for m in p.finditer(turn.text) if m.end() > m.start())
            kept = [(start, end) for start, end in matches if not any(s < end and start < e for s, e in allowed)]
            if kept:
                hits.append(RuleHit(rule, t, kept[0]))
    return hits
