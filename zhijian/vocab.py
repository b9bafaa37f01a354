"""A BERT ``vocab.txt`` the project builds itself, so the from-scratch model never downloads one.

Chinese is tokenized per character by BERT's basic tokenizer, so the vocabulary is the CJK Unified
Ideographs block (which holds the Traditional forms too), ASCII letters and digits (as words and as
``##`` continuations, so "iphone15" splits into characters rather than [UNK]), and the
punctuation, symbols and emoji that chats use.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Punctuation and symbols common in Chinese chats (full-width forms are NFKC-folded before tokenizing).
CHAT_SYMBOLS = "。、“”‘’《》〈〉【】『』「」〔〕…—～·￥•→←↑↓√×÷°℃％‰※★☆♥❤♡○●◎◇◆□■△▲"
EMOJI_RANGES = [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x2600, 0x26FF)]
CJK_UNIFIED = (0x4E00, 0x9FFF)


def build_scratch_vocab() -> list[str]:
    tokens = list(SPECIAL_TOKENS)
    seen = set(tokens)

    def add(token: str) -> None:
        if token not in seen:
            seen.add(token)
            tokens.append(token)

    for code in range(0x21, 0x7F):  # printable ASCII; the tokenizer lower-cases letters
        char = chr(code)
        if not char.isupper():
            add(char)
    for char in "abcdefghijklmnopqrstuvwxyz0123456789":
        add("##" + char)
    for char in CHAT_SYMBOLS:
        add(char)
    for start, end in EMOJI_RANGES:
        for code in range(start, end + 1):
            add(chr(code))
    for code in range(CJK_UNIFIED[0], CJK_UNIFIED[1] + 1):
        add(chr(code))
    return tokens


def write_scratch_vocab(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(build_scratch_vocab()) + "\n", encoding="utf-8")
    return path
