"""Streaming never shows a broken character, and the deltas add up to exactly the text."""

import pytest
from transformers import AutoTokenizer

from model.decoding import REPLACEMENT, IncrementalDecoder

TRICKY = [
    "héllo wörld ñ",
    "日本語のコード 世界",
    "emoji 🎉🚀 and 👩‍💻 zwj",
    "\ttabs\tand  trailing spaces  \n\n",
    "mixed: naïve café — “quotes” ∑∫ 𝔘𝔫𝔦",
]


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.mark.parametrize("text", TRICKY)
def test_deltas_never_contain_a_broken_character_and_concatenate_exactly(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    multi_byte_split = any(REPLACEMENT in tokenizer.decode([i]) for i in ids)
    dec = IncrementalDecoder(tokenizer)
    deltas = [dec.push(i) for i in ids] + [dec.flush()]
    assert all(REPLACEMENT not in d for d in deltas)
    assert "".join(deltas) == text
    if multi_byte_split:  # the interesting case: some tokens are partial characters
        assert "" in deltas[:-1]


def test_special_tokens_are_not_shown(tokenizer):
    ids = tokenizer("x = 1", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    dec = IncrementalDecoder(tokenizer)
    assert "".join([dec.push(i) for i in ids] + [dec.flush()]) == "x = 1"
