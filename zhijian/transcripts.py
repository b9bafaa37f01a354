"""Transcripts: the taxonomy's JSON Lines format and the hand-written ``客服:``/``买家:`` text format.

One pydantic model validates a dialogue wherever it comes from (a file, the HTTP API), and every
error names the file, the line and the field.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zhijian.config import describe_validation_error
from zhijian.taxonomy import AGENT, TONE_MAX, TONE_MIN, LabelId


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["agent", "customer"]
    text: str = Field(min_length=1)
    ts: float | None = Field(None, ge=0, description="Seconds from the start of the dialogue.")
    labels: list[LabelId] | None = Field(None, description="Gold labels (labeled data, agent turns only).")
    tone: int | None = Field(None, ge=TONE_MIN, le=TONE_MAX, description="Gold tone 1–5 (agent turns only).")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is blank")
        return text

    @model_validator(mode="after")
    def _gold_only_on_agent_turns(self) -> Turn:
        if self.role != AGENT and (self.labels or self.tone is not None):
            raise ValueError("labels and tone belong to agent turns only")
        return self


class Transcript(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    turns: list[Turn] = Field(min_length=1)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _time_moves_forward(self) -> Transcript:
        last = None
        for index, turn in enumerate(self.turns):
            if turn.ts is None:
                continue
            if last is not None and turn.ts < last:
                raise ValueError(f"turns[{index}].ts goes back in time ({turn.ts} < {last})")
            last = turn.ts
        return self

    @property
    def is_labeled(self) -> bool:
        return any(turn.labels is not None for turn in self.turns if turn.role == AGENT)


class TranscriptError(ValueError):
    """Bad input, located: ``file:line: field: what is wrong``."""

    def __init__(self, source: str, line: int | None, message: str):
        self.source, self.line, self.message = source, line, message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


def parse_transcript(data: Any, source: str = "<input>", line: int | None = None) -> Transcript:
    try:
        return Transcript.model_validate(data)
    except ValidationError as error:
        raise TranscriptError(source, line, describe_validation_error(error, whole="dialogue", unknown="unknown field")) from None


# A turn line of the text format: a role prefix, a colon (half- or full-width), the text.
_PREFIXES = {"客服": "agent", "agent": "agent", "买家": "customer", "customer": "customer", "顾客": "customer"}
_TURN_LINE = re.compile(r"^\s*(客服|买家|顾客|agent|customer)\s*[:：]\s*(.*)$", re.IGNORECASE)
DIALOGUE_SEPARATOR = "---"


def parse_text(text: str, source: str = "<text>", dialogue_id: str | None = None) -> list[Transcript]:
    """Plain text: one ``客服:``/``买家:`` (or ``agent:``/``customer:``) line per turn.

    A line without a prefix continues the previous turn (messages often span lines); a ``---``
    line separates dialogues.
    """
    stem = dialogue_id or Path(source).stem
    dialogues: list[Transcript] = []
    turns: list[dict[str, Any]] = []
    first_line = 1

    def close(line_number: int) -> None:
        nonlocal turns
        if turns:
            number = len(dialogues) + 1
            name = stem if number == 1 else f"{stem}-{number}"
            dialogues.append(parse_transcript({"id": name, "turns": turns}, source, first_line))
        turns = []

    for line_number, line in enumerate(text.splitlines(), start=1):
        if line.strip() == DIALOGUE_SEPARATOR:
            close(line_number)
            continue
        if not line.strip():
            continue
        match = _TURN_LINE.match(line)
        if match:
            if not turns:
                first_line = line_number
            role = _PREFIXES[match.group(1).lower()]
            if not match.group(2).strip():
                raise TranscriptError(source, line_number, "text: the turn has a role but no text")
            turns.append({"role": role, "text": match.group(2).strip()})
        elif turns:
            turns[-1]["text"] += "\n" + line.strip()
        else:
            raise TranscriptError(
                source, line_number, "expected a turn starting with '客服:' or '买家:' (or 'agent:'/'customer:')"
            )
    close(len(text.splitlines()))
    if not dialogues:
        raise TranscriptError(source, None, "no turns found")
    return dialogues


@dataclass
class ReadProblem:
    """A line that could not be read, kept so a long job can go on and report it at the end."""

    error: TranscriptError


def _decode(data: bytes, source: str, first_line: int = 1) -> str:
    """UTF-8 text, or a TranscriptError at the line of the first bad byte (a BOM is dropped)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = first_line + data[: error.start].count(b"\n")
        raise TranscriptError(source, line, f"not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as UTF-8") from None


def _iter_jsonl(path: Path, on_error: list[ReadProblem] | None) -> Iterator[Transcript]:
    source = str(path)
    with path.open("rb") as handle:  # decoded line by line, so a bad byte costs one line, not the file
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = _decode(raw, source, line_number)
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as error:
                    raise TranscriptError(source, line_number, f"not valid JSON: {error.msg}") from None
                if not isinstance(data, dict):
                    raise TranscriptError(source, line_number, "each line must be one JSON object (a dialogue)")
                yield parse_transcript(data, source, line_number)
            except TranscriptError as error:
                if on_error is None:
                    raise
                on_error.append(ReadProblem(error))


CSV_COLUMNS = ("dialogue_id", "turn", "role", "text")


def _csv_labels(cell: str) -> list[str]:
    cell = cell.strip()
    if cell.startswith("["):
        return json.loads(cell)
    return [label for label in re.split(r"[;,|\s]+", cell) if label]


def _iter_csv(path: Path, on_error: list[ReadProblem] | None) -> Iterator[Transcript]:
    """CSV with columns ``dialogue_id, turn, role, text`` and optional ``labels`` (``a;b``), ``tone``, ``ts``.

    Rows of one dialogue are ordered by ``turn``; with a ``labels`` column, an empty cell on an
    agent turn means the turn is clean.
    """
    source = str(path)
    with io.StringIO(_decode(path.read_bytes(), source), newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TranscriptError(source, 1, f"missing column(s) {missing}; a CSV needs {', '.join(CSV_COLUMNS)}")
        dialogues: dict[str, list[tuple[int, int, dict]]] = {}
        for row in reader:
            line = reader.line_num
            short = [column for column in reader.fieldnames if row.get(column) is None]  # DictReader pads a short row with None
            try:
                if short:
                    raise TranscriptError(source, line, f"{len(reader.fieldnames) - len(short)} fields, the header has {len(reader.fieldnames)} (no {', '.join(short)})")
                turn = {"role": row["role"].strip(), "text": row["text"]}
                if row.get("ts") not in (None, ""):
                    turn["ts"] = float(row["ts"])
                if row.get("tone") not in (None, ""):
                    turn["tone"] = int(float(row["tone"]))
                if "labels" in row and turn["role"] == AGENT:
                    turn["labels"] = _csv_labels(row["labels"] or "")
                order = int(row["turn"])
            except (ValueError, json.JSONDecodeError) as error:
                problem = error if isinstance(error, TranscriptError) else TranscriptError(source, line, f"turn/ts/tone/labels: {error}")
                if on_error is None:
                    raise problem from None
                on_error.append(ReadProblem(problem))
                continue
            dialogues.setdefault(row["dialogue_id"], []).append((order, line, turn))
    for dialogue_id, rows in dialogues.items():
        rows.sort(key=lambda item: item[0])
        try:
            yield parse_transcript({"id": dialogue_id, "turns": [turn for _, _, turn in rows]}, source, rows[0][1])
        except TranscriptError as error:
            if on_error is None:
                raise
            on_error.append(ReadProblem(error))


# Real archives name more parties than the taxonomy: a merchant writing to platform support plays the customer.
_REAL_ROLES = {"agent": "agent", "customer": "customer", "merchant": "customer"}


def read_real_dialogues(paths: Iterable[str | Path]) -> list[Transcript]:
    """Unlabeled real dialogues from other people's archives (e.g. CSDS), read leniently.

    Extra fields are ignored, roles are mapped (merchant -> customer) or dropped (unknown), gold
    labels are not read: these are for measuring false alarms or adding clean turns, not gold.
    """
    dialogues = []
    for path in paths:
        if Path(path).suffix.lower() != ".jsonl":  # CSV, JSON or text follow our own format
            dialogues.extend(read_transcripts([path]))
            continue
        with Path(path).open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as error:
                    raise TranscriptError(str(path), line_number, f"not valid JSON: {error.msg}") from None
                turns = [
                    {"role": _REAL_ROLES[t["role"]], "text": str(t["text"]).strip()}
                    for t in data.get("turns", [])
                    if t.get("role") in _REAL_ROLES and str(t.get("text", "")).strip()
                ]
                if turns:
                    dialogue_id = f"{Path(path).stem}:{data.get('id', line_number)}"
                    dialogues.append(parse_transcript({"id": dialogue_id, "turns": turns}, str(path), line_number))
    return dialogues


def iter_transcripts(path: str | Path, on_error: list[ReadProblem] | None = None) -> Iterator[Transcript]:
    """Stream dialogues from a ``.jsonl`` file (or a ``.json`` object/list, ``.csv`` rows, or ``.txt`` text).

    With ``on_error`` given, bad lines are appended to it and reading goes on; without it, the
    first bad line raises a :class:`TranscriptError`.
    """
    path = Path(path)
    if not path.is_file():
        raise TranscriptError(str(path), None, "no such file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _iter_jsonl(path, on_error)
    elif suffix == ".csv":
        yield from _iter_csv(path, on_error)
    elif suffix == ".json":
        try:
            data = json.loads(_decode(path.read_bytes(), str(path)))
        except json.JSONDecodeError as error:
            raise TranscriptError(str(path), error.lineno, f"not valid JSON: {error.msg}") from None
        items = data if isinstance(data, list) else [data]
        for number, item in enumerate(items):
            try:
                yield parse_transcript(item, f"{path}[{number}]" if isinstance(data, list) else str(path))
            except TranscriptError as error:
                if on_error is None:
                    raise
                on_error.append(ReadProblem(error))
    else:
        yield from parse_text(_decode(path.read_bytes(), str(path)), str(path))


def read_transcripts(paths: Iterable[str | Path]) -> list[Transcript]:
    """All dialogues of several files; the first bad line stops with a located error."""
    return [dialogue for path in paths for dialogue in iter_transcripts(path)]
