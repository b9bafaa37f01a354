"""What runs a model folder's network: torch, or the ONNX Runtime files `zhijian export` wrote (the fast CPU path).

The read side of the export, below the :class:`~zhijian.scorer.Scorer`: `OnnxModel` runs an exported file and
answers exactly like the torch model, so the scorer uses it unchanged; `auto_backend` picks what
``serving.backend: auto`` serves, trusting int8 only when the export's record (``onnx/export.json``) says it
was checked within `INT8_AUTO_MAX_PROB_DIFF` of fp32. Writing the files is `zhijian/export.py`'s job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from zhijian.model import ModelFolder

# The export recipe this version makes and trusts. 2: int8 weights in 7 bits (reduce_range). Exports of
# recipe 1 (full range, saturating on AVX2 CPUs without VNNI) or with no record are never served as int8 by `auto`.
RECIPE = 2
INT8_AUTO_MAX_PROB_DIFF = 0.02  # the largest |int8 - fp32| probability over the check for `auto` to serve int8


def read_manifest(folder: ModelFolder | str | Path) -> dict:
    """The export record, onnx/export.json ({} when there is none)."""
    return ModelFolder.of(folder).export_record()


def int8_verified(folder: ModelFolder | str | Path) -> bool:
    """The int8 model is there, made with the current recipe, and was checked within INT8_AUTO_MAX_PROB_DIFF."""
    folder = ModelFolder.of(folder)
    record = folder.export_record()
    check = record.get("int8_check") or {}
    return (
        record.get("recipe") == RECIPE
        and folder.onnx_path("onnx-int8").is_file()
        and check.get("max_prob_diff") is not None
        and check["max_prob_diff"] <= INT8_AUTO_MAX_PROB_DIFF
    )


def auto_backend(folder: ModelFolder | str | Path, device: str) -> str:
    """What `serving.backend: auto` runs: on CPU, the int8 ONNX model when its export checked it within
    0.02 of fp32, else the fp32 ONNX model when exported, else torch; torch on a GPU."""
    folder = ModelFolder.of(folder)
    if device.startswith("cuda") or folder.has_quality_head:  # the ONNX export carries the turn heads only
        return "torch"
    if int8_verified(folder):
        return "onnx-int8"
    return "onnx" if folder.onnx_path("onnx").is_file() else "torch"


@dataclass
class _Output:
    logits: torch.Tensor
    tone: torch.Tensor


class OnnxModel:
    """An ONNX Runtime session that answers like the torch model: ``model(**inputs).logits / .tone``."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime  # an optional dependency (the onnx extra): imported when an ONNX model is run

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


def load_onnx_model(folder: ModelFolder | str | Path, backend: str) -> OnnxModel:
    """The exported model of a backend ("onnx", "onnx-int8"); an error that says how to export it when absent."""
    folder = ModelFolder.of(folder)
    path = folder.onnx_path(backend)
    if not path.is_file():
        quantize = " --quantize int8" if backend == "onnx-int8" else ""
        raise FileNotFoundError(f"{path}: not exported; run `zhijian export --model {folder.path}{quantize}`")
    return OnnxModel(path)
