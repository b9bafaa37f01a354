"""The ONNX Runtime path: export, parity with PyTorch, the server's backend choice."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SHARED, make_dialogues
from zhijian_cli import app
from zhijian.backends import RECIPE, read_manifest
from zhijian.export import CHECK_MAX_TURNS, export_onnx
from zhijian.model import ModelFolderError
from zhijian.scorer import Scorer
from zhijian.transcripts import Transcript, read_transcripts

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')")
runner = CliRunner()
DEV = SHARED / "eval" / "dev.jsonl"


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    folder = shutil.copytree(tiny_model, tmp_path_factory.mktemp("onnx") / "model")
    result = runner.invoke(app, ["export", "--model", str(folder), "--format", "onnx", "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    return folder


def _dialogues():
    dialogues = [Transcript.model_validate(d) for d in make_dialogues(2)]
    return dialogues + (read_transcripts([DEV]) if DEV.is_file() else [])  # the dev set when it is there


def _label_sets(scorer, predictions):
    return predictions.probs >= scorer.thresholds


def test_onnx_fp32_gives_the_same_probabilities_and_labels(exported):
    dialogues = _dialogues()
    torch_scorer, onnx_scorer = Scorer.load(exported, "cpu", "torch"), Scorer.load(exported, "cpu", "onnx")
    reference, onnx = torch_scorer.predict(dialogues), onnx_scorer.predict(dialogues)
    assert np.abs(onnx.probs - reference.probs).max() < 1e-4
    assert np.abs(onnx.tone - reference.tone).max() < 1e-4
    assert (_label_sets(onnx_scorer, onnx) == _label_sets(torch_scorer, reference)).all()


def test_onnx_int8_stays_within_its_stated_tolerance(exported):
    dialogues = _dialogues()
    torch_scorer, int8_scorer = Scorer.load(exported, "cpu", "torch"), Scorer.load(exported, "cpu", "onnx-int8")
    reference, int8 = torch_scorer.predict(dialogues), int8_scorer.predict(dialogues)
    # Measured: 0.015 here (1 of 426 turns changes its label set), 0.016 for the quickstart model on the dev
    # set: 0.05 leaves room for another torch or onnxruntime build without hiding a broken export.
    gap = np.abs(int8.probs - reference.probs).max()
    assert gap < 0.05, f"int8 moves a probability by {gap:.3f}"
    same = (_label_sets(int8_scorer, int8) == _label_sets(torch_scorer, reference)).all(axis=1).mean()
    assert same >= 0.99, f"int8 changes the label set of {1 - same:.1%} of turns"


def test_export_records_how_far_int8_moves_the_probabilities_of_the_check_transcripts(exported, tmp_path):
    folder = shutil.copytree(exported, tmp_path / "model")
    dialogues = _dialogues()
    export_onnx(folder, "int8", check=dialogues)
    check = read_manifest(folder)["int8_check"]
    fp32, int8 = Scorer.load(folder, "cpu", "onnx").predict(dialogues), Scorer.load(folder, "cpu", "onnx-int8").predict(dialogues)
    assert check["turns"] == min(len(fp32.features), CHECK_MAX_TURNS)
    assert check["max_prob_diff"] == pytest.approx(np.abs(int8.probs - fp32.probs)[: check["turns"]].max(), abs=1e-5)


def _with_int8_check(folder, max_prob_diff, recipe=RECIPE):
    manifest = read_manifest(folder) | {"recipe": recipe, "int8_check": {"turns": 100, "max_prob_diff": max_prob_diff, "label_sets_unchanged": 1.0}}
    (folder / "onnx" / "export.json").write_text(json.dumps(manifest))
    return Scorer.load(folder, "cpu").config.serving.backend


def test_auto_backend_serves_int8_only_when_its_export_checked_it_within_tolerance(exported, tiny_model, tmp_path):
    folder = shutil.copytree(exported, tmp_path / "model")
    assert _with_int8_check(folder, 0.004) == "onnx-int8"
    assert _with_int8_check(folder, 0.03) == "onnx"  # beyond 0.02: the fp32 model
    assert _with_int8_check(folder, 0.004, recipe=1) == "onnx"  # made before reduce_range: may saturate
    (folder / "onnx" / "export.json").unlink()
    assert Scorer.load(folder, "cpu").config.serving.backend == "onnx"  # exported before there was a check
    assert Scorer.load(tiny_model, "cpu").config.serving.backend == "torch"  # nothing exported


def test_export_says_what_auto_will_serve(exported, tmp_path):
    folder = shutil.copytree(exported, tmp_path / "model")
    result = runner.invoke(app, ["export", "--model", str(folder), "--quantize", "int8", "--check", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2 and "missing.jsonl: no such file" in result.output
    result = runner.invoke(app, ["export", "--model", str(folder)])  # fp32 only: the int8 file is left, unchecked
    assert result.exit_code == 0 and "now serves onnx on CPU" in result.output


def test_asking_for_a_model_that_was_not_exported_says_how_to_export_it(tiny_model):
    with pytest.raises(FileNotFoundError, match="zhijian export --model .* --quantize int8"):
        Scorer.load(tiny_model, "cpu", "onnx-int8")


def test_export_refuses_an_unknown_quantization_before_loading_anything(tmp_path):
    with pytest.raises(ValueError, match="quantize must be 'int8' or nothing, not 'int4'"):
        export_onnx(tmp_path / "nowhere", "int4")


def test_exporting_a_folder_that_holds_no_model_says_what_is_missing(tmp_path):
    with pytest.raises(ModelFolderError, match="nowhere: not a Zhijian model folder \\(no such folder\\)"):
        export_onnx(tmp_path / "nowhere")
    result = runner.invoke(app, ["export", "--model", str(tmp_path), "--format", "onnx"])
    assert result.exit_code != 0 and "missing config.json" in result.output
    assert not (tmp_path / "onnx").exists()  # nothing half-written into a folder that is not a model


def test_the_server_runs_the_backend_it_is_told_to(exported):
    import httpx

    from conftest import live_server
    from serving.app import create_app

    with live_server(create_app(exported, "cpu", serving={"backend": "onnx-int8"})) as url:
        assert httpx.get(f"{url}/v1/model").json()["backend"] == "onnx-int8"
        assert httpx.post(f"{url}/v1/score", json={"id": "x", "turns": [{"role": "agent", "text": "要发票得加6个点"}]}).status_code == 200


def test_the_shipped_reading_exports_and_runs_in_onnx_runtime(tmp_path):
    """[CLS] beside a max over the judged turn (`model.pooling: cls_max`) with the n-gram head, as configs/quickstart.yaml
    reads: its ONNX graph must load in ONNX Runtime (a boolean torch.where once made a Where node it has no kernel for)
    and answer as torch does."""
    from conftest import TINY_OVERRIDES
    from zhijian.config import load_config
    from zhijian.model import build_model, save_model_folder

    config = load_config(overrides=TINY_OVERRIDES + ["model.pooling=cls_max"])
    model, tokenizer, _ = build_model(config.model, ngram_buckets=config.features.ngram_buckets)
    folder = save_model_folder(model, tokenizer, config, tmp_path / "model")
    export_onnx(folder)
    dialogues = [Transcript.model_validate(d) for d in make_dialogues(2)]
    torch_probs = Scorer.load(folder, "cpu", "torch").predict(dialogues).probs
    onnx_probs = Scorer.load(folder, "cpu", "onnx").predict(dialogues).probs
    assert np.abs(torch_probs - onnx_probs).max() < 1e-5
