"""Accuracy machinery: the model learns beyond its training text, the n-gram bar goes through the model's
own evaluation, long replies are read whole (windows), Traditional Chinese reads as Simplified."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from training.baseline import NgramBaseline
from training.evaluate import evaluate
from conftest import FIXTURES
from zhijian_cli import app
from zhijian.config import FeaturesSection
from zhijian.evidence import locate
from zhijian.featurize import Featurizer
from zhijian.model import scratch_tokenizer
from zhijian.scorer import Scorer
from zhijian.taxonomy import LABEL_INDEX
from zhijian.transcripts import Transcript, read_transcripts

runner = CliRunner()


def test_tiny_model_separates_two_labels_on_replies_it_never_saw(tiny_model):
    """tests/fixtures/heldout_tiny.jsonl words off-platform and invoice refusals in ways the tiny set never did."""
    dialogues = read_transcripts([FIXTURES / "heldout_tiny.jsonl"])
    predictions = Scorer.load(tiny_model, "cpu", "torch").predict(dialogues)
    off, invoice = LABEL_INDEX["off_platform"], LABEL_INDEX["invoice_refusal"]
    for feature, probs in zip(predictions.features, predictions.probs):
        gold = dialogues[feature.dialogue].turns[feature.turn].labels
        text = dialogues[feature.dialogue].turns[feature.turn].text
        if gold == ["off_platform"]:
            assert probs[off] > probs[invoice], text
        else:
            assert probs[invoice] > probs[off], text


def test_ngram_baseline_is_scored_by_the_models_evaluation(tiny_model, tiny_data):
    dialogues = read_transcripts([tiny_data["train"]])
    bar = NgramBaseline.fit(dialogues, read_transcripts([tiny_data["valid"]]))
    scorer = Scorer.load(tiny_model, "cpu", "torch")
    heldout = evaluate(scorer, [FIXTURES / "heldout_tiny.jsonl"], ngram=bar)
    metrics = heldout.metrics
    # The same summary as the model's and the keyword baseline's, from the same gold turns.
    assert set(metrics["ngram_baseline"]) == set(metrics["baseline"]) >= {"macro_f1", "micro_f1", "exact_match", "labels"}
    assert metrics["ngram_baseline"]["labels"]["off_platform"]["support"] == metrics["labels"]["off_platform"]["support"] == 3
    # Each figure is the n-gram model's own: counted here from its probabilities and thresholds.
    predicted = heldout.baselines["ngram_baseline"] >= bar.thresholds
    right = [(predicted[row] == heldout.gold[row]).all() for row in range(len(heldout.gold))]
    assert metrics["ngram_baseline"]["exact_match"] == pytest.approx(np.mean(right))


def test_evaluate_cli_trains_and_prints_the_ngram_bar(tiny_model, tiny_data):
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--data", str(tiny_data["valid"]), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["ngram_baseline"]["macro_f1"] > printed["baseline"]["macro_f1"] - 1  # present and a number
    table = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--data", str(tiny_data["valid"])])
    assert "n-gram baseline (the bar)" in table.stdout
    skipped = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--data", str(tiny_data["valid"]), "--json", "--no-ngram"])
    assert json.loads(skipped.stdout)["ngram_baseline"] is None


def _long_dialogue(violation: str) -> Transcript:
    filler = "亲,您好,这边已经帮您查询到订单的物流信息了,包裹目前在转运中心,预计两到三天送达,请您耐心等待一下哦。"
    text = filler * 3 + violation + "。" + filler
    return Transcript.model_validate({"id": "long", "turns": [{"role": "customer", "text": "在吗 我的快递到哪了"}, {"role": "agent", "text": text}]})


def test_a_violation_inside_a_long_reply_is_found_and_pointed_at(tiny_model):
    scorer = Scorer.load(tiny_model, "cpu", "torch")
    violation = "加我微信,给你便宜二十"
    dialogue = _long_dialogue(violation)
    text = dialogue.turns[1].text
    off = LABEL_INDEX["off_platform"]
    windowed = scorer.predict([dialogue])
    whole = Scorer(scorer.model, scorer.tokenizer, scorer.config.model_copy(update={"features": scorer.config.features.model_copy(update={"window_chars": 0})}))
    assert len(text) > 3 * scorer.config.features.window_chars
    assert windowed.probs[0, off] >= scorer.thresholds[off] > whole.predict([dialogue]).probs[0, off]
    start, end = locate(scorer, [dialogue], windowed, {0: [off]})[0][off]
    at = text.index(violation)
    assert at <= start < end <= at + len(violation)  # a clause of the violation, not of the polite text around it


def test_windows_cover_a_long_text_and_keep_every_short_clause_whole():
    featurizer = Featurizer(scratch_tokenizer(), FeaturesSection(window_chars=40))
    assert featurizer.windows(40) == [None]
    windows = featurizer.windows(150)
    assert windows[0][0] == 0 and windows[-1][1] == 150 and all(end - start == 40 for start, end in windows)
    for clause_start in range(0, 150 - 20 + 1):  # any 20 characters (half a window) lie inside one window
        assert any(start <= clause_start and clause_start + 20 <= end for start, end in windows)


def test_traditional_characters_read_as_simplified():
    folded = Featurizer(scratch_tokenizer(), FeaturesSection(to_simplified=True, ngram_buckets=1024))
    plain = Featurizer(scratch_tokenizer(), FeaturesSection(ngram_buckets=1024))
    traditional, simplified = "特價商品不開發票,請見諒", "特价商品不开发票,请见谅"
    assert folded._tokenize([traditional]) == folded._tokenize([simplified]) != plain._tokenize([traditional])
    assert folded.ngrams(traditional) == folded.ngrams(simplified) != plain.ngrams(traditional)
