"""Dialogue scoring: each check, shop rules and their allow-list, the template's arithmetic, evidence spans."""

import json
import os
import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving.app import create_app
from zhijian.checks import find_rule_hits, run_checks
from zhijian_cli import app
from zhijian.config import ConfigError
from zhijian.evidence import clause_spans, window_spans
from zhijian.inspector import Inspector
from zhijian.result import Deduction
from zhijian.scorer import Scorer
from zhijian.template import assess, load_template
from zhijian.transcripts import Transcript

runner = CliRunner()
TEMPLATE = load_template()


def chat(*turns) -> Transcript:
    """chat(("c", "在吗", 0), ("a", "您好", 3), ...): role initial, text, optional ts."""
    roles = {"a": "agent", "c": "customer"}
    return Transcript(id="t", turns=[
        {"role": roles[t[0]], "text": t[1], **({"ts": t[2]} if len(t) > 2 else {})} for t in turns
    ])


def findings(dialogue, check):
    return [(f.status, f.turn) for f in run_checks(dialogue, TEMPLATE.checks) if f.check == check]


def test_greeting_and_closing_are_read_from_the_first_and_last_agent_messages():
    polite = chat(("c", "在吗"), ("a", "您好,在的"), ("c", "好"), ("a", "感谢您的支持,祝您生活愉快"))
    curt = chat(("c", "在吗"), ("a", "说"), ("c", "能退吗"), ("a", "不能"))
    assert findings(polite, "no_greeting") == [("passed", None)] and findings(polite, "no_closing") == [("passed", None)]
    assert findings(curt, "no_greeting") == [("failed", 1)] and findings(curt, "no_closing") == [("failed", 3)]


def test_response_times_are_checked_only_with_timestamps():
    timed = chat(("c", "在吗", 0), ("a", "您好", 40), ("c", "能退吗", 50), ("c", "人呢", 90), ("a", "可以的", 400), ("c", "好", 410), ("a", "谢谢", 420))
    assert findings(timed, "slow_first_response") == [("failed", 1)]  # 40 s > 15 s
    assert findings(timed, "slow_response") == [("failed", 4)]  # 350 s from the first unanswered message
    untimed = chat(("c", "在吗"), ("a", "您好"), ("c", "能退吗"), ("a", "可以的"))
    assert findings(untimed, "slow_first_response") == [("not_checked", None)]
    assert findings(untimed, "slow_response") == [("not_checked", None)]
    quick = chat(("c", "在吗", 0), ("a", "您好", 5), ("c", "能退吗", 10), ("a", "可以的", 30))
    assert findings(quick, "slow_first_response") == [("passed", None)] and findings(quick, "slow_response") == [("passed", None)]


def test_a_last_customer_question_is_unanswered_but_a_thank_you_needs_no_reply():
    assert findings(chat(("a", "您好"), ("c", "什么时候发货?")), "unanswered") == [("failed", 1)]
    assert findings(chat(("a", "您好"), ("c", "好的,谢谢!")), "unanswered") == [("passed", None)]


def test_asking_again_for_information_already_given_is_a_repeated_question():
    repeated = chat(("c", "东西坏了"), ("a", "麻烦提供一下订单号"), ("c", "123456"), ("a", "好的"), ("a", "请问您的订单号是多少?"))
    assert findings(repeated, "repeated_question") == [("failed", 4)]
    reminder = chat(("c", "东西坏了"), ("a", "麻烦提供一下订单号"), ("a", "请发一下订单号哦"))  # not answered yet
    assert findings(reminder, "repeated_question") == [("passed", None)]


def test_five_agent_messages_in_a_row_are_a_flood():
    flood = chat(("c", "在吗"), *[("a", f"新品上架{n}") for n in range(5)], ("c", "别发了"), ("a", "好的"))
    assert findings(flood, "message_flood") == [("failed", 1)]
    assert findings(chat(("c", "在吗"), *[("a", f"第{n}条") for n in range(4)]), "message_flood") == [("passed", None)]


def shop_template(tmp_path, rules: str, extra: str = ""):
    path = tmp_path / "shop.yaml"
    base = (TEMPLATE.model_dump(mode="json") | {"rules": [], "allow": []})
    text = json.dumps(base, ensure_ascii=False)  # JSON is YAML: the default template, then the shop's rules
    path.write_text(text[:-1] + f', "rules": {rules}{extra}}}', encoding="utf-8")
    return path


def test_the_allow_list_wins_over_an_overlapping_match(tmp_path):
    rules = '[{"id": "banned", "words": ["大麻"], "allow": ["大麻烦"], "severity": "critical"}]'
    template = load_template(shop_template(tmp_path, rules))
    dialogue = chat(("c", "这下大麻烦了"), ("a", "给您添大麻烦了,抱歉"), ("a", "我们不卖大麻"))
    hits = find_rule_hits(dialogue, template)
    assert [(h.turn, h.span) for h in hits] == [(2, (4, 6))]
    assert dialogue.turns[2].text[4:6] == "大麻"


def test_rules_keep_to_their_role_and_report_their_label_or_id(tmp_path):
    rules = '[{"id": "wechat", "label": "off_platform", "regex": ["加.?微信"]}, {"id": "complaint", "role": "customer", "words": ["投诉"], "points": 0}]'
    template = load_template(shop_template(tmp_path, rules, ', "allow": ["微信支付"]'))
    dialogue = chat(("c", "我要投诉,你加我微信"), ("a", "可以用微信支付哦"), ("a", "您加我微信吧"))
    hits = {(h.rule.id, h.turn) for h in find_rule_hits(dialogue, template)}
    assert hits == {("complaint", 0), ("wechat", 2)}


def test_template_errors_name_the_file_and_the_item(tmp_path):
    with pytest.raises(ConfigError, match="unknown item.*'swearing'"):
        load_template(shop_template(tmp_path, "[]", ', "fatal": ["swearing"]'))
    with pytest.raises(ConfigError, match="needs `words` or `regex`"):
        load_template(shop_template(tmp_path, '[{"id": "empty"}]'))
    with pytest.raises(ConfigError, match="shop.yaml.*bad regular expression"):
        load_template(shop_template(tmp_path, '[{"id": "broken", "regex": ["(加"]}]'))


def deduction(label, turn, points, source="model"):
    return Deduction(source=source, label=label, turn=turn, points=points)


def test_caps_fatal_items_and_the_pass_mark():
    contempt = [deduction("contempt", t, 10) for t in (1, 3, 5)]  # 30 points, capped at 20
    final, score, passed, fatal = assess(TEMPLATE, contempt)
    assert [d.points for d in final] == [10, 10, 0] and final[2].capped
    assert (score, passed, fatal) == (80, True, False)  # exactly the pass mark
    final, score, passed, fatal = assess(TEMPLATE, contempt + [deduction("no_closing", 6, 2, "check")])
    assert (score, passed) == (78, False)
    final, score, passed, fatal = assess(TEMPLATE, [deduction("off_platform", 2, 20)])
    assert (score, passed, fatal) == (0, False, True) and final[0].fatal


@pytest.mark.parametrize("text", ["好的亲,要发票得加6个点哦", "加我微信,给你便宜二十。谢谢", "买不起就别问 神经病", "ＯＫ，明天发"])
def test_evidence_spans_are_offsets_into_the_original_text(tiny_model, text):
    scorer = Scorer.load(tiny_model, "cpu")
    scorer.thresholds[:] = 0.0  # every label flagged: every label gets a span
    turn = Inspector(scorer, TEMPLATE).inspect([chat(("c", "能便宜点吗"), ("a", text))])[0].turns[1]
    assert len(turn.evidence) == 12
    for label, (start, end) in turn.evidence.items():
        assert (start, end) in clause_spans(text)
        assert 0 <= start < end <= len(text) and not set(text[start:end]) & set(",。 ，")  # a non-empty clause, no separators


def test_candidate_spans_cover_the_text_without_punctuation():
    text = "亲,不能退哦!快递弄坏的找快递去"
    assert [text[s:e] for s, e in clause_spans(text)] == ["亲", "不能退哦", "快递弄坏的找快递去"]
    assert window_spans(text)[-1][1] == len(text)


def test_score_json_gives_the_dialogue_verdict_and_its_evidence(tiny_model, tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"id": "c1", "turns": [
        {"role": "customer", "text": "能开发票吗", "ts": 0}, {"role": "agent", "text": "要发票得加6个点", "ts": 40},
    ]}, ensure_ascii=False) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["score", str(path), "--model", str(tiny_model), "--json"])
    assert result.exit_code == 0, result.output
    dialogue = json.loads(result.stdout)
    assert {"score", "passed", "fatal", "tone", "checks", "deductions", "versions"} <= set(dialogue)
    agent = dialogue["turns"][1]
    assert agent["evidence"]["invoice_refusal"] == [0, 8]
    items = {(d["source"], d["label"], d["turn"]) for d in dialogue["deductions"]}
    assert {("model", "invoice_refusal", 1), ("check", "slow_first_response", 1), ("check", "no_greeting", 1)} <= items
    assert dialogue["score"] == 100 - sum(d["points"] for d in dialogue["deductions"]) == 83  # 10 + 3 + 2 + 2
    assert dialogue["passed"] and not dialogue["fatal"]
    assert dialogue["versions"]["template"] == "default@1"


def test_readable_output_shows_the_score_and_the_deductions(tiny_model, tmp_path):
    path = tmp_path / "chat.txt"
    path.write_text("买家: 太贵了\n客服: 买不起就别问,神经病\n", encoding="utf-8")
    result = runner.invoke(app, ["score", str(path), "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert "score 0/100 FAIL (fatal item)" in result.stdout and "abuse" in result.stdout and "fatal" in result.stdout


def test_server_picks_up_a_changed_template_and_keeps_the_last_good_one(tiny_model, tmp_path):
    path = shop_template(tmp_path, "[]")
    body = {"id": "s", "turns": [{"role": "agent", "text": "您好,这是赠品清单"}]}
    with TestClient(create_app(tiny_model, "cpu", path)) as client:
        assert not [d for d in client.post("/v1/score", json=body).json()["deductions"] if d["source"] == "rule"]
        path.write_text(path.read_text(encoding="utf-8").replace('"rules": []', '"rules": [{"id": "gift", "words": ["赠品"]}]'), encoding="utf-8")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime even on coarse clocks
        rule_hits = [d for d in client.post("/v1/score", json=body).json()["deductions"] if d["source"] == "rule"]
        assert rule_hits == [{"source": "rule", "label": "gift", "turn": 0, "span": [5, 7], "points": 5.0, "fatal": False, "capped": False}]
        path.write_text("rules: [", encoding="utf-8")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200 and any(d["label"] == "gift" for d in response.json()["deductions"])
        ready = client.get("/readyz").json()
        assert "not valid YAML" in ready["template_error"] and ready["template"] == "default@1"
        path.write_bytes("rules: []\nname: 店铺".encode("gbk"))  # saved by an editor in GBK: not UTF-8
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 3 * 10**9))
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200 and any(d["label"] == "gift" for d in response.json()["deductions"])
        assert "not UTF-8 text" in client.get("/readyz").json()["template_error"]


def test_one_line_python_use_loads_the_folder_and_inspects(tiny_model):
    from zhijian.transcripts import parse_text

    result = Inspector.load(tiny_model, device="cpu").inspect(parse_text("买家: 能退吗\n客服: 加我微信,给你便宜二十\n"))[0]
    assert result.versions.model.startswith(f"{tiny_model.name}:") and result.versions.template == "default@1"
    assert [turn.role for turn in result.turns] == ["customer", "agent"] and 0 <= result.score <= 100
