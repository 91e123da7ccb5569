"""Byte-level BPE tokenizer for tiny-starcoder, with StarCoder's special tokens at ids 0-18."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from model.prompts.families import ENDOFTEXT, STARCODER_SPECIAL_TOKENS

logger = logging.getLogger(__name__)

DEFAULT_VOCAB_SIZE = 8192


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # "\n" alone: otherwise BPE merges it with the next line's indent ("\n    "), and a
            # prompt ending in a bare newline is out of distribution (endless newlines).
            pre_tokenizers.Split("\n", behavior="isolated"),
            # As StarCoder: one token per digit.
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on `texts` and wrap it as a transformers fast tokenizer."""
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(STARCODER_SPECIAL_TOKENS),  # at ids 0-18, in StarCoder's order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, name in enumerate(STARCODER_SPECIAL_TOKENS):
        assert tok.token_to_id(name) == i, (name, tok.token_to_id(name))
    logger.info("tokenizer trained: vocab %d", tok.get_vocab_size())
    return wrap(tok, model_max_length)


def wrap(tok: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        unk_token=ENDOFTEXT,
        # Padding with <|endoftext|> as StarCoder users do (pad_token_id = eos_token_id).
        pad_token=ENDOFTEXT,
        additional_special_tokens=list(STARCODER_SPECIAL_TOKENS[1:]),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
