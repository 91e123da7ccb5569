"""Several streams at once, as one: Compare runs two generations side by side.

Each stream is pumped by its own thread (a generation blocks between the engine's events, so two
cannot take turns on one thread), into one queue; the reader gets the latest news of every stream
at most once per frame. The engine batches concurrent requests, so two generations on one local
model share decode steps.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass

from app.services.generate import FRAME_SECONDS


@dataclass(frozen=True)
class Failed:
    """A stream that raised: its error, in place of its next item. The others run on."""

    error: Exception


_END = object()


def together(streams: Sequence[Iterator], every: float = FRAME_SECONDS) -> Iterator[dict]:
    """Yields {stream index: its latest item (or Failed)} for the streams with news, at most
    once per `every` seconds, until every stream has ended. A stream's last item is always
    passed on. Closing this generator stops the pumps: each closes its stream at its next item
    (a generation's cancel scope then frees its engine slot)."""
    news: queue.Queue = queue.Queue()
    leave = threading.Event()

    def pump(i: int, stream: Iterator) -> None:
        try:
            with closing(stream) if hasattr(stream, "close") else nullcontext():
                for item in stream:
                    news.put((i, item))
                    if leave.is_set():
                        return
        except Exception as exc:  # the stream's own failure: reported in its place
            news.put((i, Failed(exc)))
        finally:
            news.put((i, _END))

    for i, stream in enumerate(streams):
        threading.Thread(target=pump, args=(i, stream), name=f"together-{i}", daemon=True).start()
    running, last = len(streams), -math.inf
    try:
        while running:
            batch: dict = {}
            timeout = None  # block for the first news of this frame
            while running:
                try:
                    i, item = news.get(timeout=timeout)
                except queue.Empty:
                    break
                if item is _END:
                    running -= 1
                else:
                    batch[i] = item  # a later frame of a stream stands for its earlier ones
                timeout = max(0.0, last + every - time.monotonic())
            if batch:
                last = time.monotonic()
                yield batch
    finally:
        leave.set()
