"""What the benchmarks share: the machine's description, the model folders they measure, the corpus's
length mix, and the bookkeeping of a run (how much of the machine others took, whole-file writes)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_BERT_BASE = ROOT.parent / "shared" / "models" / "bert-base-chinese"
CORPUS = ROOT / "data" / "corpus" / "valid.jsonl"

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
    import transformers

    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "onnxruntime": ort,
    }


def physical_cores() -> int:
    """Hyperthreads share one core's FMA units: more threads than cores only adds contention."""
    seen = set()
    core = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = (part.strip() for part in line.split(":", 1))
                core[key] = value
            elif core:
                seen.add((core.get("physical id"), core.get("core id")))
                core = {}
    except OSError:
        pass
    seen.discard((None, None))
    return len(seen) or os.cpu_count() or 1


def busy_cpu_seconds() -> tuple[float, float]:
    """(CPU-seconds the whole machine has been busy, CPU-seconds this process and its waited-for children used):
    their growth apart is what other processes took during the run; on 2 cores anyone else's work shows in
    every figure."""
    import resource

    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), used


def bf16_is_native() -> bool:
    """bf16 autocast only pays where the CPU has bf16 dot products (AVX512-BF16 or AMX); elsewhere it is emulated."""
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def others_share(before: tuple[float, float], after: tuple[float, float], wall: float) -> float:
    """The share of the machine's CPU time that other processes took between two busy_cpu_seconds() readings."""
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others) / max(wall, 1e-9) / (os.cpu_count() or 1)


def rss_mb(pid: int | None) -> float:
    """Resident memory of a process, in MB (NaN when there is no process to read)."""
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RunClock:
    """Wall time of a whole benchmark run and how much of the machine other processes took meanwhile."""

    def __init__(self):
        import time

        self.started = time.perf_counter()
        self.busy = busy_cpu_seconds()

    def wall_s(self) -> float:
        import time

        return time.perf_counter() - self.started

    def note(self, quick: bool) -> str:
        wall = self.wall_s()
        now = busy_cpu_seconds()
        others = max(0.0, (now[0] - self.busy[0]) - (now[1] - self.busy[1]))
        share = others_share(self.busy, now, wall)
        return (
            f"run took {wall:.0f} s ({'quick' if quick else 'full'}); other processes used {others:.0f} CPU-s "
            f"({share:.0%} of the machine) meanwhile" + ("; rerun on a quiet machine" if share > 0.05 else "")
        )


def write_report(path: Path, report: dict) -> None:
    """Write a results file whole (a reader never sees half of one)."""
    import json

    from zhijian.files import write_atomic

    write_atomic(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def shown_path(path: Path) -> str:
    """A path as results files show it: relative to the repository, or just its name when outside (no machine paths)."""
    path = Path(path).resolve()
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else f"<outside the repository>/{path.name}"


def model_arguments(parser, default_out: Path) -> None:
    """--model NAME=FOLDER (repeatable), --out, --table: the arguments of the per-model quality benchmarks."""
    parser.add_argument("--model", action="append", default=[], help="NAME=FOLDER (repeatable)")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--table", action="store_true", help="print the results file as a Markdown table and stop")


def measure_models(parser, args, results: dict, measure, table) -> None:
    """Measure each --model folder, merging its figures into `results["models"][NAME]` and writing the
    file after each (a series of experiments builds one table); prints each model's rows as it goes."""
    import time

    if not args.model:
        parser.error("give at least one --model NAME=FOLDER")
    results.setdefault("models", {})
    for spec in args.model:
        name, _, folder = spec.partition("=")
        if not folder:
            parser.error(f"--model {spec!r}: expected NAME=FOLDER")
        started = time.monotonic()
        results["models"][name] = measure(Path(folder).resolve())
        results["models"][name]["measured_seconds"] = round(time.monotonic() - started, 1)
        results["machine"] = machine()
        write_report(args.out, results)
        print(table({"models": {name: results["models"][name]}}), flush=True)


def finish(path: Path, report: dict, clock: "RunClock", quick: bool) -> None:
    """The end of every bench script: note how busy the machine was, write the results, print the notes."""
    report["notes"].append(clock.note(quick))
    report["text"] = text_source()
    if report["text"] != "corpus":
        report["notes"].append(f"measured on {report['text']}, not the corpus's length mix: figures are not comparable")
    report["wall_s"] = round(clock.wall_s(), 1)  # bench/table.py adds them up: `make bench` must stay under 15 minutes
    write_report(path, report)
    print("\n".join(report["notes"]))


def onnx_up_to_date(folder: Path) -> bool:
    """Both ONNX files of `zhijian export --quantize int8` are there, made with the current recipe and checked
    (onnx/export.json), and not older than the weights."""
    from zhijian.backends import RECIPE
    from zhijian.model import ONNX_FILES, ModelFolder

    opened = ModelFolder(folder)
    weights = opened.weights_path
    paths = [opened.onnx_path(backend) for backend in ONNX_FILES]
    record = opened.export_record()
    current = record.get("recipe") == RECIPE and record.get("int8_check") is not None
    return current and all(p.is_file() and (not weights.is_file() or p.stat().st_mtime >= weights.stat().st_mtime) for p in paths)


def ensure_onnx(folder: Path) -> str | None:
    """Export the folder to ONNX as `zhijian export --quantize int8` does (fp32 + int8, int8 checked on the
    model's validation transcripts, else the corpus's) when the files are missing, stale or unchecked;
    returns a note when it exported."""
    import time

    from zhijian.export import check_transcripts, default_check_files, export_onnx
    from zhijian.model import ModelFolder

    if onnx_up_to_date(folder):
        return None
    start = time.perf_counter()
    opened = ModelFolder(folder)
    files = default_check_files(opened) or ([CORPUS] if CORPUS.is_file() else [])
    export_onnx(opened, "int8", check=check_transcripts(files))
    check = opened.export_record()["int8_check"]
    return (f"exported ONNX fp32 + int8 in {time.perf_counter() - start:.0f} s; int8 vs fp32 on {check['turns']} agent turns "
            f"of {', '.join(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f) for f in files) or 'nothing'}: largest probability change {check['max_prob_diff']}, "
            f"label sets unchanged {check['label_sets_unchanged']}")


def text_source() -> str:
    """What the benchmarks read: the corpus validation turns, or (without a built corpus) a synthetic mix."""
    return "corpus" if CORPUS.is_file() else f"synthetic text (no {os.path.relpath(CORPUS, ROOT)}: run `zhijian data build`)"


def mix_pool(scorer, size: int, seed: int = 0) -> list:
    """`size` real agent turns of data/corpus/valid.jsonl with their context, featurized as serving does
    (the corpus's length mix); a synthetic mix of short and long exchanges when no corpus is built."""
    import random

    from zhijian.transcripts import Transcript, read_transcripts

    rng = random.Random(seed)
    if CORPUS.is_file():
        dialogues = read_transcripts([CORPUS])
        dialogues = rng.sample(dialogues, min(len(dialogues), max(50, size)))
    else:
        texts = ["在吗", "亲,一般48小时内发出哦,具体以物流为准~", "这个质量怎么样,会不会用几天就坏了,我上次买的就坏了", "不好意思亲,已经是活动价了"]
        dialogues = [
            Transcript.model_validate({"id": f"s{n}", "turns": [{"role": ("customer", "agent")[t % 2], "text": rng.choice(texts) * rng.randint(1, 3)} for t in range(6)]})
            for n in range(size)
        ]
    features = scorer.featurizer.encode(dialogues)
    return rng.sample(features, min(size, len(features)))


def model_folder(name: str) -> Path | None:
    """The model folder to measure ("quickstart", or "bert-base-chinese" = "bert-base"); bert-base is built once
    with random weights (speed does not depend on them)."""
    from zhijian.config import CONFIG_FILE, load_config

    name = "bert-base" if name == "bert-base-chinese" else name
    folder = MODELS[name]["folder"]
    if name == "bert-base" and not _thresholds_set(folder):
        if not (SHARED_BERT_BASE / "config.json").is_file():
            return None
        from zhijian.files import replace_folder
        from zhijian.model import ModelFolder, build_model

        config = load_config(overrides=[f"model.base={SHARED_BERT_BASE}", "model.random_init=true"])
        model, tokenizer, _ = build_model(config.model)
        staging = folder.with_name(f"{folder.name}.building")  # a run killed before the thresholds are set leaves no folder
        ModelFolder.save(model, tokenizer, config, staging)
        _flag_like_a_trained_model(staging)
        replace_folder(staging, folder)
    return folder if (folder / CONFIG_FILE).is_file() else None


def _thresholds_set(folder: Path) -> bool:
    """A whole bert-base folder: its config holds the thresholds _flag_like_a_trained_model sets last."""
    from zhijian.config import CONFIG_FILE, load_config

    return (folder / CONFIG_FILE).is_file() and bool(load_config(folder).thresholds.per_label)


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
    import random

    turns = corpus_turns()
    rng = random.Random(seed)
    dialogues = []
    for n in range(count):
        start = rng.randrange(0, len(turns) - 10)
        dialogues.append({"id": f"load-{n}", "turns": turns[start : start + 10]})
    return dialogues


def corpus_turns() -> list[dict]:
    """Every turn of the corpus validation dialogues in reading order ({"role", "text"}); a plain synthetic
    exchange when no corpus is built."""
    import json

    turns = []
    if CORPUS.is_file():
        with CORPUS.open(encoding="utf-8") as handle:
            for line in handle:
                turns += [{"role": t["role"], "text": t["text"]} for t in json.loads(line)["turns"]]
    else:
        turns = [{"role": "customer", "text": "请问这个什么时候发货?"}, {"role": "agent", "text": "亲,一般48小时内发出哦,具体以物流为准~"}] * 50
    return turns


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, port: int, log, settings: list[str], device: str | None = None) -> subprocess.Popen:
    """`zhijian serve` on a loopback port, with serving keys set (``serving.queue_size=16``)."""
    command = [sys.executable, "-m", "zhijian_cli", "serve", "--model", str(folder), "--port", str(port)]
    command += (["--device", device] if device else []) + [arg for setting in settings for arg in ("--set", setting)]
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    """Until `/readyz` answers 200 (the model loaded and warmed up), so that a measurement never times the start."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")
