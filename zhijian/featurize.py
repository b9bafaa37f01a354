"""Featurization: how an agent turn and its preceding context become model input.

The one place training and serving turn text into token ids, so the two cannot drift apart.
Each agent turn is encoded as the pair ``[CLS] context [SEP] target [SEP]``: segment 0 holds the
preceding turns, each prefixed with its role (买家:/客服:), and segment 1 the agent turn being
judged. The customer's question matters: "不能" answers a refund request differently from a size
question. When the input is too long the context is cut, never the target; only a target that
alone exceeds ``max_length`` is cut, from its end.
"""

from __future__ import annotations

import unicodedata
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from zhijian.config import FeaturesSection
from zhijian.taxonomy import AGENT, ROLE_ZH
from zhijian.transcripts import Transcript


def normalize(text: str) -> str:
    """NFKC folds full-width letters, digits and punctuation (ＯＫ，１２ -> OK,12) before tokenizing."""
    return unicodedata.normalize("NFKC", text)


@cache
def _traditional_to_simplified() -> dict[int, str]:
    """OpenCC's Traditional -> Simplified character table (its first choice per character).

    Character by character, not OpenCC's phrase conversion: one character in, one out, and fast
    enough for every turn the server reads.
    """
    import opencc

    table = {}
    path = Path(opencc.__file__).parent / "dictionary" / "TSCharacters.txt"
    for line in path.read_text(encoding="utf-8").splitlines():
        traditional, _, simplified = line.partition("\t")
        first = simplified.split(" ")[0]
        if len(traditional) == 1 and len(first) == 1:
            table[ord(traditional)] = first
    return table


def to_simplified(text: str) -> str:
    return text.translate(_traditional_to_simplified())


def ngram_ids(text: str, buckets: int, orders: Sequence[int]) -> list[int]:
    """The distinct character n-grams of a text, hashed into 1..buckets-1 (0 is padding), sorted.

    Hashing (CRC-32, stable across runs and machines) needs no vocabulary file: the model folder's
    config says how many buckets, and any text maps into them.
    """
    grams = {text[i : i + n] for n in orders for i in range(len(text) - n + 1)}
    return sorted({zlib.crc32(gram.encode("utf-8")) % (buckets - 1) + 1 for gram in grams})


@dataclass(frozen=True)
class AgentTurnFeatures:
    dialogue: int  # position of the dialogue in the input list
    turn: int  # index of the agent turn within its dialogue
    input_ids: list[int]
    token_type_ids: list[int]
    ngram_ids: list[int] | None = None  # the target turn's hashed character n-grams (models with an n-gram head)
    window: tuple[int, int] | None = None  # the characters of a long target read in this input (None: all of it)

    @property
    def starts_turn(self) -> bool:
        """The first (or only) input of its target: a long target's later windows continue it."""
        return self.window is None or self.window[0] == 0

    def as_model_input(self) -> dict[str, list[int]]:
        row = {
            "input_ids": self.input_ids,
            "token_type_ids": self.token_type_ids,
            "attention_mask": [1] * len(self.input_ids),
        }
        if self.ngram_ids is not None:
            row["ngram_ids"] = self.ngram_ids or [0]
        return row


class Featurizer:
    def __init__(self, tokenizer, config: FeaturesSection):
        self.tokenizer = tokenizer
        self.config = config
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.role_prefix = {
            role: self._tokenize([f"{name}:"])[0] for role, name in ROLE_ZH.items()
        }

    def normalize(self, text: str) -> str:
        text = normalize(text)
        return to_simplified(text) if self.config.to_simplified else text

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer([self.normalize(t) for t in texts], add_special_tokens=False)["input_ids"]

    def ngrams(self, text: str) -> list[int] | None:
        """The n-gram head's input for a target turn, or None for a model without one."""
        if not self.config.ngram_buckets:
            return None
        return ngram_ids(self.normalize(text).lower(), self.config.ngram_buckets, self.config.ngram_orders)

    def encode_pair(self, context: list[list[int]], target: list[int]) -> tuple[list[int], list[int]]:
        """Token ids and segment ids for one target turn and its (already tokenized) context turns."""
        budget = self.config.max_length - 3  # [CLS] context [SEP] target [SEP]
        target = target[:budget]
        room = budget - len(target)
        context_ids = [token for turn in context for token in turn]
        if len(context_ids) > room:
            if self.config.truncation_side == "left":
                context_ids = context_ids[len(context_ids) - room :] if room else []
            else:
                context_ids = context_ids[:room]
        first = [self.cls_id, *context_ids, self.sep_id]
        second = [*target, self.sep_id]
        return first + second, [0] * len(first) + [1] * len(second)

    def _context_start(self, turn: int) -> int:
        return max(0, turn - self.config.context_turns)

    def windows(self, length: int) -> list[tuple[int, int] | None]:
        """How a target of `length` characters is read: whole ([None]), or, past `window_chars`, in windows
        of that size overlapping by half, so every clause up to half a window lies whole in one of them."""
        size = self.config.window_chars
        if not size or length <= size:
            return [None]
        stride = max(1, size // 2)
        starts = list(range(0, length - size, stride)) + [length - size]
        return [(start, start + size) for start in starts]

    def _target_features(self, d: int, t: int, context: list[list[int]], text: str, whole_ids: list[int] | None, windows: bool) -> list[AgentTurnFeatures]:
        """One target text with its context: one input, or one per window of a long text (consecutive)."""
        spans = self.windows(len(text)) if windows else [None]
        features = []
        for span in spans:
            part = text if span is None else text[span[0] : span[1]]
            ids = whole_ids if span is None and whole_ids is not None else self._tokenize([part])[0]
            features.append(AgentTurnFeatures(d, t, *self.encode_pair(context, ids), self.ngrams(part), span))
        return features

    def encode(self, dialogues: Sequence[Transcript], roles: Collection[str] = (AGENT,), windows: bool = True) -> list[AgentTurnFeatures]:
        """Features for every agent turn of every dialogue, in order (every turn of the given roles:
        pre-training reads customer turns too, in the same form). With `windows`, a turn longer than
        `window_chars` gives one feature per window, in a row (see `merge_windows`); training reads
        each turn whole."""
        texts = [turn.text for dialogue in dialogues for turn in dialogue.turns]
        token_ids = iter(self._tokenize(texts))
        features = []
        for d, dialogue in enumerate(dialogues):
            turn_ids = [next(token_ids) for _ in dialogue.turns]
            for t, turn in enumerate(dialogue.turns):
                if turn.role not in roles:
                    continue
                context = [
                    self.role_prefix[dialogue.turns[c].role] + turn_ids[c] for c in range(self._context_start(t), t)
                ]
                features += self._target_features(d, t, context, turn.text, turn_ids[t], windows)
        return features

    def encode_dialogue(self, dialogue: Transcript) -> AgentTurnFeatures:
        """The whole dialogue, both roles, as one input: ``[CLS] 买家:… 客服:… [SEP]`` (dialogue-level heads).

        When it is too long, the longest turns are cut first, each keeping its opening, so every turn
        keeps a voice: the customer's problem and the last answer both stay.
        """
        turns = [self.role_prefix[turn.role] + ids for turn, ids in zip(dialogue.turns, self._tokenize([t.text for t in dialogue.turns]))]
        budget = self.config.dialogue_max_length - 2
        low, cap = 0, max((len(ids) for ids in turns), default=0)
        while low < cap:  # the largest per-turn cap that fits the budget (binary search)
            middle = (low + cap + 1) // 2
            if sum(min(len(ids), middle) for ids in turns) <= budget:
                low = middle
            else:
                cap = middle - 1
        input_ids = [self.cls_id, *(token for ids in turns for token in ids[:cap]), self.sep_id]
        return AgentTurnFeatures(0, len(dialogue.turns) - 1, input_ids, [0] * len(input_ids))

    def encode_variants(self, dialogue: Transcript, turn: int, texts: Sequence[str], d: int = 0) -> list[list[AgentTurnFeatures]]:
        """One agent turn with its real context but other target texts (occlusion: the turn with a span cut
        out): per text, its features (several for a text longer than `window_chars`)."""
        window = range(self._context_start(turn), turn)
        context_ids = self._tokenize([dialogue.turns[c].text for c in window])
        context = [self.role_prefix[dialogue.turns[c].role] + ids for c, ids in zip(window, context_ids)]
        return [self._target_features(d, turn, context, text, None, True) for text in texts]


def merge_windows(features: Sequence[AgentTurnFeatures], logits, tone) -> tuple[list[int], "np.ndarray", "np.ndarray"]:
    """Per target turn (a run of window features, or one whole feature): the index of its first feature,
    each label's highest logit over the windows (a violation anywhere in a long reply counts) and the
    mean tone."""
    import numpy as np

    starts = [i for i, feature in enumerate(features) if feature.starts_turn]
    if len(starts) == len(features):
        return starts, logits, tone
    bounds = starts + [len(features)]
    merged_logits = np.stack([logits[a:b].max(axis=0) for a, b in zip(bounds, bounds[1:])]) if starts else logits[:0]
    merged_tone = np.array([tone[a:b].mean() for a, b in zip(bounds, bounds[1:])], dtype=tone.dtype)
    return starts, merged_logits, merged_tone


TOKEN_FIELDS = ("input_ids", "token_type_ids", "attention_mask")


def pad_batch(rows: Sequence[dict[str, list[int]]], tokenizer) -> dict[str, "torch.Tensor"]:
    """Pad token rows (`as_model_input`) to the longest in the batch (not to max_length: padding costs more than the
    kernel on CPU) with the tokenizer's own `pad` (its pad id and side); n-gram ids, which the tokenizer does not
    know, are padded with 0 (an empty bucket). Other fields of the rows (training's labels, tone) are left to the caller."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    batch = dict(tokenizer.pad([{key: row[key] for key in TOKEN_FIELDS} for row in rows], padding="longest", return_tensors="pt"))
    if any("ngram_ids" in row for row in rows):
        # A row without n-grams (a whole dialogue read for the quality head, beside turn rows) adds none.
        ngrams = [torch.tensor(row.get("ngram_ids", [0]), dtype=torch.long) for row in rows]
        batch["ngram_ids"] = pad_sequence(ngrams, batch_first=True, padding_value=0)
    return batch
