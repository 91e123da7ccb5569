"""The ways bench/fim.py fills a task: the model's own FIM tokens (NativeFim), the rerank of
model/infill/fim_rerank.py on an in-process model (Rerank), and the app's own path (AppFill)."""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.fim_tasks import Task

# --- the native FIM method ------------------------------------------------------------------


@dataclass(frozen=True)
class Middle:
    text: str  # the middle as the app would show it (cut at the stops)
    raw: str  # what the model wrote before the cut
    new_tokens: int
    seconds: float
    candidates: tuple = ()  # rerank: (text, suffix logprob, middle logprob, greedy) each
    picks: dict | None = None  # rerank: the middle each scoring rule picks


class NativeFim:
    """Greedy decoding of the model's own FIM prompt, cut at the app's stops."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int, stops: bool, penalty: float):
        from model.engines.loading import context_length
        from model.prompts.templates import detect_fim_template

        self.template = detect_fim_template(frozenset(tokenizer.all_special_tokens))
        if self.template is None:
            raise SystemExit("this model has no FIM tokens: use --method rerank")
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.stops, self.penalty = max_new_tokens, stops, penalty
        self.context = context_length(model.config, tokenizer)
        vocab = tokenizer.get_vocab()
        stop_ids = {vocab[t] for t in self.template.stop_tokens if t in vocab}
        if tokenizer.eos_token_id is not None:
            stop_ids.add(tokenizer.eos_token_id)
        self.eos_ids = sorted(stop_ids)

    def prompt_ids(self, prefix: str, suffix: str) -> list[int]:
        """The FIM prompt, fitted to the context: whole lines go from the suffix's end (while it
        holds over a quarter of the room) and then from the prefix's start."""
        room = self.context - self.max_new_tokens

        def ids():
            text = self.template.format(prefix, suffix)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

        out = ids()
        while len(out) > room:
            suffix_tokens = len(self.tokenizer(suffix, add_special_tokens=False)["input_ids"])
            if suffix.count("\n") > 1 and suffix_tokens > room // 4:
                suffix = suffix[: suffix.rstrip("\n").rindex("\n") + 1]
            elif "\n" in prefix[:-1]:
                prefix = prefix[prefix.index("\n") + 1 :]
            else:
                return out[-room:]
            out = ids()
        return out

    def __call__(self, task: Task) -> Middle:
        import torch
        from transformers import StoppingCriteriaList

        from model.prompts.templates import fim_stop_sequences

        stops = (
            fim_stop_sequences(task.prefix, task.suffix, single_line=task.single_line)
            if self.stops
            else ()
        )
        ids = self.prompt_ids(task.prefix, task.suffix)
        input_ids = torch.tensor([ids])
        criteria = StoppingCriteriaList([_TextStop(self.tokenizer, len(ids), stops)])
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                repetition_penalty=self.penalty,
                eos_token_id=self.eos_ids,
                pad_token_id=self.eos_ids[0],
                stopping_criteria=criteria,
            )
        seconds = time.perf_counter() - start
        new = out[0, len(ids) :].tolist()
        raw = _decode(self.tokenizer, new)
        return Middle(_cut(raw, stops), raw, len(new), seconds)


class _TextStop:
    def __init__(self, tokenizer, prompt_len: int, stops: Sequence[str]):
        self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, stops

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        text = _decode(self.tokenizer, input_ids[0, self.prompt_len :].tolist())
        done = any(s in text for s in self.stops)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool)


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _cut(text: str, stops: Sequence[str]) -> str:
    return text[: min((i for i in (text.find(s) for s in stops) if i != -1), default=len(text))]


# --- the rerank method ----------------------------------------------------------------------


class Rerank:
    """model/infill/fim_rerank.py on a task; keeps every candidate and each rule's pick."""

    def __init__(self, model, tokenizer, settings):
        from model.infill.fim_rerank import RerankFiller

        self.filler = RerankFiller(model, tokenizer, settings)
        self.settings = settings

    def __call__(self, task: Task) -> Middle:
        fill = self.filler(task.prefix, task.suffix, single_line=task.single_line)
        picks = {by: fill.best(by).text for by in ("suffix", "joint", "greedy")}
        candidates = tuple(
            (c.text, round(c.suffix_logprob, 3), round(c.middle_logprob, 3), c.greedy)
            for c in fill.candidates
        )
        chosen = picks[self.settings.score_by]
        return Middle(chosen, chosen, fill.new_tokens, fill.seconds, candidates, picks)


class AppFill:
    """The fill as the app serves it: Playground.fill over the model's own worker process (its
    thread policy, the paused batch, the pipe), with FIM_CANDIDATES = k. For a model without
    FIM tokens that is the rerank of model/infill/events.py; the time is the request's whole wait."""

    def __init__(
        self,
        model_id: str,
        data_dir: str,
        k: int,
        max_new_tokens: int,
        engine_url: str | None = None,
        dtype: str = "auto",
    ):
        """`engine_url`: the fill as the app serves it from that server (ENGINE_URL); `dtype`:
        DTYPE."""
        from app.server import build_engines
        from app.services.playground import Playground
        from app.settings import Settings
        from model.prompts.templates import TaPrompt

        argv = ["--data-dir", data_dir, "--fim-candidates", str(k), "--dtype", dtype]
        argv += ["--engine-url", engine_url] if engine_url else []
        settings = Settings.load(argv, env={})
        self.engines = build_engines(settings)
        self.playground = Playground(self.engines, TaPrompt.load(), fim_candidates=k)
        self.model, self.max_new_tokens = model_id, max_new_tokens
        self.engines.get(self.engines.registry.get(model_id))  # started before the clock runs

    def __call__(self, task: Task) -> Middle:
        from model.engine import CancelToken, GenerationParams

        params = GenerationParams(
            max_new_tokens=self.max_new_tokens, temperature=0, repetition_penalty=1.0
        )
        code = task.prefix + "<FILL_HERE>" + task.suffix
        start = time.perf_counter()
        run = self.playground.fill(code, params, CancelToken(), model=self.model)
        final = collections.deque(run, maxlen=1)[0]
        seconds = time.perf_counter() - start
        return Middle(final.generated, final.generated, final.done.generated_tokens, seconds)
