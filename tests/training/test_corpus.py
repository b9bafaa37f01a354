"""The corpus build: size and balance, determinism, the split, the leakage guard, recipe errors."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, SHARED, TINY_OVERRIDES
from training.corpus import PLAIN, LeakageError, LeakageGuard, RecipeError, build_corpus, unstyle_near_copies

RECIPE = ROOT / "data" / "recipe"


@pytest.fixture(scope="module")
def full_corpus(tmp_path_factory):
    """The real build (about 15 s), guarded against the dev set and the real chats when ../shared has them."""
    out = tmp_path_factory.mktemp("corpus")
    return out, build_corpus(RECIPE, out, seed=0, held_out=SHARED / "eval/dev.jsonl", real_chats=SHARED / "data")


def test_full_build_meets_size_and_balance(full_corpus):
    _, stats = full_corpus
    total = stats["all"]
    assert total["agent_turns"] >= 30_000
    assert min(total["labels"].values()) >= 1_500, total["labels"]
    assert total["clean_share"] >= 0.5
    assert 0.07 <= total["two_label_share_of_violating"] <= 0.2
    assert set(total["phases"]) == {"pre_sale", "payment", "shipping", "after_sales", "review"}
    assert len(total["categories"]) >= 11
    # Traditional (OpenCC and the Hong Kong / Taiwan banks) and long replies, in proportion to real shops.
    assert total["dialogues"] * 0.1 < total["traditional_chinese"] < total["dialogues"] * 0.3
    assert 0.08 <= total["long_share_of_violating"] <= 0.25
    assert 0 < total["with_timestamps"] < total["dialogues"]
    assert all(total["tone"][str(t)] > 0 for t in range(1, 6))


def test_corpus_is_the_taxonomy_format_with_tone_on_every_agent_turn(full_corpus):
    from zhijian.transcripts import read_transcripts

    out, stats = full_corpus
    dialogues = read_transcripts([out / "valid.jsonl"])  # validates every turn
    assert len(dialogues) == stats["valid"]["dialogues"]
    agent = [t for d in dialogues for t in d.turns if t.role == "agent"]
    assert all(t.labels is not None and t.tone is not None for t in agent)


def test_validation_uses_situations_training_never_saw(full_corpus):
    _, stats = full_corpus
    nearest = stats["variety"]["valid_to_train_nearest_jaccard"]
    assert nearest["share_at_least_0.8"] < 0.05  # few validation violations nearly copy a training turn


def test_contrast_twins_share_the_setup_and_differ_in_the_answer(full_corpus):
    out, _ = full_corpus
    dialogues = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    contrasts = [d for d in dialogues if d["meta"]["kind"] == "contrast"]
    assert contrasts and all(not t.get("labels") for d in contrasts for t in d["turns"])


def test_same_seed_same_corpus_other_seed_other_corpus(tmp_path):
    a, b, c = (tmp_path / name for name in "abc")
    build_corpus(RECIPE, a, seed=1, scale=0.03)
    build_corpus(RECIPE, b, seed=1, scale=0.03)
    build_corpus(RECIPE, c, seed=2, scale=0.03)
    assert (a / "train.jsonl").read_bytes() == (b / "train.jsonl").read_bytes()
    assert (a / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()


def test_leakage_guard_refuses_copies_and_near_copies_and_writes_nothing(tmp_path):
    import yaml

    greetings = yaml.safe_load((RECIPE / "dialogue/openers.yaml").read_text(encoding="utf-8"))["agent_greeting"]
    greeting = max((g["text"] for g in greetings if "{" not in g["text"]), key=len)  # each appears in dozens of dialogues
    near_copy = greeting[:-1] + ("吧" if greeting[-1] != "吧" else "呢")
    held_out = tmp_path / "held_out.jsonl"
    turns = [{"role": "customer", "text": "在吗"}, {"role": "agent", "text": near_copy, "labels": [], "tone": 5}]
    held_out.write_text(json.dumps({"id": "h", "turns": turns}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(LeakageError, match="nearly copy the held-out"):
        build_corpus(RECIPE, tmp_path / "out", seed=0, held_out=held_out, scale=0.3)
    assert not (tmp_path / "out" / "train.jsonl").exists()


def _real_chats(folder: Path, agent_texts: list[str]) -> Path:
    """A stand-in for ../shared/data: one CSDS-format file."""
    (folder / "csds").mkdir(parents=True)
    turns = [{"role": "agent", "text": text} for text in agent_texts]
    (folder / "csds/val_dialogues.jsonl").write_text(json.dumps({"id": "r", "turns": turns}, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder


def test_no_turn_of_eight_characters_may_copy_a_real_chat(tmp_path):
    import yaml

    closings = yaml.safe_load((RECIPE / "dialogue/closers.yaml").read_text(encoding="utf-8"))["agent_closing"]
    long_closing = max((c["text"] for c in closings if "{" not in c["text"]), key=len)
    short_closing = min((c["text"] for c in closings), key=len)  # under 8 characters: templates that short are everyone's
    assert len(short_closing) < 8
    real = _real_chats(tmp_path / "shared_data", [long_closing + "。", short_closing])
    with pytest.raises(LeakageError, match="copy or nearly copy the real chats") as refused:
        build_corpus(RECIPE, tmp_path / "out", seed=0, scale=0.3, real_chats=real)
    assert long_closing in str(refused.value) and short_closing + "'" not in str(refused.value)
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_without_the_real_chats_the_build_runs_and_says_the_guard_did_not(tmp_path):
    from typer.testing import CliRunner

    from zhijian_cli import app

    result = CliRunner().invoke(app, ["data", "build", "--out", str(tmp_path / "out"), "--scale", "0.02",
                                      "--real-chats", str(tmp_path / "absent"), "--held-out", str(tmp_path / "absent.jsonl")])
    assert result.exit_code == 0, result.output
    assert "did not run" in result.stderr
    assert json.loads((tmp_path / "out/stats.json").read_text())["real_chat_guard"] is None


def test_check_leaks_lists_each_near_copy_of_a_real_turn(tmp_path):
    from typer.testing import CliRunner

    from zhijian_cli import app

    real = _real_chats(tmp_path / "shared_data", ["请问您是咨询之前的问题还是有其他的问题需要处理呢?"])
    bank = tmp_path / "bank.yaml"
    bank.write_text(
        "part: t\nexchanges:\n  - phase: shipping\n    turns:\n      - {role: customer, text: 在吗}\n"
        "      - {role: agent, text: 请问您是咨询之前的问题还是有其他问题需要处理呢, tone: 4}\n"
        "      - {role: agent, text: 亲 物流显示明天派送哦, tone: 5}\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    found = runner.invoke(app, ["data", "check-leaks", str(bank), "--real-chats", str(real)])
    assert found.exit_code == 1 and "请问您是咨询之前的问题还是有其他问题需要处理呢" in found.stdout and "物流显示" not in found.stdout
    missing = runner.invoke(app, ["data", "check-leaks", str(bank), "--real-chats", str(tmp_path / "absent")])
    assert missing.exit_code == 2 and "absent" in missing.stderr


def test_styling_that_lands_on_a_real_turn_is_taken_back():
    guard = LeakageGuard(["thank you亲!", "请问还有什么需要帮助的吗"], min_chars=8)
    styled = {"role": "agent", "text": "thank you亲", PLAIN: "谢谢亲,祝您生活愉快"}
    untouched = {"role": "agent", "text": "您好,发票随货寄出的哦", PLAIN: "您好,发票随货寄出的哦"}
    assert unstyle_near_copies(guard, [{"turns": [styled, untouched]}]) == 1
    assert styled["text"] == "谢谢亲,祝您生活愉快" and untouched["text"] == "您好,发票随货寄出的哦"
    written = {"role": "agent", "text": "请问还有什么需要帮助的吗?", PLAIN: "请问还有什么需要帮助的吗?"}  # the bank itself copies
    with pytest.raises(LeakageError):
        unstyle_near_copies(guard, [{"turns": [written]}])


def test_platform_exchanges_come_in_whole_with_split_replies_and_clean_agent_turns(full_corpus):
    out, stats = full_corpus
    assert stats["all"]["kinds"]["platform"] >= 2000
    dialogues = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    platform = [d for d in dialogues if d["meta"]["kind"] == "platform"]
    assert all(not t["labels"] and 1 <= t["tone"] <= 5 for d in platform for t in d["turns"] if t["role"] == "agent")
    split_replies = sum(any(a["role"] == b["role"] == "agent" for a, b in zip(d["turns"], d["turns"][1:])) for d in platform)
    assert split_replies > len(platform) / 2  # real agents send one answer as several messages


def test_platform_agent_turn_without_tone_is_refused_by_file_and_key(tmp_path):
    recipe = tmp_path / "recipe"
    shutil.copytree(RECIPE, recipe)
    (recipe / "platform/zz_bad.yaml").write_text(
        "part: bad\nexchanges:\n  - phase: shipping\n    turns:\n      - {role: customer, text: 到哪了}\n      - {role: agent, text: 在路上了亲}\n",
        encoding="utf-8",
    )
    with pytest.raises(RecipeError, match=r"platform/zz_bad.yaml: exchanges\[0\].turns: .*agent turn\(s\) \[1\] have no `tone`"):
        build_corpus(recipe, tmp_path / "out")


def test_guard_measures_character_trigram_jaccard():
    guard = LeakageGuard(["亲,这款羽绒服绝对不会跑绒的"])
    assert guard.closest("亲,这款羽绒服绝对不会跑绒的")[0] == 1.0
    assert guard.closest("亲,这款羽绒服绝对不会跑绒")[0] >= 0.8
    assert guard.closest("您好,发票随货寄出")[0] < 0.2


def test_recipe_errors_name_the_file_and_key(tmp_path):
    recipe = tmp_path / "recipe"
    shutil.copytree(RECIPE, recipe)
    bank = recipe / "labels/abuse.yaml"
    bank.write_text(bank.read_text(encoding="utf-8").replace("categories: [", "categories: [spaceships, ", 1), encoding="utf-8")
    with pytest.raises(RecipeError, match=r"labels/abuse.yaml: situations.\d+.categories: unknown \['spaceships'\]"):
        build_corpus(recipe, tmp_path / "out")


def test_training_mixes_the_corpus_with_the_users_own_data(tmp_path, tiny_data):
    from training.train import train
    from zhijian.config import load_config

    corpus = tmp_path / "corpus"
    stats = build_corpus(RECIPE, corpus, seed=0, scale=0.02)
    user_turns = sum(1 for line in tiny_data["train"].read_text().splitlines() for t in json.loads(line)["turns"] if t["role"] == "agent")
    config = load_config(overrides=TINY_OVERRIDES + [
        f"data.train=[{corpus / 'train.jsonl'}, {tiny_data['train']}]",
        f"data.valid=[{corpus / 'valid.jsonl'}]",
        f"training.output_dir={tmp_path / 'run'}",
        "training.max_steps=3",
    ])
    train(config)
    summary = json.loads((tmp_path / "run/train_summary.json").read_text())
    assert summary["train_turns"] == stats["train"]["agent_turns"] + user_turns


def test_a_shops_own_unlabeled_chats_join_training_as_clean_turns_up_to_the_limit(tmp_path, tiny_data):
    from training.train import train
    from zhijian.config import load_config

    shop = tmp_path / "shop.jsonl"  # a shop's export: its own roles and fields, no labels
    chats = [
        {"id": f"s{i}", "shop": "x", "turns": [
            {"role": "customer", "text": "到哪了"}, {"role": "agent", "text": "亲 这边帮您查询一下哈"},
            {"role": "agent", "text": f"订单{i}已经到站点了 今天派送哦"}, {"role": "robot", "text": "请评价"}]}
        for i in range(30)
    ]
    shop.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats), encoding="utf-8")
    user_turns = sum(1 for line in tiny_data["train"].read_text().splitlines() for t in json.loads(line)["turns"] if t["role"] == "agent")
    config = load_config(overrides=TINY_OVERRIDES + [
        f"data.train=[{tiny_data['train']}]", f"data.valid=[{tiny_data['valid']}]",
        f"data.real_negatives=[{shop}]", "data.real_negatives_limit=40",
        f"training.output_dir={tmp_path / 'run'}", "training.max_steps=2",
    ])
    train(config)
    summary = json.loads((tmp_path / "run/train_summary.json").read_text())
    assert summary["train_turns"] == user_turns + 40  # 20 whole dialogues of 2 agent turns each: the limit, not all 60


@pytest.mark.skipif(not (SHARED / "data/csds/val_dialogues.jsonl").is_file(), reason="../shared/data/csds is absent")
def test_real_agent_replies_can_join_training_as_clean_turns():
    from training.data import read_real_negatives

    dialogues = read_real_negatives([SHARED / "data/csds/val_dialogues.jsonl"], limit=200, seed=0)
    agent = [t for d in dialogues for t in d.turns if t.role == "agent"]
    assert 200 <= len(agent) < 300 and all(t.labels == [] and t.tone is None for t in agent)
