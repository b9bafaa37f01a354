"""The inspector page at `/`, driven in headless Chromium against the real server.

Needs the Debian packages `chromium` (and a CJK font such as `fonts-wqy-microhei` for a readable
screenshot) and the Python package `playwright` (its own browser download is not used:
Chromium is launched from /usr/bin/chromium, or $ZHIJIAN_CHROMIUM). Skipped when either is
missing. The screenshot lands in tests/artifacts/page.png.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT

CHROMIUM = os.environ.get("ZHIJIAN_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the page test needs the `playwright` package (pip install playwright)")

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
API_KEY = "page-test-key"
CHAT = "买家: 在吗\n客服: 您好,在的亲,请问有什么可以帮您\n买家: 有发票吗\n客服: 要发票得加6个点\n买家: 太贵了\n客服: 买不起就别问,神经病\n"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def server(tiny_model):
    """The real app (model, batcher, API key) on a free loopback port, in a background thread."""
    import uvicorn

    from serving.app import create_app

    app = create_app(tiny_model, "cpu", api_key=API_KEY)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server + "/")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def score_requests(page) -> list:
    requests = []
    page.on("request", lambda request: requests.append(request) if request.url.endswith("/v1/score") else None)
    return requests


def test_paste_and_score(page):
    """Paste a chat, see the API key error, add the key, see the score and the highlighted evidence."""
    requests = score_requests(page)
    assert "客服:" in page.input_value("#chat"), "a sample chat is prefilled"
    page.fill("#chat", CHAT)

    page.click("#submit")  # no key yet: the server's 401 is shown
    error = page.locator("#error")
    sync_api.expect(error).to_be_visible()
    sync_api.expect(error).to_contain_text("401")
    sync_api.expect(error).to_contain_text("API key")

    page.fill("#api-key", API_KEY)
    page.click("#submit")
    dialogue = page.locator("section.dialogue").first
    sync_api.expect(dialogue.locator(".score")).to_be_visible()
    sync_api.expect(error).to_be_hidden()

    sent = requests[-1]
    assert sent.method == "POST"
    assert sent.headers["content-type"] == "text/plain; charset=utf-8"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.post_data == CHAT

    score = float(dialogue.locator(".score").inner_text())
    assert 0 <= score <= 100
    sync_api.expect(dialogue.locator(".verdict")).to_contain_text("合格")
    # turn 3 is 要发票得加6个点, turn 5 is 买不起就别问,神经病: each has its label's evidence highlighted
    invoice = dialogue.locator('.turn[data-index="3"] mark.violation[data-label~="invoice_refusal"]')
    abuse = dialogue.locator('.turn[data-index="5"] mark.violation[data-label~="abuse"]')
    sync_api.expect(invoice.first).to_be_visible()
    sync_api.expect(abuse.first).to_be_visible()
    assert "".join(invoice.all_inner_texts()) in "要发票得加6个点"
    assert "".join(abuse.all_inner_texts()) in "买不起就别问,神经病"
    sync_api.expect(dialogue.locator('.turn[data-index="3"] .label-chip[data-label="invoice_refusal"]')).to_contain_text("拒开发票")
    sync_api.expect(dialogue.locator('.turn[data-index="5"] .label-chip[data-label="abuse"]')).to_contain_text("辱骂")
    sync_api.expect(dialogue.locator('tr.deduction[data-label="abuse"]').first).to_contain_text("辱骂")
    sync_api.expect(dialogue.locator('.check[data-check="no_greeting"]')).to_contain_text("缺少问候")
    assert dialogue.locator(".turn.agent .tone").count() == 3
    sync_api.expect(dialogue.locator(".versions")).to_contain_text("default")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)


def test_jsonl_file(page, tmp_path):
    """A JSON Lines file is parsed in the browser and sent as a JSON list; a bad line is reported with its number."""
    requests = score_requests(page)
    page.fill("#api-key", API_KEY)
    dialogues = [
        {"id": "order-1", "turns": [{"role": "customer", "text": "能开发票吗", "ts": 0}, {"role": "agent", "text": "要发票得加6个点", "ts": 5}]},
        {"id": "order-2", "turns": [{"role": "customer", "text": "这个能退吗"}, {"role": "agent", "text": "亲,七天无理由退换的哦"}]},
    ]
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in dialogues) + "\n\n", encoding="utf-8")
    page.set_input_files("#file", str(path))
    sync_api.expect(page.locator("#file-info")).to_contain_text("2")
    page.click("#submit")
    sync_api.expect(page.locator("section.dialogue")).to_have_count(2)
    sent = requests[-1]
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.post_data) == dialogues
    assert page.locator("section.dialogue").nth(0).get_attribute("data-id") == "order-1"
    sync_api.expect(page.locator("table.summary tbody tr")).to_have_count(2)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(dialogues[0], ensure_ascii=False) + "\n{not json\n", encoding="utf-8")
    page.set_input_files("#file", str(bad))
    sync_api.expect(page.locator("#error")).to_contain_text("bad.jsonl:2")

    wrong = tmp_path / "wrong.jsonl"  # valid JSON, but the server rejects line 3's role: the page names the line
    wrong.write_text(json.dumps(dialogues[0]) + "\n\n" + json.dumps({"id": "x", "turns": [{"role": "bot", "text": "hi"}]}) + "\n")
    page.set_input_files("#file", str(wrong))
    page.click("#submit")
    sync_api.expect(page.locator("#error")).to_contain_text("422")
    sync_api.expect(page.locator("#error li")).to_contain_text("body[1]")
    sync_api.expect(page.locator("#error li")).to_contain_text("line 3")


def fake_result(text: str, evidence: dict, labels: list, deductions: list) -> dict:
    return {
        "id": "<b>not html</b>",
        "turns": [
            {"index": 0, "role": "customer", "text": "<i>在吗</i>"},
            {"index": 1, "role": "agent", "text": text, "labels": labels, "tone": 0.25, "evidence": evidence},
        ],
        "score": 72.5, "passed": False, "fatal": True, "tone": 0.25,
        "checks": [{"check": "unanswered", "status": "failed", "turn": 0, "detail": "no reply"},
                   {"check": "slow_response", "status": "not_checked", "turn": None, "detail": "no timestamps (ts)"}],
        "deductions": deductions,
        "versions": {"model": "model:abc", "template": "shop@3"},
    }


def test_rendering_and_errors(page):
    """Overlapping spans, code-point offsets, shop rules and API errors, from canned responses."""
    text = "😀要发票得加6个点,买不起就别问"  # the emoji is one code point (two UTF-16 units)
    result = fake_result(
        text,
        evidence={"invoice_refusal": [1, 9], "payment_refusal": [5, 9], "contempt": [10, 16]},
        labels=[{"label": "invoice_refusal", "prob": 0.91}, {"label": "payment_refusal", "prob": 0.6}, {"label": "contempt", "prob": 0.7}],
        deductions=[
            {"source": "model", "label": "invoice_refusal", "turn": 1, "span": [1, 9], "points": 10, "fatal": False, "capped": True},
            {"source": "rule", "label": "no_wechat_rule", "turn": 1, "span": [10, 13], "points": 30, "fatal": True, "capped": False},
            {"source": "check", "label": "unanswered", "turn": 0, "span": None, "points": 5, "fatal": False, "capped": False},
        ],
    )
    replies = [
        {"status": 200, "body": json.dumps(result, ensure_ascii=False)},
        {"status": 422, "body": json.dumps({"detail": ["body:1: expected a turn", "body:2: text: blank"]})},
        {"status": 503, "headers": {"Retry-After": "3"}, "body": json.dumps({"detail": "busy: the queue is full; retry shortly"})},
    ]
    page.route("**/v1/score", lambda route: route.fulfill(content_type="application/json", **replies.pop(0)))

    page.click("#submit")
    dialogue = page.locator("section.dialogue")
    sync_api.expect(dialogue.locator(".score")).to_have_text("72.5")
    sync_api.expect(dialogue.locator("h2")).to_have_text("<b>not html</b>")  # user text is text, never markup
    sync_api.expect(dialogue.locator(".fatal-badge")).to_contain_text("致命项")
    sync_api.expect(dialogue.locator(".verdict")).to_contain_text("不合格")
    assert dialogue.locator(".turn.customer .text").inner_text() == "<i>在吗</i>"
    marks = dialogue.locator("mark.violation")
    assert marks.all_inner_texts() == ["要发票得", "加6个点", "买不起就别问"]
    assert [marks.nth(k).get_attribute("data-label") for k in range(3)] == [
        "invoice_refusal", "invoice_refusal payment_refusal", "contempt",
    ]
    sync_api.expect(dialogue.locator(".turn.agent .text")).to_contain_text("拒开发票·拒绝约定支付方式")
    sync_api.expect(dialogue.locator(".turn.agent .tone b")).to_have_text("2.0")  # 1 + 4 * 0.25
    rows = dialogue.locator("tr.deduction")
    sync_api.expect(rows.nth(0).locator(".evidence")).to_have_text("要发票得加6个点")
    sync_api.expect(rows.nth(0)).to_contain_text("封顶")
    sync_api.expect(rows.nth(1)).to_contain_text("no_wechat_rule")
    sync_api.expect(rows.nth(1)).to_contain_text("店铺规则")
    sync_api.expect(rows.nth(1).locator(".evidence")).to_have_text("买不起")
    sync_api.expect(rows.nth(2)).to_contain_text("未回复")
    sync_api.expect(dialogue.locator(".check[data-check=unanswered]")).to_have_attribute("data-status", "failed")
    sync_api.expect(dialogue.locator(".versions")).to_contain_text("shop@3")

    page.click("#submit")
    error = page.locator("#error")
    sync_api.expect(error).to_contain_text("422")
    sync_api.expect(error.locator("li")).to_have_count(2)
    sync_api.expect(error.locator("li").nth(1)).to_have_text("body:2: text: blank")

    page.click("#submit")
    sync_api.expect(error).to_contain_text("503")
    sync_api.expect(error).to_contain_text("busy: the queue is full")
    sync_api.expect(error).to_contain_text("3 s")
    sync_api.expect(error.locator("#retry")).to_be_visible()
