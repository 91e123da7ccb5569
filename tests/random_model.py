"""Builds a small *random* GPTBigCode + tokenizer with StarCoder's special tokens.

Used where a test needs a second, throwaway model folder (e.g. a model without FIM tokens);
everything else runs on the real embedded tiny-starcoder checkpoint.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path
from types import SimpleNamespace


def build_random_model(
    out: Path, *, fim: bool = True, vocab_size: int = 512, n_embd: int = 32
) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTBigCodeForCausalLM, PreTrainedTokenizerFast

    from model.prompts.families import ENDOFTEXT, STARCODER_SPECIAL_TOKENS
    from training.train import make_config

    specials = list(STARCODER_SPECIAL_TOKENS) if fim else [ENDOFTEXT]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text(encoding="utf-8") for name in ("json/decoder.py", "abc.py")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    # The same config builder as the real training, only much smaller.
    size = SimpleNamespace(n_positions=256, n_embd=n_embd, n_layer=2, n_head=2)
    config = make_config(size, len(fast))
    import torch

    torch.manual_seed(0)
    model = GPTBigCodeForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out
