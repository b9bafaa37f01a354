"""Overload: far more concurrent requests than the server can take, for a while, then a normal one.

Every request must get a 200 or a 503 with Retry-After (no other status, no hung connection), the
server's memory must stay bounded, and afterwards it must serve normally. `make reliability` runs the
long variant against `zhijian serve` and writes bench/results/overload.json; the tests run a short one.

    python bench/overload.py [--model runs/quickstart/model] [--seconds 20] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import free_port, rss_mb, shown_path, start_server, wait_ready  # noqa: E402
BODY = {"id": "burst", "turns": [{"role": "customer", "text": "能开发票吗"}, {"role": "agent", "text": "要发票得加6个点"}] * 5}


async def burst(url: str, seconds: float, clients: int, pid: int | None = None, timeout: float = 60.0) -> dict:
    """`clients` connections posting back to back for `seconds`; counts of 200s, 503s and anything else."""
    counts = {"sent": 0, "ok": 0, "rejected_503": 0, "other": 0}
    missing_retry_after, ok_ms, peak, kinds = 0, [], rss_mb(pid), {}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def one_client() -> None:
            nonlocal missing_retry_after
            while time.perf_counter() < stop:
                counts["sent"] += 1
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/score", json=BODY)
                except httpx.HTTPError as error:  # a hung or dropped connection counts against the server
                    counts["other"] += 1
                    kinds[type(error).__name__] = kinds.get(type(error).__name__, 0) + 1
                    continue
                if response.status_code == 200:
                    counts["ok"] += 1
                    ok_ms.append(1000 * (time.perf_counter() - start))
                elif response.status_code == 503:
                    counts["rejected_503"] += 1
                    missing_retry_after += "retry-after" not in response.headers
                    await asyncio.sleep(0.01)  # a well-behaved client backs off a little
                else:
                    counts["other"] += 1
                    kinds[str(response.status_code)] = kinds.get(str(response.status_code), 0) + 1

        async def sample_memory() -> None:
            nonlocal peak
            while time.perf_counter() < stop:
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.25)

        await asyncio.gather(sample_memory(), *(one_client() for _ in range(clients)))
        after = await client.post("/v1/score", json=BODY)
    return counts | {
        "missing_retry_after": missing_retry_after,
        "p99_ok_ms": round(float(np.percentile(ok_ms, 99)), 1) if ok_ms else None,
        "peak_rss_mb": round(peak, 1),
        "recovered": after.status_code == 200,
        "other_kinds": kinds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "quickstart" / "model")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=64, help="Concurrent clients (the server's queue holds 16 requests here).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overload.json")
    args = parser.parse_args()
    port = free_port()
    server = start_server(args.model, port, subprocess.DEVNULL, ["serving.queue_size=16", "serving.batch_max_dialogues=8"])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server, timeout=120)
        result = asyncio.run(burst(url, args.seconds, args.clients, server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)
    result |= {"seconds": args.seconds, "clients": args.clients, "model": shown_path(args.model)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    healthy = result["other"] == 0 and result["missing_retry_after"] == 0 and result["recovered"]
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
