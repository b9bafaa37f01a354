"""Load test of `zhijian serve`: requests/s, utterances/s and latency percentiles of POST /v1/score.

Starts the real server (a subprocess, so its memory is its own) for each model and backend, sends
10-turn dialogues from a bounded pool of concurrent clients (httpx + asyncio) for a fixed time at
each concurrency, and samples the server's RSS at rest and under load. The load generator shares
the machine's cores with the server, as a sidecar would; that is part of the figure.

    python bench/server_load.py [--quick] [--models quickstart,bert-base] [--backends torch,onnx-int8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import MODELS, machine, model_folder, ten_turn_dialogues  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def run_load(url: str, dialogues: list[dict], concurrency: int, seconds: float, pid: int) -> dict:
    latencies, agent_turns, errors, peak = [], 0, 0, rss_mb(pid)
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one_client(k: int) -> None:
            nonlocal agent_turns, errors
            i = k
            while time.perf_counter() < stop:
                body = dialogues[i % len(dialogues)]
                i += concurrency
                start = time.perf_counter()
                response = await client.post("/v1/score", json=body)
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


def serve(folder: Path, backend: str, port: int, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "zhijian.cli", "serve", "--model", str(folder), "--port", str(port),
               "--device", "cpu", "--set", f"serving.backend={backend}", "--set", "serving.queue_size=256"]
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Short runs (about a minute in all).")
    parser.add_argument("--models", default="quickstart,bert-base")
    parser.add_argument("--backends", default="torch,onnx-int8")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=None, help="Per concurrency level (default 12, quick 4).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "server.json")
    args = parser.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 12.0)
    dialogues = ten_turn_dialogues()
    rows = []
    log_path = args.out.with_suffix(".log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        for name in args.models.split(","):
            folder = model_folder(name)
            if folder is None:
                print(f"skip {name}: {MODELS[name]['missing']}", flush=True)
                continue
            for backend in args.backends.split(","):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                process = serve(folder, backend, port, log)
                try:
                    wait_ready(url, process)
                except RuntimeError as error:
                    print(f"skip {name}/{backend}: {error} (see {log_path})", flush=True)
                    process.kill()
                    continue
                try:
                    at_rest = rss_mb(process.pid)
                    asyncio.run(run_load(url, dialogues, 2, 1.5, process.pid))  # warm-up
                    for concurrency in map(int, args.concurrency.split(",")):
                        row = {"model": name, "variant": backend, "rss_rest_mb": round(at_rest, 1)}
                        row |= asyncio.run(run_load(url, dialogues, concurrency, seconds, process.pid))
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                finally:
                    process.terminate()
                    process.wait(timeout=30)
    result = {"machine": machine(), "dialogue_turns": 10, "seconds_per_level": seconds, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
