"""The one config schema shared by training and serving.

A config is YAML in ``configs/``; every section has defaults, unknown keys are errors that name
the key. The resolved config (defaults filled in, thresholds tuned) is saved as ``zhijian.yaml``
inside every trained model folder, and serving reads it from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError

from zhijian.files import write_atomic
from zhijian.taxonomy import LabelId

CONFIG_FILE = "zhijian.yaml"
# How evidence spans are found (zhijian/evidence.py): occlusion over clauses or character windows, or not at all.
EvidenceMethod = Literal["clause", "window", "none"]
EVIDENCE_METHODS: tuple[str, ...] = get_args(EvidenceMethod)


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ScratchSize(Section):
    """Size of the from-scratch BERT used when no pretrained encoder is available."""

    hidden_size: int = Field(256, ge=16)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(1024, ge=16)
    max_position_embeddings: int = Field(512, ge=32)


class ModelSection(Section):
    base: str = Field(
        "bert-base-chinese",
        description="A Hugging Face hub id, a local folder with a BERT checkpoint, or 'scratch'.",
    )
    fallback: Literal["none", "scratch"] = Field(
        "none", description="What to do when `base` is a hub id and the hub is unreachable."
    )
    random_init: bool = Field(
        False, description="Use the architecture and tokenizer of `base` but random weights."
    )
    scratch: ScratchSize = ScratchSize()
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    init_embeddings: Literal["random", "ppmi"] = Field(
        "random", description="For `scratch`: token embeddings start random, or from PPMI + SVD statistics of the "
        "training text (tokens used alike start close).",
    )
    pooling: Literal["cls", "cls_max"] = Field(
        "cls", description="What the heads read: [CLS] (BERT's pooler), or [CLS] beside each feature's maximum over "
        "the tokens of the turn being judged.",
    )


class FeaturesSection(Section):
    context_turns: int = Field(3, ge=0, description="Preceding turns read with each agent turn.")
    max_length: int = Field(128, ge=16, le=512, description="Tokens per input, special tokens included.")
    truncation_side: Literal["left", "right"] = Field(
        "left",
        description="Which end of the context is cut when the input is too long; 'left' drops the "
        "oldest words. The target turn is never cut unless it alone exceeds max_length.",
    )
    dialogue_max_length: int = Field(
        256, ge=16, le=512, description="Tokens for a whole dialogue read at once (the dialogue-quality head)."
    )
    ngram_buckets: int = Field(
        0, ge=0, description="Hash buckets for the character n-grams of the agent turn being judged, read by a "
        "linear n-gram head whose logits are added to the encoder's (0: no n-gram head). The encoder still "
        "reads the turn with its context.",
    )
    ngram_orders: list[Annotated[int, Field(ge=1, le=5)]] = Field([1, 2, 3], min_length=1, description="n-gram lengths.")
    to_simplified: bool = Field(
        False, description="Read Traditional characters as Simplified (OpenCC's character table) before tokenizing."
    )
    window_chars: int = Field(
        0, ge=0, description="Agent turns longer than this many characters are also read in overlapping windows of "
        "this size (with the same context); each label takes its highest window. 0: never.",
    )


class DataSection(Section):
    train: list[Path] = Field(default_factory=list, description="Labeled transcripts to train on.")
    valid: list[Path] = Field(default_factory=list, description="Labeled validation transcripts.")
    valid_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of training dialogues held out when `valid` is empty."
    )
    real_negatives: list[Path] = Field(
        default_factory=list,
        description="Unlabeled real dialogues (JSON Lines) whose agent turns are added to training as clean. "
        "Assumed mostly clean; research data such as CSDS is never a default.",
    )
    real_negatives_limit: int = Field(3000, ge=0, description="At most this many real agent turns are added.")
    quality: list[Path] = Field(
        default_factory=list,
        description="Dialogues rated for quality (STC-3 JSON): trains the A/S/E head alongside the labels. "
        "The STC-3 benchmark's test split is always left out; a seeded valid_fraction of the rest validates.",
    )
    quality_repeat: int = Field(1, ge=1, description="Times each rated dialogue is seen per epoch (they are few).")


class TrainingSection(Section):
    output_dir: Path = Path("runs/model")
    epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    batch_size: int = Field(16, ge=1)
    group_by_length: bool = Field(
        False, description="Batch turns of similar length together (less padding: about a third less compute on the corpus; "
        "configs/quickstart.yaml sets it). Off for a model with the quality head: it would batch whole dialogues apart from turns.",
    )
    eval_batch_size: int = Field(64, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    ngram_learning_rate: float = Field(
        1e-2, gt=0, description="Learning rate of the n-gram head (features.ngram_buckets): a linear model over "
        "sparse features learns at a far higher rate than the encoder.",
    )
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    eval_strategy: Literal["epoch", "steps"] = "epoch"
    eval_steps: int = Field(500, ge=1, description="Evaluate every N steps when eval_strategy is 'steps'.")
    early_stopping_patience: int = Field(2, ge=0, description="Evaluations without a better macro-F1 (0: off).")
    pos_weight_max: float = Field(
        10.0, ge=1.0, description="Per-label BCE positive weight is negatives/positives, capped here."
    )
    tone_loss_weight: float = Field(1.0, ge=0)
    quality_loss_weight: float = Field(1.0, ge=0)
    bf16: bool = Field(False, description="bf16 autocast (fast on recent CPUs and GPUs).")
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(50, ge=1)


class PretrainSection(Section):
    """`zhijian pretrain`: masked-LM pre-training of the encoder on unlabeled chat text.

    The run's length, batch, learning rate and checkpoints come from the `training` section; the
    input is featurized exactly as fine-tuning reads it (context + turn), for every turn of both roles.
    """

    inputs: list[Path] = Field(
        default_factory=list,
        description="Unlabeled text: transcripts (.jsonl, .json, .csv; labels ignored), STC-3 JSON, "
        "or plain text (.txt, one utterance a line).",
    )
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="Share of tokens masked for prediction.")
    holdout_fraction: float = Field(0.01, ge=0, lt=0.5, description="Share of examples kept aside to report loss.")




class ThresholdsSection(Section):
    default: float = Field(0.5, gt=0, lt=1)
    per_label: dict[LabelId, Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=dict)
    tune_on_validation: bool = Field(True, description="After training, set per_label to the max F-beta thresholds on validation.")
    tune_beta: float = Field(
        0.5, gt=0, description="The beta of that F-beta: 0.5 weighs precision twice as much as recall. The validation corpus is "
        "a fifth violations, real traffic far under 1 %: thresholds that are best for F1 there raise too many false alarms on real chats.",
    )

    def for_label(self, label: str) -> float:
        return self.per_label.get(label, self.default)


class CalibrationSection(Section):
    """Per-label scaling fitted by `zhijian calibrate`: prob = sigmoid(logit / temperature + bias)."""

    temperature: dict[LabelId, PositiveFloat] = Field(default_factory=dict)
    bias: dict[LabelId, float] = Field(default_factory=dict)

    def scaling(self, label: str) -> tuple[float, float]:
        return self.temperature.get(label, 1.0), self.bias.get(label, 0.0)


class ServingSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto",
        description="auto, on CPU: the int8 ONNX model when `zhijian export --quantize int8` checked it within 0.02 "
        "of fp32, else the fp32 ONNX model when exported (same probabilities, faster), else torch; torch on a GPU.",
    )
    batch_size: int = Field(32, ge=1, description="Agent turns per forward pass.")
    evidence: EvidenceMethod = Field(
        "clause", description="Evidence spans by occlusion over clauses or character windows, or none (fastest)."
    )
    batch_max_dialogues: int = Field(32, ge=1, description="Requests' dialogues gathered into one model call.")
    batch_max_wait_ms: float = Field(5.0, ge=0, description="How long the first request of a batch waits for company.")
    queue_size: int = Field(64, ge=1, description="Requests waiting for the model; beyond it the server answers 503.")
    max_dialogues: int = Field(256, ge=1, description="Dialogues per request.")
    max_turns: int = Field(400, ge=1, description="Turns per dialogue.")
    max_turn_chars: int = Field(2000, ge=1, description="Characters per turn.")
    max_request_bytes: int = Field(4_000_000, ge=1024, description="Request body size (413 beyond it).")
    api_key_env: str = Field(
        "ZHIJIAN_API_KEY", description="When this environment variable is set, requests need `Authorization: Bearer <its value>`."
    )
    log_text: bool = Field(False, description="Log transcript text with each request (off: ids, sizes and timings only).")
    allow_unauthenticated: bool = Field(
        False, description="Serve beyond 127.0.0.1 without an API key. Off: `zhijian serve` refuses to listen on another "
        "address unless the key's environment variable (api_key_env) is set.",
    )


SCHEMA_VERSION = 1


class ZhijianConfig(Section):
    schema_version: int = Field(SCHEMA_VERSION, description="The config schema this file was written for.")
    model: ModelSection = ModelSection()
    features: FeaturesSection = FeaturesSection()
    data: DataSection = DataSection()
    training: TrainingSection = TrainingSection()
    pretrain: PretrainSection = PretrainSection()
    thresholds: ThresholdsSection = ThresholdsSection()
    calibration: CalibrationSection = CalibrationSection()
    serving: ServingSection = ServingSection()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), allow_unicode=True, sort_keys=False)

    def save(self, folder: Path) -> Path:
        """Write ``zhijian.yaml`` into a folder, atomically (a reader sees the old file or the new one)."""
        return write_atomic(Path(folder) / CONFIG_FILE, self.to_yaml())


def describe_validation_error(error: ValidationError, whole: str = "(top level)", unknown: str = "unknown key", most: int | None = None) -> str:
    """pydantic's errors as one line a person reads: ``turns[1].lables: unknown field; training.epochs: ...``.

    The one formatting of validation errors, for configs, templates, transcripts, recipes and keyword lists:
    `whole` names the top level, `unknown` a key the schema does not have (a "key" in YAML, a "field" in JSON).
    """
    parts = []
    for item in error.errors()[:most]:
        where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in item["loc"]).replace(".[", "[")
        message = unknown if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
        parts.append(f"{where or whole}: {message}")
    return "; ".join(parts)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["training.epochs=1", "model.base=scratch"]`` -> a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; errors name the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ZhijianConfig:
    """Read a YAML config (or start from defaults), apply ``key=value`` overrides, validate."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if path.is_dir():
            path = path / CONFIG_FILE
            source = str(path)
        raw = read_yaml_mapping(path, "config file")
    raw = _merge(raw, parse_overrides(overrides or []))
    if isinstance(raw.get("schema_version"), int) and raw["schema_version"] > SCHEMA_VERSION:
        raise ConfigError(
            f"{source}: written for config schema {raw['schema_version']}, newer than this Zhijian reads "
            f"({SCHEMA_VERSION}); upgrade Zhijian"
        )
    try:
        return ZhijianConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: {describe_validation_error(error)}") from None
