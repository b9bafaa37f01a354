"""`zhijian data build`: compose the labeled training corpus from the recipe in ``data/recipe``.

The recipe is data written by several authors independently (label banks of situations with
violating and clean replies, everyday situations, openers, closers, style deviations); this module
only composes it: dialogues with openers, one or two violating exchanges or none, clean fillers,
closings, timestamps, real-chat deviations and a share of Traditional Chinese. Validation uses
situations that training never sees, and a leakage guard refuses any agent turn that is a (near)
copy of a turn of the held-out evaluation set.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from scipy import sparse

from zhijian.files import write_atomic
from zhijian.config import describe_validation_error
from zhijian.taxonomy import LABEL_IDS, TONE_MAX, TONE_MIN, LabelId

Phase = Literal["pre_sale", "payment", "shipping", "after_sales", "review"]


# ---------------------------------------------------------------------------------------------
# The recipe's schema: every file is validated, errors name the file and the key.


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reply(Strict):
    text: str = Field(min_length=1)
    tone: int = Field(ge=TONE_MIN, le=TONE_MAX)
    also: list[LabelId] = Field(default_factory=list)


Script = Literal["simplified", "traditional"]


class Situation(Strict):
    script: Script = "simplified"  # set from its bank: a Traditional situation makes its whole dialogue Traditional
    phase: Phase
    categories: list[str] = Field(default_factory=list)
    customer: list[str] = Field(min_length=1)
    violating: list[Reply] = Field(default_factory=list)
    clean: list[Reply] = Field(default_factory=list)


class LabelBank(Strict):
    label: str
    script: Script = "simplified"  # "traditional": written in Traditional characters (HK / TW shops)
    situations: list[Situation] = Field(min_length=1)


class PlatformTurn(Strict):
    role: Literal["customer", "agent"]
    text: str = Field(min_length=1)
    tone: int | None = Field(None, ge=TONE_MIN, le=TONE_MAX)


class PlatformExchange(Strict):
    """A stretch of a real-platform chat, every agent turn clean: split replies, bursts, templates, waits."""

    phase: Phase
    turns: list[PlatformTurn] = Field(min_length=2)

    @field_validator("turns")
    @classmethod
    def _agent_tone(cls, turns: list[PlatformTurn]) -> list[PlatformTurn]:
        missing = [i for i, turn in enumerate(turns) if turn.role == "agent" and turn.tone is None]
        if missing:
            raise ValueError(f"agent turn(s) {missing} have no `tone`")
        if not any(turn.role == "agent" for turn in turns):
            raise ValueError("no agent turn")
        return turns


class PlatformBank(Strict):
    part: str
    exchanges: list[PlatformExchange] = Field(min_length=1)


class CleanSituations(Strict):
    situations: list[Situation] = Field(min_length=1)


class Category(Strict):
    id: str
    name: str
    products: list[str] = Field(min_length=1)
    attributes: list[str] = Field(default_factory=list)


class Categories(Strict):
    categories: list[Category] = Field(min_length=1)


class Openers(Strict):
    customer: list[str] = Field(min_length=1)
    agent_greeting: list[Reply] = Field(min_length=1)
    agent_no_greeting: list[Reply] = Field(min_length=1)


class Closers(Strict):
    agent_closing: list[Reply] = Field(min_length=1)
    customer_closing: list[str] = Field(min_length=1)


class Styles(Strict):
    slang: dict[str, list[str]]
    typos: dict[str, list[str]]
    emoji: list[str]
    tags: list[str]
    polite_prefix: list[str]
    polite_suffix: list[str]
    english_mix: dict[str, list[str]]
    numerals: dict[str, list[str]]


class StyleRates(Strict):
    slang: float = 0.0
    typo: float = 0.0
    emoji: float = 0.0
    tag: float = 0.0
    no_punctuation: float = 0.0
    english: float = 0.0
    numerals: float = 0.0
    wrap_agent_reply: float = 0.0


class BuildPlan(Strict):
    valid_share: float = Field(gt=0, lt=1)
    violating_per_label: int = Field(ge=1)
    second_violation_share: float = Field(ge=0, le=1)
    contrast_share: float = Field(ge=0, le=1)
    hard_negatives_per_label: int = Field(ge=0)
    clean_dialogues: int = Field(ge=0)
    filler_exchanges: list[int] = Field(min_length=1)
    opener_share: float = Field(ge=0, le=1)
    no_greeting_share: float = Field(ge=0, le=1)
    closing_share: float = Field(ge=0, le=1)
    agent_first_share: float = Field(0.0, ge=0, le=1, description="Dialogues cut to start at their first agent turn (no customer context).")
    timestamps_share: float = Field(ge=0, le=1)
    traditional_share: float = Field(ge=0, le=1)
    extra_banks: list[str] = Field(
        default_factory=list, description="Folders of more label banks (<label>.yaml each), appended to labels/."
    )
    platform_banks: list[str] = Field(default_factory=list, description="Folders of platform exchanges (any *.yaml).")
    platform_dialogues: int = Field(0, ge=0, description="Dialogues made of platform exchanges only.")
    platform_filler_share: float = Field(0.0, ge=0, le=1, description="Share of fillers that are platform exchanges.")
    styles: StyleRates
    wrap_excluded_labels: list[str] = Field(default_factory=list)


class RecipeError(ValueError):
    pass


def _load(path: Path, schema: type[BaseModel]):
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: missing recipe file") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise RecipeError(f"{path}: {describe_validation_error(error, most=5)}") from None


@dataclass
class Recipe:
    banks: dict[str, LabelBank]
    platform: list[tuple[str, PlatformExchange]]  # (split key, exchange)
    situations: CleanSituations
    categories: dict[str, Category]
    openers: Openers
    closers: Closers
    styles: Styles
    plan: BuildPlan

    @classmethod
    def load(cls, folder: Path) -> Recipe:
        folder = Path(folder)
        banks = {}
        for label in LABEL_IDS:
            bank = _load(folder / "labels" / f"{label}.yaml", LabelBank)
            if bank.label != label:
                raise RecipeError(f"{folder}/labels/{label}.yaml: `label` is {bank.label!r}, expected {label!r}")
            banks[label] = bank
        dialogue = folder / "dialogue"
        plan = _load(folder / "build.yaml", BuildPlan)
        for extra in plan.extra_banks:  # appended: the split keys (label:index) of labels/ stay as they were
            for label in LABEL_IDS:
                path = folder / extra / f"{label}.yaml"
                if not path.is_file():
                    continue
                bank = _load(path, LabelBank)
                if bank.label != label:
                    raise RecipeError(f"{path}: `label` is {bank.label!r}, expected {label!r}")
                situations = [s.model_copy(update={"script": bank.script}) for s in bank.situations]
                banks[label] = banks[label].model_copy(update={"situations": banks[label].situations + situations})
        platform = [
            (f"platform:{path.stem}:{index}", exchange)
            for extra in plan.platform_banks
            for path in sorted((folder / extra).glob("*.yaml"))
            for index, exchange in enumerate(_load(path, PlatformBank).exchanges)
        ]
        recipe = cls(
            banks=banks,
            platform=platform,
            situations=_load(dialogue / "situations.yaml", CleanSituations),
            categories={c.id: c for c in _load(dialogue / "categories.yaml", Categories).categories},
            openers=_load(dialogue / "openers.yaml", Openers),
            closers=_load(dialogue / "closers.yaml", Closers),
            styles=_load(dialogue / "styles.yaml", Styles),
            plan=plan,
        )
        recipe._check_categories(folder)
        return recipe

    def _check_categories(self, folder: Path) -> None:
        sources = [(f"labels/{label}.yaml", bank.situations) for label, bank in self.banks.items()]
        sources.append(("dialogue/situations.yaml", self.situations.situations))
        for name, situations in sources:
            for index, situation in enumerate(situations):
                unknown = [c for c in situation.categories if c not in self.categories]
                if unknown:
                    raise RecipeError(
                        f"{folder}/{name}: situations.{index}.categories: unknown {unknown}; "
                        f"known: {', '.join(self.categories)}"
                    )


# ---------------------------------------------------------------------------------------------
# Composition.


def in_validation(key: str, share: float) -> bool:
    """A stable split by content, independent of the seed: the same situation is always on the same side."""
    return int(hashlib.md5(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


@dataclass
class Exchange:
    """A customer setup and the agent's answer to it."""

    customer: str
    reply: Reply
    labels: list[str]
    categories: list[str]
    situation: Situation
    key: str


_PUNCTUATION = re.compile(r"[,,。.!!??~～、;;]")
_SLOT = re.compile(r"\{(product|price|days)\}")


@dataclass
class Composer:
    recipe: Recipe
    rng: random.Random
    split: str  # "train" or "valid"
    converter: object = None
    scale: float = 1.0  # multiplies every count of the plan (small corpora for tests and trials)
    dialogues: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.valid = self.split == "valid"
        share = self.recipe.plan.valid_share
        keep = lambda key: in_validation(key, share) == self.valid  # noqa: E731
        self.greetings = [r for r in self.recipe.openers.agent_greeting if keep("greet:" + r.text)]
        self.no_greetings = [r for r in self.recipe.openers.agent_no_greeting if keep("nogreet:" + r.text)]
        self.closings = [r for r in self.recipe.closers.agent_closing if keep("close:" + r.text)]
        self.customer_openers = self.recipe.openers.customer
        self.customer_closings = self.recipe.closers.customer_closing
        self.label_situations = {
            label: [(f"{label}:{i}", s) for i, s in enumerate(bank.situations) if keep(f"{label}:{i}")]
            for label, bank in self.recipe.banks.items()
        }
        self.clean_situations = [
            (f"clean:{i}", s) for i, s in enumerate(self.recipe.situations.situations) if keep(f"clean:{i}")
        ]
        self.platform = [exchange for key, exchange in self.recipe.platform if keep(key)]
        styles = self.recipe.styles
        # Single characters are left out of word swaps: replacing 了/的 anywhere breaks other words.
        self.slang = {k: v for k, v in styles.slang.items() if len(k) > 1 or k == "亲"}
        self.typos = {k: v for k, v in styles.typos.items() if len(k) > 1}
        self.english = {k: v for k, v in styles.english_mix.items() if len(k) > 1}
        self.numerals = {k: v for k, v in styles.numerals.items() if k.isdigit() and len(k) == 1}

    def scaled(self, count: int) -> int:
        share = self.recipe.plan.valid_share
        return max(1, round(count * self.scale * (share if self.valid else 1 - share)))

    # -- text ---------------------------------------------------------------------------------

    def fill(self, text: str, product: str) -> str:
        def value(match: re.Match) -> str:
            slot = match.group(1)
            if slot == "product":
                return product
            if slot == "price":
                return str(self.rng.choice([9.9, 19, 29, 39, 59, 68, 88, 99, 128, 159, 199, 239, 299, 399, 599, 899, 1299, 2499]))
            return str(self.rng.randint(1, 7))

        return _SLOT.sub(value, text)

    def swap(self, text: str, table: dict[str, list[str]]) -> str:
        present = [key for key in table if key in text]
        if not present:
            return text
        key = self.rng.choice(present)
        return text.replace(key, self.rng.choice(table[key]), 1)

    def style(self, text: str) -> str:
        rates, rng, styles = self.recipe.plan.styles, self.rng, self.recipe.styles
        if rng.random() < rates.slang:
            text = self.swap(text, self.slang)
        if rng.random() < rates.typo:
            text = self.swap(text, self.typos)
        if rng.random() < rates.english:
            text = self.swap(text, self.english)
        if rng.random() < rates.numerals:
            text = self.swap(text, self.numerals)
        if rng.random() < rates.no_punctuation:
            text = _PUNCTUATION.sub(rng.choice(["", " "]), text).strip() or text
        if rng.random() < rates.emoji:
            text += rng.choice(styles.emoji)
        if rng.random() < rates.tag:
            text = rng.choice([text + rng.choice(styles.tags), rng.choice(styles.tags) + text])
        return text

    def wrap(self, text: str) -> str:
        """A long message: the reply between polite clauses (the clauses are clean for every label)."""
        styles, rng = self.recipe.styles, self.rng
        joiner = lambda: rng.choice([",", ",", " ", "~", "。"])  # noqa: E731
        choice = rng.random()
        if choice < 0.4:
            return rng.choice(styles.polite_prefix) + joiner() + text
        if choice < 0.7:
            return text + joiner() + rng.choice(styles.polite_suffix)
        return rng.choice(styles.polite_prefix) + joiner() + text + joiner() + rng.choice(styles.polite_suffix)

    def agent_turn(self, reply: Reply, labels: list[str], product: str, wrap: bool = False) -> dict:
        text, tone = self.fill(reply.text, product), reply.tone
        excluded = set(self.recipe.plan.wrap_excluded_labels)
        wrap = wrap and not excluded & set(labels)
        if wrap and self.rng.random() < self.recipe.plan.styles.wrap_agent_reply:
            text = self.wrap(text)
            if not labels and tone == 3:
                tone = 4  # a correct reply wrapped in courtesy reads polite
        return {"role": "agent", "text": self.style(text), "labels": sorted(set(labels)), "tone": tone, PLAIN: text}

    def customer_turn(self, text: str, product: str) -> dict:
        text = self.fill(text, product)
        return {"role": "customer", "text": self.style(text), PLAIN: text}

    # -- exchanges ----------------------------------------------------------------------------

    def violating_exchange(self, label: str) -> Exchange:
        key, situation = self.rng.choice([s for s in self.label_situations[label] if s[1].violating])
        reply = self.rng.choice(situation.violating)
        return Exchange(
            self.rng.choice(situation.customer), reply, [label, *reply.also], situation.categories, situation, key
        )

    def clean_exchange(self, pool: list[tuple[str, Situation]]) -> Exchange:
        key, situation = self.rng.choice([s for s in pool if s[1].clean])
        return Exchange(self.rng.choice(situation.customer), self.rng.choice(situation.clean), [], situation.categories, situation, key)

    def filler(self, category: str) -> Exchange | PlatformExchange:
        if self.platform and self.rng.random() < self.recipe.plan.platform_filler_share:
            return self.rng.choice(self.platform)
        fitting = [s for s in self.clean_situations if not s[1].categories or category in s[1].categories]
        return self.clean_exchange(fitting)

    def platform_turns(self, exchange: PlatformExchange) -> list[dict]:
        """The exchange as written, its placeholders sometimes given values, each text styled like any other."""
        turns = []
        for turn in exchange.turns:
            plain = self.fill_placeholders(turn.text)
            if turn.role == "agent":
                turns.append({"role": "agent", "text": self.style(plain), "labels": [], "tone": turn.tone, PLAIN: plain})
            else:
                turns.append({"role": "customer", "text": self.style(plain), PLAIN: plain})
        return turns

    def fill_placeholders(self, text: str) -> str:
        """Real chats show an order number or an amount where the anonymized CSDS shows [订单编号] / [金额]: both, half each."""
        if "[订单编号]" in text and self.rng.random() < 0.5:
            text = text.replace("[订单编号]", str(self.rng.randint(10**11, 10**12 - 1)))
        if "[金额]" in text and self.rng.random() < 0.5:
            text = text.replace("[金额]", str(self.rng.choice([19.9, 59, 99, 138, 269, 1099])))
        return text

    # -- dialogues ----------------------------------------------------------------------------

    def pick_category(self, exchanges: list[Exchange | PlatformExchange]) -> str:
        allowed = set(self.recipe.categories)
        for exchange in exchanges:
            if isinstance(exchange, Exchange) and exchange.categories:
                allowed &= set(exchange.categories)
        return self.rng.choice(sorted(allowed or self.recipe.categories))

    def dialogue(self, main: list[Exchange | PlatformExchange], seed: int, kind: str) -> dict:
        """One dialogue around its main exchanges; `seed` fixes everything but the main replies, for contrast twins."""
        outer, self.rng = self.rng, random.Random(seed)
        plan = self.recipe.plan
        category = self.pick_category(main)
        product = self.rng.choice(self.recipe.categories[category].products)
        turns: list[dict] = []
        if self.rng.random() < plan.opener_share:
            turns.append(self.customer_turn(self.rng.choice(self.customer_openers), product))
            no_greeting = self.rng.random() < plan.no_greeting_share
            opening = self.rng.choice(self.no_greetings if no_greeting else self.greetings)
            turns.append(self.agent_turn(opening, [], product))
        fillers = [self.filler(category) for _ in range(self.rng.choice(plan.filler_exchanges))]
        position = self.rng.randint(0, len(fillers))
        self.rng, main_rng = outer, self.rng
        for index, exchange in enumerate(fillers[:position] + [None] * len(main) + fillers[position:]):
            if exchange is None:
                exchange = main[index - position]
                self.rng = outer  # the main replies differ between twins; their styling may too
            else:
                self.rng = main_rng
            if isinstance(exchange, PlatformExchange):
                turns += self.platform_turns(exchange)
                continue
            turns.append(self.customer_turn(exchange.customer, product))
            turns.append(self.agent_turn(exchange.reply, exchange.labels, product, wrap=True))
        self.rng = main_rng
        if self.rng.random() < plan.closing_share:
            if self.rng.random() < 0.8:
                turns.append(self.customer_turn(self.rng.choice(self.customer_closings), product))
            turns.append(self.agent_turn(self.rng.choice(self.closings), [], product))
        if self.rng.random() < plan.agent_first_share:  # real transcripts often start at the agent: a topic cut, an auto-greeting
            first_agent = next(i for i, turn in enumerate(turns) if turn["role"] == "agent")
            turns = turns[first_agent:]
        first = main[0] if main else None
        phase = first.phase if isinstance(first, PlatformExchange) else first.situation.phase if first else "pre_sale"
        if self.rng.random() < plan.timestamps_share:
            self.add_timestamps(turns)
        script = "simplified"
        traditional = any(isinstance(e, Exchange) and e.situation.script == "traditional" for e in main)
        if self.converter is not None and (self.rng.random() < plan.traditional_share or traditional):
            script = "traditional"
            for turn in turns:
                turn["text"], turn[PLAIN] = self.converter.convert(turn["text"]), self.converter.convert(turn[PLAIN])
        self.rng = outer
        meta = {"category": category, "phase": phase, "kind": kind, "script": script, "split": self.split}
        return {"turns": turns, "meta": meta}

    def add_timestamps(self, turns: list[dict]) -> None:
        clock = 0
        for turn in turns:
            if turn["role"] == "customer":
                clock += self.rng.randint(3, 90)
            else:
                slow = self.rng.random() < 0.08
                clock += self.rng.randint(20, 600) if slow else max(1, int(self.rng.lognormvariate(2.2, 0.7)))
            turn["ts"] = clock

    def build(self) -> list[dict]:
        plan, rng = self.recipe.plan, self.rng
        violating = [self.violating_exchange(label) for label in LABEL_IDS for _ in range(self.scaled(plan.violating_per_label))]
        rng.shuffle(violating)
        dialogues = []
        while violating:
            main = [violating.pop()]
            if violating and rng.random() < plan.second_violation_share:
                main.append(violating.pop())
            seed = rng.getrandbits(32)
            dialogues.append(self.dialogue(main, seed, "violating"))
            if rng.random() < plan.contrast_share:  # the same setup, answered well
                twins = [
                    Exchange(m.customer, rng.choice(m.situation.clean), [], m.categories, m.situation, m.key)
                    for m in main
                    if m.situation.clean
                ]
                if twins:
                    dialogues.append(self.dialogue(twins, seed, "contrast"))
        for label in LABEL_IDS:
            pool = self.label_situations[label]
            for _ in range(self.scaled(plan.hard_negatives_per_label)):
                dialogues.append(self.dialogue([self.clean_exchange(pool)], rng.getrandbits(32), "hard_negative"))
        for _ in range(self.scaled(plan.clean_dialogues)):
            dialogues.append(self.dialogue([self.clean_exchange(self.clean_situations)], rng.getrandbits(32), "clean"))
        if self.platform:  # real-platform chats: one to three stretches, every agent turn clean
            for _ in range(self.scaled(plan.platform_dialogues)):
                stretches = [rng.choice(self.platform) for _ in range(rng.choice([1, 1, 2, 3]))]
                dialogues.append(self.dialogue(stretches, rng.getrandbits(32), "platform"))
        rng.shuffle(dialogues)
        for number, dialogue in enumerate(dialogues):
            dialogue["id"] = f"{self.split}-{number:06d}"
        return [{"id": d["id"], "turns": d["turns"], "meta": d["meta"]} for d in dialogues]


PLAIN = "_plain"  # a turn's text before the style deviations, kept while composing (see unstyle_near_copies)


def unstyle_near_copies(guard: LeakageGuard, dialogues: list[dict], roles: tuple[str, ...] = ("agent", "customer")) -> int:
    """Turns (of `roles`) whose styling happened to make them near copies of a protected turn (谢谢亲 ->
    "thank you亲", 不知道 -> 不晓得) go back to their plain text; the guard then checks them all.
    Returns how many were put back."""
    turns = [turn for dialogue in dialogues for turn in dialogue["turns"] if turn["role"] in roles]
    near = {text for _, text, _ in guard.leaks(turn["text"] for turn in turns if turn["text"] != turn[PLAIN])}
    changed = 0
    for turn in turns:
        if turn["text"] in near:
            turn["text"], changed = turn[PLAIN], changed + 1
    guard.check(turn["text"] for turn in turns)
    return changed


# ---------------------------------------------------------------------------------------------
# Leakage guard, statistics, writing.


_NOT_CONTENT = re.compile(r"[\s\W_]+")  # spaces and punctuation: 还有什么需要帮助的吗? and 还有什么需要帮助的吗 are the same text


def char_ngrams(text: str, n: int = 3) -> set[str]:
    text = _NOT_CONTENT.sub("", text) or text
    return {text[i : i + n] for i in range(len(text) - n + 1)} or {text}


class LeakageError(RuntimeError):
    pass


class LeakageGuard:
    """Refuses turns equal to, or near copies of (char 3-gram Jaccard >= threshold), protected turns.

    The protected turns are the evaluation set's agent turns, or every turn of the real chats in
    ``../shared/data`` (research data whose text must not enter the corpus). Jaccard of all pairs at
    once, as a sparse product of 3-gram incidence matrices: 40,000 real turns against a corpus in seconds.
    """

    def __init__(self, protected_texts: Iterable[str], threshold: float = 0.8, min_chars: int = 0, source: str = "the held-out evaluation set"):
        self.texts = list(protected_texts)
        self.threshold, self.min_chars, self.source = threshold, min_chars, source
        self.vocabulary: dict[str, int] = {}
        grams = [char_ngrams(text) for text in self.texts]
        for text_grams in grams:
            for gram in text_grams:
                self.vocabulary.setdefault(gram, len(self.vocabulary))
        self.matrix = self._incidence(grams).T.tocsr()  # (grams, protected texts)
        self.sizes = np.array([len(g) for g in grams], dtype=np.float32)

    def _incidence(self, grams: list[set[str]]) -> sparse.csr_matrix:
        rows, cols = [], []
        for row, text_grams in enumerate(grams):
            for gram in text_grams:
                if gram in self.vocabulary:
                    rows.append(row)
                    cols.append(self.vocabulary[gram])
        data = np.ones(len(rows), dtype=np.float32)
        return sparse.csr_matrix((data, (rows, cols)), shape=(len(grams), len(self.vocabulary)))

    @classmethod
    def from_transcripts(cls, path: Path, threshold: float = 0.8) -> LeakageGuard:
        texts = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts += [t["text"] for t in json.loads(line)["turns"] if t["role"] == "agent"]
        return cls(texts, threshold, source=f"the held-out evaluation set {path}")

    @classmethod
    def from_real_chats(cls, folder: Path, threshold: float = 0.8, min_chars: int = 8) -> LeakageGuard | None:
        """Every turn of the CSDS and STC-3 chats under ``folder`` (``../shared/data``); None when it is not there."""
        texts = real_chat_texts(folder)
        return cls(texts, threshold, min_chars, source=f"the real chats in {folder} (CSDS, STC-3)") if texts else None

    def nearest(self, texts: Sequence[str]) -> list[tuple[float, str | None]]:
        """For each text, the highest Jaccard to a protected turn and that turn."""
        result: list[tuple[float, str | None]] = []
        for start in range(0, len(texts), 512):
            grams = [char_ngrams(text) for text in texts[start : start + 512]]
            overlap = (self._incidence(grams) @ self.matrix).tocsr()  # |A ∩ B| for every pair that shares a gram
            sizes = np.array([len(g) for g in grams], dtype=np.float32)
            for row in range(overlap.shape[0]):
                begin, end = overlap.indptr[row], overlap.indptr[row + 1]
                if begin == end:
                    result.append((0.0, None))
                    continue
                columns, shared = overlap.indices[begin:end], overlap.data[begin:end]
                jaccard = shared / (sizes[row] + self.sizes[columns] - shared)
                best = int(np.argmax(jaccard))
                result.append((float(jaccard[best]), self.texts[columns[best]]))
        return result

    def closest(self, text: str) -> tuple[float, str | None]:
        return self.nearest([text])[0]

    def leaks(self, texts: Iterable[str]) -> list[tuple[float, str, str]]:
        candidates = sorted({text for text in texts if len(_NOT_CONTENT.sub("", text)) >= self.min_chars})
        found = zip(candidates, self.nearest(candidates))
        return sorted(((score, text, match) for text, (score, match) in found if score >= self.threshold), reverse=True)

    def check(self, texts: Iterable[str]) -> None:
        leaks = self.leaks(texts)
        if leaks:
            shown = "\n".join(f"  {score:.2f}  {text!r} ~ {match!r}" for score, text, match in leaks[:20])
            longer = f" of {self.min_chars}+ characters" if self.min_chars else ""
            raise LeakageError(
                f"{len(leaks)} turn(s){longer} copy or nearly copy {self.source} "
                f"(char 3-gram Jaccard >= {self.threshold}); the corpus was not written:\n{shown}"
            )


def recipe_texts(path: Path) -> list[str]:
    """Every string of a recipe YAML file (replies, customer lines, slot values): what the corpus can contain."""
    def strings(node) -> Iterable[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise RecipeError(f"{path}: cannot be read as YAML: {error}") from None
    return [text for text in strings(data) if re.search(r"[\u4e00-\u9fff]", text)]


def real_chat_texts(folder: Path) -> list[str]:
    """The text of every turn of the real chats: CSDS dialogues (``csds/*.jsonl``) and STC-3 utterances (``stc3/*_cn.json``)."""
    folder = Path(folder)
    texts: list[str] = []
    for path in sorted(folder.glob("csds/*_dialogues.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts += [str(turn.get("text", "")) for turn in json.loads(line).get("turns", [])]
    for path in sorted(folder.glob("stc3/*_data_cn.json")):
        for dialogue in json.loads(path.read_text(encoding="utf-8")):
            texts += [str(u) for turn in dialogue.get("turns", []) for u in turn.get("utterances", [])]
    return sorted({text.strip() for text in texts if text.strip()})


def variety(texts: list[str], sample: list[str], rng: random.Random) -> dict:
    """Distinct character n-grams, and how close a sample of validation turns comes to training turns."""
    def distinct(n: int) -> float:
        grams = [t[i : i + n] for t in texts for i in range(len(t) - n + 1)]
        return round(len(set(grams)) / max(1, len(grams)), 4)

    unique = sorted(set(texts))
    guard = LeakageGuard(unique, threshold=1.1)
    probe = rng.sample(sample, min(300, len(sample)))
    nearest = sorted(score for score, _ in guard.nearest(probe))
    return {
        "unique_agent_texts": len(unique),
        "distinct_2": distinct(2),
        "distinct_3": distinct(3),
        "valid_to_train_nearest_jaccard": {
            "mean": round(sum(nearest) / max(1, len(nearest)), 3),
            "median": round(nearest[len(nearest) // 2], 3) if nearest else None,
            "share_at_least_0.8": round(sum(s >= 0.8 for s in nearest) / max(1, len(nearest)), 3),
        },
    }


def platform_variety(recipe: Recipe, real_guard: LeakageGuard | None) -> dict:
    """Per author of the platform banks: exchanges, agent turns, and how close their agent texts of 8+ characters
    come, on average, to the other authors' (independent authors write apart) and to the real chats (style,
    not copies: the guard caps each at 0.8)."""
    exchanges: dict[str, list[PlatformExchange]] = {}
    for key, exchange in recipe.platform:  # key: platform:<author's file>:<index>
        exchanges.setdefault(key.split(":")[1], []).append(exchange)
    texts = {author: [t.text for e in theirs for t in e.turns if t.role == "agent"] for author, theirs in exchanges.items()}
    result = {}
    for author, own in texts.items():
        longer = [text for text in own if len(_NOT_CONTENT.sub("", text)) >= 8]
        others = LeakageGuard([text for name, theirs in texts.items() if name != author for text in theirs])

        def mean(guard: LeakageGuard) -> float | None:
            return round(float(np.mean([score for score, _ in guard.nearest(longer)])), 3) if longer else None

        result[author] = {
            "exchanges": len(exchanges[author]),
            "agent_turns": len(own),
            "distinct_agent_texts": len(set(own)),
            "nearest_other_author_jaccard": mean(others) if others.texts else None,
            "nearest_real_chat_jaccard": mean(real_guard) if real_guard else None,
        }
    return result


LONG_REPLY = 100  # characters


def corpus_stats(dialogues: list[dict]) -> dict:
    agent = [t for d in dialogues for t in d["turns"] if t["role"] == "agent"]
    violating = [t for t in agent if t["labels"]]
    labels = Counter(label for t in agent for label in t["labels"])
    return {
        "dialogues": len(dialogues),
        "agent_turns": len(agent),
        "customer_turns": sum(1 for d in dialogues for t in d["turns"] if t["role"] == "customer"),
        "clean_share": round(1 - len(violating) / max(1, len(agent)), 4),
        "two_label_share_of_violating": round(sum(len(t["labels"]) >= 2 for t in violating) / max(1, len(violating)), 4),
        # Real agents often send 100-300 characters at once: policy explanations, several answers in one message.
        "long_share_of_violating": round(sum(len(t["text"]) >= LONG_REPLY for t in violating) / max(1, len(violating)), 4),
        "labels": {label: labels[label] for label in LABEL_IDS},
        "tone": {str(tone): sum(t["tone"] == tone for t in agent) for tone in range(TONE_MIN, TONE_MAX + 1)},
        "kinds": dict(Counter(d["meta"]["kind"] for d in dialogues)),
        "phases": dict(Counter(d["meta"]["phase"] for d in dialogues)),
        "categories": dict(Counter(d["meta"]["category"] for d in dialogues)),
        "with_timestamps": sum(any("ts" in t for t in d["turns"]) for d in dialogues),
        "traditional_chinese": sum(d["meta"]["script"] == "traditional" for d in dialogues),
    }


def build_corpus(
    recipe_dir: Path, out: Path, seed: int = 0, held_out: Path | None = None, scale: float = 1.0, real_chats: Path | None = None
) -> dict:
    """Compose, guard against leakage, then write train/valid JSON Lines and stats.json; returns the stats.

    Two guards, each run when its files are here: no agent turn near the evaluation set (`held_out`),
    and no turn of 8+ characters, of either role, near a turn of the real chats (`real_chats`: CSDS and
    STC-3 are research data, their text must not enter a corpus that trains shipped weights).
    """
    from opencc import OpenCC

    recipe = Recipe.load(recipe_dir)
    converter = OpenCC("s2t")
    splits = {}
    for split in ("train", "valid"):
        rng = random.Random(f"{seed}:{split}")
        splits[split] = Composer(recipe, rng, split, converter, scale).build()
    everything = splits["train"] + splits["valid"]
    dev_guard = LeakageGuard.from_transcripts(held_out) if held_out is not None and held_out.is_file() else None
    real_guard = LeakageGuard.from_real_chats(real_chats) if real_chats is not None and real_chats.is_dir() else None
    unstyled = unstyle_near_copies(dev_guard, everything, roles=("agent",)) if dev_guard else 0
    unstyled += unstyle_near_copies(real_guard, everything) if real_guard else 0
    if dev_guard:  # the real-chat pass may have put a turn back to a text the evaluation set has
        dev_guard.check(turn["text"] for dialogue in everything for turn in dialogue["turns"] if turn["role"] == "agent")
    for dialogue in everything:
        for turn in dialogue["turns"]:
            del turn[PLAIN]
    agent_texts = {split: [t["text"] for d in ds for t in d["turns"] if t["role"] == "agent"] for split, ds in splits.items()}
    stats = {split: corpus_stats(ds) for split, ds in splits.items()}
    stats["all"] = corpus_stats(splits["train"] + splits["valid"])
    violating_valid = [t["text"] for d in splits["valid"] for t in d["turns"] if t["role"] == "agent" and t["labels"]]
    stats["variety"] = variety(agent_texts["train"], violating_valid, random.Random(seed))
    stats["platform_banks"] = platform_variety(recipe, real_guard)
    stats["seed"] = seed
    stats["scale"] = scale
    stats["leakage_guard"] = str(held_out) if dev_guard else None
    stats["real_chat_guard"] = {"folder": str(real_chats), "turns": len(real_guard.texts)} if real_guard else None
    stats["unstyled_near_copies"] = unstyled  # styled turns that landed on a protected turn and were put back to their plain text
    out.mkdir(parents=True, exist_ok=True)
    for split, dialogues in splits.items():
        write_atomic(out / f"{split}.jsonl", "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dialogues))
    write_atomic(out / "stats.json", json.dumps(stats, ensure_ascii=False, indent=2))
    return stats
