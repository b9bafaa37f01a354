""""Tune to your shop", measured: CSDS val plays a shop's own chats and CSDS test its later traffic. `make shop-trial`.

The recipe a shop follows (README, "Tune to your shop"), run end to end:
1. its chats are split by dialogue: one half joins training as clean turns (`data.real_negatives`), the other
   half sets thresholds (`zhijian calibrate --unlabeled ... --alert-rate`), so the alert rate is measured on
   chats the model did not train on;
2. the quickstart recipe is trained with the first half (runs/shop-trial/model, about 8 minutes; `--reuse` keeps one already there);
3. the alert rates on the traffic (CSDS test) are written to bench/results/shop_trial.json for four models:
   quickstart as shipped, quickstart calibrated, shop-trained, shop-trained and calibrated; beside them dev macro-F1.

CSDS is research data: the trained weights stay under runs/ (never committed), and no CSDS text enters the repo.

    python bench/shop_trial.py --alert-rate 0.005
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine, shown_path, write_report  # noqa: E402
from bench.false_alarms import CSDS, DEV, rates  # noqa: E402
from zhijian.config import CONFIG_FILE  # noqa: E402

RUN = ROOT / "runs" / "shop-trial"
ZHIJIAN = [sys.executable, "-m", "zhijian_cli"]


def split_shop_chats() -> tuple[Path, Path]:
    """CSDS val by dialogue, alternately: (chats to train on, chats to calibrate on)."""
    lines = [line for line in CSDS["val"].read_text(encoding="utf-8").splitlines() if line.strip()]
    folder = RUN / "chats"
    folder.mkdir(parents=True, exist_ok=True)
    train, calibrate = folder / "train_half.jsonl", folder / "calibration_half.jsonl"
    train.write_text("".join(line + "\n" for line in lines[0::2]), encoding="utf-8")
    calibrate.write_text("".join(line + "\n" for line in lines[1::2]), encoding="utf-8")
    return train, calibrate


def run(command: list[str]) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def calibrated_copy(model: Path, name: str, chats: Path, alert_rate: float) -> Path:
    copy = RUN / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(model, copy)
    run([*ZHIJIAN, "calibrate", "--model", str(copy), "--unlabeled", str(chats), "--alert-rate", str(alert_rate)])
    return copy


def measure(folder: Path) -> dict:
    from training.evaluate import evaluate
    from zhijian.scorer import Scorer
    from zhijian.transcripts import read_real_dialogues

    scorer = Scorer.load(folder, "cpu", "torch")
    predictions = scorer.predict(read_real_dialogues([CSDS["test"]]))
    result = {"folder": shown_path(folder), "csds_test": rates(predictions.probs >= scorer.thresholds, len(predictions.features))}
    if DEV.is_file():
        metrics = evaluate(scorer, [DEV]).metrics
        result["dev"] = {"macro_f1": round(metrics["macro_f1"], 4), "exact_match": round(metrics["exact_match"], 4)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alert-rate", type=float, default=0.005, help="the shop's alert budget: share of its agent turns flagged")
    parser.add_argument("--base", type=Path, default=ROOT / "runs" / "quickstart" / "model", help="the model as shipped (make quickstart)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shop_trial.json")
    parser.add_argument("--reuse", action="store_true", help="keep runs/shop-trial/model when it is there instead of training it again")
    args = parser.parse_args()
    missing = [str(p) for p in (*CSDS.values(), args.base) if not p.exists()]
    if missing:
        parser.error(f"not here: {', '.join(missing)} (CSDS lies in ../shared/data; the base model comes from `make quickstart`)")
    train_half, calibration_half = split_shop_chats()
    shop_model = RUN / "model"
    started = time.monotonic()
    if not (args.reuse and (shop_model / CONFIG_FILE).is_file()):
        run([*ZHIJIAN, "train", "-c", str(args.config), "--set", f"data.real_negatives=[{train_half}]",
             "--set", "data.real_negatives_limit=100000", "--set", f"training.output_dir={RUN}"])
    train_seconds = round(time.monotonic() - started, 1)
    models = {
        "quickstart": args.base,
        "quickstart_calibrated": calibrated_copy(args.base, "quickstart-calibrated", calibration_half, args.alert_rate),
        "shop_trained": shop_model,
        "shop_trained_calibrated": calibrated_copy(shop_model, "shop-calibrated", calibration_half, args.alert_rate),
    }
    results = {
        "alert_rate": args.alert_rate,
        "shop_chats": {"train_half_dialogues": sum(1 for _ in train_half.open()), "calibration_half_dialogues": sum(1 for _ in calibration_half.open())},
        "train_seconds": train_seconds,
        "models": {name: measure(folder) for name, folder in models.items()},
        "machine": machine(),
    }
    write_report(args.out, results)
    print(json.dumps({name: {"without_perfunctory": r["csds_test"]["without_perfunctory"], "any": r["csds_test"]["any_label"], **r.get("dev", {})}
                      for name, r in results["models"].items()}, indent=1))


if __name__ == "__main__":
    main()
