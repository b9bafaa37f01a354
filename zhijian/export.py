"""ONNX Runtime: the fast CPU path.

`export_onnx` writes ``<model folder>/onnx/model.onnx`` (and, with ``quantize="int8"``, the dynamic
int8 ``model.int8.onnx``) and ``onnx/export.json``, which says how they were made and, when the export
was given transcripts to check on, how far int8 moves the probabilities. `OnnxModel` runs one and is
called exactly like the torch model, so the :class:`~zhijian.scorer.Scorer` uses it unchanged
(``serving.backend: onnx | onnx-int8``; ``auto`` serves int8 only when that check stayed within
`INT8_AUTO_MAX_PROB_DIFF`).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ONNX_DIR = "onnx"
FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
MANIFEST = "export.json"
INPUTS = ("input_ids", "token_type_ids", "attention_mask")
# 2: int8 weights in 7 bits (reduce_range). Exports of recipe 1 (full range, saturating on AVX2 CPUs
# without VNNI) or with no export.json are never served as int8 by `auto`.
RECIPE = 2
INT8_AUTO_MAX_PROB_DIFF = 0.02  # the largest |int8 - fp32| probability over the check for `auto` to serve int8
CHECK_MAX_TURNS = 500  # agent turns of the check: ~1 minute for a bert-base-sized model on 2 cores


class _Outputs(torch.nn.Module):
    """The model with plain tensor outputs (ONNX has no ModelOutput)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask, ngram_ids=None):
        output = self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, ngram_ids=ngram_ids)
        return output.logits, output.tone


def export_onnx(model_dir: str | Path, quantize: str | None = None, check: Iterable | None = None) -> list[Path]:
    """Export a model folder to ONNX (dynamic batch and length); with quantize="int8" also a dynamic int8 copy,
    measured against fp32 on the agent turns of `check` (transcripts) when given."""
    from zhijian.model import load_model_folder

    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be 'int8' or nothing, not {quantize!r}")
    model, _, _ = load_model_folder(model_dir)
    out = Path(model_dir) / ONNX_DIR
    out.mkdir(exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # an export that stops halfway leaves files `auto` will not trust
    inputs = INPUTS + (("ngram_ids",) if hasattr(model, "ngram_head") else ())
    example = {name: torch.ones(2, 16, dtype=torch.long) for name in inputs}
    fp32 = out / FILES["onnx"]
    staging = out / f".{fp32.name}.tmp"
    axes = {name: {0: "batch", 1: "ngrams" if name == "ngram_ids" else "tokens"} for name in inputs} | {"logits": {0: "batch"}, "tone": {0: "batch"}}
    torch.onnx.export(
        _Outputs(model.float().eval()), tuple(example.values()), str(staging), input_names=list(inputs),
        output_names=["logits", "tone"], dynamic_axes=axes, opset_version=17, dynamo=False,
    )
    os.replace(staging, fp32)  # a reader never sees half a file
    written = [fp32]
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8 = out / FILES["onnx-int8"]
        staging = out / f".{int8.name}.tmp"
        # Weights int8 per channel, activations quantized on the fly: the usual recipe for BERT on CPU.
        # reduce_range (7-bit weights): on AVX2 CPUs without VNNI, ONNX Runtime's u8s8 kernels can saturate
        # (its quantization docs); measured on an AVX2-only machine, full range changed 1.2 % of the test
        # model's label sets and moved a quickstart probability by 0.051.
        quantize_dynamic(str(fp32), str(staging), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
        os.replace(staging, int8)
        written.append(int8)
    import onnxruntime

    manifest = {
        "recipe": RECIPE, "quantize": quantize, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "int8_check": check_int8(model_dir, check) if quantize == "int8" and check is not None else None,
    }
    written.append(out / MANIFEST)
    staging = out / f".{MANIFEST}.tmp"
    staging.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, written[-1])
    return written


def check_int8(model_dir: str | Path, dialogues: Iterable) -> dict:
    """How far the int8 model moves calibrated probabilities from the fp32 one (the same as torch's within 1e-4)
    over the first CHECK_MAX_TURNS agent turns of `dialogues`, and how many turns keep their label set."""
    from zhijian.featurize import merge_windows
    from zhijian.scorer import Scorer

    fp32, int8 = Scorer.load(model_dir, "cpu", "onnx"), Scorer.load(model_dir, "cpu", "onnx-int8")
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


def default_check_files(model_dir: str | Path) -> list[Path]:
    """The model's validation transcripts (its config's data.valid) that exist here: what int8 is checked on."""
    from zhijian.model import load_model_folder

    return [Path(path) for path in load_model_folder(model_dir, weights=False)[2].data.valid if Path(path).is_file()]


def check_transcripts(files: Iterable[Path]) -> Iterable:
    """The transcripts of `files`, read lazily: the check stops reading after CHECK_MAX_TURNS agent turns."""
    from zhijian.transcripts import iter_transcripts

    return itertools.chain.from_iterable(iter_transcripts(path) for path in files)


def read_manifest(model_dir: str | Path) -> dict:
    """What onnx/export.json says ({} for a folder exported before there was one, or never exported)."""
    path = Path(model_dir) / ONNX_DIR / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def int8_verified(model_dir: str | Path) -> bool:
    """The int8 model is there, made with the current recipe, and was checked within INT8_AUTO_MAX_PROB_DIFF."""
    manifest = read_manifest(model_dir)
    check = manifest.get("int8_check") or {}
    return (
        manifest.get("recipe") == RECIPE
        and (Path(model_dir) / ONNX_DIR / FILES["onnx-int8"]).is_file()
        and check.get("max_prob_diff") is not None
        and check["max_prob_diff"] <= INT8_AUTO_MAX_PROB_DIFF
    )


@dataclass
class _Output:
    logits: torch.Tensor
    tone: torch.Tensor


class OnnxModel:
    """An ONNX Runtime session that answers like the torch model: ``model(**inputs).logits / .tone``."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or max(1, (os.cpu_count() or 2))
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in onnxruntime.get_available_providers()]
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]  # ngram_ids too, for a model with the n-gram head
        self.path = path

    def __call__(self, **feeds) -> _Output:
        logits, tone = self.session.run(None, {name: feeds[name].cpu().numpy() for name in self.inputs})
        return _Output(torch.from_numpy(logits), torch.from_numpy(tone))

    def to(self, device) -> OnnxModel:  # the session chose its provider already
        return self

    def eval(self) -> OnnxModel:
        return self

    def half(self) -> OnnxModel:
        return self


def load_onnx_model(model_dir: str | Path, backend: str) -> OnnxModel:
    path = Path(model_dir) / ONNX_DIR / FILES[backend]
    if not path.is_file():
        quantize = " --quantize int8" if backend == "onnx-int8" else ""
        raise FileNotFoundError(f"{path}: not exported; run `zhijian export --model {model_dir}{quantize}`")
    return OnnxModel(path)
