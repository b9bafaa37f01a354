"""Metrics, from scikit-learn: per-label P/R/F1, micro/macro F1, tone error, threshold tuning."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import f1_score, precision_recall_fscore_support

from zhijian.taxonomy import LABEL_IDS, TONE_MAX, TONE_MIN

THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


def label_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Per-label precision/recall/F1/support, and micro and macro F1.

    Macro F1 averages the labels that occur in the gold data: a label with no gold turn has no
    defined recall, and counting it as 0 would punish a small evaluation set for what it lacks.
    """
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, labels=range(len(LABEL_IDS)), zero_division=0
    )
    present = [k for k in range(len(LABEL_IDS)) if support[k] > 0]
    return {
        "macro_f1": float(np.mean(f1[present])) if present else 0.0,
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "labels": {
            label: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, label in enumerate(LABEL_IDS)
        },
    }


def tone_metrics(true_unit: np.ndarray, pred_unit: np.ndarray) -> dict:
    """MAE in tone points on the 1–5 scale, and Spearman's rank correlation; turns without gold tone (< 0) are skipped."""
    known = true_unit >= 0
    if known.sum() < 2:
        return {"mae": None, "spearman": None, "count": int(known.sum())}
    scale = TONE_MAX - TONE_MIN
    mae = float(np.mean(np.abs(true_unit[known] - pred_unit[known])) * scale)
    rho = spearmanr(true_unit[known], pred_unit[known]).statistic
    return {"mae": mae, "spearman": None if np.isnan(rho) else float(rho), "count": int(known.sum())}


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, default: float = 0.5) -> dict[str, float]:
    """Per label, the grid threshold with the best F1 on these turns; labels without positives keep `default`."""
    tuned = {}
    for k, label in enumerate(LABEL_IDS):
        if y_true[:, k].sum() == 0:
            continue
        scores = [f1_score(y_true[:, k], probs[:, k] >= t, zero_division=0) for t in THRESHOLD_GRID]
        best = int(np.argmax(scores))  # ties go to the lowest threshold, i.e. the most recall
        tuned[label] = float(THRESHOLD_GRID[best]) if scores[best] > 0 else default
    return tuned
