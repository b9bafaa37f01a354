"""A broken model folder is a clear error at start (CLI) and `/readyz` false with the reason (server)."""

import json
import shutil

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from conftest import live_server
from serving.app import create_app
from zhijian_cli import app

runner = CliRunner()


def corrupt_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def newer_schema(folder):
    config = yaml.safe_load((folder / "zhijian.yaml").read_text())
    (folder / "zhijian.yaml").write_text(yaml.safe_dump({**config, "schema_version": 99}))


def other_labels(folder):
    config = json.loads((folder / "config.json").read_text())
    config["id2label"]["4"] = "insult"
    (folder / "config.json").write_text(json.dumps(config))


def missing(folder):
    shutil.rmtree(folder)


PROBLEMS = {
    "missing": (missing, "not a Zhijian model folder (no such folder)"),
    "corrupt weights": (corrupt_weights, "the weights cannot be loaded"),
    "newer schema": (newer_schema, "newer than this Zhijian reads"),
    "label mismatch": (other_labels, "are not this taxonomy's"),
}


@pytest.fixture(params=sorted(PROBLEMS))
def broken(request, tiny_model, tmp_path):
    damage, message = PROBLEMS[request.param]
    folder = shutil.copytree(tiny_model, tmp_path / "model")
    damage(folder)
    return folder, message


def test_the_cli_names_the_problem_without_a_traceback(broken, tmp_path):
    folder, message = broken
    chat = tmp_path / "chat.txt"
    chat.write_text("客服: 您好\n", encoding="utf-8")
    result = runner.invoke(app, ["score", str(chat), "--model", str(folder)])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_the_server_stays_up_and_readyz_says_why(broken):
    folder, message = broken
    with live_server(create_app(folder, "cpu")) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False and message in ready.json()["reason"]
        score = httpx.post(f"{url}/v1/score", json={"id": "x", "turns": [{"role": "agent", "text": "好"}]})
        assert score.status_code == 503 and message in score.json()["detail"]
