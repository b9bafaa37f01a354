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
    return folder if (folder / "zhijian.yaml").is_file() else None
