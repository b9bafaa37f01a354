"""Bad input, fuzzed and by hand: readers either give transcripts or a located error, never a crash."""

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zhijian.transcripts import ReadProblem, TranscriptError, iter_transcripts, parse_text, read_transcripts

FUZZ = settings(max_examples=int(os.environ.get("ZHIJIAN_FUZZ_EXAMPLES", 300)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_or_located_error(path):
    """What every reader promises: transcripts, or a TranscriptError that names the file (and line)."""
    try:
        return read_transcripts([path])
    except TranscriptError as error:
        assert str(path) in str(error)
        return None


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".txt"]))
def test_any_bytes_give_transcripts_or_a_located_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"input{suffix}"
    path.write_bytes(data)
    read_or_located_error(path)


turn = st.fixed_dictionaries(
    {"role": st.sampled_from(["agent", "customer", "manager", "", None, 3]), "text": st.one_of(st.text(max_size=30), st.none(), st.integers())},
    optional={"ts": st.one_of(st.floats(allow_nan=True), st.integers(-5, 100), st.text(max_size=3)),
              "labels": st.one_of(st.lists(st.sampled_from(["abuse", "rude", "", "off_platform"]), max_size=3), st.text(max_size=5)),
              "tone": st.one_of(st.integers(-2, 8), st.floats(), st.none())},
)
dialogue = st.one_of(
    st.fixed_dictionaries({"id": st.one_of(st.text(max_size=5), st.integers()), "turns": st.lists(turn, max_size=5)}),
    st.lists(st.integers(), max_size=2), st.text(max_size=5), st.none(),
)


@FUZZ
@given(dialogues=st.lists(dialogue, min_size=1, max_size=4))
def test_json_lines_of_any_shape_are_read_or_rejected_by_line_and_field(tmp_path_factory, dialogues):
    path = tmp_path_factory.mktemp("fuzz") / "chats.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dialogues), encoding="utf-8")
    problems: list[ReadProblem] = []
    good = list(iter_transcripts(path, on_error=problems))
    assert len(good) + len(problems) == len(dialogues)  # every line is read or reported, none lost
    for problem in problems:
        assert f"{path}:" in str(problem.error)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_parses_or_names_the_line(text):
    try:
        parse_text(text, "chat.txt")
    except TranscriptError as error:
        assert "chat.txt:" in str(error)


HAND_CASES = {  # name: (content, the error it must give at its line, or the number of dialogues it must read)
    "empty.jsonl": (b"", 0),
    "no_turns.jsonl": (b'{"id": "a", "turns": []}\n', ":1: turns: List should have at least 1 item"),
    "unknown_role.jsonl": ('{"id": "a", "turns": [{"role": "manager", "text": "你好"}]}\n'.encode(), ":1: turns[0].role: Input should be 'agent' or 'customer'"),
    "time_back.jsonl": (
        b'{"id": "a", "turns": [{"role": "customer", "text": "a", "ts": 9}, {"role": "agent", "text": "b", "ts": 3}]}\n',
        ":1: dialogue: turns[1].ts goes back in time (3.0 < 9.0)",
    ),
    "bad_utf8.jsonl": (b'{"id": "a", "turns": [{"role": "agent", "text": "\xff\xfe"}]}\n', ":1: not UTF-8 text (byte 0xff)"),
    "nul.txt": ("客服: 你好\x00世界\n".encode(), 1),  # a NUL is a character like any other: kept as sent
    "bad_utf8.txt": (b"\xe5\xae\xa2\xe6\x9c\x8d: \xff\n", ":1: not UTF-8 text (byte 0xff)"),
    "bad_utf8.csv": (b"dialogue_id,turn,role,text\nd,1,agent,\xff\n", ":2: not UTF-8 text (byte 0xff)"),
}


@pytest.mark.parametrize("name", sorted(HAND_CASES))
def test_hand_written_bad_files_get_their_own_outcome(tmp_path, name):
    content, expected = HAND_CASES[name]
    path = tmp_path / name
    path.write_bytes(content)
    if isinstance(expected, int):
        assert len(read_transcripts([path])) == expected
        return
    with pytest.raises(TranscriptError) as refused:
        read_transcripts([path])
    assert f"{path}{expected}" in str(refused.value)


def test_hand_written_odd_but_valid_chats_are_read():
    chats = parse_text("买家: 😀😀😀\n客服: 親,這個可以退貨的哦,您放心\n买家: <script>alert(1)</script>\n客服: " + "好" * 100_000 + "\n")[0]
    assert chats.turns[2].text == "<script>alert(1)</script>" and len(chats.turns[3].text) == 100_000
    many = parse_text("".join(f"买家: 问题{n}\n客服: 回答{n}\n" for n in range(5000)))[0]
    assert len(many.turns) == 10_000
