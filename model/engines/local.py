"""In-process engine on transformers' generate(), streamed token by token.

One generation at a time per model: the lock is the model. Concurrency across users is the
worker queue's job (model/engines/worker.py).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
from collections.abc import Iterator

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from model.engine import CancelToken, Delta, Done, Event, GenerationRequest, ModelInfo, decode_ids
from model.infill.events import failed, infill_events
from model.tokens.logprobs import Namer, StepRecorder, score_prompt
from model.tokens.token_stream import EndHold, TokenStream, model_eos_ids, overflow, prepare

log = logging.getLogger(__name__)

_END = object()


class _QueueStreamer(BaseStreamer):
    """Hands each new token id to the consumer; the first put() is the prompt, skipped."""

    def __init__(self) -> None:
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for tok in value.reshape(-1).tolist():
            self.q.put(tok)

    def end(self) -> None:
        self.q.put(_END)


class _Halt(StoppingCriteria):
    """Ends generate() at the next token once the request is cancelled or a stop string hit."""

    def __init__(self, cancel: CancelToken, stop_hit: threading.Event):
        self.cancel = cancel
        self.stop_hit = stop_hit

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        halt = self.cancel.cancelled or self.stop_hit.is_set()
        return torch.full((input_ids.shape[0],), halt, dtype=torch.bool, device=input_ids.device)


class LocalEngine:
    def __init__(self, model, tokenizer, info: ModelInfo):
        self.model = model
        self.tokenizer = tokenizer
        self._info = info
        self._lock = threading.Lock()
        self._device = next(model.parameters()).device
        self.namer = Namer(tokenizer)  # token texts for log-probabilities

    @classmethod
    def load(cls, model_id: str, *, device: str | None = None, hf_token: str | None = None):
        from model.engines.loading import load

        return cls(*load(model_id, device=device, hf_token=hf_token))

    @property
    def info(self) -> ModelInfo:
        return self._info

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def detokenize(self, ids) -> str:
        return decode_ids(self.tokenizer, ids)

    def close(self) -> None:
        pass

    def base_eos_ids(self) -> list[int]:
        return model_eos_ids(self.model, self.tokenizer)

    def generate_kwargs(
        self, request: GenerationRequest, eos_ids: list[int], hold: EndHold | None = None
    ) -> dict:
        p = request.params
        kwargs = {
            "max_new_tokens": p.max_new_tokens,
            "repetition_penalty": p.repetition_penalty,
            "eos_token_id": eos_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if hold is not None:
            # generate()'s own processors, which run before temperature and top-p: one of
            # ours would run after them and could leave a row with no token to draw.
            kwargs["min_new_tokens"] = hold.min_tokens or None
            kwargs["suppress_tokens"] = list(hold.ignored) or None
        if p.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=None)
        return kwargs

    def stream(self, request: GenerationRequest, cancel: CancelToken, hold=None) -> Iterator[Event]:
        """`hold`: a context manager factory the model is used under, a piece at a time (the
        worker's batch pause); None when this engine owns the model alone."""
        hold = hold or contextlib.nullcontext
        if request.infill is not None:
            with self._lock:  # its events come at the end: nothing is yielded under the lock
                events = list(infill_events(self.model, self.tokenizer, request, cancel))
            yield from events
            return
        if request.params.prompt_logprobs:
            ids = list(request.prompt_ids or self.tokenize(request.prompt))  # before healing
            try:
                with self._lock, torch.inference_mode():
                    scored = score_prompt(
                        self.model,
                        self.namer,
                        ids,
                        request.params.logprobs or 0,
                        hold=hold,
                        cancel=cancel,
                    )
            except Exception as exc:  # out of memory, above all: one failed request, said why
                yield failed(exc, len(ids), 0)
                return
            if scored is None:
                yield Done("cancelled", len(ids), 0)
                return
            yield Delta("", prompt_logprobs=scored)
        prepared = prepare(self.tokenizer, self._info, self.base_eos_ids(), request)
        refused = overflow(prepared, request, self._info.context_length)
        if refused is not None:  # a seeded or scored request too big: said, not a failed forward
            yield refused
            return
        input_ids = torch.tensor([prepared.ids], device=self._device)
        enc = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        n_prompt = len(prepared.ids)
        streamer = _QueueStreamer()
        stop_hit = threading.Event()
        errors: list[BaseException] = []
        kwargs = self.generate_kwargs(request, prepared.eos_ids, prepared.hold)
        processors = [prepared.healing.processor] if prepared.healing is not None else []
        top = request.params.logprobs
        recorder = StepRecorder(top) if top is not None else None
        if recorder is not None:
            processors.append(recorder)
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        seed = request.params.seed

        def run() -> None:
            try:
                with hold(), self._lock, torch.inference_mode():
                    # Seeding under the lock makes "same seed, same output" hold.
                    torch.manual_seed(seed if seed is not None else random.getrandbits(63))
                    if cancel.cancelled:
                        return
                    self.model.generate(
                        **enc,
                        **kwargs,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Halt(cancel, stop_hit)]),
                    )
            except BaseException as exc:
                errors.append(exc)
            finally:
                streamer.end()

        thread = threading.Thread(target=run, name="generate", daemon=True)
        tokens = TokenStream(self.tokenizer, prepared)
        namer = self.namer
        thread.start()
        try:
            while True:
                tok = streamer.q.get()
                if tok is _END:
                    break
                record = recorder.take(tok) if recorder is not None else None
                if tokens.ended or cancel.cancelled:
                    continue  # drain: generate() ends at its next step
                text = tokens.push(tok)
                if tokens.ended:
                    stop_hit.set()
                # The end token too (named "": the text skips it): harnesses count on one
                # entry per token written, e.g. max_tokens 1 after a scored prompt.
                logprobs = (namer.entry(record, tokens.name),) if record else ()
                if text or logprobs:
                    yield Delta(text, logprobs)
            if errors:
                yield failed(errors[0], n_prompt, tokens.generated)
                return
            if cancel.cancelled:
                yield Done("cancelled", n_prompt, tokens.generated)
                return
            tail = tokens.finish()
            if tail:
                yield Delta(tail)
            yield Done(tokens.reason, n_prompt, tokens.generated)
        finally:
            # Runs on normal end, on consumer close (Stop, disconnect) and on errors alike.
            stop_hit.set()
            thread.join()
