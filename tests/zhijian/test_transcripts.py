import json

import pytest

from zhijian.transcripts import TranscriptError, iter_transcripts, parse_text, read_transcripts


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = {"id": "d1", "turns": [{"role": "customer", "text": "在吗"}, {"role": "agent", "text": "在的亲", "labels": [], "tone": 5}]}


def test_jsonl_reads_dialogues(tmp_path):
    path = write(tmp_path / "a.jsonl", [json.dumps(GOOD, ensure_ascii=False)] * 2)
    dialogues = read_transcripts([path])
    assert [d.id for d in dialogues] == ["d1", "d1"]
    assert dialogues[0].turns[1].tone == 5 and dialogues[0].is_labeled


@pytest.mark.parametrize(
    "turn, expected",
    [
        ({"role": "boss", "text": "x"}, "turns[1].role"),
        ({"role": "agent", "text": "  "}, "turns[1].text: text is blank"),
        ({"role": "agent", "text": "x", "labels": ["rude"]}, "turns[1].labels[0]: unknown label 'rude'"),
        ({"role": "agent", "text": "x", "tone": 7}, "turns[1].tone"),
        ({"role": "customer", "text": "x", "labels": ["abuse"]}, "agent turns only"),
        ({"role": "agent", "text": "x", "lables": []}, "turns[1].lables: unknown field"),
    ],
)
def test_bad_turn_error_names_file_line_and_field(tmp_path, turn, expected):
    bad = {"id": "d2", "turns": [{"role": "customer", "text": "在吗"}, turn]}
    path = write(tmp_path / "a.jsonl", [json.dumps(GOOD), json.dumps(bad, ensure_ascii=False)])
    with pytest.raises(TranscriptError) as error:
        read_transcripts([path])
    message = str(error.value)
    assert message.startswith(f"{path}:2: ")
    assert expected in message


def test_invalid_json_and_time_going_back_are_located(tmp_path):
    path = write(tmp_path / "a.jsonl", ["{not json"])
    with pytest.raises(TranscriptError, match=r"a.jsonl:1: not valid JSON"):
        read_transcripts([path])
    back = {"id": "d", "turns": [{"role": "customer", "text": "a", "ts": 10}, {"role": "agent", "text": "b", "ts": 3}]}
    path = write(tmp_path / "b.jsonl", [json.dumps(back)])
    with pytest.raises(TranscriptError, match=r"b.jsonl:1: .*turns\[1\].ts goes back in time"):
        read_transcripts([path])


def test_reading_on_keeps_good_dialogues_and_reports_bad_lines(tmp_path):
    path = write(tmp_path / "a.jsonl", [json.dumps(GOOD), "oops", json.dumps(GOOD)])
    problems = []
    assert len(list(iter_transcripts(path, on_error=problems))) == 2
    assert [p.error.line for p in problems] == [2]


def test_text_format_with_both_prefix_styles_and_continuations():
    text = "买家: 在吗\n客服：在的亲\n这款有货哦\n\ncustomer: ok\nAgent: 好的\n---\n客服:您好\n"
    first, second = parse_text(text, "chat.txt")
    assert [t.role for t in first.turns] == ["customer", "agent", "customer", "agent"]
    assert first.turns[1].text == "在的亲\n这款有货哦"
    assert (first.id, second.id) == ("chat", "chat-2")


def test_text_format_errors_name_the_line():
    with pytest.raises(TranscriptError, match=r"chat.txt:1: expected a turn starting with '客服:'"):
        parse_text("你好\n客服: 在", "chat.txt")
    with pytest.raises(TranscriptError, match=r"chat.txt:2: text: the turn has a role but no text"):
        parse_text("买家: 在吗\n客服:  \n", "chat.txt")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("short.csv", "dialogue_id,turn,role,text\nd1,1,agent\n", "short.csv:2: 3 fields, the header has 4 (no text)"),
        ("list.jsonl", '{"id": "a", "turns": [{"role": "agent", "text": "好"}]}\n[1, 2]\n', "list.jsonl:2: each line must be one JSON object"),
        ("numbers.jsonl", '{"id": "x", "turns": [1, 2]}\n', "numbers.jsonl:1: turns[0]: Input should be a valid dictionary"),
        ("string.jsonl", '{"id": "x", "turns": "hi"}\n', "string.jsonl:1: turns: Input should be a valid list"),
    ],
)
def test_malformed_files_give_an_error_located_at_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TranscriptError) as raised:
        read_transcripts([path])
    assert message in str(raised.value)
