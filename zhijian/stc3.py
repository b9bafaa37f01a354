"""NTCIR-14 STC-3 DQ (= DCH-1): the dialogue loader, the fixed benchmark split and the official measures.

The data (Weibo customer-helpdesk dialogues, 19 annotators each) lives in ``../shared/data/stc3``
and is for research use only: nothing of it belongs in this repository.

Each dialogue is rated by every annotator on three 5-point scales, A (task accomplishment),
S (customer satisfaction) and E (dialogue effectiveness), from -2 to 2. The gold for a dialogue
is the annotators' empirical distribution over the five bins, a prediction is a distribution
too, and the two are compared with the measures of Sakai, "Comparing Two Binned Probability
Distributions for Information Access Evaluation" (SIGIR 2018): NMD and RSNOD, lower is better,
averaged over dialogues. They are written here from the definitions and checked against the
organisers' ``eval.py`` (Zeng; DialEval-1/LSTM-baseline), which normalises both inputs first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from zhijian.transcripts import Transcript

# The dialogue-quality scales, this module being their one home (the model's quality head, the scorer and the
# inspector size and name theirs from these): STC-3's A (task accomplished), S (customer satisfied), E (effective),
# each rated on five ordered bins.
BINS = (-2, -1, 0, 1, 2)
QUALITY = ("A", "S", "E")
SENDERS = {"customer": "customer", "helpdesk": "agent"}

# STC-3 leaves an utterance empty where the customer or the helpdesk posted an image or an
# emoji the crawler did not keep. The turn still happened (the annotators gave it a nugget label,
# one per turn), so to_transcript keeps it under this placeholder: dropping it would shift every
# later turn index, and the project's Transcript rejects blank text.
BLANK_TURN = "[图片]"

# Raises a located Stc3FormatError for one dialogue: fail(field, message).
Fail = Callable[[str | None, str], NoReturn]


class Stc3FormatError(ValueError):
    """A located problem in an STC-3 file: ``file: dialogue [index] (id ...): field: what is wrong``."""

    def __init__(self, source: str, message: str, index: int | None = None, dialogue_id: str | None = None,
                 field: str | None = None):
        self.source, self.message, self.index, self.dialogue_id, self.field = source, message, index, dialogue_id, field
        where = source
        if index is not None:
            where += f": dialogue [{index}]" + (f" (id {dialogue_id})" if dialogue_id is not None else "")
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


@dataclass(frozen=True, eq=False)  # eq=False: == on numpy arrays is elementwise, not a bool
class Stc3Dialogue:
    id: str
    turns: list[tuple[str, str]]  # (sender, text): sender "customer" | "helpdesk"
    quality: dict[str, np.ndarray] | None  # A/S/E -> the annotators' distribution over BINS; None if unlabelled


# --- the loader -------------------------------------------------------------------------------

def _parse_turns(raw: Any, fail: Fail) -> list[tuple[str, str]]:
    if not isinstance(raw, list) or not raw:
        fail("turns", "must be a non-empty list of turns")
    turns = []
    for n, turn in enumerate(raw):
        if not isinstance(turn, dict):
            fail(f"turns[{n}]", "must be an object with 'sender' and 'utterances'")
        sender = turn.get("sender")
        if sender not in SENDERS:
            fail(f"turns[{n}].sender", f"unknown sender {sender!r}; expected 'customer' or 'helpdesk'")
        utterances = turn.get("utterances")
        if not isinstance(utterances, list) or not all(isinstance(u, str) for u in utterances):
            fail(f"turns[{n}].utterances", "must be a list of strings")
        turns.append((sender, "\n".join(utterances).strip()))
    return turns


def _parse_quality(raw: Any, fail: Fail) -> dict[str, np.ndarray]:
    if not isinstance(raw, list) or not raw:
        fail("annotations", "must be a non-empty list (one object per annotator)")
    counts = {key: np.zeros(len(BINS)) for key in QUALITY}
    for n, annotation in enumerate(raw):
        quality = annotation.get("quality") if isinstance(annotation, dict) else None
        if not isinstance(quality, dict):
            fail(f"annotations[{n}].quality", "must be an object with A, S and E")
        for key in QUALITY:
            value = quality.get(key)
            # bool is an int in Python; True is not a rating.
            if isinstance(value, bool) or not isinstance(value, int) or value not in BINS:
                fail(f"annotations[{n}].quality.{key}", f"{value!r} is not one of {list(BINS)}")
            counts[key][BINS.index(value)] += 1
    return {key: count / len(raw) for key, count in counts.items()}


def _parse_dialogue(item: Any, source: str, index: int) -> Stc3Dialogue:
    dialogue_id = item.get("id") if isinstance(item, dict) else None

    def fail(field: str | None, message: str) -> NoReturn:
        shown = dialogue_id if isinstance(dialogue_id, str) else None
        raise Stc3FormatError(source, message, index, shown, field)

    if not isinstance(item, dict):
        fail(None, "must be an object with 'id' and 'turns'")
    if "id" not in item:
        fail("id", "missing")
    if not isinstance(dialogue_id, str) or not dialogue_id:
        # The ids are numeric strings and the benchmark split sorts them as strings.
        fail("id", f"must be a non-empty string, not {dialogue_id!r}")
    if "turns" not in item:
        fail("turns", "missing")
    turns = _parse_turns(item["turns"], fail)
    quality = _parse_quality(item["annotations"], fail) if "annotations" in item else None
    return Stc3Dialogue(id=dialogue_id, turns=turns, quality=quality)


def read_stc3(path: str | Path) -> list[Stc3Dialogue]:
    """All dialogues of an STC-3 JSON file (train with annotations, test without)."""
    source = str(path)
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise Stc3FormatError(source, f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})") from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise Stc3FormatError(source, f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None
    if not isinstance(items, list):
        raise Stc3FormatError(source, f"must be a JSON list of dialogues, not {type(items).__name__}")
    dialogues = [_parse_dialogue(item, source, index) for index, item in enumerate(items)]
    seen: dict[str, int] = {}
    for index, dialogue in enumerate(dialogues):
        # The official scorer keys gold by id, and the split sorts by id: a repeated id is ambiguous.
        if dialogue.id in seen:
            raise Stc3FormatError(source, f"repeats the id of dialogue [{seen[dialogue.id]}]", index, dialogue.id, "id")
        seen[dialogue.id] = index
    return dialogues


def to_transcript(dialogue: Stc3Dialogue) -> Transcript:
    """The dialogue in the project's transcript format (helpdesk -> agent), one turn per STC-3 turn."""
    turns = [{"role": SENDERS[sender], "text": text if text.strip() else BLANK_TURN} for sender, text in dialogue.turns]
    return Transcript(id=dialogue.id, turns=turns, meta={"source": "stc3"})


def benchmark_split(dialogues: Sequence[Stc3Dialogue]) -> tuple[list[Stc3Dialogue], list[Stc3Dialogue]]:
    """The fixed offline protocol: sort by id (as strings), every tenth from the first is test.

    The STC-3 test gold was never published, so the benchmark holds out 370 of the 3,700 labelled
    dialogues. Ids are numeric strings of 10-16 digits, so a string sort and an integer sort differ
    (on the real file the two rules share no test dialogue); the string sort is the protocol.
    """
    ordered = sorted(dialogues, key=lambda dialogue: dialogue.id)
    train = [dialogue for position, dialogue in enumerate(ordered) if position % 10 != 0]
    test = ordered[::10]
    return train, test


# --- the measures -----------------------------------------------------------------------------

def _pair(pred: Any, gold: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both as probability distributions over the same ordered bins (the official scorer normalises too)."""
    p, q = np.asarray(pred, dtype=float), np.asarray(gold, dtype=float)
    if p.ndim != 1 or p.shape != q.shape or len(p) < 2:
        raise ValueError(f"pred and gold must be 1-D over the same >= 2 bins, got shapes {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("pred and gold must be non-negative with a positive sum")
    return p / p.sum(), q / q.sum()


def nmd(pred: Any, gold: Any) -> float:
    """Normalised Match Distance: the earth mover's distance on a line, sum_i |cumP_i - cumQ_i| / (L-1)."""
    p, q = _pair(pred, gold)
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum() / (len(p) - 1))


def _distance_weighted(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """DW_i = sum_j |i-j| (p_j - q_j)^2 for every bin i: a squared error that grows with the distance to i."""
    positions = np.arange(len(p))
    return np.abs(positions[:, None] - positions[None, :]) @ (p - q) ** 2


def _order_aware_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """OD(p||q): the mean of DW_i over the bins where p is non-zero.

    Sakai writes OD(p||p*) with the mean over the gold p*'s bins; the organisers' eval.py takes
    the first argument's. RSNOD symmetrises, so both give the same SOD: the mean over the
    prediction's bins and the mean over the gold's bins, averaged.
    """
    return float(_distance_weighted(p, q)[p > 0].mean())


def rsnod(pred: Any, gold: Any) -> float:
    """Root Symmetric Normalised Order-aware Divergence: sqrt(SOD / (L-1)), SOD = (OD(p||q) + OD(q||p)) / 2."""
    p, q = _pair(pred, gold)
    sod = (_order_aware_divergence(p, q) + _order_aware_divergence(q, p)) / 2
    return float(np.sqrt(sod / (len(p) - 1)))


MEASURES = {"nmd": nmd, "rsnod": rsnod}


def dq_scores(pred: Mapping[str, Any], gold: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{"A": {"nmd", "rsnod"}, "S": ..., "E": ...}, each the mean over dialogues (lower is better).

    ``gold[key]`` is an (n, 5) array, one row per dialogue; ``pred[key]`` is (n, 5) in the same
    order, or one (5,) distribution predicted for every dialogue (a prior, the uniform).
    The official scorer prints -log2 of these means; these are the raw means.
    """
    scores = {}
    for key in QUALITY:
        q = np.asarray(gold[key], dtype=float)
        if q.ndim != 2 or q.shape[0] == 0 or q.shape[1] != len(BINS):
            raise ValueError(f"gold[{key!r}] must be (n, {len(BINS)}) with n >= 1, got {q.shape}")
        p = np.asarray(pred[key], dtype=float)
        if p.shape not in (q.shape, (len(BINS),)):
            raise ValueError(f"pred[{key!r}] must be {q.shape} or ({len(BINS)},), got {p.shape}")
        p = np.broadcast_to(p, q.shape)
        scores[key] = {name: float(np.mean([measure(pi, qi) for pi, qi in zip(p, q)])) for name, measure in MEASURES.items()}
    return scores


def gold_distributions(dialogues: Sequence[Stc3Dialogue]) -> dict[str, np.ndarray]:
    """The gold of the dialogues as {A/S/E: (n, 5) array}, rows in the dialogues' order (for dq_scores)."""
    if not dialogues:
        raise ValueError("no dialogues")
    unlabelled = [dialogue.id for dialogue in dialogues if dialogue.quality is None]
    if unlabelled:
        raise ValueError(f"{len(unlabelled)} dialogue(s) have no annotations (e.g. id {unlabelled[0]})")
    return {key: np.stack([dialogue.quality[key] for dialogue in dialogues]) for key in QUALITY}


def prior_distribution(dialogues: Sequence[Stc3Dialogue]) -> dict[str, np.ndarray]:
    """The mean gold distribution of the (training) dialogues: the 'predict the prior' baseline."""
    return {key: rows.mean(axis=0) for key, rows in gold_distributions(dialogues).items()}


def uniform_distribution() -> dict[str, np.ndarray]:
    """The same mass on every bin: the organisers' uniform pseudo-baseline."""
    return {key: np.full(len(BINS), 1 / len(BINS)) for key in QUALITY}
