"""Train a tiny model once, then use it the way a user does: score, evaluate, resume, serve."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES
from serving.app import create_app
from zhijian_cli import app
from zhijian.config import load_config
from zhijian.scorer import Scorer
from zhijian.transcripts import parse_text

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"
CHAT = "买家: 能开发票吗\n客服: 要发票得加6个点\n买家: 好吧 那便宜点\n客服: 亲,七天无理由退换的哦,您在订单页申请就可以啦\n"


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "chat.txt"
    path.write_text(CHAT, encoding="utf-8")
    return path


def test_trained_folder_keeps_tuned_thresholds_and_the_resolved_config(tiny_model):
    config = load_config(tiny_model)
    assert config.model.base == "scratch"
    assert config.thresholds.per_label  # tuned on validation and saved with the model
    assert (tiny_model.parent / "train_summary.json").is_file()


UNSEEN = "买家: 能开票吗\n客服: 开票的话另外加6个点税\n买家: 好吧 那便宜点\n客服: 亲,支持七天无理由退换哦,订单页就能申请的\n"  # no reply of the tiny set


def test_model_learns_the_difference_between_a_violation_and_a_polite_reply(tiny_model):
    scorer = Scorer.load(tiny_model, "cpu")
    predictions = scorer.predict(parse_text(UNSEEN))
    k = 6  # invoice_refusal
    assert predictions.probs[0, k] > 0.5 > predictions.probs[1, k]
    assert predictions.tone[1] > predictions.tone[0]  # the polite reply sounds warmer


def test_score_json_follows_the_output_contract(tiny_model, chat_file):
    result = runner.invoke(app, ["score", str(chat_file), "--model", str(tiny_model), "--json"])
    assert result.exit_code == 0, result.output
    dialogue = json.loads(result.stdout.strip().splitlines()[0])
    assert dialogue["id"] == "chat"
    customer, agent = dialogue["turns"][0], dialogue["turns"][1]
    assert set(customer) == {"index", "role", "text"}
    assert agent["role"] == "agent" and 0.0 <= agent["tone"] <= 1.0
    assert [hit["label"] for hit in agent["labels"]] == ["invoice_refusal"]
    assert 0.5 < agent["labels"][0]["prob"] <= 1.0


def test_score_prints_readable_text_by_default(tiny_model, chat_file):
    result = runner.invoke(app, ["score", str(chat_file), "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert "invoice_refusal" in result.stdout and "拒开发票" in result.stdout and "tone" in result.stdout


def test_streaming_keeps_every_good_dialogue_and_reports_bad_lines(tiny_model, tiny_data, tmp_path):
    lines = tiny_data["valid"].read_text(encoding="utf-8").splitlines()
    source = tmp_path / "archive.jsonl"
    source.write_text("\n".join(lines[:3] + ['{"id": "broken", "turns": []}'] + lines[3:]) + "\n", encoding="utf-8")
    out = tmp_path / "scored.jsonl"
    result = runner.invoke(app, ["score", str(source), "--model", str(tiny_model), "--output", str(out), "--chunk", "5"])
    assert result.exit_code == 1
    assert "archive.jsonl:4" in result.stderr and "turns" in result.stderr
    assert [json.loads(l)["id"] for l in out.read_text().splitlines()] == [json.loads(l)["id"] for l in lines]


def test_evaluate_json_follows_the_output_contract(tiny_model, tiny_data):
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--data", str(tiny_data["valid"]), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics["labels"]) >= {"over_promise", "abuse", "privacy_leak"}
    assert set(metrics["labels"]["abuse"]) >= {"precision", "recall", "f1", "support"}
    assert metrics["labels"]["abuse"]["support"] == 2
    assert 0 <= metrics["micro_f1"] <= 1 and metrics["tone"]["count"] == metrics["turns"]
    # what it learned, measured on replies it never trained on (tests/fixtures/heldout_tiny.jsonl)
    heldout = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--data", str(FIXTURES / "heldout_tiny.jsonl"), "--json", "--no-ngram"])
    assert heldout.exit_code == 0, heldout.output
    assert json.loads(heldout.stdout)["macro_f1"] > 0.5


def test_missing_model_folder_is_a_clear_error(chat_file, tmp_path):
    result = runner.invoke(app, ["score", str(chat_file), "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not a Zhijian model folder" in result.stderr


def test_train_reports_a_bad_config_key_without_a_traceback(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("trainig:\n  epochs: 1\n")
    result = runner.invoke(app, ["train", "-c", str(config)])
    assert result.exit_code == 2 and "trainig: unknown key" in result.stderr


def test_resume_continues_from_the_last_complete_checkpoint(tiny_data, tmp_path):
    from training.loop import COMPLETE_MARKER
    from training.train import train

    overrides = TINY_OVERRIDES + [
        f"data.train=[{tiny_data['train']}]", f"data.valid=[{tiny_data['valid']}]", f"training.output_dir={tmp_path}",
        "training.epochs=2", "training.save_total_limit=5",
    ]
    train(load_config(overrides=overrides))
    checkpoints = tmp_path / "checkpoints"
    steps = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert all((checkpoints / f"checkpoint-{s}" / COMPLETE_MARKER).is_file() for s in steps)
    (checkpoints / f"checkpoint-{steps[-1] + 1}").mkdir()  # a crash mid-save: no marker
    model_dir = train(load_config(overrides=overrides + ["training.epochs=3"]), resume=True)
    assert not (checkpoints / f"checkpoint-{steps[-1] + 1}").exists()
    state = json.loads(max(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])).joinpath("trainer_state.json").read_text())
    assert state["epoch"] == 3.0 and (model_dir / "model.safetensors").is_file()
    # it went on from the saved step and did not redo one: a run that silently started over would show 0 and all steps
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["started_at_step"] == steps[-1] and summary["steps_run"] == summary["global_step"] - steps[-1] > 0


def test_server_scores_one_transcript_or_a_list(tiny_model):
    body = {"id": "api-1", "turns": [{"role": "customer", "text": "要发票"}, {"role": "agent", "text": "要发票得加6个点"}]}
    with TestClient(create_app(tiny_model, "cpu")) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/v1/model").json()["device"] == "cpu"
        one = client.post("/v1/score", json=body)
        assert one.status_code == 200
        assert one.json()["turns"][1]["labels"][0]["label"] == "invoice_refusal"
        assert "labels" not in one.json()["turns"][0]
        many = client.post("/v1/score", json=[body, {**body, "id": "api-2"}])
        assert [d["id"] for d in many.json()] == ["api-1", "api-2"]


def test_server_reads_json_sent_as_curl_does_by_default(tiny_model):
    body = json.dumps({"id": "c", "turns": [{"role": "agent", "text": "要发票得加6个点"}]}, ensure_ascii=False)
    with TestClient(create_app(tiny_model, "cpu")) as client:
        response = client.post("/v1/score", content=body.encode(), headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 200 and response.json()["id"] == "c"


def test_server_rejects_bad_input_naming_the_field(tiny_model):
    good = {"id": "ok", "turns": [{"role": "agent", "text": "好的"}]}
    with TestClient(create_app(tiny_model, "cpu")) as client:
        response = client.post("/v1/score", json=[good, {"id": "x", "turns": [{"role": "manager", "text": "hi"}]}])
        assert response.status_code == 422
        assert response.json()["detail"] == ["body[1]: turns[0].role: Input should be 'agent' or 'customer'"]
        assert client.post("/v1/score", content=b"{oops").status_code == 400
        assert client.post("/v1/score", json=[]).status_code == 422
