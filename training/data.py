"""Labeled transcripts -> training examples (agent turns with gold labels and tone)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from zhijian.featurize import AgentTurnFeatures, Featurizer, pad_batch
from zhijian.stc3 import BINS, QUALITY
from zhijian.stc3 import Stc3Dialogue, benchmark_split, read_stc3, to_transcript
from zhijian.taxonomy import LABEL_INDEX, tone_to_unit
from zhijian.transcripts import Transcript, read_real_dialogues, read_transcripts

NO_TONE = -1.0


def gold_arrays(dialogues: Sequence[Transcript], features: Sequence[AgentTurnFeatures]):
    """Multi-hot labels (n, 12), tone in [0, 1] (-1 where unknown) and a mask of turns that have gold labels."""
    labels = np.zeros((len(features), len(LABEL_INDEX)), dtype=np.float32)
    tone = np.full(len(features), NO_TONE, dtype=np.float32)
    labeled = np.zeros(len(features), dtype=bool)
    for row, feature in enumerate(features):
        turn = dialogues[feature.dialogue].turns[feature.turn]
        if turn.labels is not None:
            labeled[row] = True
            for label in turn.labels:
                labels[row, LABEL_INDEX[label]] = 1.0
        if turn.tone is not None:
            tone[row] = tone_to_unit(turn.tone)
    return labels, tone, labeled


NO_QUALITY = np.zeros((len(QUALITY), len(BINS)), dtype=np.float32)


class TurnDataset(torch.utils.data.Dataset):
    """Every labeled agent turn of a set of dialogues, featurized once up front.

    `with_quality` gives each row the dialogue-quality fields too (empty), so turn rows and rated
    dialogue rows (:class:`QualityDataset`) can share batches.
    """

    def __init__(self, dialogues: Sequence[Transcript], featurizer: Featurizer, with_quality: bool = False):
        features = featurizer.encode(dialogues, windows=False)  # a long turn's label belongs to the whole turn
        labels, tone, labeled = gold_arrays(dialogues, features)
        keep = np.flatnonzero(labeled)
        self.rows = [features[i].as_model_input() for i in keep]
        self.labels = labels[keep]
        self.tone = tone[keep]
        self.with_quality = with_quality

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        item = {**self.rows[index], "labels": self.labels[index], "tone": self.tone[index]}
        if self.with_quality:
            item |= {"label_mask": np.float32(1.0), "quality": NO_QUALITY}
        return item

    def pos_weight(self, cap: float) -> list[float]:
        """negatives/positives per label, capped; 1 for a label with no positives."""
        positives = self.labels.sum(axis=0)
        negatives = len(self.labels) - positives
        return [float(min(cap, n / p)) if p else 1.0 for p, n in zip(positives, negatives)]


class QualityDataset(torch.utils.data.Dataset):
    """Rated dialogues (STC-3) read whole, with the annotators' A/S/E distributions as targets."""

    def __init__(self, dialogues: Sequence[Stc3Dialogue], featurizer: Featurizer, repeat: int = 1):
        self.rows = [featurizer.encode_dialogue(to_transcript(d)).as_model_input() for d in dialogues]
        self.quality = np.stack([[d.quality[scale] for scale in QUALITY] for d in dialogues]).astype(np.float32) if dialogues else NO_QUALITY[None]
        self.repeat = repeat

    def __len__(self) -> int:
        return len(self.rows) * self.repeat

    def __getitem__(self, index: int) -> dict:
        index %= len(self.rows)
        no_labels = np.zeros(len(LABEL_INDEX), dtype=np.float32)
        return {**self.rows[index], "labels": no_labels, "tone": np.float32(NO_TONE), "label_mask": np.float32(0.0), "quality": self.quality[index]}


def read_rated_dialogues(paths: Sequence[Path], valid_fraction: float, seed: int) -> tuple[list[Stc3Dialogue], list[Stc3Dialogue]]:
    """Rated dialogues for the quality head, minus the STC-3 benchmark test split; (train, validation)."""
    rated = []
    for path in paths:
        dialogues = read_stc3(path)
        if any(d.quality is None for d in dialogues):
            raise ValueError(f"{path}: data.quality needs rated dialogues (STC-3 with annotations); this file has none")
        rated += benchmark_split(dialogues)[0]
    random.Random(seed).shuffle(rated)
    cut = round(len(rated) * valid_fraction)
    return rated[cut:], rated[:cut]


class Collator:
    """Pads the token rows to the longest in the batch and stacks every other field (labels, tone, …)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict]) -> dict:
        batch = pad_batch(items, self.tokenizer)
        for key in items[0].keys() - batch.keys():
            batch[key] = torch.tensor(np.stack([item[key] for item in items]))
        return batch


def read_real_negatives(paths: Sequence[Path], limit: int, seed: int) -> list[Transcript]:
    """Unlabeled real dialogues as clean training turns: agent turns get `labels: []` and no tone."""
    dialogues = read_real_dialogues(paths)
    random.Random(seed).shuffle(dialogues)
    chosen, count = [], 0
    for dialogue in dialogues:
        if count >= limit:
            break
        turns = [turn.model_copy(update={"labels": []}) if turn.role == "agent" else turn for turn in dialogue.turns]
        chosen.append(dialogue.model_copy(update={"turns": turns}))
        count += sum(turn.role == "agent" for turn in turns)
    return chosen


def split_dialogues(
    train_files: Sequence[Path], valid_files: Sequence[Path], valid_fraction: float, seed: int
) -> tuple[list[Transcript], list[Transcript]]:
    """Training and validation dialogues; without validation files, a seeded share of whole dialogues."""
    if not train_files:
        raise ValueError("data.train is empty: name at least one labeled transcript file in the config")
    train = read_transcripts(train_files)
    if valid_files:
        return train, read_transcripts(valid_files)
    shuffled = list(train)
    random.Random(seed).shuffle(shuffled)
    cut = max(1, round(len(shuffled) * valid_fraction))
    if cut >= len(shuffled):
        raise ValueError(f"only {len(shuffled)} training dialogue(s): too few to hold out a validation split")
    return shuffled[cut:], shuffled[:cut]
