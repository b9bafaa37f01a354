"""Scoring: a trained model folder applied to transcripts, shared by the CLI, the server and evaluation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit
import torch

from zhijian.backends import auto_backend, load_onnx_model
from zhijian.config import ZhijianConfig
from zhijian.featurize import AgentTurnFeatures, Featurizer, merge_windows, pad_batch
from zhijian.model import ModelFolder
from zhijian.stc3 import BINS, QUALITY
from zhijian.taxonomy import LABEL_IDS
from zhijian.transcripts import Transcript


def sigmoid(x: np.ndarray) -> np.ndarray:
    return expit(x)  # scipy's logistic: no overflow warnings for large |x|


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    return device


@dataclass
class Predictions:
    """Model outputs for every agent turn of a list of dialogues, in reading order."""

    features: list[AgentTurnFeatures]  # one per agent turn (a long turn's first window)
    logits: np.ndarray  # (agent turns, labels), raw model outputs (a long turn: each label's highest window)
    probs: np.ndarray  # (agent turns, labels): sigmoid(logits / temperature + bias), calibrated
    tone: np.ndarray  # (agent turns,) in [0, 1]


class Scorer:
    def __init__(self, model, tokenizer, config: ZhijianConfig, device: str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.folder: ModelFolder | None = None  # the folder it was loaded from (Scorer.load)
        self.featurizer = Featurizer(tokenizer, config.features)
        self.thresholds = np.array([config.thresholds.for_label(label) for label in LABEL_IDS])
        self.temperature, self.bias = np.array([config.calibration.scaling(label) for label in LABEL_IDS]).T

    @classmethod
    def load(cls, folder: ModelFolder | str | Path, device: str | None = None, backend: str | None = None) -> Scorer:
        """Load a trained model folder; `device` and `backend` default to the folder's `serving` config.

        backend "torch" runs the PyTorch model (fp16 on a GPU); "onnx" / "onnx-int8" run the ONNX
        Runtime model that `zhijian export` wrote into the folder; "auto" is `auto_backend`.
        """
        folder = ModelFolder.of(folder)
        config = folder.config.model_copy(deep=True)  # this scorer's own: it records the backend in use
        device = resolve_device(device or config.serving.device)
        backend = backend or config.serving.backend
        if backend == "auto":
            backend = auto_backend(folder, device)
        config.serving.backend = backend  # the one in use, as /v1/model reports it
        if backend != "torch":
            scorer = cls(load_onnx_model(folder, backend), folder.tokenizer, config, "cpu")
        else:
            model = folder.load_weights(device)
            if device.startswith("cuda"):
                model = model.half()  # fp16 on a GPU: twice the speed, probabilities read back as float32
            scorer = cls(model, folder.tokenizer, config, device)
        scorer.folder = folder
        return scorer

    def predict(self, dialogues: Sequence[Transcript], batch_size: int | None = None) -> Predictions:
        features = self.featurizer.encode(dialogues)
        starts, logits, tone = merge_windows(features, *self.forward(features, batch_size))
        features = [features[i] for i in starts]
        return Predictions(features, logits, self.calibrated(logits), tone)

    def _batches(self, features: Sequence[AgentTurnFeatures], batch_size: int | None) -> Iterator[tuple[list[int], object]]:
        """The model's output for batches of `features`, with the positions each batch holds.

        Length-sorted batches keep padding small, which matters more than anything else on CPU.
        """
        batch_size = batch_size or self.config.serving.batch_size
        order = sorted(range(len(features)), key=lambda i: len(features[i].input_ids))
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = pad_batch([features[i].as_model_input() for i in chosen], self.tokenizer)
            yield chosen, self.model(**{key: value.to(self.device) for key, value in batch.items()})

    @torch.inference_mode()
    def forward(self, features: Sequence[AgentTurnFeatures], batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw label logits (turns, labels) and tone (turns,) for encoded agent turns."""
        logits = np.zeros((len(features), len(LABEL_IDS)), dtype=np.float32)
        tone = np.zeros(len(features), dtype=np.float32)
        for chosen, output in self._batches(features, batch_size):
            logits[chosen] = output.logits.float().cpu().numpy()
            tone[chosen] = output.tone.float().cpu().numpy()
        return logits, tone

    @property
    def has_quality(self) -> bool:
        return hasattr(self.model, "quality_head")

    @torch.inference_mode()
    def quality(self, dialogues: Sequence[Transcript], batch_size: int | None = None) -> np.ndarray:
        """A/S/E distributions over the bins -2..2, (dialogues, 3, 5), each whole dialogue read at once."""
        features = [self.featurizer.encode_dialogue(dialogue) for dialogue in dialogues]
        result = np.zeros((len(features), len(QUALITY), len(BINS)), dtype=np.float32)
        for chosen, output in self._batches(features, batch_size):
            result[chosen] = torch.softmax(output.quality.float(), dim=-1).cpu().numpy()
        return result

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits / self.temperature + self.bias)
