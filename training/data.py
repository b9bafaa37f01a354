"""Labeled transcripts -> training examples (agent turns with gold labels and tone)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from zhijian.featurize import AgentTurnFeatures, Featurizer, pad_batch
from zhijian.taxonomy import LABEL_INDEX, tone_to_unit
from zhijian.transcripts import Transcript, read_transcripts

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


class TurnDataset(torch.utils.data.Dataset):
    """Every labeled agent turn of a set of dialogues, featurized once up front."""

    def __init__(self, dialogues: Sequence[Transcript], featurizer: Featurizer):
        features = featurizer.encode(dialogues)
        labels, tone, labeled = gold_arrays(dialogues, features)
        keep = np.flatnonzero(labeled)
        self.rows = [features[i].as_model_input() for i in keep]
        self.labels = labels[keep]
        self.tone = tone[keep]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return {**self.rows[index], "labels": self.labels[index], "tone": self.tone[index]}

    def pos_weight(self, cap: float) -> list[float]:
        """negatives/positives per label, capped; 1 for a label with no positives."""
        positives = self.labels.sum(axis=0)
        negatives = len(self.labels) - positives
        return [float(min(cap, n / p)) if p else 1.0 for p, n in zip(positives, negatives)]


class Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        batch = pad_batch(items, self.pad_id)
        batch["labels"] = torch.tensor(np.stack([item["labels"] for item in items]))
        batch["tone"] = torch.tensor(np.array([item["tone"] for item in items]))
        return batch


# Real archives name more parties than the taxonomy: a merchant writing to platform support plays the customer.
_REAL_ROLES = {"agent": "agent", "customer": "customer", "merchant": "customer"}


def read_real_negatives(paths: Sequence[Path], limit: int, seed: int) -> list[Transcript]:
    """Unlabeled real dialogues as clean training turns: agent turns get `labels: []` and no tone.

    Lenient on purpose (extra fields, other roles): these are other people's archives, not our format.
    """
    import json

    dialogues = []
    for path in paths:
        with Path(path).open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                data = json.loads(line)
                turns = [
                    {"role": _REAL_ROLES[t["role"]], "text": t["text"].strip()}
                    | ({"labels": []} if t["role"] == "agent" else {})
                    for t in data.get("turns", [])
                    if t.get("role") in _REAL_ROLES and str(t.get("text", "")).strip()
                ]
                if any(t["role"] == "agent" for t in turns):
                    dialogues.append(Transcript(id=f"{Path(path).stem}:{data.get('id', line_number)}", turns=turns))
    random.Random(seed).shuffle(dialogues)
    chosen, count = [], 0
    for dialogue in dialogues:
        if count >= limit:
            break
        chosen.append(dialogue)
        count += sum(t.role == "agent" for t in dialogue.turns)
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
