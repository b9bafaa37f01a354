"""Which characters carry a flagged label: occlusion, measured with the model itself.

For a flagged turn, each candidate span is cut out of the text and the turn is scored again with
its real context; the span whose removal lowers the label's logit most is the evidence. Candidates
are clauses (split at punctuation and spaces, what an inspector marks by hand) or, with
``method="window"``, overlapping character windows. Spans are offsets into the original text.
One batched forward pass per call, whatever the number of flagged turns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from zhijian.config import EVIDENCE_METHODS
from zhijian.featurize import merge_windows
from zhijian.scorer import Predictions, Scorer
from zhijian.transcripts import Transcript

CLAUSE_BREAK = re.compile(r"[，,。.!！?？;；~～…\s]+")

Span = tuple[int, int]


def clause_spans(text: str) -> list[Span]:
    spans, start = [], 0
    for gap in CLAUSE_BREAK.finditer(text):
        if gap.start() > start:
            spans.append((start, gap.start()))
        start = gap.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans or [(0, len(text))]


def window_spans(text: str, width: int = 4, stride: int = 2) -> list[Span]:
    if len(text) <= width:
        return [(0, len(text))]
    starts = list(range(0, len(text) - width + 1, stride))
    if starts[-1] + width < len(text):
        starts.append(len(text) - width)
    return [(s, s + width) for s in starts]


def candidate_spans(text: str, method: str) -> list[Span]:
    return clause_spans(text) if method == "clause" else window_spans(text)


def locate(
    scorer: Scorer,
    dialogues: Sequence[Transcript],
    predictions: Predictions,
    flagged: dict[int, list[int]],
    method: str = "clause",
) -> dict[int, dict[int, Span]]:
    """{prediction row: {label index: span}} for the flagged labels of each row."""
    if method not in EVIDENCE_METHODS:
        raise ValueError(f"evidence method must be one of {EVIDENCE_METHODS}, not {method!r}")
    if method == "none":
        return {}
    jobs, features, variants = [], [], 0  # (row, spans, first variant index)
    for row, labels in flagged.items():
        if not labels:
            continue
        feature = predictions.features[row]
        dialogue = dialogues[feature.dialogue]
        text = dialogue.turns[feature.turn].text
        spans = candidate_spans(text, method)
        jobs.append((row, spans, variants))
        if len(spans) > 1:  # a single candidate is the answer without asking the model
            for variant in scorer.featurizer.encode_variants(
                dialogue, feature.turn, [text[:s] + text[e:] for s, e in spans], feature.dialogue
            ):
                features += variant
                variants += 1
    # One row per variant (a long variant is read in windows, as the turn itself was).
    logits = merge_windows(features, *scorer.forward(features))[1] if features else np.zeros((0, 0))
    found = {}
    for row, spans, first in jobs:
        labels = flagged[row]
        if len(spans) == 1:
            found[row] = {k: spans[0] for k in labels}
            continue
        drops = predictions.logits[row] - logits[first : first + len(spans)]  # (spans, labels)
        found[row] = {k: spans[int(np.argmax(drops[:, k]))] for k in labels}
    return found
