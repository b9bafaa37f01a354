"""How well models label chats, beside the baselines, on every labeled set we have: `make evaluate`.

Each model folder is measured with `zhijian evaluate`'s own code (training/evaluate.py) on:
- `dev`: ../shared/eval/dev.jsonl, hand-labeled (a measurement only: nothing is fitted on it);
- `heldout`: data/heldout/chats.jsonl, realistic chats written and labeled by an independent annotator;
- `long` and `traditional`: data/probes/, long replies (100-300 characters) and Traditional / Cantonese-
  flavoured replies, written and labeled by another independent annotator;
- `corpus_valid`: the corpus's validation split (setups and replies training never saw).

Beside each model: the character n-gram baseline (trained on the model's own data.train, thresholds on its
data.valid) and the keyword baseline. Results are merged into `--out` under each model's name, so a series
of experiments builds one table; `--table` prints it as Markdown.

    python bench/quality.py --model quickstart=runs/quickstart/model --out bench/results/quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, measure_models, model_arguments, shown_path  # noqa: E402
from bench.table import table as markdown_table  # noqa: E402

SETS = {
    "dev": ROOT.parent / "shared" / "eval" / "dev.jsonl",
    "heldout": ROOT / "data" / "heldout" / "chats.jsonl",
    "long": ROOT / "data" / "probes" / "long.jsonl",
    "traditional": ROOT / "data" / "probes" / "traditional.jsonl",
    "corpus_valid": ROOT / "data" / "corpus" / "valid.jsonl",
}


def _figures(summary: dict | None) -> dict | None:
    if summary is None:
        return None
    return {
        "macro_f1": round(summary["macro_f1"], 4),
        "micro_f1": round(summary["micro_f1"], 4),
        "exact_match": round(summary["exact_match"], 4),
        "f1": {label: round(row["f1"], 3) for label, row in summary["labels"].items()},
    }


def measure(folder: Path, sets: dict[str, Path], baselines: dict) -> dict:
    from training.baseline import NgramBaseline
    from training.evaluate import evaluate
    from zhijian.scorer import Scorer

    scorer = Scorer.load(folder, "cpu", "torch")
    data = scorer.config.data
    key = (tuple(map(str, data.train)), tuple(map(str, data.valid)))
    if key not in baselines:  # one n-gram baseline per training set, shared by the models trained on it
        started = time.monotonic()
        baselines[key] = (NgramBaseline.from_config(scorer.config), time.monotonic() - started)
    ngram, ngram_seconds = baselines[key]
    summary_file = folder.parent / "train_summary.json"
    train_summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    result = {
        "folder": shown_path(folder),
        "encoder": train_summary.get("encoder"),
        "train_seconds": train_summary.get("train_seconds"),
        "ngram_train_seconds": round(ngram_seconds, 1),
        "features": scorer.config.features.model_dump(),
        "sets": {},
    }
    for name, path in sets.items():
        evaluation = evaluate(scorer, [path], ngram=ngram)
        metrics = evaluation.metrics
        result["sets"][name] = {
            "turns": metrics["turns"],
            "model": _figures(metrics) | {"tone_spearman": metrics["tone"]["spearman"]},
            "ngram_baseline": _figures(metrics["ngram_baseline"]),
            "keyword_baseline": _figures(metrics["baseline"]),
        }
    return result


CHECK_GOLD = ROOT / "data" / "checks" / "dialogues.jsonl"


def dialogue_checks() -> dict | None:
    """The rule checks of the default template against data/checks/dialogues.jsonl's gold: no model involved."""
    from training.evaluate import check_metrics
    from zhijian.template import load_template
    from zhijian.transcripts import read_transcripts

    if not CHECK_GOLD.is_file():
        return None
    figures = check_metrics(read_transcripts([CHECK_GOLD]), load_template().checks)
    return {"file": os.path.relpath(CHECK_GOLD, ROOT), "checks": figures}


def table(results: dict) -> str:
    """One Markdown row per model and set: model vs n-gram macro-F1 and exact match."""
    rows = []
    for name, result in results.get("models", {}).items():
        for set_name, row in result["sets"].items():
            model, bar = row["model"], row["ngram_baseline"]
            rho = model.get("tone_spearman")
            rows.append([
                name, set_name, row["turns"], f"{model['macro_f1']:.3f}", f"{bar['macro_f1']:.3f}", f"{model['macro_f1'] - bar['macro_f1']:+.3f}",
                f"{model['exact_match']:.3f}", f"{bar['exact_match']:.3f}", "—" if rho is None else f"{rho:.3f}", result["train_seconds"] or "—",
            ])
    header = ["model", "set", "turns", "macro-F1", "n-gram", "Δ", "exact", "n-gram exact", "tone ρ", "train s"]
    return "\n".join(markdown_table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser, ROOT / "bench" / "results" / "quality.json")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.table:
        print(table(results))
        return
    chosen = [name for name in args.sets.split(",") if name]
    unknown = [name for name in chosen if name not in SETS]
    if unknown:
        parser.error(f"unknown set(s) {unknown}; known: {', '.join(SETS)}")
    sets = {name: SETS[name] for name in chosen if SETS[name].is_file()}
    skipped = {name: f"{os.path.relpath(SETS[name], ROOT)} is not here" for name in chosen if name not in sets}
    baselines: dict = {}
    results["skipped_sets"] = skipped
    results["dialogue_checks"] = dialogue_checks()
    measure_models(parser, args, results, lambda folder: measure(folder, sets, baselines), table)


if __name__ == "__main__":
    main()
