"""The dialogue-quality head (A/S/E on STC-3's -2..2 scale): trained alongside the labels, shown in results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES
from typer.testing import CliRunner

from zhijian_cli import app
from zhijian.config import load_config
from zhijian.featurize import Featurizer
from zhijian.model import scratch_tokenizer
from zhijian.transcripts import Transcript

runner = CliRunner()

SOLVED = ["好的,已经为您办理退款,请查收", "您好,问题已经修复了,请重启试试", "已为您补发,单号已私信"]
UNSOLVED = ["请您耐心等待", "这个我们也没办法", "请拨打客服热线"]


def rated(ratings: list[int], count: int = 19) -> list[dict]:
    """`count` annotators, cycling through `ratings`, the same on A, S and E."""
    return [{"quality": {"A": r, "S": r, "E": r}, "nugget": []} for r in (ratings * count)[:count]]


def write_rated_dialogues(path: Path, count: int = 60) -> Path:
    """Made-up STC-3-format dialogues whose ratings follow whether the helpdesk solved the problem."""
    dialogues = []
    for n in range(count):
        solved = n % 2 == 0
        reply = (SOLVED if solved else UNSOLVED)[n % 3]
        closing = "谢谢,解决了" if solved else "还是不行,太失望了"
        dialogues.append({
            "id": str(5000 + n),
            "turns": [
                {"sender": "customer", "utterances": ["我的订单有问题"]},
                {"sender": "helpdesk", "utterances": [reply]},
                {"sender": "customer", "utterances": [closing]},
            ],
            "annotations": rated([2, 1] if solved else [-2, -1]),
        })
    path.write_text(json.dumps(dialogues, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory, tiny_data) -> tuple[Path, Path]:
    from training.train import train

    folder = tmp_path_factory.mktemp("quality")
    stc3 = write_rated_dialogues(folder / "rated.json")
    config = load_config(overrides=TINY_OVERRIDES + [
        f"data.train=[{tiny_data['train']}]", f"data.valid=[{tiny_data['valid']}]", f"data.quality=[{stc3}]",
        "data.quality_repeat=2", "data.valid_fraction=0.2", "training.epochs=20", "features.dialogue_max_length=48", f"training.output_dir={folder / 'run'}",
    ])
    return train(config), stc3


def test_a_long_dialogue_keeps_the_opening_of_every_turn():
    tokenizer = scratch_tokenizer()
    featurizer = Featurizer(tokenizer, load_config(overrides=["features.dialogue_max_length=40"]).features)
    dialogue = Transcript.model_validate({"id": "long", "turns": [
        {"role": "customer", "text": "问" * 100}, {"role": "agent", "text": "好"}, {"role": "customer", "text": "谢" * 100},
    ]})
    ids = featurizer.encode_dialogue(dialogue).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert len(ids) == 40 and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert "好" in tokens and "问" in tokens and "谢" in tokens  # the short turn stays whole, the long ones share the rest
    assert abs(tokens.count("问") - tokens.count("谢")) <= 1


def test_score_shows_the_quality_distributions_and_follows_them(quality_model, tmp_path):
    model, _ = quality_model
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"id": name, "turns": [
        {"role": "customer", "text": "我的订单有问题"}, {"role": "agent", "text": reply}, {"role": "customer", "text": closing},
    ]}, ensure_ascii=False) + "\n" for name, reply, closing in [
        ("solved", SOLVED[0], "谢谢,解决了"), ("unsolved", UNSOLVED[1], "还是不行,太失望了"),
    ]), encoding="utf-8")
    result = runner.invoke(app, ["score", str(chats), "--model", str(model), "--json"])
    assert result.exit_code == 0, result.output
    results = {line["id"]: line for line in map(json.loads, result.stdout.strip().splitlines())}
    for scores in (r["quality"] for r in results.values()):
        assert set(scores) == {"A", "S", "E"}
        assert all(abs(sum(q["distribution"]) - 1) < 1e-3 and -2 <= q["expected"] <= 2 for q in scores.values())
    assert results["solved"]["quality"]["S"]["expected"] > results["unsolved"]["quality"]["S"]["expected"]
    assert "quality (-2..2)" in runner.invoke(app, ["score", str(chats), "--model", str(model)]).output


def test_evaluate_stc3_reports_nmd_and_rsnod_next_to_the_anchors(quality_model):
    model, stc3 = quality_model
    result = runner.invoke(app, ["evaluate", "--model", str(model), "--stc3", str(stc3), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dialogues"] == 6  # every tenth of 60, by id
    for predictor in ("model", "prior", "uniform"):
        assert all(0 <= report[predictor][s][m] <= 1 for s in "ASE" for m in ("nmd", "rsnod"))
    assert report["model"]["S"]["nmd"] < report["uniform"]["S"]["nmd"]
    summary = json.loads((model.parent / "train_summary.json").read_text())
    assert set(summary["valid_quality"]) == {"A", "S", "E"}


def test_a_model_without_the_quality_head_says_so(tiny_model, tmp_path):
    stc3 = write_rated_dialogues(tmp_path / "rated.json", 20)
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--stc3", str(stc3)])
    assert result.exit_code == 2 and "no dialogue-quality head" in result.output


def test_quality_data_without_ratings_is_a_clear_error(tiny_data, tmp_path):
    from training.train import train

    unrated = tmp_path / "test_data_cn.json"
    unrated.write_text(json.dumps([{"id": "1", "turns": [{"sender": "customer", "utterances": ["在吗"]}]}]), encoding="utf-8")
    config = load_config(overrides=TINY_OVERRIDES + [f"data.train=[{tiny_data['train']}]", f"data.quality=[{unrated}]", f"training.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="test_data_cn.json.*rated"):
        train(config)
