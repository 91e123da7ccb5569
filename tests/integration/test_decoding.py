"""Streaming never shows a broken character, and the deltas add up to exactly the text."""

import pytest
from transformers import AutoTokenizer

from model.tokens.decoding import REPLACEMENT, IncrementalDecoder

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


def _stream(tokenizer, stops=()):
    from model.tokens.token_stream import Prepared, TokenStream

    prepared = Prepared([], eos_ids=[tokenizer.eos_token_id], text_stops=stops, healing=None)
    return TokenStream(tokenizer, prepared)


def test_the_token_stream_never_shows_a_stop_and_ends_at_it(tokenizer):
    ids = tokenizer("x = 1\nHuman: what next?", add_special_tokens=False)["input_ids"]
    stream = _stream(tokenizer, stops=("Human:",))
    deltas = [stream.push(i) for i in ids]
    assert all("H" not in d for d in deltas)  # "Hum" is held back, never flashed
    assert "".join(deltas) + stream.finish() == "x = 1\n"
    assert stream.reason == "stop" and stream.ended
    assert stream.generated < len(ids)  # nothing is taken after the stop


def test_the_token_stream_ends_at_eos_and_shows_what_came_before(tokenizer):
    ids = tokenizer("héllo wörld", add_special_tokens=False)["input_ids"]
    stream = _stream(tokenizer)
    shown = "".join(stream.push(i) for i in [*ids, tokenizer.eos_token_id, *ids])
    assert shown + stream.finish() == "héllo wörld"
    assert (stream.reason, stream.generated) == ("eos", len(ids) + 1)


def test_a_first_newline_streams_at_once_where_the_request_allows_it(tokenizer):
    from model.tokens.token_stream import EndHold, Prepared, TokenStream

    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    fence = tokenizer("```python", add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id]

    def first_pieces(hold=None, show=True):
        prepared = Prepared([], eos, ("\n```",), None, hold, show_first_newline=show)
        stream = TokenStream(tokenizer, prepared)
        return [stream.push(i) for i in [*newline, *fence]], stream.reason

    assert first_pieces() == (["\n", *[""] * len(fence)], "stop")  # then the fence stops it
    assert first_pieces(show=False) == ([""] * (1 + len(fence)), "stop")
    # With min_tokens the stops start late, so what they first see need not start the text:
    # the newline is held as without the setting.
    held = first_pieces(hold=EndHold(1, tuple(eos), ()))
    assert held == ([""] * (1 + len(fence)), "stop")
