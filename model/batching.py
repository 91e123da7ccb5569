"""Inside the worker process: many concurrent requests on one model (imports torch).

Batched path: transformers' own continuous batching (ContinuousBatchingManager); we write no
scheduler. What it honours per request, and therefore what we batch:
  - max_new_tokens, EOS / special-token stops (per-request eos_token_id)
  - repetition_penalty, temperature (0 = greedy), top_p: transformers has no CB repetition
    penalty, and its CB sampling is per manager and slow on a CPU, so one processor of ours
    (model/sampling.py, RequestSamplingCB) does all three and the draw, as generate() does,
    per request. Greedy and sampled requests share the one batch.
  - text stop sequences: matched on our side (StopMatcher); a hit cancels the request in the
    manager, which frees its slot at the next step.
  - token healing of completion prompts that end in whitespace (model/healing.py): the same
    processor holds each healed request's first tokens to the backed-off text.
One-at-a-time path (LocalEngine on the same model, serialised by its lock):
  - requests with a `seed`: the batch samples from torch's one global RNG, so "same seed,
    same output" only holds for a request that runs alone. The batch pauses while it runs.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from model.decoding import IncrementalDecoder
from model.engine import CancelToken, Delta, Done, Event, GenerationRequest, ModelInfo
from model.healing import heal_request
from model.local import LocalEngine
from model.sampling import RequestSamplingCB
from model.stops import StopMatcher

log = logging.getLogger(__name__)

Send = Callable[[list[tuple[str, Event]]], None]  # (request id, event) pairs, in order


def build_cb_config(model, max_batch: int, context_length: int) -> ContinuousBatchingConfig:
    """Size the paged cache from the model and device.

    transformers' defaults target a GPU (memory-derived block counts, 256-token pages): on a CPU
    they allocate and pad far more than a tiny model needs, which made 4 x 12 tokens take 21 s
    instead of 0.5 s. On CPU: small pages, exactly enough blocks for `max_batch` full contexts,
    and a prefill budget of 256 tokens per step (longer prompts are prefilled in chunks).
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
    if model.device.type == "cpu":
        page = 32
        blocks_per_request = math.ceil(context_length / page) + 1
        return ContinuousBatchingConfig(
            page_size=page,
            num_blocks=blocks_per_request * max_batch,
            max_batch_tokens=256,
            max_blocks_per_request=0,
            **common,
        )
    return ContinuousBatchingConfig(max_memory_percent=0.8, **common)  # GPU: memory-derived


def batchable(request: GenerationRequest) -> bool:
    """Whether the continuous-batching path honours every parameter (see the module doc)."""
    return request.params.seed is None


@dataclass
class _Stream:
    """Per-request decoding state of a batched request."""

    eos_ids: set[int]
    decoder: IncrementalDecoder
    matcher: StopMatcher
    n_prompt: int
    strip: Callable[[str], str] = str  # drops the healed text, which the prompt already shows
    seen: int = 0
    generated: int = 0
    reason: str = "length"
    lock: threading.Lock = field(default_factory=threading.Lock)


class BatchingServer:
    """Serves requests from the worker's command loop; events go out through `send(pairs)`."""

    def __init__(
        self,
        model,
        tokenizer,
        info: ModelInfo,
        send: Send,
        *,
        max_batch: int = 8,
        on_fatal: Callable[[], None] | None = None,
    ):
        self.local = LocalEngine(model, tokenizer, info)
        self.tokenizer = tokenizer
        self.info = info
        self.send = send
        self.on_fatal = on_fatal  # a batching loop died: the device may be unusable (CUDA error)
        self._streams: dict[str, _Stream] = {}  # batched requests by id
        self._cancels: dict[str, CancelToken] = {}  # one-at-a-time requests
        self._lock = threading.Lock()
        self._closed = False
        eos = self.local._eos_ids(())[0]
        # Greedy: the argmax is taken after our processor, which leaves a sampled row only its
        # drawn token. A non-1 default penalty makes transformers build the processor that
        # per_request_processors turns into ours; each request sets its own values.
        gen = GenerationConfig(
            do_sample=False, repetition_penalty=1.1, max_new_tokens=256, eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        # Raised by _get_logits_processor because CB passes no input_ids; our processor does
        # see the prompt, so the warning does not apply here.
        warnings.filterwarnings("ignore", message="Passing `repetition_penalty` with")
        if not log.isEnabledFor(logging.DEBUG):  # its INFO lines repeat per start/stop
            logging.getLogger("ContinuousBatchingLogger").setLevel(logging.WARNING)
        cfg = build_cb_config(model, max_batch, info.context_length)
        self.manager = model.init_continuous_batching(
            generation_config=gen, continuous_batching_config=cfg
        )
        processors = self.manager.logit_processor.logits_processor
        if not any(isinstance(p, RequestSamplingCB) for p in processors):
            raise RuntimeError(f"continuous batching did not take our sampler: {processors}")
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
            self.manager.cancel_request(rid)  # dropped from the batch at the next step
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
            # The batches sample from the same global torch RNG: pause them, or the seed would
            # not pin the output. Seeded requests are rare (the user asked for one explicitly).
            with self.manager.pause():
                for event in self.local.stream(request, token):
                    self.emit(rid, event)
        finally:
            with self._lock:
                self._cancels.pop(rid, None)

    # -- batched ----------------------------------------------------------------------------

    def _submit_batched(self, rid: str, request: GenerationRequest) -> None:
        p = request.params
        ids = self.tokenizer(request.prompt, add_special_tokens=True)["input_ids"]
        if len(ids) + p.max_new_tokens > self.info.context_length:
            # Past the position table the forward fails, and CB fails the whole batch with it:
            # refuse this one request instead (the app validates this earlier anyway).
            msg = (
                f"`prompt` tokens + `max_new_tokens` must be <= {self.info.context_length}. "
                f"Given: {len(ids)} prompt tokens and {p.max_new_tokens} `max_new_tokens`."
            )
            self.emit(rid, Done("error", len(ids), 0, error=msg, error_kind="validation"))
            return
        kwargs = {"repetition_penalty": float(p.repetition_penalty), "temperature": 0.0}
        strip = str
        healing = heal_request(self.tokenizer, request, ids)
        if healing is not None:
            ids, strip = healing.input_ids, healing.stripper().feed
            kwargs["healing"] = healing.processor
        eos_ids, text_stops = self.local._eos_ids(p.stop)
        stream = _Stream(
            eos_ids=set(eos_ids),
            decoder=IncrementalDecoder(self.tokenizer),
            matcher=StopMatcher(text_stops),
            n_prompt=len(ids),
            strip=strip,
        )
        if not p.greedy:
            kwargs.update(temperature=float(p.temperature), top_p=float(p.top_p))
        with self._lock:
            self._streams[rid] = stream
        added = self.manager.add_request(
            ids,
            request_id=rid,
            max_new_tokens=p.max_new_tokens,
            streaming=True,
            eos_token_id=eos_ids,
            **kwargs,
        )
        if added is None:
            with self._lock:
                self._streams.pop(rid, None)
            self.emit(rid, _engine_error("the batching loop is not accepting requests", 0))

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
                out = manager.get_result(timeout=0) if len(events) < 256 else None
            if events:
                self.send(events)

    def _advance(self, rid: str, st: _Stream, manager, out, events: list) -> bool:
        """Appends this output's events for `rid` to `events`; True when the request ended."""
        new = out.generated_tokens[st.seen :]
        st.seen = len(out.generated_tokens)
        text = ""
        for tok in new:
            st.generated += 1
            if tok in st.eos_ids:
                st.reason = "eos"
                break
            text += st.matcher.feed(st.strip(st.decoder.push(tok)))
            if st.matcher.stopped:
                st.reason = "stop"
                break
        done = None
        if st.reason == "stop":
            manager.cancel_request(rid)  # frees the slot at the next step
            done = Done("stop", st.n_prompt, st.generated)
        elif out.error is not None:
            done = _engine_error(out.error, st.n_prompt, st.generated)
        elif st.reason == "eos" or out.is_finished():
            if st.reason == "eos":
                manager.cancel_request(rid)  # no-op if the manager finished it too
            tail = st.matcher.feed(st.strip(st.decoder.flush()))
            if st.matcher.stopped:
                st.reason = "stop"
            else:
                tail += st.matcher.flush()
            text += tail
            done = Done(st.reason, st.n_prompt, st.generated)
        if text:
            events.append((rid, Delta(text)))
        if done is not None:
            events.append((rid, done))
        return done is not None

    def _fail_all(self, why: str) -> None:
        with self._lock:
            streams, self._streams = self._streams, {}
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
