import numpy as np
import pytest

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
    # micro: 1 hit, 1 false alarm, 2 misses (one over_promise, the abuse) -> P 1/2, R 1/3, F1 0.4
    assert result["micro_f1"] == pytest.approx(0.4)


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
    assert tuned["blunt_refusal"] == pytest.approx(0.2)  # halfway between the classes: the most margin
    assert set(tuned) == {"blunt_refusal"} and len(LABEL_IDS) == 12


def test_tuned_threshold_takes_the_best_f_beta_over_every_score():
    y_true = np.zeros((6, 12), dtype=int)
    probs = np.zeros((6, 12))
    y_true[:3, 0] = 1
    probs[:, 0] = [0.9, 0.6, 0.4, 0.5, 0.3, 0.2]  # positives first
    # F1 by threshold: 0.9 -> 0.5, 0.6 -> 0.8, 0.5 -> 0.667, 0.4 -> 0.857 (P 3/4, R 1), 0.3 -> 0.75
    assert tune_thresholds(y_true, probs)["over_promise"] == pytest.approx((0.4 + 0.3) / 2)
    # F0.5 weighs precision: 0.6 (P 1, R 2/3) -> 0.909 beats 0.4 -> 0.789
    assert tune_thresholds(y_true, probs, beta=0.5)["over_promise"] == pytest.approx((0.6 + 0.5) / 2)


# -- thresholds for a shop's own traffic (zhijian calibrate --unlabeled) --------------------------

SHOP = np.array([  # 10 turns of a shop's chats, two labels
    [0.95, 0.90, 0.80, 0.70, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10],
    [0.10, 0.10, 0.10, 0.10, 0.90, 0.85, 0.60, 0.10, 0.10, 0.10],
]).T


def test_alert_rate_caps_the_share_of_turns_flagged_with_any_label():
    from training.metrics import thresholds_for_alert_rate

    current = np.array([0.5, 0.5])  # 7 of 10 turns flagged
    fitted = thresholds_for_alert_rate(SHOP, current, rate=0.2)
    flagged = (SHOP >= fitted).any(axis=1)
    assert np.flatnonzero(flagged).tolist() == [0, 4]  # each label keeps its most confident turn: 2 of 10
    assert 0.90 < fitted[0] <= 0.95 and 0.85 < fitted[1] <= 0.90


def test_alert_rate_never_lowers_a_threshold():
    from training.metrics import thresholds_for_alert_rate

    current = np.array([0.97, 0.5])  # over_promise already flags nothing here
    fitted = thresholds_for_alert_rate(SHOP, current, rate=0.5)
    assert fitted[0] == 0.97
    assert fitted[1] == 0.5  # 3 of 10 is within the budget: unchanged


def test_precision_target_uses_recall_on_labeled_turns_and_alerts_on_the_shop():
    from training.metrics import thresholds_for_precision

    gold = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 0]])
    probs = np.array([[0.95, 0.1], [0.92, 0.1], [0.91, 0.1], [0.85, 0.1], [0.2, 0.1]])
    current = np.array([0.5, 0.5])
    # label 0 at prevalence 0.2: t=0.5 flags 4/10 with recall 1 -> 0.2 * 1 / 0.4 = 0.5;
    # t=0.8 flags 3/10, recall still 1 -> 0.667, the lowest threshold reaching 0.6.
    fitted = thresholds_for_precision(SHOP, gold, probs, current, target=0.6, prevalence=0.2)
    assert fitted[0] == 0.8
    # label 1 has no labeled positives: recall counts as 1; 0.2 / 0.3 = 0.667 at the current threshold
    assert fitted[1] == 0.5
    # a target no threshold reaches flags nothing
    strict = thresholds_for_precision(SHOP, gold, probs, current, target=0.99, prevalence=0.2)
    assert not (SHOP[:, 0] >= strict[0]).any()
