"""The real server on a loopback port: every route, the 4xx paths, the API key, overload (503), micro-batching."""

import threading
import time

import httpx
import pytest

from conftest import ROOT, live_server
from serving.app import create_app

CHAT = "买家: 能开发票吗\n客服: 要发票得加6个点\n"
BODY = {"id": "api-1", "turns": [{"role": "customer", "text": "要发票"}, {"role": "agent", "text": "要发票得加6个点"}]}


@pytest.fixture(scope="module")
def server(tiny_model):
    with live_server(create_app(tiny_model, "cpu", serving={"max_request_bytes": 4096, "max_turns": 6, "max_turn_chars": 50})) as url:
        yield url


def test_every_route_answers(server):
    with httpx.Client(base_url=server) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["ready"] is True
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        info = client.get("/v1/model").json()
        assert len(info["labels"]) == 12 and info["device"] == "cpu" and info["template"] == "default@1"
        assert {label["id"]: label for label in info["labels"]}["abuse"]["zh"] == "辱骂"
        one = client.post("/v1/score", json=BODY).json()
        assert one["turns"][1]["labels"][0]["label"] == "invoice_refusal" and 0 <= one["score"] <= 100
        many = client.post("/v1/score", json=[BODY, {**BODY, "id": "api-2"}]).json()
        assert [d["id"] for d in many] == ["api-1", "api-2"]
        text = client.post("/v1/score", content=CHAT.encode(), headers={"content-type": "text/plain; charset=utf-8"})
        assert text.status_code == 200 and text.json()["turns"][1]["evidence"]["invoice_refusal"] == [0, 8]
        live = client.post("/v1/utterances", json={"utterances": [{"text": "买不起就别问,神经病", "context": [{"role": "customer", "text": "太贵了"}]}]})
        assert live.status_code == 200 and "abuse" in [hit["label"] for hit in live.json()["results"][0]["labels"]]
        assert client.get("/openapi.json").json()["paths"].keys() >= {"/v1/score", "/v1/utterances", "/v1/model", "/readyz"}
        metrics = client.get("/metrics").text
        assert 'zhijian_requests_total{route="/v1/score",status="200"}' in metrics and "zhijian_queue_depth" in metrics


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"content": b"{oops"}, 400, "not valid JSON"),
        ({"json": []}, 422, "non-empty list"),
        ({"json": {"id": "x", "turns": [{"role": "manager", "text": "hi"}]}}, 422, "turns[0].role"),
        ({"json": {"id": "x", "turns": [{"role": "agent", "text": "好"}] * 7}}, 422, "7 turns, the limit is 6 (serving.max_turns)"),
        ({"json": {"id": "x", "turns": [{"role": "agent", "text": "好" * 51}]}}, 422, "turns[0].text: 51 characters, the limit is 50"),
        ({"json": [{"id": "x", "turns": [{"role": "agent", "text": "好" * 40}]}] * 60}, 413, "the limit is 4096 (serving.max_request_bytes)"),
        ({"content": "客服 没有冒号\n".encode(), "headers": {"content-type": "text/plain"}}, 422, "body:1"),
        ({"json": {"id": "x", "turns": [1, 2]}}, 422, "turns[0]: Input should be a valid dictionary"),
        ({"json": {"id": "x", "turns": "hi"}}, 422, "turns: Input should be a valid list"),
    ],
)
def test_bad_input_gets_a_4xx_that_names_the_field_and_the_limit(server, request_kwargs, status, message):
    response = httpx.post(f"{server}/v1/score", **request_kwargs)
    assert response.status_code == status
    assert message in str(response.json()["detail"])


def test_utterance_limits_are_named_too(server):
    response = httpx.post(f"{server}/v1/utterances", json={"utterances": [{"text": "好" * 51}]})
    assert response.status_code == 422 and "utterances[0].text: 51 characters" in str(response.json()["detail"])
    assert httpx.post(f"{server}/v1/utterances", json={"utterances": []}).status_code == 422
    blank = httpx.post(f"{server}/v1/utterances", json={"utterances": [{"text": " "}]})  # found by schemathesis: was a 500
    assert blank.status_code == 422 and "utterances[0]" in str(blank.json()["detail"])


def test_utterances_are_held_to_the_same_limits_as_score(server):
    context = [{"role": "customer", "text": "在吗"}] * 6  # 6 + the reply = 7 turns, the limit is 6: refused, not cut
    too_long = httpx.post(f"{server}/v1/utterances", json={"utterances": [{"text": "好的", "context": context}]})
    assert too_long.status_code == 422 and "utterances[0].turns: 7 turns, the limit is 6 (serving.max_turns)" in str(too_long.json())
    wordy = httpx.post(f"{server}/v1/utterances", json={"utterances": [{"text": "好的", "context": [{"role": "customer", "text": "啊" * 51}]}]})
    assert wordy.status_code == 422 and "utterances[0].context[0].text: 51 characters, the limit is 50 (serving.max_turn_chars)" in str(wordy.json())
    big = httpx.post(f"{server}/v1/utterances", json={"utterances": [{"text": "好" * 40}] * 120})
    assert big.status_code == 413 and "serving.max_request_bytes" in big.text
    assert httpx.post(f"{server}/v1/utterances", json={"utterances": [{"text": "好的", "context": context[:5]}]}).status_code == 200


def test_a_chunked_body_past_the_limit_gets_413_without_being_read_whole(server):
    sent = []

    def chunks():  # no Content-Length: the server must count as the bytes come
        for _ in range(1000):
            sent.append(1)
            yield b"[" + b" " * 1023

    answer = httpx.post(f"{server}/v1/score", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "serving.max_request_bytes" in answer.text
    assert httpx.get(f"{server}/healthz").status_code == 200  # and stays up


def test_body_limit_stops_reading_a_chunked_body_at_the_limit():
    """The middleware alone, driven by hand: it must answer 413 after about 4 KB of a 1 MB chunked body."""
    import asyncio

    from fastapi import FastAPI, Request

    from serving.middleware import BodyLimit
    from zhijian.config import ServingSection

    inner = FastAPI()

    @inner.post("/echo")
    async def echo(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    app = BodyLimit(inner, lambda: ServingSection(max_request_bytes=4096))
    reads, sent = [], []

    async def receive():
        reads.append(1)
        return {"type": "http.request", "body": b" " * 1024, "more_body": len(reads) < 1024}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/echo", "headers": [(b"transfer-encoding", b"chunked")],
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("t", 80), "client": ("c", 1), "http_version": "1.1"}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and len(reads) == 5  # the fifth kilobyte passed 4096: nothing more was read


def test_api_key_guards_the_v1_routes_but_not_health(tiny_model):
    with live_server(create_app(tiny_model, "cpu", api_key="s3cret")) as url:
        assert httpx.post(f"{url}/v1/score", json=BODY).status_code == 401
        assert httpx.get(f"{url}/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(f"{url}/v1/score", json=BODY, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200


def test_a_non_ascii_key_is_a_wrong_key_not_a_crash(tiny_model):
    with live_server(create_app(tiny_model, "cpu", api_key="s3cret")) as url:
        answer = httpx.post(f"{url}/v1/score", json=BODY, headers={"Authorization": "Bearer 密钥".encode(), "Content-Type": "application/json"})
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert httpx.post(f"{url}/v1/score", json=BODY, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_request_ids_are_echoed_when_safe_and_replaced_when_not(server, caplog):
    caplog.set_level("INFO", logger="zhijian.serving")
    kept = httpx.get(f"{server}/healthz", headers={"X-Request-ID": "shop-42.a"})
    assert kept.headers["x-request-id"] == "shop-42.a"
    for hostile in ("x" * 65, "ok 200 FAKE /v1/score 0.1 ms", "编号-1".encode(), "a\tb"):  # httpx itself refuses CR/LF
        answer = httpx.get(f"{server}/healthz", headers={"X-Request-ID": hostile})
        assert answer.status_code == 200 and answer.headers["x-request-id"] not in (hostile, "编号-1")
        assert len(answer.headers["x-request-id"]) == 16  # a fresh id of our own
    fresh = httpx.get(f"{server}/healthz")
    assert len(fresh.headers["x-request-id"]) == 16
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "shop-42.a" in logged and "FAKE" not in logged


def test_transcript_text_stays_out_of_the_log_unless_asked(tiny_model, caplog):
    caplog.set_level("INFO", logger="zhijian.serving")
    marker = {"id": "log-1", "turns": [{"role": "customer", "text": "能开发票吗"}, {"role": "agent", "text": "独一无二的回复七七七"}]}
    with live_server(create_app(tiny_model, "cpu")) as url:
        assert httpx.post(f"{url}/v1/score", json=marker).status_code == 200
    assert "独一无二的回复七七七" not in caplog.text and "/v1/score" in caplog.text  # the request was logged, its text was not
    caplog.clear()
    with live_server(create_app(tiny_model, "cpu", serving={"log_text": True})) as url:
        assert httpx.post(f"{url}/v1/score", json=marker).status_code == 200
    assert "独一无二的回复七七七" in caplog.text


def _slow(app, seconds: float, seen: list[int]):
    """Make every model call take `seconds` and record its batch size."""
    inspector = app.state.serving.inspector
    real = inspector.inspect

    def inspect(dialogues):
        seen.append(len(dialogues))
        time.sleep(seconds)
        return real(dialogues)

    inspector.inspect = inspect


def test_a_full_queue_answers_503_with_retry_after(tiny_model):
    app = create_app(tiny_model, "cpu", serving={"queue_size": 1, "batch_max_dialogues": 1, "batch_max_wait_ms": 0})
    with live_server(app) as url:
        _slow(app, 1.0, [])
        answers = []

        def post():
            answers.append(httpx.post(f"{url}/v1/score", json=BODY, timeout=30))

        first = threading.Thread(target=post)
        first.start()
        time.sleep(0.3)  # the worker is busy with the first request
        second = threading.Thread(target=post)
        second.start()
        time.sleep(0.2)  # the second waits in the queue, which is now full
        refused = httpx.post(f"{url}/v1/score", json=BODY, timeout=30)
        first.join(), second.join()
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert [a.status_code for a in answers] == [200, 200]  # nothing already accepted is lost


def test_concurrent_requests_share_model_calls(tiny_model):
    app = create_app(tiny_model, "cpu", serving={"batch_max_wait_ms": 300, "batch_max_dialogues": 32})
    with live_server(app) as url:
        batches: list[int] = []
        _slow(app, 0.0, batches)
        threads = [threading.Thread(target=httpx.post, args=(f"{url}/v1/score",), kwargs={"json": BODY, "timeout": 30}) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(batches) == 6 and len(batches) < 6
        assert "zhijian_batch_dialogues_count" in httpx.get(f"{url}/metrics").text


def test_serve_refuses_to_listen_beyond_loopback_without_a_key(tiny_model, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from zhijian_cli import app as cli

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: started.append(host))
    monkeypatch.delenv("ZHIJIAN_API_KEY", raising=False)
    runner = CliRunner()
    refused = runner.invoke(cli, ["serve", "--model", str(tiny_model), "--host", "0.0.0.0"])
    assert refused.exit_code == 2 and "ZHIJIAN_API_KEY" in refused.stderr and "allow_unauthenticated" in refused.stderr
    assert started == []
    assert runner.invoke(cli, ["serve", "--model", str(tiny_model)]).exit_code == 0  # 127.0.0.1: no key needed
    opted_in = runner.invoke(cli, ["serve", "--model", str(tiny_model), "--host", "0.0.0.0", "--set", "serving.allow_unauthenticated=true"])
    monkeypatch.setenv("ZHIJIAN_API_KEY", "s3cret")
    keyed = runner.invoke(cli, ["serve", "--model", str(tiny_model), "--host", "0.0.0.0"])
    assert opted_in.exit_code == keyed.exit_code == 0 and started == ["127.0.0.1", "0.0.0.0", "0.0.0.0"]


def test_the_api_reports_the_installed_package_version(server):
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert httpx.get(f"{server}/openapi.json").json()["info"]["version"] == declared  # one home: pyproject.toml


def test_one_limit_check_serves_both_routes_and_names_each_breach():
    from fastapi import HTTPException

    from serving.deps import check_limits, parse_dialogues
    from zhijian.config import ServingSection
    from zhijian.transcripts import Transcript

    limits = ServingSection(max_dialogues=2, max_turns=2, max_turn_chars=3)
    dialogue = Transcript(id="x", turns=[{"role": "customer", "text": "在吗在吗"}, {"role": "agent", "text": "好"}, {"role": "agent", "text": "好的呀呀"}])
    with pytest.raises(HTTPException) as score:
        check_limits([dialogue] * 3, limits, single=False)
    assert score.value.status_code == 422 and score.value.detail[:3] == [
        "body: 3 dialogues, the limit is 2 (serving.max_dialogues)",
        "body[0].turns: 3 turns, the limit is 2 (serving.max_turns)",
        "body[0].turns[0].text: 4 characters, the limit is 3 (serving.max_turn_chars)",
    ]
    with pytest.raises(HTTPException) as live:  # an utterance: its context, then the reply, named as sent
        check_limits([dialogue], limits, single=False, field="utterances")
    assert live.value.detail[1:] == [
        "utterances[0].context[0].text: 4 characters, the limit is 3 (serving.max_turn_chars)",
        "utterances[0].text: 4 characters, the limit is 3 (serving.max_turn_chars)",
    ]
    with pytest.raises(HTTPException) as many:  # thousands of bad items get a short answer
        parse_dialogues([{"id": "x"}] * 1000, [f"body[{n}]" for n in range(1000)])
    assert many.value.status_code == 422 and len(many.value.detail) == 20 and many.value.detail[0].startswith("body[0]")


def test_serve_reads_the_folder_once_and_names_a_bad_override(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from zhijian.config import ZhijianConfig, load_config
    from zhijian_cli import app as cli

    ZhijianConfig().save(tmp_path)
    reads = []
    monkeypatch.setattr("serving.cli.load_config", lambda *args: reads.append(args) or load_config(*args))
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: None)
    runner = CliRunner()
    bad = runner.invoke(cli, ["serve", "--model", str(tmp_path), "--set", "serving.port=0"])
    assert bad.exit_code == 2 and f"{tmp_path / 'zhijian.yaml'}: serving.port: Input should be greater than or equal to 1" in bad.stderr
    other = runner.invoke(cli, ["serve", "--model", str(tmp_path), "--set", "training.epochs=1"])
    assert other.exit_code == 2 and "only serving.* keys apply when serving" in other.stderr
    assert len(reads) == 2  # one read of zhijian.yaml per command
