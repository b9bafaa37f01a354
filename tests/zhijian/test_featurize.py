import pytest

from conftest import SHARED
from zhijian.config import FeaturesSection
from zhijian.featurize import Featurizer
from zhijian.model import scratch_tokenizer
from zhijian.transcripts import parse_text

REFUND = parse_text("买家: 这个能退吗\n客服: 不能\n买家: 那M码有吗\n客服: 不能")[0]


@pytest.fixture(scope="module")
def tokenizer():
    return scratch_tokenizer()


def decode(tokenizer, ids):
    return "".join(tokenizer.convert_ids_to_tokens(ids))


def test_target_is_segment_one_and_context_names_the_roles(tokenizer):
    featurizer = Featurizer(tokenizer, FeaturesSection(context_turns=1))
    first, second = featurizer.encode([REFUND])
    assert (first.turn, second.turn) == (1, 3)
    context = [i for i, s in zip(first.input_ids, first.token_type_ids) if s == 0]
    target = [i for i, s in zip(first.input_ids, first.token_type_ids) if s == 1]
    assert decode(tokenizer, context) == "[CLS]买家:这个能退吗[SEP]"
    assert decode(tokenizer, target) == "不能[SEP]"
    # The same words "不能" get different inputs because the question differs.
    assert decode(tokenizer, second.input_ids).startswith("[CLS]买家:那m码有吗")


def test_context_turns_limit_how_far_back_the_model_reads(tokenizer):
    wide = Featurizer(tokenizer, FeaturesSection(context_turns=3)).encode([REFUND])[1]
    none = Featurizer(tokenizer, FeaturesSection(context_turns=0)).encode([REFUND])[1]
    assert "这个能退吗" in decode(tokenizer, wide.input_ids)
    assert decode(tokenizer, none.input_ids) == "[CLS][SEP]不能[SEP]"


@pytest.mark.parametrize("side, kept, dropped", [("left", "最近一句", "很早"), ("right", "很早", "最近一句")])
def test_long_context_is_cut_and_target_kept_whole(tokenizer, side, kept, dropped):
    long_turns = "买家: 很早" + "啊" * 80 + "\n买家: 最近一句\n客服: " + "这是一条完整的客服回复" * 2
    dialogue = parse_text(long_turns)[0]
    feature = Featurizer(tokenizer, FeaturesSection(max_length=32, truncation_side=side)).encode([dialogue])[0]
    text = decode(tokenizer, feature.input_ids)
    assert len(feature.input_ids) == 32
    assert text.endswith("[SEP]" + "这是一条完整的客服回复" * 2 + "[SEP]")
    assert kept[:2] in text and dropped not in text


def test_a_target_longer_than_max_length_is_cut_from_its_end(tokenizer):
    dialogue = parse_text("客服: " + "好" * 100)[0]
    feature = Featurizer(tokenizer, FeaturesSection(max_length=20)).encode([dialogue])[0]
    assert len(feature.input_ids) == 20 and feature.input_ids[-1] == tokenizer.sep_token_id


def test_full_width_text_is_folded_before_tokenizing(tokenizer):
    featurizer = Featurizer(tokenizer, FeaturesSection())
    a = featurizer.encode(parse_text("客服: ＯＫ，１２３"))[0]
    b = featurizer.encode(parse_text("客服: OK,123"))[0]
    assert a.input_ids == b.input_ids


def test_scratch_vocabulary_covers_chat_text_without_unknowns(tokenizer):
    ids = tokenizer("亲亲～iPhone15的發票已開 😊【包邮】", add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids


@pytest.mark.skipif(not (SHARED / "models/bert-base-chinese").is_dir(), reason="../shared/models/bert-base-chinese is absent")
def test_real_bert_base_chinese_tokenizer_featurizes_the_same_way():
    from transformers import AutoTokenizer

    real = AutoTokenizer.from_pretrained(SHARED / "models/bert-base-chinese")
    feature = Featurizer(real, FeaturesSection(context_turns=1)).encode([REFUND])[0]
    assert real.convert_ids_to_tokens(feature.input_ids) == ["[CLS]", "买", "家", ":", "这", "个", "能", "退", "吗", "[SEP]", "不", "能", "[SEP]"]
    assert feature.token_type_ids == [0] * 10 + [1] * 3


def test_a_batch_is_padded_on_the_right_to_its_longest_row_and_a_row_without_ngrams_adds_none():
    import torch

    from zhijian.featurize import pad_batch
    from zhijian.model import scratch_tokenizer

    tokenizer = scratch_tokenizer()
    tokenizer.pad_token = "[MASK]"  # a pad id other than 0: the tokenizer's own is used, not a guess
    pad = tokenizer.pad_token_id
    assert pad != 0
    rows = [
        {"input_ids": [2, 5, 3], "token_type_ids": [0, 0, 1], "attention_mask": [1, 1, 1], "ngram_ids": [7, 9]},
        {"input_ids": [2, 3], "token_type_ids": [0, 1], "attention_mask": [1, 1]},  # a dialogue row: no n-grams
    ]
    batch = pad_batch(rows, tokenizer)
    assert batch.keys() == {"input_ids", "token_type_ids", "attention_mask", "ngram_ids"}
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, pad]] and batch["input_ids"].dtype == torch.long
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["ngram_ids"].tolist() == [[7, 9], [0, 0]]
    assert "ngram_ids" not in pad_batch(rows[1:], tokenizer)


def test_the_training_collator_pads_the_tokens_and_stacks_the_rest():
    import numpy as np

    from training.data import Collator

    items = [
        {"input_ids": [2, 5, 3], "token_type_ids": [0, 0, 1], "attention_mask": [1, 1, 1], "labels": np.ones(12, dtype=np.float32), "tone": np.float32(0.5)},
        {"input_ids": [2, 3], "token_type_ids": [0, 1], "attention_mask": [1, 1], "labels": np.zeros(12, dtype=np.float32), "tone": np.float32(-1)},
    ]
    from zhijian.model import scratch_tokenizer

    tokenizer = scratch_tokenizer()
    batch = Collator(tokenizer)(items)
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, tokenizer.pad_token_id]] and batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].shape == (2, 12) and batch["tone"].tolist() == [0.5, -1.0]
