"""Load test of `zhijian serve`: requests/s, utterances/s and latency percentiles of POST /v1/score.

Starts the real server (a subprocess, so its memory is its own) for each model and backend, sends
10-turn dialogues from a bounded pool of concurrent clients (httpx + asyncio) for a fixed time at
each concurrency (1, 8, 32, 128), and samples the server's RSS at rest (rss_rest_mb) and under load
(rss_mb, the peak). The load generator shares the machine's cores with the server, as a sidecar would;
that is part of the figure.

Clients stop sending when the time is up; the requests still in flight are waited for and counted, and
req_per_s divides by the whole time including that drain (the server is busy throughout). The queue is
raised to 256 so that 128 clients get no 503.

By default each model runs what `zhijian serve` serves it with on a CPU (`serving.backend: auto`: the
int8 ONNX model when its export checked it within 0.02 of fp32, else the fp32 one; the ONNX files are
exported and checked into the folder first, as model_speed.py does); the row's variant is the backend
the server reports at /v1/model. quickstart runs at 1, 8, 32 and 128 clients; the bert-base-chinese
architecture at 1, 8 and 32: on 2 cores it answers ~2 requests/s, so at 128 clients the latencies are
only queueing (p99 80 s on 2026-11-29) and draining the last round alone takes over a minute of the
suite's 15. A run's own levels follow a third field, `model:backend:1/8/32`;
`--runs bert-base-chinese:auto:128` measures that level.

    python bench/server_load.py [--quick] [--runs quickstart:auto,bert-base-chinese:auto:1/8/32] [--concurrency 1,8,32,128] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import RunClock, ensure_onnx, finish, free_port, machine, model_folder, rss_mb, start_server, ten_turn_dialogues, wait_ready  # noqa: E402

RUNS = "quickstart:auto,bert-base-chinese:auto:1/8/32"
QUICK_RUNS = "quickstart:auto"


async def run_load(url: str, dialogues: list[dict], concurrency: int, seconds: float, pid: int) -> dict:
    latencies, agent_turns, errors, peak = [], 0, 0, rss_mb(pid)
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def one_client(k: int) -> None:
            nonlocal agent_turns, errors
            i = k
            while time.perf_counter() < stop:
                body = dialogues[i % len(dialogues)]
                i += concurrency
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/score", json=body)
                except httpx.HTTPError:  # a timeout or a dropped connection: counted, never fatal to the run
                    errors += 1
                    continue
                if response.status_code != 200:
                    errors += 1
                    await asyncio.sleep(0.05)
                    continue
                latencies.append(time.perf_counter() - start)
                agent_turns += sum(t["role"] == "agent" for t in body["turns"])

        async def sample_memory() -> None:
            nonlocal peak
            while time.perf_counter() < stop:
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.25)

        began = time.perf_counter()
        await asyncio.gather(sample_memory(), *(one_client(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": round(len(latencies) / elapsed, 2),
        "utt_per_s": round(agent_turns / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "rss_mb": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} only, 3 s per level (about half a minute)")
    parser.add_argument("--runs", default=None, help=f"model:backend pairs (default {RUNS})")
    parser.add_argument("--concurrency", default="1,8,32,128", help="levels of the runs that name none")
    parser.add_argument("--seconds", type=float, default=None, help="Sending time per concurrency level (default 5, quick 3).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "server.json")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 5.0)
    runs = [(run.split(":") + [args.concurrency.replace(",", "/")])[:3] for run in (args.runs or (QUICK_RUNS if args.quick else RUNS)).split(",")]
    clock = RunClock()
    dialogues = ten_turn_dialogues()
    result = {"machine": machine(), "dialogue_turns": 10, "seconds_per_level": seconds, "rows": [], "notes": []}
    log_path = args.out.with_suffix(".log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        for name, backend, levels in runs:
            folder = model_folder(name)
            if folder is None:
                result["notes"].append(f"{name}: skipped (no model folder)")
                continue
            if backend != "torch" and (exported := ensure_onnx(folder)):
                result["notes"].append(f"{name}: {exported}")
            if levels != args.concurrency.replace(",", "/"):
                result["notes"].append(f"{name}/{backend}: {levels.replace('/', ', ')} clients only (its own levels; why: bench/server_load.py)")
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            process = start_server(folder, port, log, [f"serving.backend={backend}", "serving.queue_size=256"], device="cpu")
            try:
                wait_ready(url, process)
            except RuntimeError as error:
                result["notes"].append(f"{name}/{backend}: skipped ({error}; see {log_path})")
                process.kill()
                process.wait()
                continue
            try:
                at_rest = rss_mb(process.pid)
                backend = httpx.get(f"{url}/v1/model").json()["backend"]  # what auto chose
                asyncio.run(run_load(url, dialogues, 2, 1.5, process.pid))  # warm-up
                for concurrency in map(int, levels.split("/")):
                    row = {"model": name, "variant": backend, "rss_rest_mb": round(at_rest, 1)}
                    row |= asyncio.run(run_load(url, dialogues, concurrency, seconds, process.pid))
                    result["rows"].append(row)
                    print(json.dumps(row), flush=True)
            finally:
                process.terminate()
                process.wait(timeout=30)
    finish(args.out, result, clock, args.quick)


if __name__ == "__main__":
    main()
