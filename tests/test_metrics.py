import numpy as np
from sklearn.metrics import f1_score

from training.metrics import label_metrics, tone_metrics, tune_thresholds
from zhijian.taxonomy import LABEL_IDS


def test_label_metrics_agree_with_hand_computed_figures():
    y_true = np.zeros((4, 12), dtype=int)
    y_pred = np.zeros((4, 12), dtype=int)
    y_true[[0, 1], 0] = 1  # over_promise: 2 gold
    y_pred[[0, 2], 0] = 1  # one hit, one false alarm -> P = R = 0.5
    y_true[3, 4] = 1  # abuse: missed -> F1 0
    result = label_metrics(y_true, y_pred)
    assert result["labels"]["over_promise"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert result["labels"]["abuse"]["f1"] == 0.0
    assert result["macro_f1"] == 0.25  # over the two labels that occur, not all twelve
    assert result["micro_f1"] == f1_score(y_true, y_pred, average="micro")


def test_tone_metrics_skip_turns_without_gold_and_use_the_1_to_5_scale():
    result = tone_metrics(np.array([0.0, 0.5, 1.0, -1.0]), np.array([0.25, 0.5, 1.0, 0.9]))
    assert result["mae"] == (1.0 + 0 + 0) / 3
    assert result["count"] == 3 and result["spearman"] == 1.0


def test_tuned_threshold_separates_a_low_scoring_label():
    y_true = np.zeros((6, 12), dtype=int)
    probs = np.full((6, 12), 0.01)
    y_true[:3, 1] = 1
    probs[:3, 1] = 0.3  # the model is right but under-confident: 0.5 misses all three
    probs[3:, 1] = 0.1
    tuned = tune_thresholds(y_true, probs)
    assert 0.1 < tuned["blunt_refusal"] <= 0.3
    assert set(tuned) == {"blunt_refusal"} and len(LABEL_IDS) == 12
