"""Padding: what it costs to pad a realistic batch of agent turns, three ways, eager fp32 on CPU.

The pool is real agent turns of data/corpus/valid.jsonl with their context, featurized by the project's
Featurizer (the corpus's length mix, as in model_speed.py), in arrival order, cut into batches:

- pad_to_max: every batch padded to `features.max_length` (what a fixed-shape export or
  `padding="max_length"` does);
- dynamic: each batch padded to its own longest turn, batches in arrival order;
- sorted_buckets: the pool sorted by length first, then batched and padded to each batch's longest.

utt_per_s is over whole passes of the pool (median pass); ratio_to_dynamic compares with dynamic padding
at the same batch. The project's own scorer uses sorted_buckets: `Scorer.forward` sorts the turns of each
call by length and `featurize.pad_batch` pads to the longest of the batch (never to max_length).

    python bench/padding.py [--quick] [--out bench/results/padding.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import RunClock, machine, mix_pool, model_folder, physical_cores, finish  # noqa: E402
from zhijian.featurize import TOKEN_FIELDS, pad_batch  # noqa: E402

STRATEGIES = ("pad_to_max", "dynamic", "sorted_buckets")
PROJECT_STRATEGY = "sorted_buckets"
# Per model and mode: (batches, turns in the pool, seconds of passes per measurement, at least 2 passes
# unless one takes that long alone). Several batches per pool: one batch alone cannot show what sorting buys.
PLAN = {
    "quickstart": {"quick": ((32,), 96, 0.5), "full": ((8, 32), 192, 2.0)},
    "bert-base-chinese": {"quick": ((8,), 16, 0.0), "full": ((8,), 32, 3.0)},
}


def batches(features: list, batch: int, strategy: str, max_length: int, tokenizer) -> list[dict]:
    """The padded model inputs of one pass over the pool."""
    rows = [f.as_model_input() for f in features]
    if strategy == "sorted_buckets":
        rows.sort(key=lambda row: len(row["input_ids"]))
    chunks = [rows[start : start + batch] for start in range(0, len(rows), batch)]
    if strategy == "pad_to_max":
        return [pad_to(chunk, max_length, tokenizer) for chunk in chunks]
    return [pad_batch(chunk, tokenizer) for chunk in chunks]  # the project's own: to the longest of the batch


def pad_to(rows: list[dict], width: int, tokenizer) -> dict:
    rows = [{key: row[key] for key in TOKEN_FIELDS} for row in rows]
    return dict(tokenizer.pad(rows, padding="max_length", max_length=width, return_tensors="pt"))


@torch.inference_mode()
def measure(model, inputs: list[dict], budget_s: float) -> float:
    """Median seconds of one pass (all batches), after one warm-up batch."""
    model(**inputs[0])
    times = []
    while len(times) < 2 or sum(times) < budget_s:
        start = time.perf_counter()
        for batch in inputs:
            model(**batch)
        times.append(time.perf_counter() - start)
        if len(times) == 1 and times[0] >= budget_s:
            break
    return float(np.median(times))


def bench_model(name: str, folder: Path, quick: bool, notes: list[str]) -> list[dict]:
    from zhijian.model import ZhijianModel, load_model_folder
    from zhijian.scorer import Scorer

    _, tokenizer, config = load_model_folder(folder, weights=False)
    sizes, pool_size, budget = PLAN[name]["quick" if quick else "full"]
    pool = mix_pool(Scorer(None, tokenizer, config, "cpu"), pool_size)
    max_length = config.features.max_length
    lengths = [len(f.input_ids) for f in pool]
    model = ZhijianModel.from_pretrained(folder, attn_implementation="eager").eval()
    rows = []
    for batch in sizes:
        padded = {s: batches(pool, batch, s, max_length, tokenizer) for s in STRATEGIES}
        real = sum(lengths)
        seconds = {s: measure(model, padded[s], budget) for s in STRATEGIES}
        for strategy in STRATEGIES:
            cells = sum(b["input_ids"].numel() for b in padded[strategy])
            rows.append({
                "model": name, "strategy": strategy, "batch": batch, "utt_per_s": round(len(pool) / seconds[strategy], 1),
                "ratio_to_dynamic": round(seconds["dynamic"] / seconds[strategy], 2),
                "padding_share": round(1 - real / cells, 3), "project_default": strategy == PROJECT_STRATEGY,
            })
            print(json.dumps(rows[-1]), flush=True)
    notes.append(
        f"{name}: pool of {len(pool)} agent turns, tokens min/median/max {min(lengths)}/{int(np.median(lengths))}/{max(lengths)} "
        f"(max_length {max_length}); eager attention, fp32, {physical_cores()} threads"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small pools, one batch size (seconds)")
    parser.add_argument("--models", default="quickstart,bert-base-chinese")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "padding.json")
    args = parser.parse_args()
    torch.set_num_threads(physical_cores())
    clock = RunClock()
    report = {"machine": machine(), "project_strategy": PROJECT_STRATEGY, "rows": [], "notes": []}
    for name in args.models.split(","):
        folder = model_folder(name)
        if folder is None:
            report["notes"].append(f"{name}: skipped (no model folder)")
            continue
        report["rows"] += bench_model(name, folder, args.quick, report["notes"])
    report["notes"].append(
        f"the project's scorer uses {PROJECT_STRATEGY}: Scorer.forward sorts each call's agent turns by length and "
        "featurize.pad_batch pads each batch to its longest turn"
    )
    finish(args.out, report, clock, args.quick)


if __name__ == "__main__":
    main()
