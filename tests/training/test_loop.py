"""training/loop.py: the Trainer arguments both loops share, and which checkpoint `--resume` trusts."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

from training.loop import COMPLETE_MARKER, CountSteps, last_complete_checkpoint, train_resumably, training_arguments
from zhijian.config import load_config


def make_checkpoint(folder: Path, step: int, complete: bool) -> Path:
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    if complete:
        (checkpoint / COMPLETE_MARKER).write_text(str(step))
    return checkpoint


def test_the_newest_complete_checkpoint_is_found_by_step_not_by_name(tmp_path):
    make_checkpoint(tmp_path, 9, complete=True)
    ten = make_checkpoint(tmp_path, 10, complete=True)  # "checkpoint-10" sorts before "checkpoint-9" as text
    assert last_complete_checkpoint(tmp_path) == ten


def test_checkpoints_cut_short_are_removed_and_never_resumed_from(tmp_path, caplog):
    whole = make_checkpoint(tmp_path, 5, complete=True)
    make_checkpoint(tmp_path, 10, complete=False)
    make_checkpoint(tmp_path, 15, complete=False)
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(tmp_path) == whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]
    assert caplog.text.count("Removing incomplete checkpoint") == 2


def test_no_checkpoint_at_all(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    make_checkpoint(tmp_path, 3, complete=False)
    assert last_complete_checkpoint(tmp_path) is None and not any(tmp_path.iterdir())


class RecordingTrainer:
    """Stands in for a Trainer: remembers where `train` was asked to resume from."""

    def __init__(self, checkpoints: Path):
        self.args = SimpleNamespace(output_dir=str(checkpoints))
        self.resumed_from = "not called"

    def train(self, resume_from_checkpoint=None):
        self.resumed_from = resume_from_checkpoint
        return "result"


def test_train_resumably_resumes_only_when_asked(tmp_path, caplog):
    whole = make_checkpoint(tmp_path, 4, complete=True)
    trainer = RecordingTrainer(tmp_path)
    assert train_resumably(trainer, resume=False) == "result" and trainer.resumed_from is None
    train_resumably(trainer, resume=True)
    assert trainer.resumed_from == str(whole)

    empty = RecordingTrainer(tmp_path / "empty")
    with caplog.at_level(logging.WARNING):
        train_resumably(empty, resume=True)
    assert empty.resumed_from is None
    assert "--resume: no complete checkpoint in" in caplog.text and "starting from the beginning" in caplog.text


def test_training_arguments_read_the_training_section_and_take_each_loops_own(tmp_path):
    section = load_config(overrides=[
        f"training.output_dir={tmp_path}", "training.eval_steps=7", "training.batch_size=3", "training.seed=11",
    ]).training
    args = training_arguments(section, eval_strategy="steps", save_strategy="steps", prediction_loss_only=True)
    assert Path(args.output_dir) == tmp_path / "checkpoints"
    assert args.save_steps == args.eval_steps == 7 and args.per_device_train_batch_size == 3 and args.seed == 11
    assert args.prediction_loss_only and args.report_to == [] and not args.remove_unused_columns


def test_count_steps_summarises_where_a_run_started_and_how_far_it_went():
    counter, state = CountSteps(), SimpleNamespace(global_step=6)
    for _ in range(3):
        counter.on_step_begin(None, state, None)
        counter.on_step_end(None, state, None)
        state.global_step += 1
    assert counter.summary() == {"started_at_step": 6, "steps_run": 3}
