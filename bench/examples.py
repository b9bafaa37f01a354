"""What the README shows: `zhijian score` on the example chats, as the quickstart model answers them.

    python bench/examples.py --model runs/quickstart/model --out bench/results/examples.txt

Writes each example's readable output (no colours, 100 columns) and, per agent turn, the labels the
taxonomy expects beside the labels the model flagged, so a reader can check them at a glance.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT  # noqa: E402

# What the taxonomy says of each agent turn of the examples (turn index: labels); the rest are clean.
EXPECTED = {
    "data/examples/refund.txt": {1: ["after_sales_refusal"], 3: ["after_sales_refusal"], 5: ["review_bargaining"], 7: []},
    "data/examples/example.json": {1: ["over_promise"], 3: ["off_platform"]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "quickstart" / "model")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "examples.txt")
    args = parser.parse_args()
    from zhijian.scorer import Scorer
    from zhijian.taxonomy import LABEL_IDS
    from zhijian.transcripts import read_transcripts

    scorer = Scorer.load(args.model, "cpu")
    zhijian = Path(sys.executable).with_name("zhijian")
    environment = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    parts, wrong = [], 0
    for example, expected in EXPECTED.items():
        shown = subprocess.run(
            [str(zhijian), "score", example, "--model", os.path.relpath(args.model, ROOT)],
            cwd=ROOT, env=environment, capture_output=True, text=True, check=True,
        ).stdout
        dialogue = read_transcripts([ROOT / example])[0]
        predictions = scorer.predict([dialogue])
        rows = []
        for feature, probs in zip(predictions.features, predictions.probs):
            flagged = sorted(label for k, label in enumerate(LABEL_IDS) if probs[k] >= scorer.thresholds[k])
            want = sorted(expected.get(feature.turn, []))
            wrong += flagged != want
            rows.append(f"  turn {feature.turn}: expected {want or ['ok']}, flagged {flagged or ['ok']}{'' if flagged == want else '   <- differs'}")
        parts.append(f"$ zhijian score {example} --model {os.path.relpath(args.model, ROOT)}\n{shown.rstrip()}\n\nchecked against the taxonomy:\n" + "\n".join(rows))
    text = "\n\n".join(parts) + f"\n\nturns whose label set differs from the taxonomy's: {wrong}\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
