"""Metrics, from scikit-learn: per-label P/R/F1, micro/macro F1, tone error, threshold tuning."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.stats import spearmanr
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    mean_absolute_error,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

from zhijian.taxonomy import LABEL_IDS, TONE_MAX, TONE_MIN



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
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=present, zero_division=0)) if present else 0.0,
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
    mae = float(mean_absolute_error(true_unit[known], pred_unit[known]) * scale)
    rho = spearmanr(true_unit[known], pred_unit[known]).statistic
    return {"mae": mae, "spearman": None if np.isnan(rho) else float(rho), "count": int(known.sum())}


def _candidates(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct score as a threshold (flag at or above it), ascending, with its precision and recall."""
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    return thresholds, precision[:-1], recall[:-1]  # the last point (P = 1, R = 0) has no threshold


def _with_margin(scores: np.ndarray, threshold: float) -> float:
    """Halfway between the chosen score and the next lower one: the same turns are flagged, with the most
    margin on both sides (max-margin), instead of a threshold sitting on a validation turn's score."""
    below = scores[scores < threshold]
    return float((threshold + below.max()) / 2) if len(below) else float(threshold)


def _above_all(scores: np.ndarray) -> float:
    """A threshold that flags none of these scores."""
    return float(min(np.nextafter(np.float32(scores.max()), np.float32(1)), np.float32(1) - np.finfo(np.float32).eps))


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, default: float = 0.5, beta: float = 1.0) -> dict[str, float]:
    """Per label, the threshold with the best F-beta on these turns (F1 by default; beta < 1 weighs
    precision more), over every distinct score (scikit-learn's `precision_recall_curve`); labels
    without positives keep `default`."""
    tuned = {}
    for k, label in enumerate(LABEL_IDS):
        if y_true[:, k].sum() == 0:
            continue
        thresholds, precision, recall = _candidates(y_true[:, k], probs[:, k])
        weighted = beta**2 * precision + recall
        fbeta = np.divide((1 + beta**2) * precision * recall, weighted, out=np.zeros_like(weighted), where=weighted > 0)
        # the highest threshold among equal bests: the fewest alerts for the same F-beta
        best = len(fbeta) - 1 - int(np.argmax(fbeta[::-1]))
        tuned[label] = _with_margin(probs[:, k], thresholds[best]) if fbeta[best] > 0 else default
    return tuned


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width bins: the gap between confidence and frequency, weighted by bin size.

    scikit-learn has no ECE; its `calibration_curve` gives the per-bin figures, and the weights are
    the bin counts of the same uniform binning.
    """
    y_true, probs = np.asarray(y_true).ravel(), np.asarray(probs).ravel()
    if len(y_true) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], probs), minlength=bins)  # calibration_curve's binning
    if len(np.unique(y_true)) < 2:  # calibration_curve needs both classes; the gap is then the mean confidence error
        return float(np.abs(probs - y_true).mean())
    frequency, confidence = calibration_curve(y_true, probs, n_bins=bins, strategy="uniform")
    weights = counts[counts > 0] / len(probs)
    return float(np.sum(weights * np.abs(frequency - confidence)))


def probability_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Per label: PR-AUC (average precision), ROC-AUC, ECE and Brier; ROC-AUC is None without both classes."""
    result = {}
    for k, label in enumerate(LABEL_IDS):
        truth, p = y_true[:, k], probs[:, k]
        both = 0 < truth.sum() < len(truth)
        result[label] = {
            "pr_auc": float(average_precision_score(truth, p)) if truth.sum() else None,
            "roc_auc": float(roc_auc_score(truth, p)) if both else None,
            "ece": expected_calibration_error(truth, p),
            "brier": float(brier_score_loss(truth, p, pos_label=1)) if len(truth) else None,
        }
    return result


def exact_match(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of turns whose predicted label set equals the gold set (scikit-learn's subset accuracy)."""
    return float(accuracy_score(y_true, y_pred))


def fit_thresholds(
    y_true: np.ndarray, probs: np.ndarray, mode: str = "f1", target_precision: float = 0.8, default: float = 0.5
) -> dict[str, float]:
    """Per-label thresholds: max F1, or the lowest threshold whose precision reaches the target."""
    if mode == "f1":
        return tune_thresholds(y_true, probs, default)
    if mode != "precision":
        raise ValueError(f"threshold mode must be 'f1' or 'precision', not {mode!r}")
    fitted = {}
    for k, label in enumerate(LABEL_IDS):
        if y_true[:, k].sum() == 0:
            continue
        thresholds, precision, _ = _candidates(y_true[:, k], probs[:, k])
        reaching = np.flatnonzero(precision >= target_precision)
        fitted[label] = _with_margin(probs[:, k], thresholds[reaching[0]]) if len(reaching) else _above_all(probs[:, k])
    return fitted


def _cap_rate(ranked: np.ndarray, threshold: float, share: float) -> float:
    """The lowest threshold at or above `threshold` that flags at most `share` of these probabilities
    (`ranked`: sorted, highest first)."""
    allowed = int(np.floor(share * len(ranked) + 1e-9))
    if allowed >= len(ranked):
        return threshold
    return float(max(threshold, np.nextafter(ranked[allowed], np.float32(1))))  # just above the first turn over the cap


def thresholds_for_alert_rate(probs: np.ndarray, current: np.ndarray, rate: float) -> np.ndarray:
    """Per-label thresholds, none lowered, under which at most `rate` of these turns get any label.

    Every label is capped at the same share s of the turns, the largest s whose any-label rate stays
    within `rate`; labels already under the cap keep their thresholds. The turns are a shop's own
    chats, mostly clean, so the rate is the number of alerts a QA team will get to read.
    """
    ranked = -np.sort(-probs, axis=0)  # each label's probabilities, highest first: sorted once for the bisection

    def capped(share: float) -> np.ndarray:
        return np.array([_cap_rate(ranked[:, k], current[k], share) for k in range(probs.shape[1])])

    low, high = 0.0, rate
    for _ in range(40):  # bisection: the any-label rate grows with s
        middle = (low + high) / 2
        low, high = (middle, high) if (probs >= capped(middle)).any(axis=1).mean() <= rate else (low, middle)
    return np.minimum(capped(low), np.float32(1) - np.finfo(np.float32).eps)


def thresholds_for_precision(
    shop_probs: np.ndarray, gold: np.ndarray, probs: np.ndarray, current: np.ndarray, target: float, prevalence: float
) -> np.ndarray:
    """Per label, the lowest threshold (not below the current one) whose estimated precision on the shop's
    own chats reaches `target`.

    Precision there is true alerts over all alerts. All alerts are counted on the shop's unlabeled chats
    (alert rate a(t)); true ones are estimated as prevalence × recall(t), the recall measured on labeled
    turns (`gold`, `probs`) and the prevalence being how often a turn of this shop really violates the
    label (an audit's estimate). Estimated precision = prevalence × recall(t) / a(t).
    """
    def share_at_or_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        ordered = np.sort(values)
        return (len(ordered) - np.searchsorted(ordered, thresholds, side="left")) / len(ordered)

    fitted = current.astype(float).copy()
    for k in range(shop_probs.shape[1]):
        shop, positives = shop_probs[:, k], probs[gold[:, k] == 1, k]
        candidates = np.unique(np.concatenate([[current[k]], shop[shop > current[k]]]))  # ascending
        alerts = share_at_or_above(shop, candidates)
        recall = share_at_or_above(positives, candidates) if len(positives) else np.ones(len(candidates))
        with np.errstate(divide="ignore"):  # no alert at all reaches any target
            reached = (alerts == 0) | (prevalence * recall / alerts >= target)
        # the lowest that reaches the target; none does: above every turn, nothing is flagged
        fitted[k] = candidates[np.argmax(reached)] if reached.any() else _cap_rate(-np.sort(-shop), current[k], 0.0)
    return np.minimum(fitted, np.float32(1) - np.finfo(np.float32).eps)


def fit_scaling(y_true: np.ndarray, logits: np.ndarray, bias: bool = True) -> tuple[dict[str, float], dict[str, float]]:
    """Per label, temperature T (and bias b) minimizing the log loss of sigmoid(logit / T + b).

    With the bias this is Platt scaling; it also undoes the shift that BCE positive weights put
    into the logits (about log(pos_weight)), which temperature alone cannot. Targets are Platt's
    smoothed ones, (positives + 1) / (positives + 2) and 1 / (negatives + 2), so a validation set
    the model separates perfectly gives a finite temperature instead of T -> 0.
    Returns ({label: T}, {label: b}); labels without both classes are left out (T = 1, b = 0).
    """
    temperatures, biases = {}, {}
    for k, label in enumerate(LABEL_IDS):
        truth = y_true[:, k].astype(float)
        positives = truth.sum()
        if not 0 < positives < len(truth):
            continue
        target = np.where(truth == 1, (positives + 1) / (positives + 2), 1 / (len(truth) - positives + 2))

        def loss(params: np.ndarray) -> float:
            z = logits[:, k] * np.exp(-params[0]) + (params[1] if bias else 0.0)
            # -[t log sigmoid(z) + (1 - t) log sigmoid(-z)], overflow-free
            return float(np.mean(target * np.logaddexp(0, -z) + (1 - target) * np.logaddexp(0, z)))

        bounds = [(-4.0, 4.0), (-20.0, 20.0) if bias else (0.0, 0.0)]
        log_t, b = minimize(loss, x0=np.zeros(2), method="L-BFGS-B", bounds=bounds).x
        temperatures[label] = float(np.exp(log_t))
        if bias:
            biases[label] = float(b)
    return temperatures, biases
