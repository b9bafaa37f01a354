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
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from zhijian.config import FeaturesSection
from zhijian.taxonomy import AGENT, ROLE_ZH
from zhijian.transcripts import Transcript


def normalize(text: str) -> str:
    """NFKC folds full-width letters, digits and punctuation (ＯＫ，１２ -> OK,12) before tokenizing."""
    return unicodedata.normalize("NFKC", text)


@dataclass(frozen=True)
class AgentTurnFeatures:
    dialogue: int  # position of the dialogue in the input list
    turn: int  # index of the agent turn within its dialogue
    input_ids: list[int]
    token_type_ids: list[int]

    def as_model_input(self) -> dict[str, list[int]]:
        return {
            "input_ids": self.input_ids,
            "token_type_ids": self.token_type_ids,
            "attention_mask": [1] * len(self.input_ids),
        }


class Featurizer:
    def __init__(self, tokenizer, config: FeaturesSection):
        self.tokenizer = tokenizer
        self.config = config
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.role_prefix = {
            role: self._tokenize([f"{name}:"])[0] for role, name in ROLE_ZH.items()
        }

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer([normalize(t) for t in texts], add_special_tokens=False)["input_ids"]

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

    def encode(self, dialogues: Sequence[Transcript], roles: Collection[str] = (AGENT,)) -> list[AgentTurnFeatures]:
        """Features for every agent turn of every dialogue, in order (every turn of the given roles:
        pre-training reads customer turns too, in the same form)."""
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
                input_ids, token_type_ids = self.encode_pair(context, turn_ids[t])
                features.append(AgentTurnFeatures(d, t, input_ids, token_type_ids))
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

    def encode_variants(self, dialogue: Transcript, turn: int, texts: Sequence[str], d: int = 0) -> list[AgentTurnFeatures]:
        """One agent turn with its real context but other target texts (occlusion: the turn with a span cut out)."""
        window = range(self._context_start(turn), turn)
        context_ids = self._tokenize([dialogue.turns[c].text for c in window])
        context = [self.role_prefix[dialogue.turns[c].role] + ids for c, ids in zip(window, context_ids)]
        return [
            AgentTurnFeatures(d, turn, *self.encode_pair(context, target))
            for target in self._tokenize(list(texts))
        ]


def pad_batch(rows: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, "torch.Tensor"]:
    """Pad token rows to the longest in the batch (not to max_length: padding costs more than the kernel on CPU)."""
    import torch

    width = max(len(row["input_ids"]) for row in rows)
    batch = {}
    for key, fill in (("input_ids", pad_id), ("token_type_ids", 0), ("attention_mask", 0)):
        batch[key] = torch.tensor([row[key] + [fill] * (width - len(row[key])) for row in rows], dtype=torch.long)
    return batch
