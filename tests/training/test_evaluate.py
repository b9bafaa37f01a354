"""Evaluation: metrics against scikit-learn, calibration, the keyword baseline, CSV input, the report."""

import base64
import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from typer.testing import CliRunner

from training.baseline import KeywordBaseline
from training.metrics import exact_match, expected_calibration_error, fit_scaling, fit_thresholds, probability_metrics
from zhijian_cli import app
from zhijian.config import load_config
from zhijian.scorer import Scorer, sigmoid
from zhijian.taxonomy import LABEL_IDS
from zhijian.transcripts import TranscriptError, read_transcripts

runner = CliRunner()


def test_probability_metrics_agree_with_hand_computed_figures():
    y_true = np.zeros((4, 12), dtype=int)
    probs = np.full((4, 12), 0.05)
    y_true[[1, 2, 3], 0] = 1
    probs[:, 0] = [0.1, 0.1, 0.9, 0.9]  # bin 0.1: confidence 0.1, frequency 0.5; bin 0.9: 0.9 vs 1.0
    result = probability_metrics(y_true, probs)["over_promise"]
    assert result["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    # AP: at 0.9 precision 1 and recall 2/3, at 0.1 precision 3/4 and recall 1 -> 2/3 * 1 + 1/3 * 3/4
    assert result["pr_auc"] == pytest.approx(2 / 3 + 1 / 4)
    # ROC-AUC: the negative (0.1) against the positives 0.1 (a tie, 1/2), 0.9 and 0.9 -> 2.5 / 3
    assert result["roc_auc"] == pytest.approx(2.5 / 3)
    # Brier: (0.1² + 0.9² + 0.1² + 0.1²) / 4
    assert result["brier"] == pytest.approx(0.84 / 4)
    absent = probability_metrics(y_true, probs)["abuse"]  # no gold turn: ranking figures are undefined, not 0
    assert absent["pr_auc"] is None and absent["roc_auc"] is None and absent["ece"] == pytest.approx(0.05)
    assert expected_calibration_error(y_true[:, 0], probs[:, 0]) == pytest.approx(0.25)


def test_exact_match_counts_a_turn_only_when_its_whole_label_set_is_right():
    y_true = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    y_pred = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0]])
    assert exact_match(y_true, y_pred) == pytest.approx(2 / 3)


def test_precision_mode_picks_the_lowest_threshold_reaching_the_target():
    y_true = np.zeros((5, 12), dtype=int)
    probs = np.zeros((5, 12))
    y_true[[0, 1, 3], 2] = 1
    probs[:, 2] = [0.9, 0.8, 0.7, 0.6, 0.2]  # the turn at 0.7 is a false alarm
    fitted = fit_thresholds(y_true, probs, mode="precision", target_precision=1.0)
    assert 0.7 < fitted["rhetorical_question"] <= 0.8
    assert fit_thresholds(y_true, probs, mode="f1")["rhetorical_question"] <= 0.6  # F1 takes the extra recall
    with pytest.raises(ValueError, match="'f1' or 'precision'"):
        fit_thresholds(y_true, probs, mode="recall")


def test_platt_scaling_recovers_a_known_temperature_and_bias():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 12))
    y_true = (rng.random((4000, 12)) < sigmoid(logits / 2.0 - 1.0)).astype(int)
    temperatures, biases = fit_scaling(y_true, logits)
    assert temperatures["contempt"] == pytest.approx(2.0, rel=0.15)
    assert biases["contempt"] == pytest.approx(-1.0, abs=0.2)


def test_keyword_baseline_catches_plain_cases_and_keeps_polite_replies_clean():
    baseline = KeywordBaseline.load()
    assert "off_platform" in baseline.labels_of("加我微信,给你便宜二十")
    assert "abuse" in baseline.labels_of("你脑子有问题吧")
    assert baseline.labels_of("亲,七天无理由退换的哦,您在订单页申请就可以啦") == []


def test_baseline_config_errors_name_the_label_or_pattern(tmp_path):
    bad = tmp_path / "k.yaml"
    bad.write_text("labels:\n  rude:\n    match: ['x']\n", encoding="utf-8")
    with pytest.raises(ValueError, match="rude"):
        KeywordBaseline.load(bad)
    bad.write_text("labels:\n  abuse:\n    match: ['(unclosed']\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\(unclosed"):
        KeywordBaseline.load(bad)


CSV = """dialogue_id,turn,role,text,labels,tone
d1,2,agent,"要发票得加6个点",invoice_refusal,3
d1,1,customer,能开发票吗,,
d2,1,agent,加我微信给你便宜,off_platform;over_promise,3
d2,2,agent,好的亲,,5
"""


def test_csv_rows_become_ordered_dialogues_with_labels(tmp_path):
    path = tmp_path / "chats.csv"
    path.write_text(CSV, encoding="utf-8")
    first, second = read_transcripts([path])
    assert [t.role for t in first.turns] == ["customer", "agent"]  # ordered by the turn column
    assert first.turns[1].labels == ["invoice_refusal"] and first.turns[1].tone == 3
    assert second.turns[0].labels == ["off_platform", "over_promise"]
    assert second.turns[1].labels == []  # an empty cell on an agent turn is a clean turn


def test_csv_errors_name_the_missing_column_or_the_row(tmp_path):
    path = tmp_path / "chats.csv"
    path.write_text("dialogue_id,role,text\nd1,agent,好\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match="turn"):
        read_transcripts([path])
    path.write_text("dialogue_id,turn,role,text,labels\nd1,1,agent,好,rude\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match="rude"):
        read_transcripts([path])


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    """Calibration writes into the model folder; the session's tiny model stays as it was."""
    return shutil.copytree(tiny_model, tmp_path / "model")


def test_calibrate_writes_thresholds_and_scaling_that_the_scorer_then_applies(model_copy, tiny_data):
    before = Scorer.load(model_copy, "cpu").predict(read_transcripts([tiny_data["valid"]]))
    result = runner.invoke(app, ["calibrate", "--model", str(model_copy), "--data", str(tiny_data["valid"]), "--mode", "precision", "--target-precision", "0.9"])
    assert result.exit_code == 0, result.output
    assert "ECE" in result.stdout
    config = load_config(model_copy)
    assert set(config.calibration.temperature) == {"over_promise", "abuse", "contempt", "off_platform", "invoice_refusal"}
    assert config.calibration.bias.keys() == config.calibration.temperature.keys()
    scorer = Scorer.load(model_copy, "cpu")
    after = scorer.predict(read_transcripts([tiny_data["valid"]]))
    k = LABEL_IDS.index("abuse")
    temperature, bias = config.calibration.scaling("abuse")
    np.testing.assert_allclose(after.probs[:, k], sigmoid(before.logits[:, k] / temperature + bias), rtol=1e-5)
    assert scorer.thresholds[k] == config.thresholds.for_label("abuse")


def test_calibrate_rejects_an_unknown_mode(model_copy, tiny_data):
    result = runner.invoke(app, ["calibrate", "--model", str(model_copy), "--data", str(tiny_data["valid"]), "--mode", "recall"])
    assert result.exit_code == 2 and "--mode" in result.stderr


def test_calibrate_to_a_shops_chats_meets_the_alert_rate_and_only_raises_thresholds(model_copy, tiny_data):
    before = Scorer.load(model_copy, "cpu")
    shop = read_transcripts([tiny_data["valid"]])
    probs = before.predict(shop).probs
    assert (probs >= before.thresholds).any(axis=1).mean() > 0.1  # the tiny model flags plenty at its own thresholds
    result = runner.invoke(app, ["calibrate", "--model", str(model_copy), "--unlabeled", str(tiny_data["valid"]), "--alert-rate", "0.05"])
    assert result.exit_code == 0, result.output
    after = Scorer.load(model_copy, "cpu")
    assert (after.predict(shop).probs >= after.thresholds).any(axis=1).mean() <= 0.05
    assert (after.thresholds >= before.thresholds).all()
    assert "flagged" in result.stdout and "0.05" not in result.stderr


@pytest.mark.parametrize(
    "extra, complaint",
    [
        ([], "--alert-rate"),  # neither target
        (["--alert-rate", "0.01", "--prevalence", "0.001"], "one of --alert-rate"),  # both
        (["--alert-rate", "1.5"], "--alert-rate must be between 0 and 1"),
        (["--prevalence", "0"], "--prevalence must be between 0 and 1"),
    ],
)
def test_calibrate_to_a_shop_refuses_an_unclear_target_and_writes_nothing(model_copy, tiny_data, extra, complaint):
    written = (model_copy / "zhijian.yaml").read_bytes()
    result = runner.invoke(app, ["calibrate", "--model", str(model_copy), "--unlabeled", str(tiny_data["valid"]), *extra])
    assert result.exit_code == 2 and complaint in result.stderr
    assert (model_copy / "zhijian.yaml").read_bytes() == written


def test_calibrate_to_a_precision_target_needs_labeled_turns_for_recall(model_copy, tiny_data):
    before = Scorer.load(model_copy, "cpu").thresholds
    result = runner.invoke(
        app,
        ["calibrate", "--model", str(model_copy), "--unlabeled", str(tiny_data["valid"]), "--prevalence", "0.01",
         "--target-precision", "0.5", "--data", str(tiny_data["valid"])],
    )
    assert result.exit_code == 0, result.output
    assert "estimated precision 50%" in result.stdout
    after = Scorer.load(model_copy, "cpu").thresholds
    assert (after >= before).all() and (after > before).any()  # 1 % prevalence cannot carry the tiny model's many alerts


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.headings, self.cells, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in = tag

    def handle_data(self, data):
        if self._in in ("h2", "h3"):
            self.headings.append(data)
        elif self._in == "td":
            self.cells.append(data)


def test_report_renders_with_its_figures_worst_errors_and_metrics(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--data", str(tiny_data["valid"]), "--report", str(out), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert {"pr_auc", "roc_auc", "ece", "threshold"} <= set(printed["labels"]["abuse"])
    assert {"exact_match", "ece", "at_0.5", "baseline"} <= set(printed)
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == printed
    for name in ("pr_curves", "reliability", "confusion", "tone"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    assert len(page.images) == 4  # self-contained: the figures are inside the page
    assert all(base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG" for src in page.images)
    assert any("false positives" in h for h in page.headings) and any("false negatives" in h for h in page.headings)
    assert "invoice_refusal" in page.cells and "keyword baseline" in page.cells


def test_unlabeled_real_chats_give_the_false_alarm_contract(tiny_model, tmp_path):
    real = tmp_path / "real.jsonl"
    chats = [
        {"id": 1, "source": "jd", "turns": [{"role": "merchant", "text": "这个能退吗"}, {"role": "agent", "text": "亲,七天无理由退换的哦"}]},
        {"id": 2, "turns": [{"role": "customer", "text": "贵"}, {"role": "agent", "text": "买不起就别问,神经病"}, {"role": "robot", "text": "评价"}]},
    ]
    real.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats), encoding="utf-8")
    out, audit = tmp_path / "fa", tmp_path / "audit.jsonl"
    result = runner.invoke(
        app, ["evaluate", "--model", str(tiny_model), "--unlabeled", str(real), "--json", "--report", str(out), "--audit", str(audit)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["turns"] == 2 and set(metrics["per_label"]) == set(LABEL_IDS)
    assert metrics["per_label"]["abuse"] == 0.5 and metrics["flagged_rate"] == 0.5
    assert metrics["per_label_count"]["abuse"] == 1 and metrics["flagged_rate_without_perfunctory"] == 0.5
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "买不起就别问,神经病" in page and (out / "false_alarms.png").is_file()
    # the audit file: each flagged turn once, with its context, the labels over threshold, and a verdict to fill in
    rows = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    assert [(row["dialogue"], row["turn"], row["text"]) for row in rows] == [("real:2", 1, "买不起就别问,神经病")]
    assert "abuse" in rows[0]["labels"] and rows[0]["context"] == [{"role": "customer", "text": "贵"}] and rows[0]["verdict"] is None


def test_audit_file_needs_unlabeled_chats(tiny_model, tiny_data, tmp_path):
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--data", str(tiny_data["valid"]), "--audit", str(tmp_path / "a.jsonl")])
    assert result.exit_code == 2 and "--audit" in result.stderr and not (tmp_path / "a.jsonl").exists()


def test_evaluate_needs_exactly_one_of_data_or_unlabeled(tiny_model, tiny_data):
    both = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--data", str(tiny_data["valid"]), "--unlabeled", str(tiny_data["valid"])])
    neither = runner.invoke(app, ["evaluate", "--model", str(tiny_model)])
    assert both.exit_code == neither.exit_code == 2 and "--unlabeled" in both.stderr


def test_dialogue_checks_are_measured_against_check_gold(tiny_model, tiny_data, tmp_path):
    """Per check precision / recall over dialogues whose meta.checks gives a verdict (null: not counted)."""
    from training.evaluate import evaluate

    def chat(first_agent_text: str, gold: dict) -> dict:
        turns = [{"role": "customer", "text": "什么时候发货"}, {"role": "agent", "text": first_agent_text}, {"role": "customer", "text": "好的谢谢"}]
        return {"id": first_agent_text, "turns": turns, "meta": {"checks": gold}}

    gold_file = tmp_path / "checks.jsonl"
    chats = [
        chat("发货了", {"no_greeting": True, "slow_first_response": True}),  # rule fails it: a hit; no ts: not checked
        chat("您好 今天下午发货哦 祝您生活愉快", {"no_greeting": False}),  # rule passes it: a correct pass
        chat("明天发", {"no_greeting": False, "no_closing": None}),  # the annotator saw courtesy where the rule sees none
    ]
    gold_file.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats), encoding="utf-8")
    scorer = Scorer.load(tiny_model, "cpu")
    checks = evaluate(scorer, [tiny_data["valid"], gold_file]).metrics["dialogue_checks"]
    assert checks["no_greeting"] == {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1, "dialogues": 3, "not_checked": 0}
    assert checks["slow_first_response"]["dialogues"] == 0 and checks["slow_first_response"]["not_checked"] == 1
    assert checks["no_closing"]["dialogues"] == 0  # null gold is no verdict
    assert evaluate(scorer, [tiny_data["valid"]]).metrics["dialogue_checks"] is None  # no check gold: nothing claimed
