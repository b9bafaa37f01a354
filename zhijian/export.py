"""ONNX Runtime: the fast CPU path.

`export_onnx` writes ``<model folder>/onnx/model.onnx`` (and, with ``quantize="int8"``, the dynamic
int8 ``model.int8.onnx``); `OnnxModel` runs one and is called exactly like the torch model, so
the :class:`~zhijian.scorer.Scorer` uses it unchanged (``serving.backend: onnx | onnx-int8``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

ONNX_DIR = "onnx"
FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
INPUTS = ("input_ids", "token_type_ids", "attention_mask")


class _Outputs(torch.nn.Module):
    """The model with plain tensor outputs (ONNX has no ModelOutput)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask):
        output = self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        return output.logits, output.tone


def export_onnx(model_dir: str | Path, quantize: str | None = None) -> list[Path]:
    """Export a model folder to ONNX (dynamic batch and length); with quantize="int8" also a dynamic int8 copy."""
    from zhijian.model import load_model_folder

    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be 'int8' or nothing, not {quantize!r}")
    model, _, _ = load_model_folder(model_dir)
    out = Path(model_dir) / ONNX_DIR
    out.mkdir(exist_ok=True)
    example = {name: torch.ones(2, 16, dtype=torch.long) for name in INPUTS}
    fp32 = out / FILES["onnx"]
    staging = out / f".{fp32.name}.tmp"
    axes = {name: {0: "batch", 1: "tokens"} for name in INPUTS} | {"logits": {0: "batch"}, "tone": {0: "batch"}}
    torch.onnx.export(
        _Outputs(model.float().eval()), tuple(example.values()), str(staging), input_names=list(INPUTS),
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
    return written


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
        self.path = path

    def __call__(self, input_ids, token_type_ids, attention_mask) -> _Output:
        feeds = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
        logits, tone = self.session.run(None, {name: tensor.cpu().numpy() for name, tensor in feeds.items()})
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
