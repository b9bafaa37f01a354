"""Reliability: overload (short here; `make reliability` runs 20 s against `zhijian serve`), resumable scoring."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import live_server, make_dialogues, write_jsonl
from serving.app import create_app
from zhijian_cli import app

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.overload import burst  # noqa: E402

runner = CliRunner()


def test_a_burst_gets_only_200_or_503_and_the_server_recovers(tiny_model):
    server = create_app(tiny_model, "cpu", serving={"queue_size": 2, "batch_max_dialogues": 2})
    with live_server(server) as url:
        result = asyncio.run(burst(url, seconds=3, clients=24))
    assert result["rejected_503"] > 0, "the burst should overflow a 2-request queue"
    assert result["ok"] > 0 and result["other"] == 0 and result["missing_retry_after"] == 0
    assert result["recovered"]


@pytest.mark.slow
def test_overload_for_twenty_seconds_against_zhijian_serve(tiny_model, tmp_path):
    out = tmp_path / "overload.json"  # the tiny model's figures never overwrite the committed bench/results/overload.json
    command = [sys.executable, str(ROOT / "bench" / "overload.py"), "--model", str(tiny_model), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    assert figures["rejected_503"] > 0 and figures["other"] == 0 and figures["recovered"]
    assert figures["model"] == f"<outside the repository>/{tiny_model.name}"  # no machine path in a results file


def test_a_killed_score_run_resumes_without_rescoring_or_duplicating(tiny_model, tmp_path):
    source = write_jsonl(tmp_path / "archive.jsonl", make_dialogues(2))
    ids = [json.loads(line)["id"] for line in source.read_text(encoding="utf-8").splitlines()]
    out = tmp_path / "scored.jsonl"
    full = runner.invoke(app, ["score", str(source), "--model", str(tiny_model), "--output", str(out)])
    assert full.exit_code == 0, full.output
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2], encoding="utf-8")  # killed mid-write
    resumed = runner.invoke(app, ["score", str(source), "--model", str(tiny_model), "--output", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "5 dialogue(s) already" in resumed.stderr
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ids


def test_training_killed_with_sigkill_resumes_and_finishes(tiny_data, tmp_path):
    import signal
    import time

    from conftest import TINY_OVERRIDES
    from training.loop import COMPLETE_MARKER
    from zhijian.model import load_model_folder

    overrides = TINY_OVERRIDES + [
        f"data.train=[{tiny_data['train']}]", f"data.valid=[{tiny_data['valid']}]", f"training.output_dir={tmp_path}",
        "training.eval_strategy=steps", "training.eval_steps=5", "training.epochs=30", "training.save_total_limit=3",
        "training.max_steps=-1",  # the 30 epochs, not quickstart.yaml's 2200 steps, which outlast the 600 s limit
    ]
    command = [sys.executable, "-m", "zhijian_cli", "train", "-c", str(ROOT / "configs" / "quickstart.yaml")]
    command += [arg for item in overrides for arg in ("--set", item)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "checkpoints").glob(f"checkpoint-*/{COMPLETE_MARKER}")):
        assert run.poll() is None and time.monotonic() < deadline, "training ended or stalled before its first checkpoint"
        time.sleep(0.2)
    run.send_signal(signal.SIGKILL)  # mid-epoch, perhaps mid-save
    run.wait()
    saved = max(int(p.parent.name.split("-")[1]) for p in (tmp_path / "checkpoints").glob(f"checkpoint-*/{COMPLETE_MARKER}"))
    assert not (tmp_path / "model").exists()
    resumed = subprocess.run(command + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    model, _, config = load_model_folder(tmp_path / "model")
    assert config.training.epochs == 30 and model is not None
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["started_at_step"] >= saved > 0 and summary["steps_run"] == summary["global_step"] - summary["started_at_step"]
