"""What `zhijian train` and `zhijian pretrain` share around the Hugging Face Trainer.

Both read the length of the run, its batches, learning rate and checkpoints from the config's
`training` section, mark each checkpoint whole once saved, count the steps they ran, and resume
from the newest whole checkpoint on `--resume`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import TrainOutput, get_last_checkpoint

from zhijian.config import TrainingSection
from zhijian.files import write_atomic

log = logging.getLogger(__name__)

COMPLETE_MARKER = "checkpoint-complete"


def model_folder(section: TrainingSection) -> Path:
    """Where a run leaves its result: ``<training.output_dir>/model``, beside ``checkpoints/`` and its summary."""
    return Path(section.output_dir) / "model"


def write_summary(section: TrainingSection, name: str, summary: dict) -> None:
    """The run's figures, as JSON beside its model folder (written whole: `--resume` and the tests read it)."""
    write_atomic(Path(section.output_dir) / name, json.dumps(summary, indent=2, ensure_ascii=False))


def training_arguments(section: TrainingSection, **loop_specific) -> TrainingArguments:
    """The Trainer's arguments from the `training` section; each loop adds what only it sets (its
    evaluation and save strategy, the metric that picks the best checkpoint, ...)."""
    common = dict(
        output_dir=str(Path(section.output_dir) / "checkpoints"),
        # the run's length, its batches and how they are loaded
        num_train_epochs=section.epochs,
        max_steps=section.max_steps,
        per_device_train_batch_size=section.batch_size,
        per_device_eval_batch_size=section.eval_batch_size,
        gradient_accumulation_steps=section.gradient_accumulation_steps,
        dataloader_num_workers=0,  # the rows are featurized up front: worker processes would only add start-up time
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,  # rows keep every field, even those forward() does not name
        # the optimizer and its schedule
        learning_rate=section.learning_rate,
        weight_decay=section.weight_decay,
        warmup_steps=section.warmup_ratio,  # a float below 1 is a ratio of the total steps
        seed=section.seed,
        bf16=section.bf16,
        # evaluations and checkpoints come together (a checkpoint is kept or dropped by its evaluation)
        eval_steps=section.eval_steps,
        save_steps=section.eval_steps,
        save_total_limit=section.save_total_limit,
        logging_steps=section.logging_steps,
        report_to=[],
    )
    return TrainingArguments(**{**common, **loop_specific})


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
    not redo the checkpoint's steps (the run's summary)."""

    def __init__(self):
        self.first_step, self.steps = None, 0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step is None:
            self.first_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1

    def summary(self) -> dict:
        return {
            "started_at_step": self.first_step,  # 0, or the step of the checkpoint it resumed from
            "steps_run": self.steps,
        }


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest whole checkpoint; incomplete ones (a crash mid-save) are removed, so the Trainer never
    rotates or resumes past them."""
    if not Path(folder).is_dir():
        return None
    while (newest := get_last_checkpoint(folder)) is not None:
        if (Path(newest) / COMPLETE_MARKER).is_file():
            return Path(newest)
        log.warning("Removing incomplete checkpoint %s (no %s)", newest, COMPLETE_MARKER)
        shutil.rmtree(newest)  # not ignoring errors: one left behind would be found again and again
    return None


def train_resumably(trainer: Trainer, resume: bool) -> TrainOutput:
    """`trainer.train()`, on `resume` from the newest whole checkpoint in its output folder if there is one."""
    checkpoints = Path(trainer.args.output_dir)
    resume_from = last_complete_checkpoint(checkpoints) if resume else None
    if resume and resume_from is None:
        log.warning("--resume: no complete checkpoint in %s, starting from the beginning", checkpoints)
    return trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
