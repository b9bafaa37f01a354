"""`zhijian evaluate`: a model folder measured on labeled transcripts, beside a keyword baseline and a
character n-gram baseline (the bar), and the false-alarm rate on real chats that are assumed mostly clean."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from training.baseline import KeywordBaseline, NgramBaseline
from training.data import gold_arrays
from training.metrics import (
    exact_match,
    expected_calibration_error,
    label_metrics,
    probability_metrics,
    tone_metrics,
)
from zhijian.checks import FAILED, NOT_CHECKED, run_checks
from zhijian.scorer import Predictions, Scorer
from zhijian.template import CheckSettings, load_template
from zhijian.taxonomy import CHECK_IDS, LABEL_IDS
from zhijian.transcripts import Transcript, read_real_dialogues, read_transcripts


@dataclass
class Evaluation:
    """The figures (``metrics``, the `--json` object) and what the report draws them from."""

    metrics: dict
    dialogues: list[Transcript]
    predictions: Predictions  # agent turns with gold labels only
    gold: np.ndarray  # (turns, labels)
    gold_tone: np.ndarray  # (turns,), -1 where unknown
    thresholds: np.ndarray
    baselines: dict[str, np.ndarray]  # {"baseline": keyword hits, "ngram_baseline": its probabilities}: (turns, labels)


def check_metrics(dialogues: Sequence[Transcript], settings: CheckSettings) -> dict | None:
    """Per dialogue check, precision / recall / F1 of the rules against the gold in ``meta.checks``
    ({check id: true when the problem is there, false, or null when it cannot be decided}).

    A dialogue counts for a check when its gold is true or false and the rule could run (a timing check
    without timestamps is `not_checked`: counted apart). None when no dialogue carries check gold.
    """
    golden = [d for d in dialogues if isinstance(d.meta.get("checks"), dict)]
    if not golden:
        return None
    outcomes = []  # (gold, {check: the statuses its rule gave}), the rules run once per dialogue
    for dialogue in golden:
        statuses: dict[str, set[str]] = {}
        for finding in run_checks(dialogue, settings):
            statuses.setdefault(finding.check, set()).add(finding.status)
        outcomes.append((dialogue.meta["checks"], statuses))
    result = {}
    for check in CHECK_IDS:
        truth, predicted, not_checked = [], [], 0
        for gold_checks, found in outcomes:
            gold = gold_checks.get(check)
            if gold is None:
                continue
            statuses = found.get(check, set())
            if statuses == {NOT_CHECKED}:
                not_checked += 1
                continue
            truth.append(bool(gold))
            predicted.append(FAILED in statuses)
        precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="binary", zero_division=0) if truth else (0, 0, 0, 0)
        result[check] = {
            "precision": float(precision), "recall": float(recall), "f1": float(f1),
            "support": int(sum(truth)), "dialogues": len(truth), "not_checked": not_checked,
        }
    return result


def _summary(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    result = label_metrics(y_true, y_pred)
    result["exact_match"] = exact_match(y_true, y_pred)
    return result


def evaluate(
    scorer: Scorer,
    data_files: Sequence[Path],
    baseline: KeywordBaseline | None = None,
    ngram: NgramBaseline | None = None,
    checks: CheckSettings | None = None,
) -> Evaluation:
    """Model at its thresholds (and at 0.5), probability quality, tone, and the baselines: keywords
    (`baseline`) and, when given, the n-gram model (`ngram_baseline`), each at its own thresholds and
    through the same metrics as the model; and the dialogue checks (`checks`: the default template's
    settings unless given) on dialogues with check gold."""
    dialogues = read_transcripts(data_files)
    check_figures = check_metrics(dialogues, checks or load_template().checks)
    predictions = scorer.predict(dialogues)
    gold, gold_tone, labeled = gold_arrays(dialogues, predictions.features)
    if not labeled.any():
        raise ValueError(
            f"{', '.join(map(str, data_files))}: no agent turn has gold `labels` to evaluate against "
            "(a file with dialogue-check gold only, such as data/checks/dialogues.jsonl, goes beside a labeled one)"
        )
    keep = np.flatnonzero(labeled)
    predictions = Predictions(
        [predictions.features[i] for i in keep], predictions.logits[keep], predictions.probs[keep], predictions.tone[keep]
    )
    gold, gold_tone, probs = gold[keep], gold_tone[keep], predictions.probs
    systems = {"baseline": baseline or KeywordBaseline.load(), "ngram_baseline": ngram}
    scores = {key: system.predict(dialogues, predictions.features) for key, system in systems.items() if system}

    metrics = _summary(gold, probs >= scorer.thresholds)
    quality = probability_metrics(gold, probs)
    for k, label in enumerate(LABEL_IDS):
        metrics["labels"][label].update(quality[label], threshold=float(scorer.thresholds[k]))
    metrics["ece"] = expected_calibration_error(gold, probs)
    metrics["calibration"] = scorer.config.calibration.model_dump()
    metrics["at_0.5"] = _summary(gold, probs >= 0.5)
    for key, system in systems.items():
        metrics[key] = _summary(gold, scores[key] >= system.thresholds) if system else None
    metrics["tone"] = tone_metrics(gold_tone, predictions.tone)
    metrics["turns"] = len(keep)
    metrics["dialogues"] = len(dialogues)
    metrics["dialogue_checks"] = check_figures
    return Evaluation(metrics, dialogues, predictions, gold, gold_tone, scorer.thresholds.copy(), scores)


@dataclass
class FalseAlarms:
    metrics: dict  # {"turns", "flagged_rate", "flagged_rate_without_perfunctory", "per_label": {label: rate}, "per_label_count"}
    dialogues: list[Transcript]
    predictions: Predictions
    flagged: np.ndarray  # (turns, labels) bool

    def audit_rows(self, context_turns: int = 2) -> list[dict]:
        """Every flagged turn with what a person needs to judge it, and an empty verdict to fill in
        (true / false / borderline): the audit that tells real violations from false alarms."""
        rows = []
        for row in np.flatnonzero(self.flagged.any(axis=1)):
            feature = self.predictions.features[row]
            dialogue = self.dialogues[feature.dialogue]
            context = dialogue.turns[max(0, feature.turn - context_turns) : feature.turn]
            labels = {label: round(float(self.predictions.probs[row, k]), 3) for k, label in enumerate(LABEL_IDS) if self.flagged[row, k]}
            rows.append({
                "dialogue": dialogue.id,
                "turn": feature.turn,
                "context": [{"role": t.role, "text": t.text} for t in context],
                "text": dialogue.turns[feature.turn].text,
                "labels": labels,
                "verdict": None,
            })
        return rows


def evaluate_unlabeled(scorer: Scorer, files: Sequence[Path]) -> FalseAlarms:
    """Real agent replies assumed mostly clean: how often each label fires (every hit is for a person to audit)."""
    dialogues = read_real_dialogues(files)
    predictions = scorer.predict(dialogues)
    flagged = predictions.probs >= scorer.thresholds
    turns = len(predictions.features)
    serious = [k for k, label in enumerate(LABEL_IDS) if label != "perfunctory"]  # 敷衍 is low severity and the commonest
    metrics = {
        "turns": turns,
        "dialogues": len(dialogues),
        "flagged_rate": float(flagged.any(axis=1).mean()) if turns else 0.0,
        "flagged_rate_without_perfunctory": float(flagged[:, serious].any(axis=1).mean()) if turns else 0.0,
        "per_label": {label: float(flagged[:, k].mean()) if turns else 0.0 for k, label in enumerate(LABEL_IDS)},
        "per_label_count": {label: int(flagged[:, k].sum()) for k, label in enumerate(LABEL_IDS)},
    }
    return FalseAlarms(metrics, dialogues, predictions, flagged)


def evaluate_stc3(scorer: Scorer, path: Path) -> dict:
    """The quality head on the STC-3 benchmark's fixed test split, next to the prior and uniform anchors.

    The split: dialogues sorted by id, every tenth (positions 0, 10, 20, …) is test; the training
    prior is the mean gold distribution of the rest.
    """
    from zhijian.stc3 import QUALITY
    from zhijian.stc3 import benchmark_split, dq_scores, gold_distributions, prior_distribution, read_stc3, to_transcript, uniform_distribution

    dialogues = read_stc3(path)
    if any(dialogue.quality is None for dialogue in dialogues):
        raise ValueError(f"{path}: has dialogues without ratings; --stc3 needs the rated file (train_data_cn.json)")
    train, test = benchmark_split(dialogues)
    gold = gold_distributions(test)
    predicted = scorer.quality([to_transcript(dialogue) for dialogue in test])
    return {
        "dialogues": len(test),
        "model": dq_scores({scale: predicted[:, k] for k, scale in enumerate(QUALITY)}, gold),
        "prior": dq_scores(prior_distribution(train), gold),
        "uniform": dq_scores(uniform_distribution(), gold),
    }
