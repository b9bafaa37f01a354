import builtins
import hashlib
import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import zhijian
from conftest import SHARED
from zhijian.backends import auto_backend
from zhijian.config import ModelSection, ScratchSize
from zhijian.inspector import Inspector
from zhijian.model import HubUnreachable, ModelFolder, build_model, load_model_folder, save_model_folder
from zhijian.config import load_config
from zhijian.scorer import Scorer

TINY = ScratchSize(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def test_unreachable_hub_error_names_both_offline_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachable) as error:
        build_model(ModelSection(base="bert-base-chinese"))
    message = str(error.value)
    assert "'bert-base-chinese'" in message and "unreachable" in message
    assert "local folder" in message and "model.base: scratch" in message


def test_fallback_to_scratch_when_the_hub_is_down(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer, source = build_model(ModelSection(base="uer/chinese_roberta_L-4_H-256", fallback="scratch", scratch=TINY))
    assert source.startswith("scratch") and "falling back to `scratch`" in caplog.text
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tokenizer)


def test_two_heads_and_a_loss_that_ignores_unknown_tone():
    model, _, _ = build_model(ModelSection(base="scratch", scratch=TINY))
    ids = torch.tensor([[2, 10, 3, 11, 3], [2, 12, 3, 13, 3]])
    out = model(input_ids=ids, labels=torch.zeros(2, 12), tone=torch.tensor([-1.0, -1.0]))
    assert out.logits.shape == (2, 12) and ((out.tone >= 0) & (out.tone <= 1)).all()
    bce_only = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, torch.zeros(2, 12))
    assert torch.isclose(out.loss, bce_only)  # unknown tone (-1) adds nothing


def test_positive_weights_raise_the_cost_of_missing_a_rare_label():
    model, _, _ = build_model(ModelSection(base="scratch", scratch=TINY, dropout=0.0))
    model.eval()
    ids = torch.tensor([[2, 10, 3, 11, 3]])
    labels = torch.zeros(1, 12)
    labels[0, 4] = 1
    before = model(input_ids=ids, labels=labels).loss
    model.set_pos_weight([1.0] * 4 + [10.0] + [1.0] * 7)
    assert model(input_ids=ids, labels=labels).loss > before
    assert model.config.pos_weight[4] == 10.0


def test_model_folder_loads_with_automodel_and_with_zhijian(tmp_path):
    model, tokenizer, _ = build_model(ModelSection(base="scratch", scratch=TINY))
    folder = save_model_folder(model, tokenizer, load_config(overrides=["model.base=scratch"]), tmp_path / "model")
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "zhijian.yaml", "vocab.txt", "tokenizer.json"} <= names
    encoder = AutoModel.from_pretrained(folder)
    assert torch.equal(encoder.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)
    loaded, _, config = load_model_folder(folder)
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)
    assert config.model.base == "scratch" and loaded.config.id2label[4] == "abuse"
    # readable by others (a container's non-root user), not private like the temporary folder it was built in
    assert folder.stat().st_mode & 0o005 == 0o005 and (folder / "model.safetensors").stat().st_mode & 0o004


def test_saving_again_replaces_the_folder_whole(tmp_path):
    model, tokenizer, _ = build_model(ModelSection(base="scratch", scratch=TINY))
    config = load_config(overrides=["model.base=scratch"])
    folder = save_model_folder(model, tokenizer, config, tmp_path / "model")
    (folder / "stale.txt").write_text("from an older run")
    save_model_folder(model, tokenizer, config, folder)
    assert not (folder / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folders left behind


@pytest.mark.skipif(not (SHARED / "models/bert-base-chinese").is_dir(), reason="../shared/models/bert-base-chinese is absent")
def test_local_folder_without_weights_explains_random_init():
    base = str(SHARED / "models/bert-base-chinese")
    with pytest.raises(OSError, match="random_init: true"):
        build_model(ModelSection(base=base))
    model, tokenizer, source = build_model(ModelSection(base=base, random_init=True))
    assert model.config.hidden_size == 768 and len(tokenizer) == 21128 and "random init" in source


@pytest.fixture
def saved_folder(tmp_path):
    model, tokenizer, _ = build_model(ModelSection(base="scratch", scratch=TINY))
    return save_model_folder(model, tokenizer, load_config(overrides=["model.base=scratch"]), tmp_path / "model")


def test_a_model_folder_reads_its_configs_and_loads_its_tokenizer_once(saved_folder, monkeypatch):
    opened, tokenizers = Counter(), []
    real_open, real_tokenizer = io.open, AutoTokenizer.from_pretrained

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            opened[Path(file).name] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)  # pathlib's reads
    monkeypatch.setattr(builtins, "open", counting_open)  # transformers' reads
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *args, **kwargs: tokenizers.append(args) or real_tokenizer(*args, **kwargs))
    folder = ModelFolder(saved_folder)
    inspector = Inspector.load(folder, device="cpu", backend="torch")
    scorer = Scorer.load(folder, "cpu")
    assert auto_backend(folder, "cpu") == "torch" and not folder.has_quality_head
    assert folder.version == inspector.versions.model and scorer.tokenizer is inspector.scorer.tokenizer
    assert (opened["config.json"], opened["zhijian.yaml"], opened["model.safetensors"], len(tokenizers)) == (1, 1, 1, 1)


def test_the_version_is_the_folder_name_and_the_weights_hash(saved_folder):
    digest = hashlib.sha256((saved_folder / "model.safetensors").read_bytes()).hexdigest()
    assert ModelFolder(saved_folder).version == f"model:{digest[:12]}"


def test_each_scorer_records_its_own_backend_without_changing_the_folders_config(saved_folder):
    folder = ModelFolder(saved_folder)
    Scorer.load(folder, "cpu", "torch")
    assert folder.config.serving.backend == "auto" and folder.export_record() == {}


def test_a_failed_save_leaves_the_previous_folder_and_no_staging(saved_folder, monkeypatch):
    model, tokenizer, _ = build_model(ModelSection(base="scratch", scratch=TINY))
    before = sorted(p.name for p in saved_folder.iterdir())
    monkeypatch.setattr(type(tokenizer), "save_pretrained", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        ModelFolder.save(model, tokenizer, load_config(), saved_folder)
    assert sorted(p.name for p in saved_folder.iterdir()) == before
    assert sorted(p.name for p in saved_folder.parent.iterdir()) == ["model"]


def test_the_read_side_loads_neither_the_scorer_nor_the_export():
    code = "import sys, zhijian.backends; print(sorted(m for m in ('zhijian.scorer', 'zhijian.export') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(zhijian.__file__).parents[1])
    assert result.stdout.strip() == "[]"
