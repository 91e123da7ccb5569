"""HumanEval's generation: greedy generate() that stops at the harness's stop sequences, with
optional token healing, on a model loaded by registry id, local folder or Hub id."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The bigcode evaluation harness's HumanEval stop sequences.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")


def truncate(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut a completion at the first stop sequence (the bigcode harness's postprocessing)."""
    cut = min((i for i in (text.find(s) for s in stops) if i != -1), default=len(text))
    return text[:cut]


@dataclass(frozen=True)
class Generated:
    completion: str  # what the model wrote after the prompt, truncated at the stops
    raw: str  # the same before truncation
    new_tokens: int
    seconds: float


class Generator:
    """Greedy generate() with a text stop criterion and optional token healing."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int, heal: bool):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.heal = heal
        self.device = next(model.parameters()).device
        from model.engines.loading import context_length

        self.context = context_length(model.config, tokenizer)
        gen_eos = model.generation_config.eos_token_id
        eos = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = sorted(set(eos))

    def __call__(self, prompt: str) -> Generated:
        # generate() in a fresh thread: on a loaded 2-core machine OpenMP in the main thread
        # made it many times slower (see bench/engine.py).
        box: list = []
        thread = threading.Thread(target=lambda: box.append(self._generate(prompt)))
        thread.start()
        thread.join()
        return box[0]

    def _generate(self, prompt: str) -> Generated:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from model.tokens.healing import heal

        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        processors = LogitsProcessorList()
        removed = ""
        if self.heal:
            healing = heal(self.tokenizer, ids)
            if healing.active:
                ids, removed = healing.input_ids, healing.removed
                processors.append(healing.processor)
        # Prompt + new tokens must fit the context (tiny-starcoder has 512): generate less, and
        # nothing when the prompt alone does not fit (the problem then simply fails).
        budget = min(self.max_new_tokens, self.context - len(ids))
        if budget <= 0:
            return Generated("", "", 0, 0.0)
        input_ids = torch.tensor([ids], device=self.device)
        stop = _TextStop(self.tokenizer, len(ids), removed)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=budget,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                repetition_penalty=1.0,
                eos_token_id=self.eos_ids,
                pad_token_id=self.tokenizer.pad_token_id or self.eos_ids[0],
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([stop]),
            )
        seconds = time.perf_counter() - start
        new = out[0, len(ids) :].tolist()
        raw = _strip_prefix(stop.decode(new), removed)
        return Generated(truncate(raw), raw, len(new), seconds)


class _TextStop:
    """Stops generate() once the continuation contains a stop sequence."""

    def __init__(self, tokenizer, prompt_len: int, removed: str):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.removed = removed

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        text = _strip_prefix(self.decode(input_ids[0, self.prompt_len :].tolist()), self.removed)
        done = any(s in text for s in STOP_SEQUENCES)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _strip_prefix(text: str, removed: str) -> str:
    """Healed runs regenerate the prompt's backed-off text first; it is already in the prompt."""
    return text[len(removed) :] if removed and text.startswith(removed) else text


def load_model(model: str, data_dir: str | Path, device: str | None, dtype: str = "auto"):
    """(model, tokenizer): a registry id, a local folder, or a Hub id, in `dtype` (DTYPE)."""
    from model.engines.loading import load
    from model.registry import Registry

    registry = Registry.build(data_dir)
    location = registry.resolve(model) if model in registry else model
    m, tokenizer, _info = load(location, device=device, dtype=dtype)
    return m, tokenizer
