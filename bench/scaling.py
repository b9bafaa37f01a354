"""Scaling: time and peak memory of `zhijian score FILE --output OUT` for 1k, 10k and 100k dialogues.

The input is built deterministically in a temporary folder: short dialogues of `--turns` consecutive
turns of the corpus validation dialogues, starting at a customer turn (2 by default: a customer's
message and the agent's answer, so 100k dialogues fit the suite's time budget), repeated with new ids
as often as the size needs (the scorer keeps no cache, so repeats cost what new text costs).

Each size runs the real CLI in a subprocess, with default evidence (clause occlusion), checks and
template. The backend (`--backend`, default auto: what `zhijian score` runs for the folder, with the ONNX
files exported and checked; the report names the one auto chose) is set through a
temporary copy of the model folder's zhijian.yaml beside links to its files; `score` has no backend
option and reads it from the folder. When the folder has no up-to-date ONNX export, the copy is exported
(the model folder itself is left as it is).

Peak RSS is the child's ru_maxrss from wait4 (the process and any children it waited for). The output
is checked to hold one JSON line per dialogue, in input order. A first 1-dialogue run measures the
start-up (imports, model load), reported apart.

    python bench/scaling.py [--quick] [--sizes 1000,10000,100000] [--out bench/results/scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import RunClock, corpus_turns, ensure_onnx, machine, model_folder, onnx_up_to_date, finish  # noqa: E402

MAX_SECONDS = 300.0  # a size predicted (from the one before) to take longer is skipped, unless --force: keeps `make bench` under 15 minutes


def short_dialogues(turns: int) -> list[list[dict]]:
    """Every window of `turns` consecutive corpus turns that starts at a customer turn and holds an agent turn."""
    flat = corpus_turns()
    return [
        flat[i : i + turns]
        for i in range(len(flat) - turns + 1)
        if flat[i]["role"] == "customer" and any(t["role"] == "agent" for t in flat[i : i + turns])
    ]


def write_input(path: Path, count: int, pool: list[list[dict]]) -> int:
    """`count` dialogues as JSON Lines; returns the number of agent turns."""
    agents = 0
    with path.open("w", encoding="utf-8") as handle:
        for n in range(count):
            turns = pool[n % len(pool)]
            agents += sum(t["role"] == "agent" for t in turns)
            handle.write(json.dumps({"id": f"scale-{n:06d}", "turns": turns}, ensure_ascii=False) + "\n")
    return agents


def model_copy(folder: Path, backend: str, into: Path, notes: list[str]) -> Path:
    """Links to the folder's files and a zhijian.yaml that names the backend; exported to ONNX when needed."""
    from zhijian.config import CONFIG_FILE, load_config
    from zhijian.model import ONNX_DIR

    copy = into / folder.name
    copy.mkdir()
    exported = onnx_up_to_date(folder)
    for item in folder.iterdir():
        if item.name != CONFIG_FILE and not item.name.startswith(".") and (item.name != ONNX_DIR or exported):
            (copy / item.name).symlink_to(item.resolve())
    config = load_config(folder / CONFIG_FILE)
    config.serving.backend = backend
    config.save(copy)
    if backend != "torch" and not exported:
        notes.append(f"{folder.name}: " + ensure_onnx(copy) + " (into a temporary copy)")
    return copy


def run_score(model: Path, source: Path, output: Path, log: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit status) of one `zhijian score --output` run."""
    command = [sys.executable, "-m", "zhijian_cli", "score", str(source), "--output", str(output), "--model", str(model)]
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(command)}\n")
        sink.flush()
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return wall, usage.ru_maxrss / 1024, process.returncode


def check_output(output: Path, count: int) -> str | None:
    """None when the output holds exactly one result line per dialogue, in input order; else what is wrong."""
    n = 0
    with output.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            try:
                if json.loads(line).get("id") != f"scale-{n - 1:06d}":
                    return f"line {n} is not dialogue scale-{n - 1:06d}"
            except (ValueError, AttributeError):
                return f"line {n} is not a JSON object"
    return None if n == count else f"{n} lines for {count} dialogues"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1k dialogues only")
    parser.add_argument("--sizes", default=None, help="dialogue counts (default 1000,10000,100000; quick 1000)")
    parser.add_argument("--turns", type=int, default=2, help="turns per dialogue")
    parser.add_argument("--model", default="quickstart")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx", "onnx-int8"])
    parser.add_argument("--force", action="store_true", help=f"run every size even when one is predicted to take over {MAX_SECONDS:g} s")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scaling.json")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("1000" if args.quick else "1000,10000,100000")).split(",")]
    clock = RunClock()
    report = {"machine": machine(), "model": args.model, "backend": args.backend, "turns_per_dialogue": args.turns,
              "evidence": "clause", "rows": [], "notes": []}
    folder = model_folder(args.model)
    if folder is None:
        sys.exit(f"no model folder for {args.model}")
    pool = short_dialogues(args.turns)
    log = args.out.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="zhijian-scaling-") as temp:
        temp = Path(temp)
        model = model_copy(folder, args.backend, temp, report["notes"])
        if args.backend == "auto":
            from zhijian.backends import auto_backend

            report["backend"] = f"auto ({auto_backend(model, 'cpu')})"
        write_input(temp / "one.jsonl", 1, pool)
        startup, startup_rss, status = run_score(model, temp / "one.jsonl", temp / "one.out.jsonl", log)
        if status:
            sys.exit(f"zhijian score failed on one dialogue (exit {status}); see {log}")
        report |= {"startup_s": round(startup, 2), "startup_rss_mb": round(startup_rss, 1)}
        previous = None
        for count in sizes:
            if previous and not args.force:
                predicted = startup + (previous["seconds"] - startup) * count / previous["dialogues"]
                if predicted > MAX_SECONDS:
                    report["notes"].append(f"{count} dialogues skipped: predicted {predicted:.0f} s > {MAX_SECONDS:g} s (--force runs it)")
                    continue
            source, output = temp / f"in-{count}.jsonl", temp / f"out-{count}.jsonl"
            agents = write_input(source, count, pool)
            wall, rss, status = run_score(model, source, output, log)
            problem = f"exit status {status}" if status else check_output(output, count)
            row = {
                "dialogues": count, "agent_turns": agents, "seconds": round(wall, 2),
                "dialogues_per_s": round(count / wall, 1), "agent_turns_per_s": round(agents / wall, 1),
                "dialogues_per_s_after_startup": round(count / (wall - startup), 1) if wall - startup >= 1.0 else None,  # too small to tell
                "peak_rss_mb": round(rss, 1), "output_ok": problem is None,
                "input_mb": round(source.stat().st_size / 2**20, 1), "output_mb": round(output.stat().st_size / 2**20, 1) if output.is_file() else None,
            }
            if previous:
                row["time_ratio"] = round(wall / previous["seconds"], 2)
                row["rss_ratio"] = round(rss / previous["peak_rss_mb"], 2)
            if problem:
                report["notes"].append(f"{count} dialogues: {problem} (see {log})")
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
            previous = row
            source.unlink()
            output.unlink(missing_ok=True)
    report["notes"].append(
        f"{len(pool)} distinct {args.turns}-turn dialogues from the corpus, repeated with new ids; time_ratio and "
        "rss_ratio compare with the size before (linear time: the size ratio; constant memory: 1)"
    )
    finish(args.out, report, clock, args.quick)


if __name__ == "__main__":
    main()
