"""The STC-3 (DCH-1) loader, the benchmark split and the official DQ measures (NMD, RSNOD)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, SHARED

from zhijian.stc3 import (
    BINS,
    BLANK_TURN,
    QUALITY,
    Stc3Dialogue,
    Stc3FormatError,
    benchmark_split,
    dq_scores,
    gold_distributions,
    nmd,
    prior_distribution,
    read_stc3,
    rsnod,
    to_transcript,
    uniform_distribution,
)

FIXTURE = FIXTURES / "stc3_tiny.json"  # synthetic, written for these tests
TRAIN = SHARED / "data" / "stc3" / "train_data_cn.json"  # the real data (research use only), beside the checkout


def _fixture() -> list[dict]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "stc3.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


# --- the loader -------------------------------------------------------------------------------

def test_reads_the_fixture():
    first, second = read_stc3(FIXTURE)
    assert first.id == "1000000000000001"
    assert [sender for sender, _ in first.turns] == ["customer", "helpdesk", "customer"]
    # Two utterances make one turn, joined by a newline; the text is stripped.
    assert first.turns[1][1] == "您好,已为您查询,包裹在中转站滞留.\n今天会安排派送,请留意电话."
    assert first.turns[2][1] == "收到了,谢谢"
    assert second.turns[0] == ("customer", "")  # an image the crawler did not keep
    # Three annotators: A = 1, 2, 1 -> 2/3 on bin +1, 1/3 on +2.
    np.testing.assert_allclose(first.quality["A"], [0, 0, 0, 2 / 3, 1 / 3])
    np.testing.assert_allclose(first.quality["S"], [0, 0, 2 / 3, 1 / 3, 0])
    # Four annotators: S = -2, -2, -2, -1.
    np.testing.assert_allclose(second.quality["S"], [0.75, 0.25, 0, 0, 0])
    np.testing.assert_allclose(second.quality["E"], [0, 0.5, 0.5, 0, 0])
    for dialogue in (first, second):
        assert set(dialogue.quality) == set(QUALITY)
        for distribution in dialogue.quality.values():
            assert distribution.shape == (len(BINS),)
            assert distribution.sum() == pytest.approx(1.0)


def test_a_file_without_annotations_has_no_quality(tmp_path):
    data = [{key: value for key, value in item.items() if key != "annotations"} for item in _fixture()]
    dialogues = read_stc3(_write(tmp_path, data))
    assert [d.quality for d in dialogues] == [None, None]
    assert dialogues[0].turns == read_stc3(FIXTURE)[0].turns


def _set(path: tuple, value):
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data
    return mutate


def _delete(index: int, key: str):
    def mutate(data):
        del data[index][key]
        return data
    return mutate


BAD_DIALOGUES = [
    # (change to the fixture, what the error must say)
    (_delete(1, "id"), ["dialogue [1]", "id: missing"]),
    (_delete(0, "turns"), ["dialogue [0] (id 1000000000000001)", "turns: missing"]),
    (_set((1, "id"), 42), ["dialogue [1]", "id: must be a non-empty string"]),
    (_set((0, "turns"), []), ["dialogue [0]", "turns: must be a non-empty list"]),
    (_set((1, "turns", 2, "sender"), "agent"), ["(id 1000000000000002)", "turns[2].sender", "'agent'"]),
    (_set((0, "turns", 1, "utterances"), ["好的", 3]), ["dialogue [0]", "turns[1].utterances", "list of strings"]),
    (_set((0, "turns", 0, "utterances"), "一句话"), ["turns[0].utterances", "list of strings"]),
    (_set((0, "turns", 0), "一句话"), ["turns[0]", "must be an object"]),
    (_set((1, "annotations", 2, "quality", "S"), 3), ["dialogue [1]", "annotations[2].quality.S", "3 is not one of"]),
    (_set((1, "annotations", 0, "quality", "A"), "-1"), ["annotations[0].quality.A", "'-1' is not one of"]),
    (_set((1, "annotations", 0, "quality", "E"), True), ["annotations[0].quality.E", "True is not one of"]),
    (_set((0, "annotations", 1, "quality"), {"A": 1, "S": 0}), ["annotations[1].quality.E", "None is not one of"]),
    (_set((0, "annotations", 1), "x"), ["annotations[1].quality", "must be an object"]),
    (_set((0, "annotations"), []), ["dialogue [0]", "annotations: must be a non-empty list"]),
    (_set((1,), "not a dialogue"), ["dialogue [1]", "must be an object"]),
    (_set((1, "id"), "1000000000000001"), ["dialogue [1]", "id: repeats the id of dialogue [0]"]),
]


@pytest.mark.parametrize("mutate, expected", BAD_DIALOGUES)
def test_bad_dialogues_are_located(tmp_path, mutate, expected):
    path = _write(tmp_path, mutate(_fixture()))
    with pytest.raises(Stc3FormatError) as caught:
        read_stc3(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (b'[{"id": "1", "turns": [', "not valid JSON"),
        ('[{"id": "1"}]'.encode("utf-16"), "not UTF-8"),
        (b'{"id": "1", "turns": []}', "must be a JSON list of dialogues, not dict"),
    ],
)
def test_bad_files_are_located(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(Stc3FormatError, match=expected) as caught:
        read_stc3(path)
    assert str(caught.value).startswith(str(path))
    assert isinstance(caught.value, ValueError)


def test_to_transcript_keeps_every_turn_in_place():
    dialogues = read_stc3(FIXTURE)
    for dialogue in dialogues:
        transcript = to_transcript(dialogue)
        assert transcript.id == dialogue.id
        assert transcript.meta == {"source": "stc3"}
        assert len(transcript.turns) == len(dialogue.turns)
        for turn, (sender, text) in zip(transcript.turns, dialogue.turns):
            assert turn.role == {"customer": "customer", "helpdesk": "agent"}[sender]
            assert turn.text == (text or BLANK_TURN)
    blank = to_transcript(dialogues[1])
    # The blank first turn is kept as a placeholder, so the helpdesk reply is still turn 1.
    assert blank.turns[0].text == BLANK_TURN == "[图片]"
    assert blank.turns[1].role == "agent" and blank.turns[1].text.startswith("您好,图片没有显示出来")


# --- the split --------------------------------------------------------------------------------

def _dialogues(ids: list[str]) -> list[Stc3Dialogue]:
    return [Stc3Dialogue(id=i, turns=[("customer", "在吗")], quality=None) for i in ids]


def test_split_sorts_ids_as_strings_and_holds_out_every_tenth():
    ids = [str(n) for n in range(1, 26)]
    random.Random(0).shuffle(ids)  # the input order does not matter
    train, test = benchmark_split(_dialogues(ids))
    # As strings: 1, 10, 11, ..., 19, 2, 20, ..., 25, 3, 4, ..., 9; positions 0, 10 and 20 are 1, 19 and 5.
    # (An integer sort would hold out 1, 11 and 21.)
    assert [d.id for d in test] == ["1", "19", "5"]
    assert len(train) == 22
    assert {d.id for d in train} | {d.id for d in test} == set(ids)


def test_split_sizes():
    train, test = benchmark_split(_dialogues([f"{n:016d}" for n in range(3700)]))
    assert (len(train), len(test)) == (3330, 370)


# --- the measures -----------------------------------------------------------------------------

def test_identical_distributions_score_zero():
    for distribution in ([0.1, 0.2, 0.3, 0.2, 0.2], [0, 0, 1, 0, 0], [0.2] * 5):
        assert nmd(distribution, distribution) == pytest.approx(0.0)
        assert rsnod(distribution, distribution) == pytest.approx(0.0)


def test_opposite_ends_score_one():
    # All mass at -2 vs all at +2.
    # NMD: cumP = 1,1,1,1,1; cumQ = 0,0,0,0,1; sum |diff| = 4; 4 / (5-1) = 1.
    # RSNOD: (p-q)^2 = 1,0,0,0,1, so DW_i = |i-0| + |i-4| = 4 for every i;
    #   OD(p||q) over p's bin {0} = 4, OD(q||p) over q's bin {4} = 4; SOD = 4; sqrt(4 / 4) = 1.
    low, high = [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]
    assert nmd(low, high) == pytest.approx(1.0)
    assert rsnod(low, high) == pytest.approx(1.0)


def test_adjacent_bins():
    # p at -2, q at -1. NMD: cum diffs 1,0,0,0,0 -> 1/4 = 0.25.
    # RSNOD: (p-q)^2 = 1,1,0,0,0; DW_0 = 0*1 + 1*1 = 1, DW_1 = 1*1 + 0*1 = 1;
    #   OD over {0} = 1, OD over {1} = 1; SOD = 1; sqrt(1/4) = 0.5.
    assert nmd([1, 0, 0, 0, 0], [0, 1, 0, 0, 0]) == pytest.approx(0.25)
    assert rsnod([1, 0, 0, 0, 0], [0, 1, 0, 0, 0]) == pytest.approx(0.5)


def test_split_prediction_against_a_peak():
    # pred p = (.5, 0, 0, 0, .5), gold q = (0, 0, 1, 0, 0).
    # NMD: cumP = .5,.5,.5,.5,1; cumQ = 0,0,1,1,1; |diff| = .5,.5,.5,.5,0 -> 2/4 = 0.5.
    # RSNOD: (p-q)^2 = .25, 0, 1, 0, .25; DW_i = .25|i| + 1|i-2| + .25|i-4|:
    #   DW_0 = 0 + 2 + 1 = 3, DW_2 = .5 + 0 + .5 = 1, DW_4 = 1 + 2 + 0 = 3.
    #   OD(p||q) over p's bins {0, 4} = 3; OD(q||p) over q's bin {2} = 1; SOD = 2; sqrt(2/4) = 0.7071.
    #   (Averaging DW over all five bins instead, DW_1 = DW_3 = 2, would give sqrt(2.2/4) = 0.742.)
    pred, gold = [0.5, 0, 0, 0, 0.5], [0, 0, 1, 0, 0]
    assert nmd(pred, gold) == pytest.approx(0.5)
    assert rsnod(pred, gold) == pytest.approx(np.sqrt(0.5))


def test_uniform_prediction_against_a_peak():
    # pred p = uniform (.2 each), gold q = all at 0.
    # NMD: cumP = .2,.4,.6,.8,1; cumQ = 0,0,1,1,1; |diff| = .2,.4,.4,.2,0 -> 1.2/4 = 0.3.
    # RSNOD: (p-q)^2 = .04,.04,.64,.04,.04; DW_i = .04(|i|+|i-1|+|i-3|+|i-4|) + .64|i-2|:
    #   DW = 1.6, .88, .24, .88, 1.6.  OD(p||q) over all five bins = 5.2/5 = 1.04;
    #   OD(q||p) over {2} = .24; SOD = (1.04 + .24)/2 = .64; sqrt(.64/4) = 0.4.
    pred, gold = [0.2] * 5, [0, 0, 1, 0, 0]
    assert nmd(pred, gold) == pytest.approx(0.3)
    assert rsnod(pred, gold) == pytest.approx(0.4)


def test_measures_are_symmetric_normalise_and_ignore_bin_direction():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5)) * (rng.random() < 0.5)
        q[rng.integers(5)] += 1  # some zeros, never all
        for measure in (nmd, rsnod):
            assert measure(p, q) == pytest.approx(measure(q, p))
            assert measure(p * 3, q * 7) == pytest.approx(measure(p, q / q.sum()))
            # The organisers list bins from 2 down to -2; reading them the other way changes nothing.
            assert measure(p[::-1], q[::-1]) == pytest.approx(measure(p, q))
            assert 0 <= measure(p, q) <= 1


@pytest.mark.parametrize("pred, gold", [([1, 0], [1, 0, 0]), ([-0.1, 1.1], [0.5, 0.5]), ([0, 0], [1, 0]), ([[1, 0]], [[1, 0]])])
def test_measures_reject_non_distributions(pred, gold):
    for measure in (nmd, rsnod):
        with pytest.raises(ValueError):
            measure(pred, gold)


def test_dq_scores_averages_over_dialogues():
    dialogues = read_stc3(FIXTURE)
    gold = gold_distributions(dialogues)
    assert gold["A"].shape == (2, 5)
    perfect = dq_scores(gold, gold)
    assert perfect == {key: {"nmd": pytest.approx(0.0), "rsnod": pytest.approx(0.0)} for key in QUALITY}
    uniform = uniform_distribution()
    scores = dq_scores(uniform, gold)  # one (5,) prediction stands for every dialogue
    for key in QUALITY:
        for name, measure in (("nmd", nmd), ("rsnod", rsnod)):
            expected = np.mean([measure(uniform[key], row) for row in gold[key]])
            assert scores[key][name] == pytest.approx(expected)
    # Dialogue 2's A: cumQ = .25,.75,1,1,1 vs uniform's cumP = .2,.4,.6,.8,1: |diff| = .05,.35,.4,.2,0 -> 1/4.
    assert nmd(uniform["A"], gold["A"][1]) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        dq_scores({key: np.ones((3, 5)) for key in QUALITY}, gold)


def test_prior_is_the_mean_gold():
    dialogues = read_stc3(FIXTURE)
    prior = prior_distribution(dialogues)
    # S: (0, 0, 2/3, 1/3, 0) and (.75, .25, 0, 0, 0), averaged.
    np.testing.assert_allclose(prior["S"], [0.375, 0.125, 1 / 3, 1 / 6, 0])
    np.testing.assert_allclose(uniform_distribution()["E"], [0.2] * 5)
    with pytest.raises(ValueError, match="no annotations"):
        prior_distribution(_dialogues(["1"]))


# --- the anchors on the real data ---------------------------------------------------------------

@pytest.mark.skipif(not TRAIN.is_file(), reason="../shared/data/stc3/train_data_cn.json is absent")
def test_baseline_anchors_on_the_benchmark_split():
    dialogues = read_stc3(TRAIN)
    train, test = benchmark_split(dialogues)
    assert (len(train), len(test)) == (3330, 370)
    gold = gold_distributions(test)
    prior = dq_scores(prior_distribution(train), gold)
    uniform = dq_scores(uniform_distribution(), gold)
    anchors = {
        "prior nmd": ((0.139, 0.141, 0.136), [prior[k]["nmd"] for k in QUALITY]),
        "prior rsnod": ((0.182, 0.187, 0.174), [prior[k]["rsnod"] for k in QUALITY]),
        "uniform nmd": ((0.183, 0.195, 0.161), [uniform[k]["nmd"] for k in QUALITY]),
        "uniform rsnod": ((0.252, 0.265, 0.217), [uniform[k]["rsnod"] for k in QUALITY]),
    }
    for name, (expected, got) in anchors.items():
        assert got == pytest.approx(expected, abs=0.0015), name
