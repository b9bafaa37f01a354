"""`zhijian evaluate`: a model folder measured on labeled transcripts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data import gold_arrays
from training.metrics import label_metrics, tone_metrics
from zhijian.scorer import Scorer
from zhijian.transcripts import read_transcripts


def evaluate(scorer: Scorer, data_files: Sequence[Path]) -> dict:
    """The `evaluate --json` object: macro/micro F1, per-label figures at the model's thresholds, tone."""
    dialogues = read_transcripts(data_files)
    predictions = scorer.predict(dialogues)
    labels, gold_tone, labeled = gold_arrays(dialogues, predictions.features)
    if not labeled.any():
        raise ValueError(f"{', '.join(map(str, data_files))}: no agent turn has gold `labels` to evaluate against")
    probs = predictions.probs[labeled]
    result = label_metrics(labels[labeled], probs >= scorer.thresholds)
    for k, label in enumerate(result["labels"]):
        result["labels"][label]["threshold"] = float(scorer.thresholds[k])
    result["tone"] = tone_metrics(gold_tone, predictions.tone)
    result["turns"] = int(labeled.sum())
    result["dialogues"] = len(dialogues)
    return result
