"""Responses of the OpenAI-compatible routes (app/web/openai_api.py): one or more generations
(choices: several prompts, or `n`), each fed by a producer thread of its own, answered as one
JSON body or as one server-sent event stream (shapes in app/web/openai_shapes.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import anyio
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.services.playground import Output
from app.web.openai_shapes import ChoiceStream, complete_body, error_body, usage
from model.errors import PlaygroundError

Attribute = Callable[[Output], list]
# Reused producer threads: starting one per request cost its first token ~0.3 ms, more under
# load. Generations are bounded by the engine queue well below this; past it, refusals wait.
_PRODUCERS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="v1-stream")


async def respond(runs: Sequence[Iterator[Output]], stream: bool, kind: str, echo: bool,
                  attribute: Attribute | None) -> Response:  # fmt: skip
    """`runs`: the choices' generations, in order. `echo`: each completion's text starts with
    its prompt (Output.prefix: the text, also of a prompt sent as token ids). `attribute`: for
    one choice only."""
    rid = f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    pumps = [_Pump(run) for run in runs]
    try:  # a refusal raises here: an HTTP error, before any event; the other choices stop
        firsts = [await pump.next() for pump in pumps]
        if not stream:
            finals = await asyncio.gather(
                *(_last(p, f) for p, f in zip(pumps, firsts, strict=True))
            )
    except BaseException:
        for pump in pumps:
            pump.stop()
        raise
    if not stream:
        body = complete_body(finals, rid, created, kind, echo)
        if attribute:
            body["attribution"] = await anyio.to_thread.run_sync(attribute, finals[0])
        return JSONResponse(body)
    choices = [ChoiceStream(i, rid, created, kind, echo) for i in range(len(pumps))]
    return StreamingResponse(
        _events(pumps, firsts, choices, attribute), media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip


async def _events(pumps, firsts, choices: list[ChoiceStream], attribute) -> AsyncIterator[str]:
    """The choices' chunks as their tokens come; the usage of all of them on the finish chunk
    of the last to end; then `[DONE]`."""
    finals: dict[int, Output] = {}
    try:
        for choice, first in zip(choices, firsts, strict=True):
            for event in choice.opening(first.model):
                yield event
        async for i, out in _outputs(pumps, firsts):
            extra = None
            if out.done is not None:
                finals[i] = out
                if len(finals) == len(pumps):  # the last to end
                    extra = {"usage": usage(list(finals.values()))}
                    if attribute:
                        extra["attribution"] = await anyio.to_thread.run_sync(attribute, out)
            for event in choices[i].chunks(out, extra):
                yield event
    except PlaygroundError as exc:
        yield f"data: {json.dumps(error_body(exc))}\n\n"
    finally:
        for pump in pumps:
            pump.stop()
    yield "data: [DONE]\n\n"


async def _outputs(pumps, firsts) -> AsyncIterator[tuple[int, Output]]:
    """(choice, Output) as they come, each choice up to its final Output; raises the first
    PlaygroundError of any choice."""
    if len(pumps) == 1:  # the common case: no task and no second queue per token
        async for out in _read(pumps[0], firsts[0]):
            yield 0, out
        return
    merged: asyncio.Queue = asyncio.Queue()

    async def follow(i: int) -> None:
        try:
            async for out in _read(pumps[i], firsts[i]):
                await merged.put((i, out))
        except PlaygroundError as exc:
            await merged.put((i, exc))
        await merged.put((i, None))

    tasks = [asyncio.create_task(follow(i)) for i in range(len(pumps))]
    try:
        ended = 0
        while ended < len(pumps):
            i, item = await merged.get()
            if isinstance(item, PlaygroundError):
                raise item
            if item is None:
                ended += 1
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()


async def _last(pump: _Pump, first: Output | None) -> Output | None:
    """The final Output, reading on from `first` (every run ends with one)."""
    out = first
    async for out in _read(pump, first):  # noqa: B007 - the last one is the answer
        pass
    return out


async def _read(pump: _Pump, first: Output | None) -> AsyncIterator[Output]:
    out = first
    while out is not None:
        yield out
        if out.done is not None:
            return
        out = await pump.next()


class _Pump:
    """A generation's Outputs, produced by one thread of its own and read by the event loop.

    A thread hop per token (to_thread for each next()) took 8 streams to 3.3x where the engine
    alone does 5.1x; here the loop takes whatever arrived since it last looked, as one event.
    """

    def __init__(self, run: Iterator[Output]):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._held: tuple | None = None
        self._stop = threading.Event()
        _PRODUCERS.submit(self._produce, run)

    def _produce(self, run: Iterator[Output]) -> None:
        put = self._queue.put_nowait
        try:
            for out in run:
                self._loop.call_soon_threadsafe(put, ("out", out))
                if self._stop.is_set():
                    break
        except Exception as exc:  # handed to the reader, who raises it
            self._loop.call_soon_threadsafe(put, ("err", exc))
        finally:
            run.close()  # a client that went away: this cancels its request at the next step
            self._loop.call_soon_threadsafe(put, ("end", None))

    async def next(self) -> Output | None:
        """The latest Output (None at the end); raises what the generation raised."""
        item = self._held or await self._queue.get()
        self._held = None
        while item[0] == "out" and not item[1].done and not self._queue.empty():
            following = self._queue.get_nowait()
            if following[0] != "out":
                self._held = following
                break
            item = following
        if item[0] == "err":
            raise item[1]
        return item[1]

    def stop(self) -> None:
        self._stop.set()
