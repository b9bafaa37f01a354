"""What the benchmarks share: the machine's description and the model folders they measure."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_BERT_BASE = ROOT.parent / "shared" / "models" / "bert-base-chinese"

MODELS = {
    "quickstart": {"folder": ROOT / "runs" / "quickstart" / "model", "missing": "no runs/quickstart/model (run `make quickstart`)"},
    "bert-base": {
        "folder": ROOT / "runs" / "bench" / "bert-base-random",
        "missing": f"no {SHARED_BERT_BASE}/config.json to build the bert-base-chinese architecture from",
    },
}


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort}


def model_folder(name: str) -> Path | None:
    """The model folder to measure; bert-base is built once with random weights (speed does not depend on them)."""
    folder = MODELS[name]["folder"]
    if name == "bert-base" and not (folder / "zhijian.yaml").is_file():
        if not (SHARED_BERT_BASE / "config.json").is_file():
            return None
        from zhijian.config import load_config
        from zhijian.model import build_model, save_model_folder

        config = load_config(overrides=[f"model.base={SHARED_BERT_BASE}", "model.random_init=true"])
        model, tokenizer, _ = build_model(config.model)
        save_model_folder(model, tokenizer, config, folder)
        _flag_like_a_trained_model(folder)
    return folder if (folder / "zhijian.yaml").is_file() else None


def _flag_like_a_trained_model(folder: Path, rate: float = 0.03) -> None:
    """Random weights put every probability near 0.5, so 0.5 flags everything and evidence would run on
    every turn; thresholds at the 97th percentile of real turns make it flag about as often as a
    trained model (a few % of turns per label), so evidence spans cost what they cost in use."""
    import numpy as np

    from zhijian.config import load_config
    from zhijian.scorer import Scorer
    from zhijian.taxonomy import LABEL_IDS
    from zhijian.transcripts import Transcript

    dialogues = [Transcript.model_validate(d) for d in ten_turn_dialogues(40, seed=1)]
    probs = Scorer.load(folder, "cpu").predict(dialogues).probs
    config = load_config(folder)
    config.thresholds.per_label = {label: float(np.clip(np.quantile(probs[:, k], 1 - rate), 0.01, 0.99)) for k, label in enumerate(LABEL_IDS)}
    config.save(folder)


def ten_turn_dialogues(count: int = 200, seed: int = 0) -> list[dict]:
    """Realistic 10-turn dialogues: consecutive turns of corpus validation dialogues, glued where one is short."""
    import json
    import random

    source = ROOT / "data" / "corpus" / "valid.jsonl"
    turns = []
    if source.is_file():
        with source.open(encoding="utf-8") as handle:
            for line in handle:
                turns += [{"role": t["role"], "text": t["text"]} for t in json.loads(line)["turns"]]
    else:  # no corpus built: a plain synthetic exchange
        turns = [{"role": "customer", "text": "请问这个什么时候发货?"}, {"role": "agent", "text": "亲,一般48小时内发出哦,具体以物流为准~"}] * 50
    rng = random.Random(seed)
    dialogues = []
    for n in range(count):
        start = rng.randrange(0, len(turns) - 10)
        dialogues.append({"id": f"load-{n}", "turns": turns[start : start + 10]})
    return dialogues
