"""bench/results/*.json -> bench/README.md: the machine, the versions and one short table per benchmark.

    python bench/table.py [--results bench/results] [--out bench/README.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("model", "padding", "server", "train", "scaling", "overload")
SCRIPTS = {"model": "model_speed.py", "padding": "padding.py", "server": "server_load.py", "train": "train_speed.py", "scaling": "scaling.py", "overload": "overload.py (`make reliability`)"}


def num(x, digits: int = 1) -> str:
    """Figures as people read them: 1234, 56.7, 0.89; '–' for nothing."""
    if x is None or x != x:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) or abs(x) >= 100:
        return f"{x:,.0f}".replace(",", " ")
    return f"{x:.{digits}f}" if abs(x) >= 1 else f"{x:.2g}"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def notes(result: dict) -> list[str]:
    return [f"- {note}" for note in result.get("notes", [])]


def model_section(result: dict) -> list[str]:
    cells, models = {}, {}
    for row in result["rows"]:
        key = row["model"], row["variant"]
        models.setdefault(key, row)
        cells[key + (row.get("inputs", "mix"), row["batch"])] = row
    body, legacy = [], all("fastest_within_0.02" not in r for r in result["rows"])
    for (model, variant), first in models.items():
        mix = [cells.get((model, variant, "mix", b)) for b in (1, 8, 32)]
        fixed = cells.get((model, variant, "32x32", 32))
        worst = max(r["max_prob_diff"] for r in result["rows"] if (r["model"], r["variant"]) == (model, variant))
        if legacy:  # written when serving_default meant the fastest variant within 0.02
            marks = ["fastest ≤0.02" if first.get("serving_default") else ""]
        else:
            marks = ["**serving default**" if first.get("serving_default") else "", "fastest ≤0.02" if first.get("fastest_within_0.02") else ""]
        body.append([
            model, variant, *(num(r["utt_per_s"]) if r else "–" for r in mix),
            " / ".join(num(r["ratio_to_eager"], 2) if r else "–" for r in mix),
            f"{num(fixed['utt_per_s'])} ({num(fixed['ratio_to_eager'], 2)}×)" if fixed else "–",
            " / ".join(f"{100 * r['peak_share']:.0f}" if r and "peak_share" in r else "–" for r in mix),
            num(worst, 2), ", ".join(m for m in marks if m),
        ])
    header = ["model", "variant", "utt/s b1", "utt/s b8", "utt/s b32", "× eager b1/b8/b32", "32×32 seq/s (× eager)", "% of GEMM peak b1/b8/b32", "Δp max", ""]
    return ["Agent turns with context, the corpus's length mix (b = batch); 32×32 = 32 sequences of 32 tokens, no padding. "
            "Δp = largest |probability − eager fp32's|. % of GEMM peak: the encoder's useful FLOPs (real tokens, no padding) "
            "per second over the fp32 matmul peak measured in the same run (int8 can pass 100).", ""] + table(header, body)


def padding_section(result: dict) -> list[str]:
    rows = [[r["model"], r["batch"], r["strategy"] + (" (the scorer's)" if r.get("project_default") else ""), num(r["utt_per_s"]),
             num(r["ratio_to_dynamic"], 2), f"{100 * r['padding_share']:.0f} %" if "padding_share" in r else "–"] for r in result["rows"]]
    return ["Eager fp32; the same pool of agent turns cut into batches three ways.", ""] + table(
        ["model", "batch", "strategy", "utt/s", "× dynamic", "padding"], rows)


def server_section(result: dict) -> list[str]:
    rows = [[r["model"], r["variant"], r["concurrency"], num(r["req_per_s"]), num(r.get("utt_per_s")), num(r["p50_ms"]), num(r["p95_ms"]),
             num(r["p99_ms"]), f"{num(r.get('rss_rest_mb'))} → {num(r['rss_mb'])}", r.get("errors", 0)] for r in result["rows"]]
    return [f"POST /v1/score with {result.get('dialogue_turns', 10)}-turn dialogues, {num(result.get('seconds_per_level'))} s of sending per level; "
            "RSS at rest → peak under load.", ""] + table(
        ["model", "backend", "clients", "req/s", "agent turns/s", "p50 ms", "p95 ms", "p99 ms", "RSS MB", "errors"], rows)


def train_section(result: dict) -> list[str]:
    rows = [[r["model"], r["config"], f"{r['batch']} × ≤{r['max_length']}", r["precision"], num(r.get("parameters_m")), r["steps"],
             num(r["samples_per_s"]), num(r["tokens_per_s"]), num(r["step_ms_median"])] for r in result["rows"]]
    lines = ["Optimizer steps on CPU after warm-up (forward, backward, clip, AdamW).", ""] + table(
        ["model", "config", "batch × tokens", "precision", "params M", "timed steps", "samples/s", "tokens/s", "ms/step"], rows)
    quickstart = result.get("make_quickstart")
    if quickstart:
        lines += ["", f"`make quickstart` from a clean clone: **{num(quickstart['seconds'] / 60, 1)} min** ({num(quickstart['seconds'])} s, "
                      f"exit {quickstart.get('exit_status')}, commit {quickstart.get('commit')}, {quickstart.get('cores')} cores)."]
    else:
        lines += ["", "`make quickstart` from a clean clone: not measured (run `bench/quickstart_time.sh`)."]
    return lines


def scaling_section(result: dict) -> list[str]:
    rows = [[num(r["dialogues"]), num(r["agent_turns"]), num(r["seconds"]), num(r["dialogues_per_s"]), num(r.get("dialogues_per_s_after_startup")),
             num(r["agent_turns_per_s"]), num(r["peak_rss_mb"]), num(r.get("time_ratio"), 2), num(r.get("rss_ratio"), 2), num(r["output_ok"])]
            for r in result["rows"]]
    return [f"`zhijian score FILE --output OUT`, {result.get('turns_per_dialogue')}-turn dialogues, model {result.get('model')}, backend "
            f"{result.get('backend')}, evidence {result.get('evidence')}; start-up {num(result.get('startup_s'))} s, "
            f"{num(result.get('startup_rss_mb'))} MB. Ratios compare with the size before.", ""] + table(
        ["dialogues", "agent turns", "s", "dialogues/s", "… after start-up", "agent turns/s", "peak RSS MB", "time ×", "RSS ×", "output ok"], rows)


def overload_section(result: dict) -> list[str]:
    keys = ("seconds", "clients", "sent", "ok", "rejected_503", "other", "p99_ok_ms", "peak_rss_mb", "recovered")
    return [f"From `make reliability` (bench/overload.py, issue 9): a burst against `zhijian serve` (model "
            f"{result.get('model', '?')}); every answer must be a 200 or a 503.", ""] + table(
        list(keys), [[num(result.get(k)) for k in keys]])


SECTIONS = {
    "model": ("Model speed", model_section),
    "padding": ("Padding", padding_section),
    "server": ("Server under load", server_section),
    "train": ("Training", train_section),
    "scaling": ("Scaling", scaling_section),
    "overload": ("Overload", overload_section),
}


def load(results: Path) -> dict[str, dict]:
    found = {}
    for name in FILES:
        for folder in (results, ROOT / "bench" / "results"):  # overload.json comes from `make reliability`, not from a quick run
            path = folder / f"{name}.json"
            if path.is_file():
                found[name] = json.loads(path.read_text(encoding="utf-8"))
                break
            if name != "overload":
                break
    return found


def render(found: dict[str, dict], results: Path) -> str:
    machines = [r["machine"] for r in found.values() if isinstance(r.get("machine"), dict)]
    merged = {}
    for m in machines:
        for key, value in m.items():
            merged.setdefault(key, value)
    gemm = found.get("model", {}).get("machine", {}).get("gemm_peak_gflops")
    lines = [
        "# Benchmarks", "",
        f"Written by `bench/table.py` from `{results.relative_to(ROOT) if results.is_relative_to(ROOT) else results}/*.json`; do not edit by hand (issue 8).", "",
        f"**Machine**: {merged.get('cpu', '?')}, {merged.get('cores', '?')} cores, measured fp32 GEMM peak {num(gemm)} GFLOP/s.  ",
        f"**Versions**: Python {merged.get('python', '?')}, torch {merged.get('torch', '?')}, transformers {merged.get('transformers', '?')}, "
        f"onnxruntime {merged.get('onnxruntime', '?')}.  ",
    ]
    timed = {name: r["wall_s"] for name, r in found.items() if name != "overload" and "wall_s" in r}
    if timed:
        total = sum(timed.values())
        lines.append(f"**Run time**: {num(total)} s ({total / 60:.1f} min) for the {len(timed)} scripts of `make bench` ("
                     + ", ".join(f"{name} {num(seconds)} s" for name, seconds in timed.items()) + ").")
    differ = sorted({(m.get("cpu"), m.get("cores")) for m in machines})
    if len(differ) > 1:
        lines += ["", f"Warning: the files come from different machines: {differ}."]
    lines += [
        "", "How to read it: every figure is from one run on the machine above; on 2 cores any other process halves them, and each "
        "script notes how much of the machine others took (rerun when a note says so). Model speed is the model alone; the server "
        "and scaling figures include tokenizing, evidence spans (occlusion), checks and JSON. quickstart is the `make quickstart` "
        "model; bert-base-chinese is that architecture with random weights (speed does not depend on them).", "",
        "Rerun: `make bench` (all of it, under 15 minutes on 2 cores, then this file) or `make bench QUICK=1` (about 2 minutes, "
        "small sizes, written to bench/results/quick/). One script: `.venv/bin/python bench/<script>.py --quick --out FILE`.",
    ]
    for name, (title, section) in SECTIONS.items():
        lines += ["", f"## {title}", ""]
        if name not in found:
            lines.append(f"Not measured: run `bench/{SCRIPTS[name]}`.")
            continue
        lines += section(found[name])
        lines += [""] + notes(found[name]) if found[name].get("notes") else []
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "README.md")
    args = parser.parse_args()
    found = load(args.results.resolve())
    if not found:
        sys.exit(f"no results in {args.results}")
    args.out.write_text(render(found, args.results.resolve()), encoding="utf-8")
    print(f"wrote {args.out} from {', '.join(found)}")


if __name__ == "__main__":
    main()
