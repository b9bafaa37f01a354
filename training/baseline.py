"""A keyword/regex baseline for the same 12 labels (configs/baseline/keywords.yaml).

Every evaluation scores it beside the model, so a report always shows how far the model is above
what a keyword filter would do.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zhijian.config import LabelId
from zhijian.featurize import AgentTurnFeatures
from zhijian.template import Regex
from zhijian.taxonomy import LABEL_IDS, LABEL_INDEX
from zhijian.transcripts import Transcript

DEFAULT_BASELINE = Path(__file__).resolve().parents[1] / "configs" / "baseline" / "keywords.yaml"


class KeywordRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: list[Regex] = Field(min_length=1)
    unless: list[Regex] = Field(default_factory=list)


class KeywordConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: dict[LabelId, KeywordRule]


class KeywordBaseline:
    def __init__(self, config: KeywordConfig):
        self.rules = {
            label: (re.compile("|".join(f"(?:{p})" for p in rule.match)),
                    re.compile("|".join(f"(?:{p})" for p in rule.unless)) if rule.unless else None)
            for label, rule in config.labels.items()
        }

    @classmethod
    def load(cls, path: Path = DEFAULT_BASELINE) -> KeywordBaseline:
        try:
            return cls(KeywordConfig.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8"))))
        except ValidationError as error:
            raise ValueError(f"{path}: " + "; ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in error.errors())) from None

    def labels_of(self, text: str) -> list[str]:
        return [
            label
            for label, (match, unless) in self.rules.items()
            if match.search(text) and not (unless and unless.search(text))
        ]

    def predict(self, dialogues: list[Transcript], features: list[AgentTurnFeatures]) -> np.ndarray:
        """0/1 per (agent turn, label), in the order of `features`."""
        hits = np.zeros((len(features), len(LABEL_IDS)), dtype=np.float32)
        for row, feature in enumerate(features):
            for label in self.labels_of(dialogues[feature.dialogue].turns[feature.turn].text):
                hits[row, LABEL_INDEX[label]] = 1.0
        return hits
