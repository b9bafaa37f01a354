"""Exporting a model folder to ONNX Runtime (`zhijian export`): the write side.

`export_onnx` writes ``<model folder>/onnx/model.onnx`` (and, with ``quantize="int8"``, the dynamic
int8 ``model.int8.onnx``) and ``onnx/export.json``, the record of how they were made and, when the
export was given transcripts to check on, how far int8 moves the probabilities. It sits above the
:class:`~zhijian.scorer.Scorer` (the check scores with it); reading the files back, and choosing what
``serving.backend: auto`` runs, is `zhijian/backends.py`'s job, below the scorer.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from zhijian.backends import RECIPE
from zhijian.featurize import merge_windows
from zhijian.files import staged, write_atomic
from zhijian.model import ModelFolder
from zhijian.scorer import Scorer
from zhijian.transcripts import iter_transcripts

INPUTS = ("input_ids", "token_type_ids", "attention_mask")
CHECK_MAX_TURNS = 500  # agent turns of the check: ~1 minute for a bert-base-sized model on 2 cores


class _Outputs(torch.nn.Module):
    """The model with plain tensor outputs (ONNX has no ModelOutput)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask, ngram_ids=None):
        output = self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, ngram_ids=ngram_ids)
        return output.logits, output.tone


def export_onnx(model_dir: ModelFolder | str | Path, quantize: str | None = None, check: Iterable | None = None) -> list[Path]:
    """Export a model folder to ONNX (dynamic batch and length); with quantize="int8" also a dynamic int8 copy,
    measured against fp32 on the agent turns of `check` (transcripts) when given."""
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be 'int8' or nothing, not {quantize!r}")
    folder = ModelFolder.of(model_dir)
    model = folder.load_weights()
    folder.export_record_path.unlink(missing_ok=True)  # an export that stops halfway leaves files `auto` will not trust
    written = [_export_fp32(model, folder.onnx_path("onnx"))]
    if quantize == "int8":
        written.append(_quantize_int8(written[0], folder.onnx_path("onnx-int8")))
    import onnxruntime

    record = {
        "recipe": RECIPE, "quantize": quantize, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "int8_check": check_int8(folder, check) if quantize == "int8" and check is not None else None,
    }
    written.append(write_atomic(folder.export_record_path, json.dumps(record, indent=2) + "\n"))
    return written


def _export_fp32(model, path: Path) -> Path:
    inputs = INPUTS + (("ngram_ids",) if hasattr(model, "ngram_head") else ())
    example = {name: torch.ones(2, 16, dtype=torch.long) for name in inputs}
    axes = {name: {0: "batch", 1: "ngrams" if name == "ngram_ids" else "tokens"} for name in inputs} | {"logits": {0: "batch"}, "tone": {0: "batch"}}
    with staged(path) as staging:  # a reader never sees half a file
        torch.onnx.export(
            _Outputs(model.float().eval()), tuple(example.values()), str(staging), input_names=list(inputs),
            output_names=["logits", "tone"], dynamic_axes=axes, opset_version=17, dynamo=False,
        )
    return path


def _quantize_int8(fp32: Path, path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Weights int8 per channel, activations quantized on the fly: the usual recipe for BERT on CPU.
    # reduce_range (7-bit weights): on AVX2 CPUs without VNNI, ONNX Runtime's u8s8 kernels can saturate
    # (its quantization docs); measured on an AVX2-only machine, full range changed 1.2 % of the test
    # model's label sets and moved a quickstart probability by 0.051.
    with staged(path) as staging:
        quantize_dynamic(str(fp32), str(staging), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    return path


def check_int8(model_dir: ModelFolder | str | Path, dialogues: Iterable) -> dict:
    """How far the int8 model moves calibrated probabilities from the fp32 one (the same as torch's within 1e-4)
    over the first CHECK_MAX_TURNS agent turns of `dialogues`, and how many turns keep their label set."""
    folder = ModelFolder.of(model_dir)
    fp32, int8 = Scorer.load(folder, "cpu", "onnx"), Scorer.load(folder, "cpu", "onnx-int8")
    features, turns = [], 0
    for feature in (f for d in dialogues for f in fp32.featurizer.encode([d])):
        if feature.starts_turn:  # a long turn comes in several windows
            if turns == CHECK_MAX_TURNS:
                break
            turns += 1
        features.append(feature)
    if not features:
        return {"turns": 0, "max_prob_diff": None, "label_sets_unchanged": None}
    reference = fp32.calibrated(merge_windows(features, *fp32.forward(features))[1])
    quantized = int8.calibrated(merge_windows(features, *int8.forward(features))[1])
    same = ((reference >= fp32.thresholds) == (quantized >= fp32.thresholds)).all(axis=1)
    return {
        "turns": turns, "max_prob_diff": round(float(np.abs(quantized - reference).max()), 5),
        "label_sets_unchanged": round(float(same.mean()), 4),
    }


def default_check_files(model_dir: ModelFolder | str | Path) -> list[Path]:
    """The model's validation transcripts (its config's data.valid) that exist here: what int8 is checked on."""
    return [Path(path) for path in ModelFolder.of(model_dir).config.data.valid if Path(path).is_file()]


def check_transcripts(files: Iterable[Path]) -> Iterable:
    """The transcripts of `files`, read lazily: the check stops reading after CHECK_MAX_TURNS agent turns."""
    return itertools.chain.from_iterable(iter_transcripts(path) for path in files)
