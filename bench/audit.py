"""The false-alarm audit, summed up without the chats' text: bench/results/audit.json.

An audit is a sample of 50 turns a model flagged on real chats (CSDS, research data: the files stay under
runs/audit/, never in the repository), each raised label marked true, false or borderline by two
annotators working alone from the taxonomy (helpers given only ../shared/spec/taxonomy.md). For each
audit this writes the verdict counts per annotator, their agreement, the share of raised labels both
call false, and the patterns they named. With `--now MODEL`, it also says which of the audited false
alarms that model still raises (the same label on the same turn): what the changes fixed.

    python bench/audit.py --audit before=runs/audit/before --audit after=runs/audit/after --now runs/quickstart/model

An audit folder holds `sample.jsonl` (the flagged turns, as `zhijian evaluate --audit` writes them, with
an `item` number) and `annotator_*.jsonl` (one line per item: verdicts per raised label, pattern, note).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, write_report  # noqa: E402


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarize(folder: Path) -> dict:
    sample = _lines(folder / "sample.jsonl")
    annotators = {path.stem.removeprefix("annotator_"): {row["item"]: row for row in _lines(path)} for path in sorted(folder.glob("annotator_*.jsonl"))}
    raised = [(row["item"], label) for row in sample for label in row["labels"]]
    verdicts = {name: Counter(rows[item]["verdicts"].get(label, "missing") for item, label in raised) for name, rows in annotators.items()}
    both = list(annotators.values())
    agreed = sum(len({rows[item]["verdicts"].get(label) for rows in both}) == 1 for item, label in raised)
    all_false = [(item, label) for item, label in raised if all(rows[item]["verdicts"].get(label) == "false" for rows in both)]
    patterns = Counter(rows[item]["pattern"] for rows in both for item, label in all_false if rows[item]["verdicts"].get(label) == "false")
    return {
        "turns": len(sample),
        "raised_labels": len(raised),
        "raised_per_label": dict(Counter(label for _, label in raised)),
        "verdicts": {name: dict(counter) for name, counter in verdicts.items()},
        "agreement": round(agreed / max(1, len(raised)), 3),
        "false_by_all_annotators": len(all_false),
        "true_by_any_annotator": sum(any(rows[item]["verdicts"].get(label) == "true" for rows in both) for item, label in raised),
        "patterns_of_agreed_false_alarms": dict(patterns.most_common(15)),
    }, sample, all_false


def still_raised(model: Path, sample: list[dict], false_alarms: list[tuple[int, str]]) -> dict:
    """Of the agreed false alarms, how many `model` still raises: each turn rescored in its own dialogue."""
    from zhijian.scorer import Scorer
    from zhijian.taxonomy import LABEL_IDS
    from zhijian.transcripts import Transcript

    scorer = Scorer.load(model, "cpu", "torch")
    by_item = {row["item"]: row for row in sample}
    dialogues = [Transcript(id=str(item), turns=[*by_item[item]["context"], {"role": "agent", "text": by_item[item]["text"]}]) for item, _ in false_alarms]
    predictions = scorer.predict(dialogues)
    last = {feature.dialogue: row for row, feature in enumerate(predictions.features)}  # the judged turn is each dialogue's last
    kept = [
        label for d, (_, label) in enumerate(false_alarms)
        if predictions.probs[last[d], LABEL_IDS.index(label)] >= scorer.thresholds[LABEL_IDS.index(label)]
    ]
    return {"false_alarms": len(false_alarms), "still_raised": len(kept), "still_raised_per_label": dict(Counter(kept))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audit", action="append", default=[], help="NAME=FOLDER (repeatable)")
    parser.add_argument("--now", type=Path, help="a model folder: which audited false alarms it still raises")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "audit.json")
    args = parser.parse_args()
    results: dict = {"audits": {}}
    for spec in args.audit:
        name, _, folder = spec.partition("=")
        summary, sample, false_alarms = summarize(Path(folder))
        if args.now:
            summary["with_model_now"] = still_raised(args.now, sample, false_alarms) | {"model": str(args.now)}
        results["audits"][name] = summary
    write_report(args.out, results)
    print(json.dumps(results, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
