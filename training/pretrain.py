"""`zhijian pretrain`: continued masked-LM pre-training of the encoder on unlabeled chat text.

Domain-adaptive pre-training: a production user continues from bert-base-chinese on their own chat
archive; offline, where no pretrained Chinese weights can be downloaded, it starts from `scratch`
with the project's own vocabulary. Every turn of every dialogue (both roles) is featurized exactly as
fine-tuning reads an agent turn — role-prefixed context, then the turn — so the encoder practises on
the input it will later classify. The result is a ``save_pretrained`` folder (``BertForMaskedLM``
with its tokenizer) that ``zhijian train`` takes as ``model.base``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    Trainer,
    set_seed,
)
from transformers.modeling_outputs import MaskedLMOutput

from training.loop import CountSteps, MarkCompleteCheckpoints, model_folder, train_resumably, training_arguments, write_summary
from zhijian.config import ZhijianConfig
from zhijian.featurize import Featurizer
from zhijian.model import SCRATCH, HubUnreachable, offline_options, resolve_base, save_model_folder, scratch_tokenizer
from zhijian.taxonomy import AGENT, ROLES
from zhijian.transcripts import Transcript, TranscriptError, Turn, _decode, read_real_dialogues

log = logging.getLogger(__name__)


class MaskedPositionsLM(BertForMaskedLM):
    """BertForMaskedLM that runs its output layer on the masked positions only.

    With a 21k-character vocabulary and a small encoder, projecting every position onto the
    vocabulary costs more than the encoder itself; the loss only needs the ~15 % that are masked.
    Same weights and names as BertForMaskedLM, so the saved folder is a plain one.
    """

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
        if labels is None:
            return MaskedLMOutput(logits=self.cls(hidden))
        masked = labels != -100
        logits = self.cls(hidden[masked])
        loss = nn.functional.cross_entropy(logits.float(), labels[masked])
        return MaskedLMOutput(loss=loss, logits=logits)


def build_masked_lm(config: ZhijianConfig) -> tuple[MaskedPositionsLM, object, str]:
    """The encoder to pre-train: from a hub id, a local folder, or `scratch` (same rules as `zhijian train`)."""
    section = config.model
    base = resolve_base(section)
    if base == SCRATCH:
        tokenizer = scratch_tokenizer()
        bert_config = BertConfig(
            vocab_size=len(tokenizer), hidden_dropout_prob=section.dropout, **section.scratch.model_dump()
        )
        return MaskedPositionsLM(bert_config), tokenizer, "scratch (random init, project-built vocabulary)"
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = MaskedPositionsLM.from_pretrained(base, hidden_dropout_prob=section.dropout)
    except OSError as error:
        if Path(base).exists():
            raise OSError(f"{base}: cannot load a BERT checkpoint from this folder ({error})") from None
        raise HubUnreachable(f"{offline_options(base)} ({error})") from None
    return model, tokenizer, f"{base} (continued)"


def _is_stc3(path: Path) -> bool:
    try:
        data = json.loads(_decode(path.read_bytes(), str(path)))
    except json.JSONDecodeError:
        return False
    first = data[0] if isinstance(data, list) and data else None
    return isinstance(first, dict) and any(isinstance(t, dict) and "sender" in t for t in first.get("turns", []))


def read_unlabeled(path: Path) -> list[Transcript]:
    """Dialogues of one input file; labels, if any, are ignored."""
    path = Path(path)
    if not path.is_file():
        raise TranscriptError(str(path), None, "no such file")
    if path.suffix.lower() == ".txt":
        lines = _decode(path.read_bytes(), str(path)).splitlines()
        return [
            Transcript(id=f"{path.stem}:{number}", turns=[Turn(role=AGENT, text=line.strip())])
            for number, line in enumerate(lines, start=1)
            if line.strip()
        ]
    if path.suffix.lower() == ".json" and _is_stc3(path):
        from zhijian.stc3 import benchmark_split, read_stc3, to_transcript

        dialogues = read_stc3(path)
        if any(dialogue.quality for dialogue in dialogues):
            # The STC-3 benchmark's test dialogues stay unseen, even as unlabeled text.
            dialogues, _ = benchmark_split(dialogues)
        return [to_transcript(dialogue) for dialogue in dialogues]
    return read_real_dialogues([path])


def pretraining_examples(config: ZhijianConfig, tokenizer) -> list[dict[str, list[int]]]:
    """Every turn of every input dialogue as model input, exact duplicates once (template text repeats)."""
    if not config.pretrain.inputs:
        raise ValueError("pretrain.inputs is empty: name at least one text or transcript file in the config")
    featurizer = Featurizer(tokenizer, config.features)
    unique: dict[tuple, dict[str, list[int]]] = {}
    for path in config.pretrain.inputs:
        dialogues = read_unlabeled(path)
        features = featurizer.encode(dialogues, roles=ROLES)
        before = len(unique)
        for feature in features:
            unique.setdefault((tuple(feature.input_ids), tuple(feature.token_type_ids)), feature.as_model_input())
        log.info("%s: %d dialogues, %d turns, %d new distinct inputs", path, len(dialogues), len(features), len(unique) - before)
    return list(unique.values())


def split_heldout(config: ZhijianConfig, examples: list[dict]) -> tuple[list[dict], list[dict]]:
    """Shuffled (seeded), then a few held out to measure the loss on: (held out, to train on)."""
    random.Random(config.training.seed).shuffle(examples)
    held = min(int(len(examples) * config.pretrain.holdout_fraction), 5000)
    heldout, train_examples = examples[:held], examples[held:]
    if not train_examples:
        raise ValueError("no text to pre-train on in pretrain.inputs")
    log.info("Pre-training on %d distinct inputs (%d held out for the loss)", len(train_examples), len(heldout))
    return heldout, train_examples


def save_plain_masked_lm(model: MaskedPositionsLM, tokenizer, config: ZhijianConfig, folder: Path) -> None:
    """Saved as a plain BertForMaskedLM, which AutoModelForMaskedLM and `zhijian train` both read."""
    plain = BertForMaskedLM(model.config)
    plain.load_state_dict(model.state_dict())
    save_model_folder(plain, tokenizer, config, folder)


def pretrain(config: ZhijianConfig, resume: bool = False) -> Path:
    """Pre-train the encoder; returns the folder (``<training.output_dir>/model``) to use as `model.base`."""
    section = config.training
    set_seed(section.seed)
    model, tokenizer, source = build_masked_lm(config)
    log.info("Encoder: %s", source)
    heldout, train_examples = split_heldout(config, pretraining_examples(config, tokenizer))

    counter = CountSteps()
    trainer = Trainer(
        model=model,
        args=training_arguments(
            section, eval_strategy="steps" if heldout else "no", save_strategy="steps", prediction_loss_only=True
        ),
        train_dataset=train_examples,
        eval_dataset=heldout or None,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.pretrain.mlm_probability),
        processing_class=tokenizer,
        callbacks=[MarkCompleteCheckpoints(), counter],
    )
    start = time.perf_counter()
    result = train_resumably(trainer, resume)
    heldout_loss = trainer.evaluate()["eval_loss"] if heldout else None

    model_dir = model_folder(section)
    if trainer.is_world_process_zero():
        save_plain_masked_lm(trainer.model, tokenizer, config, model_dir)
        summary = {
            "encoder": source,
            "inputs": [str(path) for path in config.pretrain.inputs],
            "train_inputs": len(train_examples),
            "heldout_inputs": len(heldout),
            "steps": result.global_step,
            **counter.summary(),
            "train_loss": result.training_loss,
            "heldout_loss": heldout_loss,
            "heldout_perplexity": float(torch.exp(torch.tensor(heldout_loss))) if heldout_loss is not None else None,
            "wall_s": round(time.perf_counter() - start, 1),
            "samples_per_s": result.metrics.get("train_samples_per_second"),
        }
        write_summary(section, "pretrain_summary.json", summary)
    return model_dir
