"""Training speed on CPU: samples/s of optimizer steps with the project's own model and data path.

- quickstart: configs/quickstart.yaml with its scratch encoder (model.base=scratch, as `make quickstart`
  trains offline);
- bert-base-chinese: configs/base.yaml with the architecture of ../shared/models/bert-base-chinese
  (random init; speed does not depend on the weights) and its max_length, in fp32 at batch 8 (see CONFIGS).

The model comes from zhijian.model.build_model, the examples from training.data (TurnDataset: the
Featurizer's agent turns with context; Collator: padded to the longest of each batch) over the first
dialogues of data/corpus/train.jsonl, shuffled. One step is what the Trainer does per step: collate,
forward (bf16 autocast when the config says bf16), BCE + tone loss, backward, clip the gradient norm
at 1, AdamW; no evaluation or checkpoints. The first steps warm up and are not timed.

`make quickstart` from a clean clone is timed apart by bench/quickstart_time.sh; its
bench/results/quickstart_time.json, when there is one, is copied into the output as "make_quickstart".

    python bench/train_speed.py [--quick] [--out bench/results/train.json]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import SHARED_BERT_BASE, RunClock, bf16_is_native, machine, finish  # noqa: E402

CONFIGS = {
    "quickstart": (ROOT / "configs" / "quickstart.yaml", ["model.base=scratch"]),
    # fp32: with base.yaml's bf16 autocast, the 2026-11-29 full `make bench` spent 13 minutes in this script
    # (bert-base, 4.8 GB RSS) and was stopped; bf16 autocast is emulated on this CPU, the likely cause.
    # Batch 8, not base.yaml's 32: a step of 32 x 128 tokens takes ~26 s on 2 cores, so a few steps would eat
    # the suite's 15 minutes. Per sample, 8 was no slower: 1.7 samples/s vs 1.2 at 32 (2026-11-29, AMD EPYC, 2 cores).
    "bert-base-chinese": (ROOT / "configs" / "base.yaml", [f"model.base={SHARED_BERT_BASE}", "model.random_init=true", "training.bf16=false", "training.batch_size=8"]),
}
# Per model and mode: (warm-up steps, timed steps at most, seconds of timed steps at most: no step starts
# that would end past it, but at least one runs).
PLAN = {
    "quickstart": {"quick": (3, 20, 30.0), "full": (10, 200, 45.0)},
    "bert-base-chinese": {"quick": (0, 1, 20.0), "full": (1, 300, 35.0)},  # a step of 8 takes ~6 s on 2 cores
}
DIALOGUES = 3000  # training dialogues read: about 8.5k agent turns, more than 210 steps of 32 take (else a new epoch)


def bench_model(name: str, quick: bool, notes: list[str]) -> dict | None:
    from training.data import Collator, TurnDataset
    from zhijian.config import load_config
    from zhijian.featurize import Featurizer
    from zhijian.model import build_model
    from zhijian.transcripts import iter_transcripts

    path, overrides = CONFIGS[name]
    config = load_config(path, overrides)
    if name == "bert-base-chinese" and not (SHARED_BERT_BASE / "config.json").is_file():
        notes.append(f"{name}: skipped (no {SHARED_BERT_BASE}/config.json)")
        return None
    train_file = ROOT / config.data.train[0]
    if not train_file.is_file():
        notes.append(f"{name}: skipped (no {train_file}: run `zhijian data build`)")
        return None
    warmup, max_steps, budget_s = PLAN[name]["quick" if quick else "full"]
    section = config.training
    torch.manual_seed(section.seed)
    model, tokenizer, source = build_model(config.model)
    dialogues = list(itertools.islice(iter_transcripts(train_file), DIALOGUES))
    dataset = TurnDataset(dialogues, Featurizer(tokenizer, config.features))
    model.set_pos_weight(dataset.pos_weight(section.pos_weight_max))
    model.config.tone_loss_weight = section.tone_loss_weight
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=section.learning_rate, weight_decay=section.weight_decay)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=section.batch_size, shuffle=True, collate_fn=Collator(tokenizer),
        generator=torch.Generator().manual_seed(section.seed),
    )
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch
    precision = "bf16_autocast" if section.bf16 else "fp32"

    def step() -> tuple[int, int]:
        batch = next(batches)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if section.bf16 else contextlib.nullcontext()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(batch["labels"]), int(batch["attention_mask"].sum())

    for _ in range(warmup):
        step()
    samples = tokens = steps = 0
    step_times = []
    started = time.perf_counter()
    while steps < max_steps and (not step_times or time.perf_counter() - started + step_times[-1] <= budget_s):
        tick = time.perf_counter()
        n, t = step()
        step_times.append(time.perf_counter() - tick)
        samples, tokens, steps = samples + n, tokens + t, steps + 1
    seconds = time.perf_counter() - started
    row = {
        "model": name, "config": str(path.relative_to(ROOT)), "encoder": source.replace(str(ROOT.parent), ".."),  # ../shared/..., not this machine's path
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "batch": section.batch_size, "max_length": config.features.max_length, "precision": precision,
        "warmup_steps": warmup, "steps": steps, "seconds": round(seconds, 1),
        "samples_per_s": round(samples / seconds, 1), "tokens_per_s": round(tokens / seconds),
        "step_ms_median": round(1000 * float(np.median(step_times)), 1), "threads": torch.get_num_threads(),
    }
    if section.bf16 and not bf16_is_native():
        notes.append(f"{name}: the config asks for bf16, which this CPU emulates (no AVX512-BF16/AMX): slower than fp32 here")
    stop = "the step limit" if steps >= max_steps else f"the {budget_s:g} s budget"
    notes.append(f"{name}: {steps} timed steps after {warmup} warm-up steps (stopped by {stop}), {len(dataset)} agent turns from {len(dialogues)} dialogues")
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps each (under a minute)")
    parser.add_argument("--models", default="quickstart,bert-base-chinese")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.json")
    parser.add_argument("--quickstart-time", type=Path, default=ROOT / "bench" / "results" / "quickstart_time.json",
                        help="written by bench/quickstart_time.sh; copied in when it exists")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    clock = RunClock()
    report = {"machine": machine(), "rows": [], "make_quickstart": None, "notes": []}
    for name in args.models.split(","):
        row = bench_model(name, args.quick, report["notes"])
        if row:
            report["rows"].append(row)
    if args.quickstart_time.is_file():
        report["make_quickstart"] = json.loads(args.quickstart_time.read_text(encoding="utf-8"))
    else:
        report["notes"].append(f"no {args.quickstart_time.name}: time `make quickstart` from a clean clone with bench/quickstart_time.sh")
    finish(args.out, report, clock, args.quick)


if __name__ == "__main__":
    main()
