"""`zhijian train`: labeled transcripts -> a model folder, with the Hugging Face Trainer.

The same code runs on CPU, one GPU, or several through ``accelerate launch`` (Trainer handles the
distribution). Validation macro-F1 picks the best checkpoint and stops training early; per-label
thresholds are then tuned on validation and saved with the model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax
from transformers import EarlyStoppingCallback, Trainer, set_seed

from training.data import Collator, QualityDataset, TurnDataset, read_rated_dialogues, read_real_negatives, split_dialogues
from training.embeddings import init_embeddings
from training.loop import CountSteps, MarkCompleteCheckpoints, model_folder, train_resumably, training_arguments, write_summary
from training.metrics import label_metrics, tone_metrics, tune_thresholds
from zhijian.config import TrainingSection, ZhijianConfig
from zhijian.featurize import Featurizer
from zhijian.model import SCRATCH, build_model, save_model_folder
from zhijian.scorer import sigmoid
from zhijian.stc3 import QUALITY, dq_scores, gold_distributions
from zhijian.taxonomy import LABEL_IDS

log = logging.getLogger(__name__)


def _split_predictions(prediction):
    logits, tone = prediction.predictions[:2]  # a model with the quality head answers that third
    labels, gold_tone = prediction.label_ids[:2]
    probs = sigmoid(logits)
    return probs, tone, labels, gold_tone


def compute_metrics(prediction) -> dict:
    probs, tone, labels, gold_tone = _split_predictions(prediction)
    metrics = label_metrics(labels, probs >= 0.5)
    tone_result = tone_metrics(gold_tone, tone)
    figures = {"macro_f1": metrics["macro_f1"], "micro_f1": metrics["micro_f1"]}
    if tone_result["mae"] is not None:  # no gold tone: left out, not reported as a perfect 0.0
        figures["tone_mae"] = tone_result["mae"]
    return figures


class _Trainer(Trainer):
    """The HF Trainer, except that evaluation and prediction read the data in order: with length-grouped
    training batches it would group (and so reorder) them too, and predictions on a dataset must line up
    with that dataset (the quality head's gold distributions are read from it separately)."""

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or self.args.world_size > 1:
            return super()._get_eval_sampler(eval_dataset)
        return torch.utils.data.SequentialSampler(eval_dataset)


def build_optimizer(model, section) -> torch.optim.Optimizer:
    """AdamW as the Trainer builds it (no weight decay on biases and LayerNorm), with the n-gram head at
    its own, higher learning rate; the Trainer's schedule scales every group alike."""
    ngram = [p for n, p in model.named_parameters() if n.startswith("ngram_head.")]
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if name.startswith("ngram_head.") or not parameter.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": section.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": ngram, "weight_decay": 0.0, "lr": section.ngram_learning_rate},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=section.learning_rate)


def labeled_turns(config: ZhijianConfig, featurizer: Featurizer, with_quality: bool) -> tuple[TurnDataset, TurnDataset]:
    """The labeled agent turns to train on (with the real negatives, if any) and to validate on."""
    seed = config.training.seed
    train_dialogues, valid_dialogues = split_dialogues(config.data.train, config.data.valid, config.data.valid_fraction, seed)
    if config.data.real_negatives:
        real = read_real_negatives(config.data.real_negatives, config.data.real_negatives_limit, seed)
        log.info("Adding %d real dialogues as clean agent turns from %s", len(real), config.data.real_negatives)
        train_dialogues = train_dialogues + real
    train_set = TurnDataset(train_dialogues, featurizer, with_quality)
    valid_set = TurnDataset(valid_dialogues, featurizer, with_quality)
    if not len(train_set) or not len(valid_set):
        raise ValueError("no labeled agent turns in the training or validation data (agent turns need `labels`)")
    log.info("Training on %d agent turns, validating on %d", len(train_set), len(valid_set))
    return train_set, valid_set


def weigh_losses(model, train_set: TurnDataset, section: TrainingSection) -> None:
    """Per-label positive weights from the training turns, and each head's share of the loss."""
    model.set_pos_weight(train_set.pos_weight(section.pos_weight_max))
    model.config.tone_loss_weight = section.tone_loss_weight
    model.config.quality_loss_weight = section.quality_loss_weight


def add_rated_dialogues(config: ZhijianConfig, featurizer: Featurizer, train_set: TurnDataset):
    """The training rows with the rated dialogues (for the quality head) added, and the rated ones held out."""
    rated_train, rated_valid = read_rated_dialogues(config.data.quality, config.data.valid_fraction, config.training.seed)
    rated_set = QualityDataset(rated_train, featurizer, config.data.quality_repeat)
    log.info("Quality head: %d rated dialogues (x%d), %d to validate", len(rated_train), config.data.quality_repeat, len(rated_valid))
    return torch.utils.data.ConcatDataset([train_set, rated_set]), rated_valid


def build_trainer(config: ZhijianConfig, model, tokenizer, train_rows, valid_set, counter: CountSteps) -> _Trainer:
    """The Trainer that keeps the checkpoint of best validation macro-F1 (and stops early, if configured)."""
    section = config.training
    args = training_arguments(
        section,
        train_sampling_strategy="group_by_length" if section.group_by_length else "random",
        eval_strategy=section.eval_strategy,
        save_strategy=section.eval_strategy,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        label_names=["labels", "tone"] + (["label_mask", "quality"] if config.data.quality else []),
    )
    early_stopping = section.early_stopping_patience > 0
    return _Trainer(
        model=model,
        optimizers=(build_optimizer(model, section), None),
        args=args,
        train_dataset=train_rows,
        eval_dataset=valid_set,
        data_collator=Collator(tokenizer),
        compute_metrics=compute_metrics,
        processing_class=tokenizer,
        callbacks=[MarkCompleteCheckpoints(), counter]
        + ([EarlyStoppingCallback(section.early_stopping_patience)] if early_stopping else []),
    )


def with_tuned_thresholds(config: ZhijianConfig, labels: np.ndarray, probs: np.ndarray) -> ZhijianConfig:
    """The config to save with the model: per-label thresholds tuned on validation, when configured."""
    resolved = config.model_copy(deep=True)
    if config.thresholds.tune_on_validation:
        resolved.thresholds.per_label = tune_thresholds(labels, probs, config.thresholds.default, config.thresholds.tune_beta)
    return resolved


def quality_figures(trainer: Trainer, rated_valid, featurizer: Featurizer) -> dict:
    """The quality head's scores on the held-out rated dialogues."""
    predicted = softmax(trainer.predict(QualityDataset(rated_valid, featurizer)).predictions[2], axis=-1)
    gold = gold_distributions(rated_valid)
    return dq_scores({s: predicted[:, k] for k, s in enumerate(QUALITY)}, gold)


def train(config: ZhijianConfig, resume: bool = False) -> Path:
    """Train from a resolved config; returns the model folder (``<output_dir>/model``)."""
    section = config.training
    set_seed(section.seed)
    with_quality = bool(config.data.quality)
    model, tokenizer, source = build_model(config.model, quality_head=with_quality, ngram_buckets=config.features.ngram_buckets)
    log.info("Encoder: %s", source)
    featurizer = Featurizer(tokenizer, config.features)
    train_set, valid_set = labeled_turns(config, featurizer, with_quality)
    if config.model.init_embeddings == "ppmi" and source.startswith(SCRATCH) and not resume:
        seen = init_embeddings(model.bert, [row["input_ids"] for row in train_set.rows])
        log.info("Embeddings of %d tokens initialised from PPMI statistics of the training turns", seen)
    weigh_losses(model, train_set, section)
    train_rows, rated_valid = add_rated_dialogues(config, featurizer, train_set) if with_quality else (train_set, [])

    counter = CountSteps()
    trainer = build_trainer(config, model, tokenizer, train_rows, valid_set, counter)
    started = time.monotonic()
    train_resumably(trainer, resume)
    train_seconds = time.monotonic() - started

    # Thresholds and the final figures come from the best model on the validation split.
    probs, tone, labels, gold_tone = _split_predictions(trainer.predict(valid_set))
    resolved = with_tuned_thresholds(config, labels, probs)
    tuned = np.array([resolved.thresholds.for_label(label) for label in LABEL_IDS])
    model_dir = model_folder(section)
    if trainer.is_world_process_zero():
        save_model_folder(trainer.model, tokenizer, resolved, model_dir)
        summary = {
            "encoder": source,
            "train_seconds": round(train_seconds, 1),  # the optimizer steps and evaluations, without featurizing
            "train_turns": len(train_set),
            **counter.summary(),
            "global_step": trainer.state.global_step,
            "valid_turns": len(valid_set),
            "valid_at_0.5": label_metrics(labels, probs >= 0.5),
            "valid_at_tuned": label_metrics(labels, probs >= tuned),
            "valid_tone": tone_metrics(gold_tone, tone),
            "thresholds": resolved.thresholds.per_label,
        }
        if with_quality:
            summary["valid_quality"] = quality_figures(trainer, rated_valid, featurizer)
        write_summary(section, "train_summary.json", summary)
    return model_dir
