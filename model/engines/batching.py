"""Inside the worker process: many concurrent requests on one model (imports torch).

Batched path: transformers' own continuous batching (ContinuousBatchingManager); we write no
scheduler. What it honours per request, and therefore what we batch:
  - max_new_tokens, EOS / special-token stops (per-request eos_token_id)
  - repetition_penalty, temperature (0 = greedy), top_p: transformers has no CB repetition
    penalty, and its CB sampling is per manager and slow on a CPU, so one processor of ours
    (model/tokens/sampling.py, RequestSamplingCB) does all three and the draw, as generate() does,
    per request. Greedy and sampled requests share the one batch.
  - text stop sequences: matched on our side (StopMatcher); a hit cancels the request in the
    manager, which frees its slot at the next step.
  - token healing of completion prompts that end in whitespace (model/tokens/healing.py): the same
    processor holds each healed request's first tokens to the backed-off text.
  - min_tokens and ignore_eos: the same processor holds back end tokens (EndHold).
KV cache: sized to a budget (KV_CACHE_MB, else a share of free memory; model/engines/kv_budget.py) and
allocated at start. A request may use at most what the cache holds (ModelInfo.context_length),
and starts once its prompt + max_new_tokens fit beside the running ones, so none is evicted.
One-at-a-time path (LocalEngine on the same model, serialised by its lock):
  - requests with a `seed`: the batch samples from torch's one global RNG, so "same seed,
    same output" only holds for a request that runs alone. The batch pauses while it runs.
  - fills by reranking (Infill, model/infill/events.py): a batch of candidates of their own, with
    their own KV cache, then one scoring forward; about a second on a CPU. They run on the
    batch's own thread between two of its steps (its OpenMP team; model/engines/threads.py).
  - requests that score their prompt (GenerationParams.prompt_logprobs): the batch's cache
    keeps no prompt logits.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from compat import transformers_cb
from model.engine import (
    CancelToken,
    ContextLength,
    Delta,
    Done,
    Event,
    GenerationRequest,
    ModelInfo,
)
from model.engines.kv_budget import KvPlan, no_room, plan_for_model
from model.engines.local import LocalEngine
from model.engines.packing import weight_bytes
from model.engines.threads import ComputeThreads
from model.errors import PlaygroundError
from model.infill.events import failed
from model.tokens.logprobs import Namer
from model.tokens.sampling import RequestSamplingCB
from model.tokens.token_stream import TokenStream, overflow, prepare

log = logging.getLogger(__name__)

Send = Callable[[list[tuple[str, Event]]], None]  # (request id, event) pairs, in order


def build_cb_config(model, max_batch: int, plan: KvPlan | None) -> ContinuousBatchingConfig:
    """The paged cache as `plan` sizes it; no plan (GPU without KV_CACHE_MB): memory-derived.

    transformers' defaults target a GPU (memory-derived block counts, 256-token pages): on a CPU
    they allocate and pad far more than a tiny model needs, which made 4 x 12 tokens take 21 s
    instead of 0.5 s. So: the plan's pages and blocks, and a prefill budget of 256 tokens per
    step on CPU (longer prompts are prefilled in chunks).
    """
    common = dict(
        max_requests_per_batch=max_batch,
        per_request_processors=True,
        # RequestSamplingCB keeps per-step state: needs synchronous steps, no graph capture.
        use_async_batching=False,
        use_cuda_graph=False,
        # Few, short prompts: prefix sharing buys little here and would share blocks
        # between requests that we cancel independently.
        allow_block_sharing=False,
    )
    if plan is None:
        return ContinuousBatchingConfig(max_memory_percent=0.8, **common)  # GPU: memory-derived
    cpu = model.device.type == "cpu"
    return ContinuousBatchingConfig(
        page_size=plan.page,
        num_blocks=plan.num_blocks,
        max_batch_tokens=256 if cpu else None,
        max_blocks_per_request=0 if cpu else None,
        **common,
    )


def batchable(request: GenerationRequest) -> bool:
    """Whether the continuous-batching path honours every parameter (see the module doc)."""
    p = request.params
    return p.seed is None and request.infill is None and not p.prompt_logprobs


@dataclass
class _Stream:
    """Per-request state of a batched request."""

    tokens: TokenStream
    n_prompt: int
    logprobs: bool = False  # the request asked for them
    blocks: int = 0  # cache blocks reserved for it (0: not admitted yet)
    seen: int = 0  # the manager's outputs are cumulative: how many were read

    @property
    def generated(self) -> int:
        return self.tokens.generated


class BatchingServer:
    """Serves requests from the worker's command loop; events go out through `send(pairs)`."""

    def __init__(
        self,
        model,
        tokenizer,
        info: ModelInfo,
        send: Send,
        *,
        max_batch: int,
        kv_cache_mb: float | None = None,
        on_fatal: Callable[[], None] | None = None,
        threads: ComputeThreads | None = None,
    ):
        transformers_cb.install(RequestSamplingCB)  # our sampler in transformers' batching
        self.plan = plan_for_model(model, info, max_batch, kv_cache_mb)
        if self.plan is not None and self.plan.context_length < info.context_length:
            limit = ContextLength(self.plan.context_length, self.plan.limited_by)
            info = replace(info, context_length=limit)
            log.warning("requests are limited to %d tokens by %s", limit, limit.limited_by)
        self.local = LocalEngine(model, tokenizer, info)
        self.tokenizer = tokenizer
        self.info = info
        self.send = send
        self.on_fatal = on_fatal  # a batching loop died: the device may be unusable (CUDA error)
        self._streams: dict[str, _Stream] = {}  # batched requests by id
        self._cancels: dict[str, CancelToken] = {}  # one-at-a-time requests
        # Admission by cache blocks: a request starts once its prompt + max_new_tokens fit
        # beside the running ones, so transformers never has to evict (and re-run) one.
        self._free_blocks = self.plan.num_blocks if self.plan is not None else math.inf
        self._pending: deque[tuple[str, list[int], dict]] = deque()
        self._lock = threading.Lock()
        self._closed = False
        eos = self.local.base_eos_ids()
        # Greedy: the argmax is taken after our processor, which leaves a sampled row only its
        # drawn token. A non-1 default penalty makes transformers build the processor that
        # per_request_processors turns into ours; each request sets its own values.
        gen = GenerationConfig(
            do_sample=False,
            repetition_penalty=1.1,
            max_new_tokens=256,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )
        # Raised by _get_logits_processor because CB passes no input_ids; our processor does
        # see the prompt, so the warning does not apply here.
        warnings.filterwarnings("ignore", message="Passing `repetition_penalty` with")
        if not log.isEnabledFor(logging.DEBUG):  # its INFO lines repeat per start/stop
            logging.getLogger("ContinuousBatchingLogger").setLevel(logging.WARNING)
        cfg = build_cb_config(model, max_batch, self.plan)
        self.manager = model.init_continuous_batching(
            generation_config=gen, continuous_batching_config=cfg
        )
        processors = self.manager.logit_processor.logits_processor
        sampler = next((p for p in processors if isinstance(p, RequestSamplingCB)), None)
        if sampler is None:
            raise RuntimeError(f"continuous batching did not take our sampler: {processors}")
        self.logprobs = sampler.logprobs  # what the sampler recorded, per request
        self.namer = Namer(tokenizer)
        try:
            # Allocates the cache here and now: in the loop's thread a MemoryError killed the
            # loop, the worker restarted, and the next request died the same way.
            self.manager.warmup()
        except MemoryError as exc:
            raise PlaygroundError(no_room(self.plan, kv_cache_mb, exc), kind="config") from exc
        cache = getattr(self.manager.batch_processor, "cache", None)
        self.info = replace(
            self.info,
            weight_bytes=weight_bytes(model),
            kv_cache_bytes=getattr(getattr(cache, "cache_tensor", None), "nbytes", 0),
        )
        # The batch's thread sizes its own OpenMP team before every step ("auto" follows the
        # other processes' load; model/engines/threads.py), then runs what waits for it.
        self._threads = threads if model.device.type == "cpu" else None
        self._between_steps: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        transformers_cb.before_each_step(self.manager, self._before_step)
        self.manager.start()
        threading.Thread(target=self._route, name="cb-router", daemon=True).start()

    # -- commands ---------------------------------------------------------------------------

    def submit(self, rid: str, request: GenerationRequest) -> None:
        if batchable(request):
            self._submit_batched(rid, request)
        else:
            token = CancelToken()
            with self._lock:
                self._cancels[rid] = token
            if request.infill is not None:
                # A fill runs on the batch's own thread, between two of its steps: the batch
                # waits, as it must, and the fill computes with the batch's OpenMP team. In a
                # thread of its own it got a second team, and libgomp, with more threads than
                # cores, slept between ops: fills took ~1.5x as long (bench/RESULTS.md).
                self._between_steps.put(lambda: self._run_alone(rid, request, token))
                transformers_cb.wake(self.manager)
            else:
                threading.Thread(
                    target=self._run_alone, args=(rid, request, token), daemon=True
                ).start()

    def emit(self, rid: str, event: Event) -> None:
        self.send([(rid, event)])

    def cancel(self, rid: str) -> None:
        with self._lock:
            entry = self._streams.pop(rid, None)
            token = self._cancels.get(rid)
        if token is not None:
            token.cancel()  # LocalEngine stops within one token and sends Done("cancelled")
        if entry is not None:
            stream = entry
            if stream.blocks:
                self.manager.cancel_request(rid)  # dropped from the batch at the next step
            self._release(rid, stream)
            self.emit(rid, Done("cancelled", stream.n_prompt, stream.generated))

    def alive(self) -> bool:
        return self.manager.is_running()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            tokens = list(self._cancels.values())
        for t in tokens:
            t.cancel()
        self.manager.stop(block=True, timeout=10, hard_stop=True)  # nobody waits for the rest

    # -- one at a time ----------------------------------------------------------------------

    def _run_alone(self, rid: str, request: GenerationRequest, token: CancelToken) -> None:
        try:
            if request.infill is not None:  # on the batch's thread (submit): it is paused
                self._emit_all(rid, self.local.stream(request, token))
            elif request.params.seed is None:
                # A scored prompt pauses the batch one chunk at a time, and the batch takes a
                # step between chunks: scoring 8,000 tokens used to stop every other stream of
                # the model for minutes.
                self._emit_all(rid, self.local.stream(request, token, hold=self.manager.pause))
            else:
                # The batches sample from the same global torch RNG: pause them, or the seed
                # would not pin the output. Seeded requests are rare (the user asked for one).
                with self.manager.pause():
                    self._emit_all(rid, self.local.stream(request, token))
        except Exception as exc:  # on the batch's thread an escaped error would end the batch
            self.emit(rid, failed(exc))
        finally:
            with self._lock:
                self._cancels.pop(rid, None)

    def _emit_all(self, rid: str, events) -> None:
        for event in events:
            self.emit(rid, event)

    def _before_step(self) -> None:
        """On the batch's thread, before each of its steps (and every 0.1 s when idle)."""
        if self._threads is not None:
            self._threads.apply_here()
        while True:
            try:
                job = self._between_steps.get_nowait()
            except queue.Empty:
                return
            job()

    # -- batched ----------------------------------------------------------------------------

    def _submit_batched(self, rid: str, request: GenerationRequest) -> None:
        p = request.params
        prepared = prepare(self.tokenizer, self.info, self.local.base_eos_ids(), request)
        ids = prepared.ids
        refused = overflow(prepared, request, self.info.context_length)  # the cache's, here
        if refused is not None:  # past the cache it could never be scheduled either
            self.emit(rid, refused)
            return
        kwargs = {"repetition_penalty": float(p.repetition_penalty), "temperature": 0.0}
        if prepared.healing is not None:
            kwargs["healing"] = prepared.healing.processor
        if prepared.hold is not None:
            kwargs["hold"] = prepared.hold
        if not p.greedy:
            kwargs.update(temperature=float(p.temperature), top_p=float(p.top_p))
        kwargs.update(max_new_tokens=p.max_new_tokens, eos_token_id=prepared.eos_ids)
        if p.logprobs is not None:
            kwargs["logprobs"] = p.logprobs
        stream = _Stream(
            TokenStream(self.tokenizer, prepared), len(ids), logprobs=p.logprobs is not None
        )
        with self._lock:
            self._streams[rid] = stream
            self._pending.append((rid, ids, kwargs))
        self._admit()

    def _blocks_for(self, ids: list[int], kwargs: dict) -> int:
        return self.plan.blocks_for(len(ids) + kwargs["max_new_tokens"]) if self.plan else 1

    def _admit(self) -> None:
        """Starts waiting requests, oldest first, while their cache blocks are free."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                rid, ids, kwargs = self._pending[0]
                stream = self._streams.get(rid)
                need = self._blocks_for(ids, kwargs)
                if stream is not None and need > self._free_blocks:
                    return  # FIFO: a long request is not overtaken for ever by short ones
                self._pending.popleft()
                if stream is None:  # cancelled while waiting
                    continue
                stream.blocks = need
                self._free_blocks -= need
            added = self.manager.add_request(ids, request_id=rid, streaming=True, **kwargs)
            if added is None:
                with self._lock:
                    self._streams.pop(rid, None)
                self._release(rid, stream)
                self.emit(rid, _engine_error("the batching loop is not accepting requests", 0))
            elif rid not in self._streams:  # cancelled meanwhile, before the manager knew it
                self.manager.cancel_request(rid)

    def _release(self, rid: str, stream: _Stream) -> None:
        self.logprobs.forget(rid)
        with self._lock:
            self._free_blocks += stream.blocks
            stream.blocks = 0
        self._admit()

    def _route(self) -> None:
        """Turns the manager's cumulative outputs into Delta/Done events per request."""
        manager = self.manager
        while not self._closed:
            if not manager.is_running():
                log.error("continuous batching loop stopped; failing its requests")
                fatal = manager.background_thread_status.fatal_error  # e.g. CUDA out of memory
                self._fail_all(str(fatal or "the batching loop stopped"))
                if self.on_fatal is not None and not self._closed:
                    self.on_fatal()
                return
            out = manager.get_result(timeout=0.1)
            events: list[tuple[str, Event]] = []
            # Everything a step produced goes out as one message: one pickle and one pipe
            # write per step instead of one per stream.
            while out is not None:
                with self._lock:
                    entry = self._streams.get(out.request_id)
                # No entry: cancelled or stopped already.
                if entry is not None and self._advance(out.request_id, entry, manager, out, events):
                    with self._lock:
                        self._streams.pop(out.request_id, None)
                    self._release(out.request_id, entry)
                out = manager.get_result(timeout=0) if len(events) < 256 else None
            if events:
                self.send(events)

    def _advance(self, rid: str, st: _Stream, manager, out, events: list) -> bool:
        """Appends this output's events for `rid` to `events`; True when the request ended."""
        new = out.generated_tokens[st.seen :]
        st.seen = len(out.generated_tokens)
        tokens = st.tokens
        text, logprobs = "", []
        recorded = self.logprobs.take(rid, len(new)) if st.logprobs else ()
        for tok, record in itertools.zip_longest(new, recorded):
            if tokens.ended:
                break
            text += tokens.push(tok)
            if record is not None:  # the end token too, named "" (as in model/engines/local.py)
                logprobs.append(self.namer.entry(record, tokens.name))
        done = None
        if tokens.reason == "stop":
            manager.cancel_request(rid)  # frees the slot at the next step
            done = Done("stop", st.n_prompt, st.generated)
        elif out.error is not None:
            done = _engine_error(out.error, st.n_prompt, st.generated)
        elif tokens.ended or out.is_finished():
            if tokens.reason == "eos":
                manager.cancel_request(rid)  # no-op if the manager finished it too
            text += tokens.finish()
            done = Done(tokens.reason, st.n_prompt, st.generated)
        if text or logprobs:
            events.append((rid, Delta(text, tuple(logprobs))))
        if done is not None:
            events.append((rid, done))
        return done is not None

    def _fail_all(self, why: str) -> None:
        with self._lock:
            streams, self._streams = self._streams, {}
            self._pending.clear()
        self.send(
            [(rid, _engine_error(why, st.n_prompt, st.generated)) for rid, st in streams.items()]
        )


def _engine_error(why: str, n_prompt: int, generated: int = 0) -> Done:
    if "out of memory" in str(why).lower():
        msg = "The model ran out of memory. Try a shorter prompt or fewer max_new_tokens."
        return Done("error", n_prompt, generated, error=msg, error_kind="oom")
    log.error("batched generation failed: %s", why)
    msg = "Generation failed inside the model. The error was logged."
    return Done("error", n_prompt, generated, error=msg, error_kind="engine")
