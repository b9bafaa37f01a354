"""`zhijian pretrain`: a few masked-LM steps on mixed inputs give an encoder `zhijian train` starts from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import FIXTURES, make_dialogues, write_jsonl
from zhijian_cli import app

runner = CliRunner()
STC3_FIXTURE = FIXTURES / "stc3_tiny.json"
TINY_ENCODER = [
    "model.base=scratch",
    "model.scratch.hidden_size=32",
    "model.scratch.num_hidden_layers=1",
    "model.scratch.num_attention_heads=2",
    "model.scratch.intermediate_size=64",
    "features.max_length=48",
    "training.batch_size=8",
    "training.eval_batch_size=8",
    "training.learning_rate=0.001",
    "training.logging_steps=1000",
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pretrain-inputs")
    transcripts = write_jsonl(folder / "chats.jsonl", make_dialogues(2))
    text = folder / "lines.txt"
    text.write_text("亲,在的呢\n\n这款有现货吗?\n七天无理由退换哦\n", encoding="utf-8")
    return [transcripts, text]


def pretrain_command(config_overrides: list[str], out: Path, steps: int, *extra: str) -> list[str]:
    overrides = TINY_ENCODER + config_overrides + [f"training.output_dir={out}", f"training.max_steps={steps}", "training.eval_steps=2"]
    return ["pretrain", "-c", str(Path("configs/pretrain-offline.yaml")), *[a for o in overrides for a in ("--set", o)], *extra]


@pytest.fixture(scope="module")
def encoder(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain-run")
    listed = "[" + ",".join(str(p) for p in inputs) + "]"
    result = runner.invoke(app, pretrain_command([f"pretrain.inputs={listed}"], out, 4))
    assert result.exit_code == 0, result.output
    return out


def test_pretrain_writes_a_masked_lm_folder_that_transformers_loads(encoder):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(encoder / "model")
    tokenizer = AutoTokenizer.from_pretrained(encoder / "model")
    inputs = tokenizer("亲,七天无理由[MASK]换哦", return_tensors="pt")
    assert model(**inputs).logits.shape[-1] == len(tokenizer)
    summary = json.loads((encoder / "pretrain_summary.json").read_text())
    assert summary["steps"] == 4 and summary["train_inputs"] > 0


def test_train_starts_from_the_pretrained_encoder(encoder, tiny_data):
    from transformers import AutoModelForMaskedLM

    from zhijian.config import load_config
    from zhijian.model import build_model

    config = load_config(overrides=[f"model.base={encoder / 'model'}"])
    model, tokenizer, source = build_model(config.model)
    pretrained = AutoModelForMaskedLM.from_pretrained(encoder / "model")
    assert str(encoder / "model") in source
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, pretrained.bert.embeddings.word_embeddings.weight)
    assert torch.equal(model.bert.encoder.layer[0].output.dense.weight, pretrained.bert.encoder.layer[0].output.dense.weight)


def test_scoring_with_the_encoder_folder_says_to_fine_tune_it_first(encoder, tmp_path):
    chat = tmp_path / "chat.txt"
    chat.write_text("买家: 在吗\n客服: 在的亲\n", encoding="utf-8")
    result = runner.invoke(app, ["score", str(chat), "--model", str(encoder / "model")])
    assert result.exit_code == 2
    assert "pre-trained encoder" in result.output and "zhijian train" in result.output


def test_pretrain_resumes_from_its_last_checkpoint(inputs, tmp_path):
    listed = [f"pretrain.inputs=[{inputs[0]}]"]
    assert runner.invoke(app, pretrain_command(listed, tmp_path, 2)).exit_code == 0
    result = runner.invoke(app, pretrain_command(listed, tmp_path, 4, "--resume"))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "pretrain_summary.json").read_text())
    assert summary["steps"] == 4 and (tmp_path / "checkpoints" / "checkpoint-4").is_dir()
    assert summary["started_at_step"] == 2 and summary["steps_run"] == 2  # went on from step 2: did not redo steps 1-2


@pytest.mark.skipif(not STC3_FIXTURE.is_file(), reason="no STC-3 fixture")
def test_stc3_benchmark_test_dialogues_stay_out_of_pretraining():
    from training.pretrain import read_unlabeled
    from zhijian.stc3 import benchmark_split, read_stc3

    _, test = benchmark_split(read_stc3(STC3_FIXTURE))
    read = {dialogue.id for dialogue in read_unlabeled(STC3_FIXTURE)}
    assert read and not read & {dialogue.id for dialogue in test}


def test_missing_input_is_a_clear_error(tmp_path):
    result = runner.invoke(app, pretrain_command([f"pretrain.inputs=[{tmp_path / 'nope.jsonl'}]"], tmp_path, 2))
    assert result.exit_code == 2
    assert "nope.jsonl" in result.output and "no such file" in result.output
