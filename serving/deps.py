"""The routes' dependencies: the API key, the inspector (503 while there is none), the limits, the request's dialogues.

Every error here is an HTTPException whose detail names the field and, for a limit, the config key, so a
client can fix its request without reading the server's log.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from serving.schemas import Utterance
from serving.state import ServingState
from zhijian.config import ServingSection
from zhijian.inspector import Inspector
from zhijian.transcripts import Transcript, TranscriptError, parse_text, parse_transcript

RETRY_AFTER_SECONDS = 1
MOST_PROBLEMS = 20  # a 422 lists this many problems at most: a body of thousands of bad items gets a short answer


def serving_state(request: Request) -> ServingState:
    return request.app.state.serving


StateDep = Annotated[ServingState, Depends(serving_state)]


def unavailable(reason: str) -> HTTPException:
    """A 503 that tells the client when to try again: not ready yet, or the queue is full."""
    return HTTPException(503, reason, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def require_api_key(request: Request) -> None:
    """With an API key configured, every /v1 route needs ``Authorization: Bearer <key>``."""
    expected = serving_state(request).api_key
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Bytes, not str: compare_digest refuses non-ASCII str (a 500); any such header is simply a wrong key.
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong API key (Authorization: Bearer <key>)", headers={"WWW-Authenticate": "Bearer"})


def get_inspector(state: StateDep) -> Inspector:
    """The loaded inspector under the template as it is now (503 with the reason while there is none).

    A dependency, so tests can override it.
    """
    if not state.ready:
        raise unavailable(f"not ready: {state.not_ready}")
    return state.current_inspector()


InspectorDep = Annotated[Inspector, Depends(get_inspector)]


def check_limits(dialogues: Sequence[Transcript], limits: ServingSection, single: bool, field: str = "body") -> None:
    """Every limit breach, named with the field and the config key (422): the one check for both /v1 routes.

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
        raise HTTPException(422, problems[:MOST_PROBLEMS])


def parse_dialogues(items: Sequence[Any], names: Sequence[str]) -> list[Transcript]:
    """Each item by the transcript rules, errors named by its place in the request (422, the first MOST_PROBLEMS)."""
    dialogues, problems = [], []
    for item, name in zip(items, names, strict=True):
        try:
            dialogues.append(parse_transcript(item, name))
        except TranscriptError as error:
            problems.append(str(error))
    if problems:
        raise HTTPException(422, problems[:MOST_PROBLEMS])
    return dialogues


def _text_dialogues(raw: bytes) -> list[Transcript]:
    """A plain-text chat: one ``客服:``/``买家:`` line per turn."""
    try:
        dialogues = parse_text(raw.decode("utf-8"), "body")
    except UnicodeDecodeError as error:
        raise HTTPException(400, f"the body is not UTF-8 text: {error}") from None
    except TranscriptError as error:
        raise HTTPException(422, [str(error)]) from None
    if not dialogues:
        raise HTTPException(422, ["body: no turns (one 客服:/买家: line per turn)"])
    return dialogues


def _json_dialogues(raw: bytes) -> tuple[list[Transcript], bool]:
    """One transcript (an object) or a non-empty list of them; errors name the item: ``body[1]: turns[0].role: ...``."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HTTPException(400, f"the body is not valid JSON: {error}") from None
    if isinstance(data, dict):
        return parse_dialogues([data], ["body"]), True
    if isinstance(data, list) and data:
        return parse_dialogues(data, [f"body[{n}]" for n in range(len(data))]), False
    raise HTTPException(422, "the body must be one transcript (an object) or a non-empty list of them")


async def read_transcripts(request: Request, state: StateDep) -> tuple[list[Transcript], bool]:
    """The dialogues of a /v1/score request, within the limits, and whether it sent one (an object or a one-dialogue text).

    A plain-text transcript (``text/plain``), or JSON whatever its content type (`curl -d @chat.json`
    sends a form type), so the body is read here rather than declared as a pydantic model.
    """
    raw = await request.body()  # BodyLimit has held it to serving.max_request_bytes
    if request.headers.get("content-type", "").startswith("text/plain"):
        dialogues = _text_dialogues(raw)
        single = len(dialogues) == 1
    else:
        dialogues, single = _json_dialogues(raw)
    check_limits(dialogues, state.limits, single)
    return dialogues, single


def utterance_dialogues(utterances: Sequence[Utterance], limits: ServingSection) -> list[Transcript]:
    """Each utterance as a dialogue (its context, then the reply), by the same rules and limits as /v1/score."""
    names = [f"utterances[{n}]" for n in range(len(utterances))]
    dialogues = parse_dialogues([{"id": f"u{n}", "turns": u.turns()} for n, u in enumerate(utterances)], names)
    check_limits(dialogues, limits, single=False, field="utterances")
    return dialogues


TranscriptsDep = Annotated[tuple[list[Transcript], bool], Depends(read_transcripts)]
