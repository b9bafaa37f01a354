"""Shared fixtures: a tiny labeled set and a tiny model trained on it once per session."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never wait on the network

ROOT = Path(__file__).resolve().parents[1]  # the repository; tests/ mirrors its packages (tests/zhijian/, ...)
FIXTURES = ROOT / "tests" / "fixtures"
SHARED = ROOT.parent / "shared"

# (customer, agent reply, labels, tone): a few patterns a tiny model can learn in seconds.
EXCHANGES = [
    ("这个能退吗", "亲,七天无理由退换的哦,您在订单页申请就可以啦", [], 5),
    ("能便宜点吗", "不好意思亲,已经是活动价了,给您送个小礼品可以吗", [], 5),
    ("什么时候发货", "您好,一般48小时内发出,具体以物流为准", [], 4),
    ("有发票吗", "有的亲,电子发票确认收货后开具哦", [], 5),
    ("质量怎么样", "您放心,百分百不会坏,坏了随时换新来回运费全包", ["over_promise"], 4),
    ("明天能到吗", "保证明天一定送到您家", ["over_promise"], 4),
    ("你们怎么回事", "你脑子有问题吧", ["abuse"], 1),
    ("太贵了", "买不起就别问,神经病", ["abuse", "contempt"], 1),
    ("可以加微信吗", "加我微信,给你便宜二十", ["off_platform"], 4),
    ("能再便宜吗", "直接转我支付宝就行,便宜点", ["off_platform"], 3),
    ("能开发票吗", "特价商品不开发票的", ["invoice_refusal"], 2),
    ("要发票", "要发票得加6个点", ["invoice_refusal"], 3),
]


# The same labels in other words: the tiny model's validation set (thresholds, early stopping), never trained on.
VALID_EXCHANGES = [
    ("能退货吗", "亲,支持七天无理由的哦,订单页点申请售后就行", [], 5),
    ("再少点呗", "抱歉亲,这已经是最低价了,给您备注个小赠品好吗", [], 5),
    ("多久发货", "您好,一般两天内发出,以物流信息为准哦", [], 4),
    ("开票吗", "可以的亲,电子发票收货后会发到您邮箱", [], 5),
    ("会不会坏", "放心吧,绝对不会坏的,坏了包换运费全包", ["over_promise"], 4),
    ("后天能到吗", "保证后天一定到", ["over_promise"], 4),
    ("怎么还没发", "你是不是脑子进水了", ["abuse"], 1),
    ("好贵啊", "穷就别买,有病吧", ["abuse", "contempt"], 1),
    ("加个微信呗", "加我微信私聊,便宜给你", ["off_platform"], 4),
    ("还能便宜吗", "转账到我支付宝,给你优惠", ["off_platform"], 3),
    ("开发票吗", "活动款不开发票", ["invoice_refusal"], 2),
    ("我要发票", "开票要另加6个点", ["invoice_refusal"], 3),
]


def make_dialogues(copies: int = 4, exchanges: list[tuple] = EXCHANGES, prefix: str = "tiny") -> list[dict]:
    dialogues = []
    for copy in range(copies):
        for n, (_, agent, labels, tone) in enumerate(exchanges):
            # Each copy pairs the reply with another question, so the reply itself must carry the label.
            customer = exchanges[(n + 5 * copy) % len(exchanges)][0]
            greeting = [
                {"role": "customer", "text": "在吗", "ts": 0},
                {"role": "agent", "text": "在的亲,请问有什么可以帮您", "ts": 5, "labels": [], "tone": 5},
            ]
            exchange = [
                {"role": "customer", "text": customer, "ts": 20},
                {"role": "agent", "text": agent, "ts": 30 + copy, "labels": labels, "tone": tone},
            ]
            # Half the dialogues open without a greeting, so position says nothing about the label.
            turns = greeting + exchange if copy % 2 == 0 else exchange
            dialogues.append({"id": f"{prefix}-{copy}-{n}", "turns": turns})
    return dialogues


def write_jsonl(path: Path, dialogues: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dialogues), encoding="utf-8")
    return path


TINY_OVERRIDES = [
    "model.base=scratch",
    "model.scratch.hidden_size=64",
    "model.scratch.num_hidden_layers=2",
    "model.scratch.num_attention_heads=2",
    "model.scratch.intermediate_size=128",
    "features.max_length=64",
    # The shipped recipe's reading: an n-gram head, Traditional read as Simplified, long turns in windows.
    "features.ngram_buckets=4096",
    "features.to_simplified=true",
    "features.window_chars=32",
    "training.epochs=40",
    "training.batch_size=16",
    "training.learning_rate=0.003",
    "training.warmup_ratio=0.0",
    "training.early_stopping_patience=0",
    "training.logging_steps=1000",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny-data")
    return {
        "train": write_jsonl(folder / "train.jsonl", make_dialogues(4)),
        "valid": write_jsonl(folder / "valid.jsonl", make_dialogues(1, VALID_EXCHANGES, "valid")),
    }


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_data) -> Path:
    """A 2-layer scratch BERT trained on the tiny set (about half a minute on 2 cores)."""
    from training.train import train
    from zhijian.config import load_config

    out = tmp_path_factory.mktemp("tiny-run")
    config = load_config(
        overrides=TINY_OVERRIDES
        + [f"data.train=[{tiny_data['train']}]", f"data.valid=[{tiny_data['valid']}]", f"training.output_dir={out}"]
    )
    return train(config)


@contextmanager
def live_server(app):
    """Run an ASGI app with uvicorn on a free loopback port in a background thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:  # the lifespan loads the model first
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
