"""`zhijian train`: labeled transcripts -> a model folder, with the Hugging Face Trainer.

The same code runs on CPU, one GPU, or several through ``accelerate launch`` (Trainer handles the
distribution). Validation macro-F1 picks the best checkpoint and stops training early; per-label
thresholds are then tuned on validation and saved with the model.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from scipy.special import softmax

from training.data import Collator, QualityDataset, TurnDataset, read_rated_dialogues, read_real_negatives, split_dialogues
from training.metrics import label_metrics, tone_metrics, tune_thresholds
from zhijian.config import ZhijianConfig
from zhijian.featurize import Featurizer
from training.embeddings import init_embeddings
from zhijian.model import SCRATCH, build_model, save_model_folder
from zhijian.scorer import sigmoid
from zhijian.stc3 import QUALITY, dq_scores, gold_distributions
from zhijian.taxonomy import LABEL_IDS

log = logging.getLogger(__name__)

COMPLETE_MARKER = "checkpoint-complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class MarkCompleteCheckpoints(TrainerCallback):
    """Trainer writes a checkpoint file by file; the marker, written last, says it is whole.

    `--resume` only trusts checkpoints with the marker, so a crash mid-save never corrupts a resume.
    """

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / COMPLETE_MARKER).write_text(str(state.global_step))


class CountSteps(TrainerCallback):
    """The optimizer steps this process ran, and the global step it started from: a resumed run shows it did
    not redo the checkpoint's steps (`train_summary.json`)."""

    def __init__(self):
        self.first_step, self.steps = None, 0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step is None:
            self.first_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest whole checkpoint; incomplete ones (a crash mid-save) are removed."""
    if not folder.is_dir():
        return None
    checkpoints = sorted(
        (int(m.group(1)), path) for path in folder.iterdir() if (m := _CHECKPOINT.match(path.name))
    )
    for step, path in reversed(checkpoints):
        if (path / COMPLETE_MARKER).is_file():
            return path
        log.warning("Removing incomplete checkpoint %s (no %s)", path, COMPLETE_MARKER)
        shutil.rmtree(path, ignore_errors=True)
    return None


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


def train(config: ZhijianConfig, resume: bool = False) -> Path:
    """Train from a resolved config; returns the model folder (``<output_dir>/model``)."""
    section = config.training
    set_seed(section.seed)
    output_dir = Path(section.output_dir)
    checkpoints = output_dir / "checkpoints"

    with_quality = bool(config.data.quality)
    model, tokenizer, source = build_model(config.model, quality_head=with_quality, ngram_buckets=config.features.ngram_buckets)
    log.info("Encoder: %s", source)
    featurizer = Featurizer(tokenizer, config.features)
    train_dialogues, valid_dialogues = split_dialogues(
        config.data.train, config.data.valid, config.data.valid_fraction, section.seed
    )
    if config.data.real_negatives:
        real = read_real_negatives(config.data.real_negatives, config.data.real_negatives_limit, section.seed)
        log.info("Adding %d real dialogues as clean agent turns from %s", len(real), config.data.real_negatives)
        train_dialogues = train_dialogues + real
    train_set = TurnDataset(train_dialogues, featurizer, with_quality)
    valid_set = TurnDataset(valid_dialogues, featurizer, with_quality)
    if not len(train_set) or not len(valid_set):
        raise ValueError("no labeled agent turns in the training or validation data (agent turns need `labels`)")
    log.info("Training on %d agent turns, validating on %d", len(train_set), len(valid_set))
    if config.model.init_embeddings == "ppmi" and source.startswith(SCRATCH) and not resume:
        seen = init_embeddings(model.bert, [row["input_ids"] for row in train_set.rows])
        log.info("Embeddings of %d tokens initialised from PPMI statistics of the training turns", seen)
    model.set_pos_weight(train_set.pos_weight(section.pos_weight_max))
    model.config.tone_loss_weight = section.tone_loss_weight
    model.config.quality_loss_weight = section.quality_loss_weight
    train_rows = train_set
    if with_quality:
        rated_train, rated_valid = read_rated_dialogues(config.data.quality, config.data.valid_fraction, section.seed)
        rated_set = QualityDataset(rated_train, featurizer, config.data.quality_repeat)
        train_rows = torch.utils.data.ConcatDataset([train_set, rated_set])
        log.info("Quality head: %d rated dialogues (x%d), %d to validate", len(rated_train), config.data.quality_repeat, len(rated_valid))

    early_stopping = section.early_stopping_patience > 0
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=section.epochs,
        max_steps=section.max_steps,
        per_device_train_batch_size=section.batch_size,
        train_sampling_strategy="group_by_length" if section.group_by_length else "random",
        per_device_eval_batch_size=section.eval_batch_size,
        gradient_accumulation_steps=section.gradient_accumulation_steps,
        learning_rate=section.learning_rate,
        weight_decay=section.weight_decay,
        warmup_steps=section.warmup_ratio,  # a float below 1 is a ratio of the total steps
        seed=section.seed,
        eval_strategy=section.eval_strategy,
        save_strategy=section.eval_strategy,
        eval_steps=section.eval_steps,
        save_steps=section.eval_steps,
        save_total_limit=section.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        label_names=["labels", "tone"] + (["label_mask", "quality"] if with_quality else []),
        logging_steps=section.logging_steps,
        bf16=section.bf16,
        report_to=[],
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
    )
    counter = CountSteps()
    trainer = _Trainer(
        model=model,
        optimizers=(build_optimizer(model, section), None),
        args=args,
        train_dataset=train_rows,
        eval_dataset=valid_set,
        data_collator=Collator(tokenizer.pad_token_id),
        compute_metrics=compute_metrics,
        processing_class=tokenizer,
        callbacks=[MarkCompleteCheckpoints(), counter]
        + ([EarlyStoppingCallback(section.early_stopping_patience)] if early_stopping else []),
    )
    resume_from = last_complete_checkpoint(checkpoints) if resume else None
    if resume and resume_from is None:
        log.warning("--resume: no complete checkpoint in %s, starting from the beginning", checkpoints)
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.monotonic() - started

    # Thresholds and the final figures come from the best model on the validation split.
    probs, tone, labels, gold_tone = _split_predictions(trainer.predict(valid_set))
    resolved = config.model_copy(deep=True)
    if config.thresholds.tune_on_validation:
        resolved.thresholds.per_label = tune_thresholds(labels, probs, config.thresholds.default, config.thresholds.tune_beta)
    tuned = np.array([resolved.thresholds.for_label(label) for label in LABEL_IDS])
    model_dir = output_dir / "model"
    if trainer.is_world_process_zero():
        save_model_folder(trainer.model, tokenizer, resolved, model_dir)
        summary = {
            "encoder": source,
            "train_seconds": round(train_seconds, 1),  # the optimizer steps and evaluations, without featurizing
            "train_turns": len(train_set),
            "started_at_step": counter.first_step,  # 0, or the step of the checkpoint it resumed from
            "steps_run": counter.steps,
            "global_step": trainer.state.global_step,
            "valid_turns": len(valid_set),
            "valid_at_0.5": label_metrics(labels, probs >= 0.5),
            "valid_at_tuned": label_metrics(labels, probs >= tuned),
            "valid_tone": tone_metrics(gold_tone, tone),
            "thresholds": resolved.thresholds.per_label,
        }
        if with_quality:
            predicted = softmax(trainer.predict(QualityDataset(rated_valid, featurizer)).predictions[2], axis=-1)
            gold = gold_distributions(rated_valid)
            summary["valid_quality"] = dq_scores({s: predicted[:, k] for k, s in enumerate(QUALITY)}, gold)
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return model_dir
