"""The worker queue: the model lives in a worker process; the web process only queues. Torch-free.

    web process                                   worker process (spawned, owns the device)
    WorkerEngine.stream() -- bounded FIFO --> slot --("gen", rid, request)--> BatchingServer
                        <-------- ("evs", [(rid, Delta | Done), ...]) -----  (model/engines/batching.py)

- At most `max_batch` requests are in the worker at once (the batch); up to `max_queue` more wait
  here in FIFO order and can see their position (Queued events); beyond that, "busy".
- Cancel (Stop, or the consumer closing the generator on disconnect) is a ("cancel", rid)
  message; the worker drops the request from the batch at its next decode step.
- The pipe is the liveness signal: if the worker dies (kill -9, OOM killer, CUDA error) the
  reader gets EOF, every in-flight request of that worker ends with an error Done, and a new
  worker is spawned. Requests queued meanwhile wait for it.
The worker's side of the pipe, and the WorkerConfig it loads from, live in model/engines/worker_process.py.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from model.engine import CancelToken, Delta, Done, Event, GenerationRequest, ModelInfo, Queued
from model.engines.worker_process import WorkerConfig, worker_main
from model.errors import PlaygroundError
from model.tokens.local_tokenizer import LocalTokenizer

log = logging.getLogger(__name__)

POLL_S = 0.02  # how often a stream waiting for a slot looks at its CancelToken
_WAKE = object()  # put in a stream's queue when its CancelToken is cancelled


@dataclass(eq=False)
class _Worker:
    """One incarnation of the worker process and its pipe."""

    process: multiprocessing.Process
    conn: object
    ready: threading.Event = field(default_factory=threading.Event)
    info: ModelInfo | None = None
    failed: str | None = None
    rids: set = field(default_factory=set)
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, msg) -> bool:
        try:
            with self.send_lock:
                self.conn.send(msg)
            return True
        except (OSError, ValueError):  # broken pipe / closed: the reader handles the death
            return False


class WorkerEngine:
    """Engine whose model runs in a worker process, with a bounded queue in front of it."""

    # The spawn target (importable by module path, as spawn needs): worker_process.worker_main.
    # tests/faults.py's FAKE faulty worker is a subclass naming its own.
    target = staticmethod(worker_main)

    def __init__(
        self,
        config: WorkerConfig,
        *,
        max_queue: int,  # MAX_QUEUE; the settings table holds its default
        report_queue: bool = False,
        start_timeout: float = 600.0,
    ):
        self.config = config
        self.max_queue = max_queue
        self.report_queue = report_queue
        self.start_timeout = start_timeout
        self.restarts = 0
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process holding threads
        self._cond = threading.Condition()
        self._waiting: collections.deque = collections.deque()
        self._active = 0
        self._queues: dict[str, queue.SimpleQueue] = {}
        self._worker: _Worker | None = None
        self._info: ModelInfo | None = None
        self._closing = False
        self._tokenizer = LocalTokenizer.find(config.model)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> WorkerEngine:
        """Spawn the worker and wait until the model is loaded; raises PlaygroundError if not."""
        w = self._spawn()
        if not w.ready.wait(self.start_timeout) and not w.failed:
            self.close()
            raise PlaygroundError("The model worker did not start in time.", kind="config")
        if w.failed:
            self.close()
            raise PlaygroundError(w.failed, field="model", kind="config")
        if self._tokenizer is None:  # e.g. SmolLM2, converted into a folder by the worker
            self._tokenizer = LocalTokenizer.find(self.info.model_id)
        return self

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=self.target, args=(child, self.config), name="model-worker", daemon=True
        )
        proc.start()
        child.close()  # so EOF on our end means the worker is gone
        w = _Worker(proc, parent)
        with self._cond:
            self._worker = w
        threading.Thread(target=self._read, args=(w,), name="worker-reader", daemon=True).start()
        log.info("model worker started (pid %s)", proc.pid)
        return w

    def close(self) -> None:
        """Stop the worker; streams still in flight end with an error Done at once."""
        self._closing = True
        with self._cond:
            queues = list(self._queues.values())
            self._cond.notify_all()
        for q in queues:
            q.put(Done("error", error="The playground is shutting down.", error_kind="engine"))
        w = self._worker
        if w is None:
            return
        w.send(("stop",))
        w.process.join(10)
        if w.process.is_alive():
            w.process.kill()
            w.process.join(5)

    @property
    def worker_pid(self) -> int | None:
        w = self._worker
        return w.process.pid if w else None

    # -- Engine -----------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise RuntimeError("WorkerEngine.start() has not completed")
        return self._info

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def tokenize(self, text: str) -> list[int]:
        if self._tokenizer is not None:
            return self._tokenizer.encode(text)
        return list(self._call("tokenize", text, timeout=30))

    def detokenize(self, ids) -> str:
        if self._tokenizer is not None:
            return self._tokenizer.decode(ids)
        text = self._call("detokenize", list(ids), timeout=30)  # a Hub model: the worker's
        if isinstance(text, tuple):
            raise PlaygroundError(text[1], field="prompt")
        return text

    def stream(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[Event]:
        """Queue, then stream. Raises PlaygroundError (kind busy) before any event
        when the request is refused; every other failure ends in Done("error")."""
        ticket = object()
        with self._cond:
            if len(self._waiting) >= self.max_queue and not self._can_start_now():
                raise PlaygroundError(
                    f"The playground is busy: {len(self._waiting)} requests are already waiting "
                    f"(the queue holds {self.max_queue}). Please try again in a minute.",
                    kind="busy",
                )
            self._waiting.append(ticket)
        rid, w, holding = uuid.uuid4().hex, None, False
        done = False
        try:
            shown = 0
            while True:
                with self._cond:
                    if self._waiting[0] is ticket and self._can_start_now():
                        self._waiting.popleft()
                        self._active += 1
                        holding = True
                        w = self._worker
                        q = queue.SimpleQueue()
                        self._queues[rid] = q
                        w.rids.add(rid)
                        self._cond.notify_all()
                        break
                    position = self._waiting.index(ticket) + 1
                    failed = self._worker.failed if self._worker is not None else None
                    if self._closing:
                        failed = "The playground is shutting down."
                    if not failed:
                        self._cond.wait(POLL_S)
                if failed:  # the model cannot load: say why instead of waiting forever
                    done = True
                    yield Done("error", error=failed, error_kind="engine")
                    return
                if cancel.cancelled:
                    done = True
                    yield Done("cancelled")
                    return
                if self.report_queue and position != shown:
                    shown = position
                    yield Queued(position)
            if not w.send(("gen", rid, request)):
                log.warning("worker pipe closed while sending %s", rid)
            # Stop wakes the wait below: polling the token every 20 ms woke the web process
            # 50 times a second per stream, each time taking a core from the worker's team.
            cancel.on_cancel(lambda: q.put(_WAKE))
            sent_cancel = False
            while True:
                if cancel.cancelled and not sent_cancel:
                    sent_cancel = True
                    w.send(("cancel", rid))  # the worker drops it at its next decode step
                event = q.get()
                if isinstance(event, Delta):
                    event, pending = _coalesce(event, q)
                    if pending is not None:  # a Done right behind the text
                        if not sent_cancel:
                            yield event
                        event = pending
                if event is _WAKE:
                    continue
                if isinstance(event, Done):
                    done = True
                    if sent_cancel and event.reason != "error":
                        # As LocalEngine: once the user pressed Stop, that is why it ended.
                        event = Done("cancelled", event.prompt_tokens, event.generated_tokens)
                    yield event
                    return
                if not sent_cancel:  # after Stop, drain without showing more text
                    yield event
        finally:
            with self._cond:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._queues.pop(rid, None)
                if w is not None:
                    w.rids.discard(rid)
                if holding:
                    self._active -= 1
                self._cond.notify_all()
            if holding and not done:
                w.send(("cancel", rid))  # the consumer went away (Stop or disconnect)

    def _can_start_now(self) -> bool:
        w = self._worker
        return (
            self._active < self.config.max_batch
            and w is not None
            and w.ready.is_set()
            and w.failed is None
        )

    # -- ops --------------------------------------------------------------------------------

    def health(self, timeout: float = 5.0) -> tuple[bool, str]:
        """(ok, detail): ok when a worker is up and its batching loop answers."""
        w = self._worker
        if w is None or not w.ready.is_set() or not w.process.is_alive():
            return False, "model worker is starting"
        if w.failed:
            return False, w.failed
        try:
            alive = self._call("ping", None, timeout=timeout)
        except PlaygroundError as exc:
            return False, exc.message
        return (True, "ok") if alive else (False, "batching loop is down")

    def stats(self) -> dict:
        with self._cond:
            return {
                "queue_depth": len(self._waiting),
                "active": self._active,
                "restarts": self.restarts,
            }

    # -- plumbing ---------------------------------------------------------------------------

    def _ready_worker(self, timeout: float) -> _Worker | None:
        """The current worker once it is ready. Re-read while waiting: a call that arrived just
        after a worker died would otherwise wait its whole timeout on the dead one, though a
        new one was serving seconds later."""
        deadline = time.monotonic() + timeout
        while True:
            w = self._worker
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if w is None:
                time.sleep(min(remaining, 0.05))
            elif w.ready.wait(min(remaining, 0.25)):
                return w

    def _call(self, kind: str, arg, timeout: float):
        """A request/reply round trip to the worker (tokenizing, ping)."""
        w = self._ready_worker(timeout)
        if w is None:
            raise PlaygroundError("The model worker is not ready yet; try again.", kind="engine")
        rid = uuid.uuid4().hex
        q: queue.SimpleQueue = queue.SimpleQueue()
        with self._cond:
            if not w.ready.is_set():
                raise PlaygroundError("The model worker is restarting; try again.", kind="engine")
            self._queues[rid] = q
            w.rids.add(rid)
        try:
            w.send((kind, rid, arg))
            try:
                value = q.get(timeout=timeout)
            except queue.Empty:
                raise PlaygroundError("The model worker did not answer.", kind="engine") from None
            if isinstance(value, Done):  # the worker died meanwhile
                raise PlaygroundError(value.error or "The model worker failed.", kind="engine")
            return value
        finally:
            with self._cond:
                self._queues.pop(rid, None)
                w.rids.discard(rid)

    def _read(self, w: _Worker) -> None:
        while True:
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "evs":  # all events of one decode step
                with self._cond:
                    targets = [(self._queues.get(rid), ev) for rid, ev in msg[1]]
                for q, ev in targets:
                    if q is not None:
                        q.put(ev)
            elif kind == "reply":
                with self._cond:
                    q = self._queues.get(msg[1])
                if q is not None:
                    q.put(msg[2])
            elif kind == "ready":
                w.info = self._info = msg[1]
                w.ready.set()
                with self._cond:
                    self._cond.notify_all()
                log.info("model worker ready: %s on %s", w.info.model_id, w.info.device)
            elif kind == "failed":
                w.failed = msg[1]
                w.ready.set()
        self._on_death(w)

    def _on_death(self, w: _Worker) -> None:
        w.process.join(5)
        code = w.process.exitcode
        if not w.ready.is_set() and not w.failed:
            w.failed = f"The model worker exited (code {code}) while loading the model."
            w.ready.set()  # wakes start(), which reports the failure
        with self._cond:
            # Under the lock, so no stream can take a slot on this worker after we list them.
            w.ready.clear()
            rids = list(w.rids)
            queues = [self._queues[r] for r in rids if r in self._queues]
        if self._closing:
            msg = "The playground is shutting down."
        else:
            log.error(
                "model worker (pid %s) died with exit code %s; restarting", w.process.pid, code
            )
            msg = (
                f"The model worker stopped unexpectedly (exit code {code}) and is restarting. "
                "Please try again in a few seconds."
            )
        for q in queues:
            q.put(Done("error", error=msg, error_kind="engine"))
        if self._closing:
            with self._cond:
                self._cond.notify_all()  # queued streams see _closing and end
            return
        if w.failed:
            # Loading failed: keep the failure visible (health, queued requests) but retry slowly.
            time.sleep(min(30.0, 2.0 ** min(self.restarts, 5)))
        self.restarts += 1
        if not self._closing:
            self._spawn()


def _coalesce(first: Delta, q: queue.SimpleQueue) -> tuple[Delta, Event | None]:
    """Merge the Deltas already waiting into one, so a consumer that fell behind (a busy web
    process) catches up in one step instead of paying per-token overhead. Returns the merged
    Delta and the non-Delta event that stopped the merge, if any."""
    parts, logprobs, scored = [first.text], [*first.logprobs], first.prompt_logprobs
    while True:
        try:
            event = q.get_nowait()
        except queue.Empty:
            event = None
        if not isinstance(event, Delta):
            return Delta("".join(parts), tuple(logprobs), scored), event
        parts.append(event.text)
        logprobs.extend(event.logprobs)
        scored = scored or event.prompt_logprobs
