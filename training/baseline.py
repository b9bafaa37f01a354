"""The baselines every evaluation scores beside the model, through the same metrics and report.

- `KeywordBaseline`: keyword/regex rules for the 12 labels (configs/baseline/keywords.yaml): what a
  keyword filter would do.
- `NgramBaseline`: a character 1–3-gram TF-IDF + one-vs-rest logistic regression (scikit-learn), trained
  in seconds on the model's own `data.train` with thresholds fitted on its `data.valid`. It reads only the
  agent turn, no context. It is the bar: a recipe that does not clear it has not learned more than the
  wording of its corpus.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from collections.abc import Sequence

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from training.metrics import tune_thresholds
from zhijian.config import ZhijianConfig, describe_validation_error
from zhijian.featurize import AgentTurnFeatures
from zhijian.template import Regex
from zhijian.taxonomy import AGENT, LABEL_IDS, LABEL_INDEX, LabelId
from zhijian.transcripts import Transcript

# Package data, so a wheel install has it too; configs/baseline/keywords.yaml links here.
DEFAULT_BASELINE = Path(str(files("training") / "defaults" / "keywords.yaml"))


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
            raise ValueError(f"{path}: {describe_validation_error(error)}") from None

    def labels_of(self, text: str) -> list[str]:
        return [
            label
            for label, (match, unless) in self.rules.items()
            if match.search(text) and not (unless and unless.search(text))
        ]

    thresholds = np.full(len(LABEL_IDS), 0.5)

    def predict(self, dialogues: list[Transcript], features: list[AgentTurnFeatures]) -> np.ndarray:
        """0/1 per (agent turn, label), in the order of `features`."""
        hits = np.zeros((len(features), len(LABEL_IDS)), dtype=np.float32)
        for row, feature in enumerate(features):
            for label in self.labels_of(dialogues[feature.dialogue].turns[feature.turn].text):
                hits[row, LABEL_INDEX[label]] = 1.0
        return hits


def _agent_texts(dialogues: Sequence[Transcript]) -> tuple[list[str], np.ndarray]:
    """Every labeled agent turn's text and its multi-hot labels."""
    texts, labels = [], []
    for dialogue in dialogues:
        for turn in dialogue.turns:
            if turn.role == AGENT and turn.labels is not None:
                texts.append(turn.text)
                labels.append([float(label in turn.labels) for label in LABEL_IDS])
    return texts, np.array(labels, dtype=np.float32).reshape(-1, len(LABEL_IDS))


class NgramBaseline:
    """Character n-gram TF-IDF + one-vs-rest logistic regression on the agent turn alone."""

    def __init__(self, vectorizer: TfidfVectorizer, classifier: OneVsRestClassifier, thresholds: np.ndarray):
        self.vectorizer, self.classifier, self.thresholds = vectorizer, classifier, thresholds

    @classmethod
    def fit(cls, train: Sequence[Transcript], valid: Sequence[Transcript], C: float = 4.0, beta: float = 1.0) -> NgramBaseline:
        """Fit on the training dialogues' labeled agent turns; thresholds for max F-beta on the validation ones."""
        texts, labels = _agent_texts(train)
        if not texts:
            raise ValueError("the n-gram baseline needs labeled agent turns in data.train")
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
        classifier = OneVsRestClassifier(LogisticRegression(C=C, class_weight="balanced", max_iter=1000), n_jobs=-1)
        classifier.fit(vectorizer.fit_transform(texts), labels)
        baseline = cls(vectorizer, classifier, np.full(len(LABEL_IDS), 0.5))
        valid_texts, valid_labels = _agent_texts(valid)
        if len(valid_texts):
            tuned = tune_thresholds(valid_labels, baseline.probabilities(valid_texts), beta=beta)
            baseline.thresholds = np.array([tuned.get(label, 0.5) for label in LABEL_IDS])
        return baseline

    @classmethod
    def from_config(cls, config: ZhijianConfig) -> NgramBaseline:
        """Trained on a model config's `data.train` / `data.valid`, split as `zhijian train` splits them, its
        thresholds tuned as the model's are (`thresholds.tune_beta`): the bar is measured the model's way."""
        from training.data import split_dialogues

        data = config.data
        return cls.fit(*split_dialogues(data.train, data.valid, data.valid_fraction, config.training.seed), beta=config.thresholds.tune_beta)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, len(LABEL_IDS)))
        return self.classifier.predict_proba(self.vectorizer.transform(list(texts)))

    def predict(self, dialogues: list[Transcript], features: list[AgentTurnFeatures]) -> np.ndarray:
        """Probabilities per (agent turn, label), in the order of `features`."""
        return self.probabilities([dialogues[f.dialogue].turns[f.turn].text for f in features])
