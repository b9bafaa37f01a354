"""The model: a BERT-family encoder with two heads, and where its weights come from.

- 12 sigmoid outputs, one per taxonomy label (multi-label; BCE with per-label positive weights);
- a tone regressor in [0, 1] (= (tone - 1) / 4);
- optionally (``ngram_buckets`` in its config) an n-gram head: a linear model over the hashed character
  n-grams of the agent turn being judged, whose logits are added to the encoder's. It learns the
  wording of each violation in seconds, as a character n-gram logistic regression does; the encoder
  learns what the words mean in their context (the customer's question) and corrects it.

A trained model is a ``save_pretrained`` folder (safetensors, ``config.json``, the tokenizer) plus
the resolved ``zhijian.yaml``; ``AutoModel.from_pretrained`` loads its encoder, and
``ZhijianModel.from_pretrained`` all of it. :class:`ModelFolder` is the one place that knows this
layout (and the ``onnx/`` files `zhijian export` adds): it writes a folder, checks one, reads it once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel, BertPreTrainedModel, BertTokenizer
from transformers.utils import ModelOutput

from zhijian.config import CONFIG_FILE, ConfigError, ModelSection, ZhijianConfig, load_config
from zhijian.files import staged
from zhijian.stc3 import BINS, QUALITY
from zhijian.taxonomy import LABEL_IDS
from zhijian.vocab import write_scratch_vocab

log = logging.getLogger(__name__)

SCRATCH = "scratch"


class HubUnreachable(RuntimeError):
    pass


@dataclass
class ZhijianOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (batch, labels): one logit per taxonomy label
    tone: torch.Tensor | None = None  # (batch,): tone in [0, 1]
    quality: torch.Tensor | None = None  # (batch, 3, 5): A/S/E logits over the bins -2..2 (dialogue inputs)




class ZhijianModel(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(getattr(config, "classifier_dropout", None) or config.hidden_dropout_prob)
        width = config.hidden_size * (2 if getattr(config, "pooling", "cls") == "cls_max" else 1)
        self.classifier = nn.Linear(width, config.num_labels)
        self.tone_head = nn.Linear(width, 1)
        # Dialogue quality (A/S/E, 5 bins each), read from a whole-dialogue input; only in models trained with it.
        if getattr(config, "quality_head", False):
            self.quality_head = nn.Linear(width, len(QUALITY) * len(BINS))
        if getattr(config, "ngram_buckets", 0):
            # One weight per (hashed n-gram, label); padding (0) adds nothing. Starts at zero, as a logistic
            # regression does, so the encoder and the n-grams start from the same blank slate.
            self.ngram_head = nn.Embedding(config.ngram_buckets, config.num_labels, padding_idx=0)
        pos_weight = getattr(config, "pos_weight", None) or [1.0] * config.num_labels
        self.register_buffer("pos_weight", torch.tensor(pos_weight, dtype=torch.float), persistent=False)
        self.post_init()
        if hasattr(self, "ngram_head"):
            nn.init.zeros_(self.ngram_head.weight)

    @staticmethod
    def _max_over_target(hidden: torch.Tensor, attention_mask, token_type_ids) -> torch.Tensor:
        """Each feature's maximum over the tokens of the turn being judged (segment 1; the whole input when
        there is none, as for a dialogue read at once). A phrase anywhere in the turn reaches the classifier
        directly, instead of through what [CLS] learned to attend to: a from-scratch encoder learns it in
        far fewer steps."""
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device) if attention_mask is None else attention_mask.bool()
        if token_type_ids is not None:
            target = mask & (token_type_ids == 1)
            # the turn's tokens where it has any, else the whole input; in logical operators, not torch.where on
            # booleans, which ONNX Runtime has no kernel for (Where(16) on bool): the ONNX export must run
            mask = target | (mask & ~target.any(dim=1, keepdim=True))
        return hidden.masked_fill(~mask.unsqueeze(-1), -1e4).max(dim=1).values

    def set_pos_weight(self, pos_weight: list[float]) -> None:
        self.config.pos_weight = [float(w) for w in pos_weight]
        self.pos_weight = torch.tensor(self.config.pos_weight, device=self.classifier.weight.device)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        tone: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
        quality: torch.Tensor | None = None,
        ngram_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> ZhijianOutput:
        """`label_mask` marks rows with gold labels (agent turns); `quality` holds the annotators'
        A/S/E distributions (rows without one are all zeros), for dialogue rows."""
        encoded = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        pooled = encoded.pooler_output
        if getattr(self.config, "pooling", "cls") == "cls_max":
            pooled = torch.cat([pooled, self._max_over_target(encoded.last_hidden_state, attention_mask, token_type_ids)], dim=-1)
        pooled = self.dropout(pooled)
        logits = self.classifier(pooled)
        if ngram_ids is not None and hasattr(self, "ngram_head"):
            # Binary n-gram features, L2-normalised: a long text does not outvote a short one by length.
            count = (ngram_ids > 0).sum(dim=1, keepdim=True).clamp(min=1).to(logits.dtype)
            logits = logits + self.ngram_head(ngram_ids).sum(dim=1) / count.sqrt()
        tone_pred = torch.sigmoid(self.tone_head(pooled).squeeze(-1))
        quality_logits = None
        if hasattr(self, "quality_head"):
            quality_logits = self.quality_head(pooled).view(-1, len(QUALITY), len(BINS))
        loss = None
        if labels is not None:
            rows = label_mask.bool() if label_mask is not None else torch.ones(len(labels), dtype=torch.bool, device=labels.device)
            loss = logits.new_zeros((), dtype=torch.float)
            if rows.any():
                loss = loss + nn.functional.binary_cross_entropy_with_logits(
                    logits[rows].float(), labels[rows].float(), pos_weight=self.pos_weight
                )
            if tone is not None:
                known = tone >= 0  # -1 marks an agent turn without a gold tone
                if known.any():
                    tone_loss = nn.functional.mse_loss(tone_pred[known].float(), tone[known].float())
                    loss = loss + getattr(self.config, "tone_loss_weight", 1.0) * tone_loss
            if quality is not None and quality_logits is not None:
                rated = quality.sum(dim=(1, 2)) > 0
                if rated.any():
                    # Cross-entropy against the annotators' distribution (soft targets), per scale.
                    log_probs = nn.functional.log_softmax(quality_logits[rated].float(), dim=-1)
                    quality_loss = -(quality[rated].float() * log_probs).sum(-1).mean()
                    loss = loss + getattr(self.config, "quality_loss_weight", 1.0) * quality_loss
        return ZhijianOutput(loss=loss, logits=logits, tone=tone_pred, quality=quality_logits)


def _label_config() -> dict:
    return {
        "num_labels": len(LABEL_IDS),
        "id2label": dict(enumerate(LABEL_IDS)),
        "label2id": {label: i for i, label in enumerate(LABEL_IDS)},
        "problem_type": "multi_label_classification",
    }


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check before a hub download, so an offline machine fails in seconds, not minutes."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def offline_options(base: str) -> str:
    return (
        f"Cannot download {base!r}: the Hugging Face hub is unreachable from this machine. "
        "Two offline options: set `model.base` to a local folder holding a BERT checkpoint "
        "(config.json, weights, vocab.txt), or set `model.base: scratch` to train a small BERT from "
        "random init with a vocabulary this project builds itself "
        "(or `model.fallback: scratch` to do that automatically when the hub is down)."
    )


def scratch_tokenizer() -> BertTokenizer:
    with tempfile.TemporaryDirectory() as folder:
        write_scratch_vocab(Path(folder))
        return BertTokenizer.from_pretrained(folder, do_lower_case=True, tokenize_chinese_chars=True)


def resolve_base(section: ModelSection) -> str:
    """`model.base`, or `scratch` when it is a hub id, the hub is unreachable and `fallback` allows it."""
    base = section.base
    if base != SCRATCH and not Path(base).exists() and not hub_reachable():
        if section.fallback != SCRATCH:
            raise HubUnreachable(offline_options(base))
        log.warning("The hub is unreachable, so %r cannot be downloaded; falling back to `scratch`.", base)
        base = SCRATCH
    return base


def build_model(section: ModelSection, quality_head: bool = False, ngram_buckets: int = 0) -> tuple[ZhijianModel, object, str]:
    """A fresh model to train and its tokenizer, from the config's `model` section (with the
    dialogue-quality head and the n-gram head when asked).

    Returns (model, tokenizer, description of where the encoder came from).
    """
    base = resolve_base(section)
    extra = {
        **_label_config(), "hidden_dropout_prob": section.dropout, "quality_head": quality_head,
        "ngram_buckets": ngram_buckets, "pooling": section.pooling,
    }
    if base == SCRATCH:
        tokenizer = scratch_tokenizer()
        config = BertConfig(vocab_size=len(tokenizer), **section.scratch.model_dump(), **extra)
        return ZhijianModel(config), tokenizer, "scratch (random init, project-built vocabulary)"
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        # Our settings go into the config itself: passed to from_pretrained as keyword arguments, the
        # ones a plain BERT config lacks (quality_head) would reach the model's constructor instead.
        config = BertConfig.from_pretrained(base)
        config.update(extra)
        if section.random_init:
            return ZhijianModel(config), tokenizer, f"{base} architecture, random init"
        model = ZhijianModel.from_pretrained(base, config=config)
    except OSError as error:
        if Path(base).exists():
            raise OSError(
                f"{base}: cannot load a BERT checkpoint from this folder ({error}). A folder with only "
                "config and tokenizer can be used with `model.random_init: true`."
            ) from None
        raise HubUnreachable(f"{offline_options(base)} ({error})") from None
    return model, tokenizer, f"{base} (pretrained)"


# A model folder's layout: what `ModelFolder.save` writes, `zhijian export` adds, and everything else reads.
ENCODER_CONFIG = "config.json"  # the transformers config: the encoder's shape, id2label, quality_head, ngram_buckets
WEIGHTS = "model.safetensors"
ONNX_DIR = "onnx"
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}  # per serving backend
EXPORT_RECORD = "export.json"  # in ONNX_DIR: how the ONNX files were made and how far int8 moved from fp32


class ModelFolderError(FileNotFoundError):
    pass


class ModelFolder:
    """A trained model folder, checked once on opening: its configs are read here and nowhere else, its tokenizer
    is loaded once, and every other module asks it for what the folder holds instead of spelling out file names.

    The folder's files stay as `save_pretrained` writes them (``AutoModel.from_pretrained`` reads its encoder).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        missing = [name for name in (ENCODER_CONFIG, CONFIG_FILE) if not (self.path / name).is_file()]
        if not self.path.is_dir() or missing:
            what = "no such folder" if not self.path.is_dir() else f"missing {', '.join(missing)}"
            raise ModelFolderError(f"{self.path}: not a Zhijian model folder ({what}); train one with `zhijian train`")
        try:
            self.config: ZhijianConfig = load_config(self.path / CONFIG_FILE)
        except ConfigError as error:
            raise ModelFolderError(str(error)) from None
        self.encoder_config: dict = json.loads((self.path / ENCODER_CONFIG).read_text(encoding="utf-8"))
        self._check_is_an_inspection_model()

    def _check_is_an_inspection_model(self) -> None:
        if "BertForMaskedLM" in self.encoder_config.get("architectures", []):
            raise ModelFolderError(
                f"{self.path}: a pre-trained encoder (from `zhijian pretrain`), not an inspection model; "
                f"fine-tune it first: `zhijian train` with `model.base: {self.path}`"
            )
        id2label = self.encoder_config.get("id2label", {})
        labels = [id2label.get(str(k)) for k in range(len(id2label))]
        if labels != list(LABEL_IDS):
            raise ModelFolderError(
                f"{self.path}/{ENCODER_CONFIG}: the model's labels {labels} are not this taxonomy's {list(LABEL_IDS)}; "
                "retrain it with this version of Zhijian"
            )

    @classmethod
    def of(cls, folder: ModelFolder | str | Path) -> ModelFolder:
        """The folder itself when already opened, else the path opened (and checked)."""
        return folder if isinstance(folder, ModelFolder) else cls(folder)

    @property
    def has_quality_head(self) -> bool:
        """Whether it was trained with the dialogue-quality (A/S/E) head."""
        return bool(self.encoder_config.get("quality_head"))

    def _transformers_config(self) -> BertConfig:
        """The encoder config as transformers holds it, from what was read (a fresh copy: loading may change it).
        Given to transformers so that it does not read config.json again."""
        return BertConfig.from_dict(copy.deepcopy(self.encoder_config))

    @cached_property
    def tokenizer(self):
        return AutoTokenizer.from_pretrained(self.path, config=self._transformers_config())

    def load_weights(self, device: str = "cpu") -> ZhijianModel:
        """The torch model in eval mode on `device` (a fresh copy each call: export converts its copy to fp32)."""
        try:
            model = ZhijianModel.from_pretrained(self.path, config=self._transformers_config())
        except Exception as error:  # safetensors, torch and transformers each raise their own kind
            raise ModelFolderError(
                f"{self.path}: the weights cannot be loaded ({type(error).__name__}: {error}); the folder is damaged, export or train it again"
            ) from None
        return model.to(device).eval()

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    def onnx_path(self, backend: str) -> Path:
        """Where `zhijian export` writes the model a backend ("onnx", "onnx-int8") runs."""
        return self.path / ONNX_DIR / ONNX_FILES[backend]

    @property
    def export_record_path(self) -> Path:
        return self.path / ONNX_DIR / EXPORT_RECORD

    def export_record(self) -> dict:
        """What onnx/export.json says ({} for a folder exported before there was one, or never exported).
        Read on each call: an export in this process rewrites it."""
        try:
            return json.loads(self.export_record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @cached_property
    def version(self) -> str:
        """The folder's name and the first 12 hex digits of its weights' SHA-256: which model, exactly."""
        digest = hashlib.sha256()  # of nothing, for a folder without weights
        if self.weights_path.is_file():
            with self.weights_path.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256")
        return f"{self.path.resolve().name}:{digest.hexdigest()[:12]}"

    @staticmethod
    def save(model: ZhijianModel, tokenizer, config: ZhijianConfig, folder: str | Path) -> Path:
        """Write a model folder whole: built beside it, then put in its place (`files.staged`), so a crash
        leaves the previous folder (or none), never half of one. Any `save_pretrained` model goes (pretraining
        saves its masked-LM encoder this way), so the result is not checked as an inspection model."""
        with staged(folder) as staging:
            staging.mkdir()
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            vocab = getattr(tokenizer, "vocab", None)
            if vocab and not (staging / "vocab.txt").exists():  # BERT's plain vocab.txt form, for any tool
                ordered = sorted(vocab.items(), key=lambda item: item[1])
                (staging / "vocab.txt").write_text("\n".join(token for token, _ in ordered) + "\n", encoding="utf-8")
            config.save(staging)
            _readable_by_all(staging)
        return Path(folder)


def _readable_by_all(folder: Path) -> None:
    """Give the files the usual permissions (the umask's): `save_pretrained` writes the weights private (0600),
    and a model folder is shared (a container's non-root user reads it)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def save_model_folder(model: ZhijianModel, tokenizer, config: ZhijianConfig, folder: str | Path) -> Path:
    """`ModelFolder.save`, under the name training calls."""
    return ModelFolder.save(model, tokenizer, config, folder)


def load_model_folder(folder: str | Path, device: str = "cpu", weights: bool = True) -> tuple[ZhijianModel | None, object, ZhijianConfig]:
    """A trained model folder -> (model in eval mode on `device`, or None without `weights`; tokenizer; resolved config)."""
    opened = ModelFolder(folder)
    return (opened.load_weights(device) if weights else None), opened.tokenizer, opened.config
