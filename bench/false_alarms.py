"""How often models raise alarms on real agent replies, which are mostly clean: `make evaluate`.

Real chats are never trained on here (the corpus build refuses to copy them):
- `csds`: the 20,007 agent turns of CSDS val + test (JD customer service; ../shared/data/csds), also per split;
- `stc3`: the helpdesk turns of STC-3 (Weibo public helpdesks; ../shared/data/stc3), train and test files.

A careful reader who labeled a sample of real JD replies found a violation other than 敷衍 in about 0.3 % of
turns, so nearly every alarm here is a false one. Beside each model, the same rates for the keyword list and
the character n-gram baseline (trained on the model's own data.train), and the model's dev macro-F1, so that
fewer alarms are never bought with missed violations unnoticed.

    python bench/false_alarms.py --model quickstart=runs/quickstart/model --out bench/results/false_alarms.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, measure_models, model_arguments, shown_path  # noqa: E402
from bench.table import table as markdown_table  # noqa: E402

SHARED = ROOT.parent / "shared"
CSDS = {split: SHARED / "data" / "csds" / f"{split}_dialogues.jsonl" for split in ("val", "test")}
STC3 = [SHARED / "data" / "stc3" / name for name in ("train_data_cn.json", "test_data_cn.json")]
DEV = SHARED / "eval" / "dev.jsonl"


def rates(flagged, turns: int) -> dict:
    """Any label, any label but 敷衍, and 敷衍 alone: shares of the agent turns."""
    from zhijian.taxonomy import LABEL_IDS

    k = LABEL_IDS.index("perfunctory")
    others = [j for j in range(len(LABEL_IDS)) if j != k]
    return {
        "turns": turns,
        "any_label": round(float(flagged.any(axis=1).mean()), 5),
        "without_perfunctory": round(float(flagged[:, others].any(axis=1).mean()), 5),
        "perfunctory": round(float(flagged[:, k].mean()), 5),
        "per_label": {label: round(float(flagged[:, j].mean()), 5) for j, label in enumerate(LABEL_IDS)},
    }


def real_dialogues() -> dict:
    from zhijian.stc3 import read_stc3, to_transcript
    from zhijian.transcripts import read_real_dialogues

    sets = {f"csds_{split}": read_real_dialogues([path]) for split, path in CSDS.items() if path.is_file()}
    stc3 = [to_transcript(d) for path in STC3 if path.is_file() for d in read_stc3(path)]
    if stc3:
        sets["stc3"] = stc3
    return sets


def measure(folder: Path, sets: dict, baselines: dict) -> dict:
    from training.baseline import KeywordBaseline, NgramBaseline
    from training.evaluate import evaluate
    from zhijian.scorer import Scorer

    scorer = Scorer.load(folder, "cpu", "torch")
    data = scorer.config.data
    key = (tuple(map(str, data.train)), tuple(map(str, data.valid)))
    if key not in baselines:
        baselines[key] = NgramBaseline.from_config(scorer.config)
    systems = {"keyword_baseline": KeywordBaseline.load(), "ngram_baseline": baselines[key]}
    result = {"folder": shown_path(folder), "real_negatives": [str(p) for p in data.real_negatives], "sets": {}}
    for name, dialogues in sets.items():
        predictions = scorer.predict(dialogues)
        turns = len(predictions.features)
        row = {"model": rates(predictions.probs >= scorer.thresholds, turns)}
        for system_name, system in systems.items():
            row[system_name] = rates(system.predict(dialogues, predictions.features) >= system.thresholds, turns)
        result["sets"][name] = row
    csds = [name for name in sets if name.startswith("csds_")]
    if len(csds) == 2:  # the figure: val + test together
        result["sets"]["csds"] = {
            system: _pooled([result["sets"][name][system] for name in csds]) for system in result["sets"][csds[0]]
        }
    if DEV.is_file():
        metrics = evaluate(scorer, [DEV]).metrics
        result["dev"] = {"macro_f1": round(metrics["macro_f1"], 4), "exact_match": round(metrics["exact_match"], 4)}
    return result


def _pooled(parts: list[dict]) -> dict:
    turns = sum(p["turns"] for p in parts)
    pool = lambda key: round(sum(p[key] * p["turns"] for p in parts) / turns, 5)  # noqa: E731
    return {
        "turns": turns,
        "any_label": pool("any_label"),
        "without_perfunctory": pool("without_perfunctory"),
        "perfunctory": pool("perfunctory"),
        "per_label": {label: round(sum(p["per_label"][label] * p["turns"] for p in parts) / turns, 5) for label in parts[0]["per_label"]},
    }


def table(results: dict) -> str:
    rows = []
    for name, result in results.get("models", {}).items():
        for set_name, row in result["sets"].items():
            model = row["model"]
            rows.append([
                name, set_name, model["turns"], f"{model['any_label']:.2%}", f"{model['without_perfunctory']:.2%}", f"{model['perfunctory']:.2%}",
                f"{row['keyword_baseline']['without_perfunctory']:.2%}", f"{row['ngram_baseline']['without_perfunctory']:.2%}",
                result.get("dev", {}).get("macro_f1", "—"),
            ])
    header = ["model", "set", "turns", "any label", "without 敷衍", "敷衍", "keywords (without 敷衍)", "n-gram (without 敷衍)", "dev macro-F1"]
    return "\n".join(markdown_table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser, ROOT / "bench" / "results" / "false_alarms.json")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.table:
        print(table(results))
        return
    sets = real_dialogues()
    if not sets:
        parser.error(f"no real chats under {os.path.relpath(SHARED / 'data', ROOT)} (csds/, stc3/): nothing to measure")
    baselines: dict = {}
    measure_models(parser, args, results, lambda folder: measure(folder, sets, baselines), table)


if __name__ == "__main__":
    main()
